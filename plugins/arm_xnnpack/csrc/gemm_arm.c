/*
 * AArch64 microkernels for the packed qc8w layout (16 channels x 4 k per 64 bytes).
 *
 *   NEON        2x16c4 "mlal": vmull_s8 of one k-block, vmlal_s8 of the next
 *               into the same int16 lanes, then vpadalq_s16 into int32. Two
 *               products share an int16: |x * w| <= 128 * 127, so the sum is at
 *               most 32512 and never saturates. This is why qc8w weights are
 *               narrow range ([-127, 127]); packing rejects -128.
 *   NEON dot    4x16c4: SDOT (vdotq_s32) of 4 channels x 4 k against the
 *               broadcast 4 activations, s8 x s8 directly (no +128 trick).
 *
 * Epilogues: vcvtq_f32_s32 (same rounding as a C cast), multiply, clamp, and
 * vcvtnq_s32_f32 (round to nearest, ties to even, like nearbyintf), so they
 * match qp_requantize bit for bit.
 */
#include "xnnpack_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>

/* ------------------------------------------------------------------ NEON -- */

/* 16 channels x 4 k = 64 bytes = 8 chunks of (2 channels x 4 k). */
static inline void xnn_neon_mlal_pair(const int8_t *w0, const int8_t *w1, int8x8_t x0, int8x8_t x1,
                                      int32x4_t c[8]) {
  for (int q = 0; q < 8; q++) {
    int16x8_t prod = vmull_s8(vld1_s8(w0 + 8 * q), x0);
    prod = vmlal_s8(prod, vld1_s8(w1 + 8 * q), x1);
    c[q] = vpadalq_s16(c[q], prod);
  }
}

static inline void xnn_neon_mull_one(const int8_t *w0, int8x8_t x0, int32x4_t c[8]) {
  for (int q = 0; q < 8; q++) c[q] = vpadalq_s16(c[q], vmull_s8(vld1_s8(w0 + 8 * q), x0));
}

static inline int8x8_t xnn_neon_dup_x4(int32_t x4) { return vreinterpret_s8_s32(vdup_n_s32(x4)); }

static inline void xnn_neon_store16(int32_t *raw, const int32x4_t c[8]) {
  /* c[q] = [ch 2q: (k0+k1), (k2+k3); ch 2q+1: (k0+k1), (k2+k3)] */
  for (int q = 0; q < 4; q++) vst1q_s32(raw + 4 * q, vpaddq_s32(c[2 * q], c[2 * q + 1]));
}

static void xnn_qs8_qc8w_gemm_ukernel_2x16c4__neon_mlal(size_t mr, size_t k, const int8_t *a,
                                                       size_t a_stride, const int8_t *w,
                                                       const int32_t *row_sums, int32_t *raw) {
  (void)row_sums;
  const int8_t *a0 = a, *a1 = mr > 1 ? a + a_stride : a;
  int32x4_t c0[8], c1[8];
  for (int q = 0; q < 8; q++) c0[q] = c1[q] = vdupq_n_s32(0);
  const size_t kfull = k / 4; /* complete k-blocks */
  size_t kb = 0;
  for (; kb + 2 <= kfull; kb += 2, w += 128) {
    const int8_t *p0 = a0 + kb * 4, *p1 = a1 + kb * 4;
    xnn_neon_mlal_pair(w, w + 64, xnn_neon_dup_x4(xnn_load_x4(p0)), xnn_neon_dup_x4(xnn_load_x4(p0 + 4)), c0);
    xnn_neon_mlal_pair(w, w + 64, xnn_neon_dup_x4(xnn_load_x4(p1)), xnn_neon_dup_x4(xnn_load_x4(p1 + 4)), c1);
  }
  for (; kb * 4 < k; kb++, w += 64) { /* last single block, possibly partial */
    const size_t t = k - kb * 4 < 4 ? k - kb * 4 : 4;
    xnn_neon_mull_one(w, xnn_neon_dup_x4(xnn_load_x4_tail(a0 + kb * 4, t)), c0);
    xnn_neon_mull_one(w, xnn_neon_dup_x4(xnn_load_x4_tail(a1 + kb * 4, t)), c1);
  }
  xnn_neon_store16(raw, c0);
  if (mr > 1) xnn_neon_store16(raw + 16, c1);
}

/* 16 floats already on the output grid (before the zero point): clamp, round half to even, add zp, int8. */
static inline int8x16_t xnn_neon_round_pack16(const float32x4_t f[4], float32x4_t lo, float32x4_t hi, int32x4_t zp) {
  int32x4_t q[4];
  for (int i = 0; i < 4; i++) q[i] = vaddq_s32(vcvtnq_s32_f32(vminq_f32(vmaxq_f32(f[i], lo), hi)), zp);
  const int16x8_t h0 = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]));
  const int16x8_t h1 = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
  return vcombine_s8(vqmovn_s16(h0), vqmovn_s16(h1));
}

static inline int8x16_t xnn_neon_requant16(int32x4_t v[4], const float32x4_t m[4], float32x4_t lo,
                                           float32x4_t hi, int32x4_t zp) {
  float32x4_t f[4];
  for (int i = 0; i < 4; i++) f[i] = vmulq_f32(vcvtq_f32_s32(v[i]), m[i]);
  return xnn_neon_round_pack16(f, lo, hi, zp);
}

static void xnn_qs8_requant__neon(size_t mr, size_t nc, const int32_t *raw, const xnn_requant_params *p,
                                  int8_t *out, size_t out_stride) {
  if (nc < XNN_NR) { /* a partial block: the scalar epilogue (same arithmetic) reads only nc */
    xnn_qs8_requant__scalar(mr, nc, raw, p, out, out_stride);
    return;
  }
  float32x4_t m[4];
  int32x4_t b[4];
  for (int i = 0; i < 4; i++) {
    m[i] = p->per_channel ? vld1q_f32(p->mult + 4 * i) : vdupq_n_f32(p->mult[0]);
    b[i] = vld1q_s32(p->bias_eff + 4 * i);
  }
  const float32x4_t lo = vdupq_n_f32((float)(p->qmin - p->zp)), hi = vdupq_n_f32((float)(p->qmax - p->zp));
  const int32x4_t zp = vdupq_n_s32(p->zp);
  for (size_t r = 0; r < mr; r++) {
    int32x4_t v[4];
    for (int i = 0; i < 4; i++) v[i] = vaddq_s32(vld1q_s32(raw + r * 16 + 4 * i), b[i]);
    vst1q_s8(out + r * out_stride, xnn_neon_requant16(v, m, lo, hi, zp));
  }
}

static void xnn_qd8_f32_dequant__neon(size_t mr, size_t nc, const int32_t *raw, const xnn_dequant_params *p,
                                      float *out, size_t out_stride) {
  if (nc < XNN_NR) { /* a partial block: the scalar epilogue (same arithmetic) reads only nc */
    xnn_qd8_f32_dequant__scalar(mr, nc, raw, p, out, out_stride);
    return;
  }
  for (size_t r = 0; r < mr; r++) {
    const int32x4_t zp = vdupq_n_s32(p->x_zp[r]);
    const float32x4_t xs = vdupq_n_f32(p->x_scale[r]);
    for (int i = 0; i < 4; i++) {
      const int32x4_t acc = vmlsq_s32(vld1q_s32(raw + r * 16 + 4 * i), vld1q_s32(p->row_sums + 4 * i), zp);
      const float32x4_t ws = p->per_channel ? vld1q_f32(p->w_scale + 4 * i) : vdupq_n_f32(p->w_scale[0]);
      float32x4_t y = vmulq_f32(vcvtq_f32_s32(acc), vmulq_f32(xs, ws));
      XNN_FP_BARRIER(y); /* no FMA: product and sum are rounded separately */
      if (p->bias) y = vaddq_f32(y, vld1q_f32(p->bias + 4 * i));
      vst1q_f32(out + r * out_stride + 4 * i, y);
    }
  }
}

static inline float32x4_t xnn_neon_vadd4(int16x4_t a, int16x4_t b, const xnn_vadd_params *p) {
  float32x4_t av = vmulq_f32(vcvtq_f32_s32(vsubq_s32(vmovl_s16(a), vdupq_n_s32(p->a_zp))), vdupq_n_f32(p->a_scale));
  float32x4_t bv = vmulq_f32(vcvtq_f32_s32(vsubq_s32(vmovl_s16(b), vdupq_n_s32(p->b_zp))), vdupq_n_f32(p->b_scale));
  XNN_FP_BARRIER(av);
  XNN_FP_BARRIER(bv);
  return vmulq_f32(vaddq_f32(av, bv), vdupq_n_f32(p->inv_out_scale));
}

static void xnn_qs8_vadd_minmax_ukernel__neon(size_t n, const int8_t *a, const int8_t *b, const xnn_vadd_params *p,
                                              int8_t *out) {
  const float32x4_t lo = vdupq_n_f32((float)(p->qmin - p->out_zp)), hi = vdupq_n_f32((float)(p->qmax - p->out_zp));
  const int32x4_t zp = vdupq_n_s32(p->out_zp);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const int8x16_t va = vld1q_s8(a + i), vb = vld1q_s8(b + i);
    const int16x8_t a0 = vmovl_s8(vget_low_s8(va)), a1 = vmovl_s8(vget_high_s8(va));
    const int16x8_t b0 = vmovl_s8(vget_low_s8(vb)), b1 = vmovl_s8(vget_high_s8(vb));
    const float32x4_t f[4] = {xnn_neon_vadd4(vget_low_s16(a0), vget_low_s16(b0), p),
                              xnn_neon_vadd4(vget_high_s16(a0), vget_high_s16(b0), p),
                              xnn_neon_vadd4(vget_low_s16(a1), vget_low_s16(b1), p),
                              xnn_neon_vadd4(vget_high_s16(a1), vget_high_s16(b1), p)};
    vst1q_s8(out + i, xnn_neon_round_pack16(f, lo, hi, zp));
  }
  if (i < n) xnn_qs8_vadd_minmax_ukernel__scalar(n - i, a + i, b + i, p, out + i);
}

const xnn_gemm_config xnn_config_neon = {2, xnn_qs8_qc8w_gemm_ukernel_2x16c4__neon_mlal, xnn_qs8_requant__neon,
                                         xnn_qd8_f32_dequant__neon, xnn_qs8_vadd_minmax_ukernel__neon, 0, NULL, NULL, NULL};

/* -------------------------------------------------------------- NEON dot -- */

QP_TARGET_NEONDOT static void xnn_qs8_qc8w_gemm_ukernel_4x16c4__neondot(size_t mr, size_t k,
                                                                       const int8_t *a, size_t a_stride,
                                                                       const int8_t *w,
                                                                       const int32_t *row_sums,
                                                                       int32_t *raw) {
  (void)row_sums;
  const int8_t *rows[4];
  rows[0] = a;
  for (int r = 1; r < 4; r++) rows[r] = (size_t)r < mr ? rows[r - 1] + a_stride : rows[r - 1];
  int32x4_t c[4][4];
  for (int r = 0; r < 4; r++)
    for (int q = 0; q < 4; q++) c[r][q] = vdupq_n_s32(0);
  for (size_t p = 0; p < k; p += 4, w += 64) {
    const int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16), w2 = vld1q_s8(w + 32), w3 = vld1q_s8(w + 48);
    const size_t t = k - p < 4 ? k - p : 4;
    for (int r = 0; r < 4; r++) {
      const int32_t x4 = t == 4 ? xnn_load_x4(rows[r] + p) : xnn_load_x4_tail(rows[r] + p, t);
      const int8x16_t x = vreinterpretq_s8_s32(vdupq_n_s32(x4));
      c[r][0] = vdotq_s32(c[r][0], w0, x);
      c[r][1] = vdotq_s32(c[r][1], w1, x);
      c[r][2] = vdotq_s32(c[r][2], w2, x);
      c[r][3] = vdotq_s32(c[r][3], w3, x);
    }
  }
  for (size_t r = 0; r < mr; r++)
    for (int q = 0; q < 4; q++) vst1q_s32(raw + r * 16 + 4 * q, c[r][q]);
}

const xnn_gemm_config xnn_config_neondot = {4, xnn_qs8_qc8w_gemm_ukernel_4x16c4__neondot,
                                            xnn_qs8_requant__neon, xnn_qd8_f32_dequant__neon,
                                            xnn_qs8_vadd_minmax_ukernel__neon, 0, NULL, NULL, NULL};

#else
typedef int xnn_gemm_arm_unused; /* ISO C forbids an empty translation unit */
#endif
