/*
 * ARM paths (AArch64 only; this file compiles to nothing elsewhere).
 *
 *  neon    : QNNPACK's NEON scheme: vmull_u8 gives exact uint8 x uint8
 *            16-bit products, vpadalq_u16 adds pairs of them into uint32
 *            lanes; 4 rows x 8 channels per pass.
 *  neondot : UDOT (ARMv8.2 dot product): four uint8 x uint8 products per
 *            uint32 lane in one instruction; 4 rows x 16 channels.
 *
 * Requantization uses vcvtnq_s32_f32 (round to nearest, ties to even),
 * which is exactly nearbyintf in the default rounding mode.
 */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

#include "qnnpack_internal.h"

static inline uint8x16_t qnnpack_neon_dup4(uint32_t v) {
  return vreinterpretq_u8_u32(vdupq_n_u32(v));
}

/* 4 rows x 8 channels (half a packed block). */
static inline void qnnpack_qu8_gemm_ukernel_4x8c4__neon(size_t k, const uint8_t *const *a,
                                                        const uint8_t *w, int32_t *acc) {
  uint32x4_t c[4][4];
  for (int i = 0; i < 4; i++)
    for (int s = 0; s < 4; s++) c[i][s] = vdupq_n_u32(0);
  for (size_t kk = 0; kk < k; kk += QNNPACK_KR) {
    const uint8x16_t w0 = vld1q_u8(w);      /* ch0..3 x k0..3 */
    const uint8x16_t w1 = vld1q_u8(w + 16); /* ch4..7 */
    const int full = kk + QNNPACK_KR <= k;
    for (int i = 0; i < 4; i++) {
      const uint8x16_t x = qnnpack_neon_dup4(full ? qnnpack_load_u32(a[i] + kk)
                                                  : qnnpack_load_tail4(a[i] + kk, k - kk));
      c[i][0] = vpadalq_u16(c[i][0], vmull_u8(vget_low_u8(w0), vget_low_u8(x)));
      c[i][1] = vpadalq_u16(c[i][1], vmull_high_u8(w0, x));
      c[i][2] = vpadalq_u16(c[i][2], vmull_u8(vget_low_u8(w1), vget_low_u8(x)));
      c[i][3] = vpadalq_u16(c[i][3], vmull_high_u8(w1, x));
    }
    w += QNNPACK_NR * QNNPACK_KR;
  }
  /* c[i][0] lanes: ch0 k01, ch0 k23, ch1 k01, ch1 k23: pairwise add. */
  for (int i = 0; i < 4; i++) {
    int32_t *dst = acc + i * QNNPACK_NR;
    const uint32x4_t s0 = vpaddq_u32(c[i][0], c[i][1]);
    const uint32x4_t s1 = vpaddq_u32(c[i][2], c[i][3]);
    vst1q_s32(dst, vaddq_s32(vld1q_s32(dst), vreinterpretq_s32_u32(s0)));
    vst1q_s32(dst + 4, vaddq_s32(vld1q_s32(dst + 4), vreinterpretq_s32_u32(s1)));
  }
}

static void qnnpack_qu8_gemm_ukernel_4x16c4__neon(size_t mr, size_t k, const uint8_t *const *a,
                                                  const uint8_t *w, const int32_t *wsum,
                                                  int32_t *acc) {
  (void)mr;
  (void)wsum;
  qnnpack_qu8_gemm_ukernel_4x8c4__neon(k, a, w, acc);
  qnnpack_qu8_gemm_ukernel_4x8c4__neon(k, a, w + 32, acc + 8);
}

QNNPACK_TARGET_NEONDOT static void qnnpack_qu8_gemm_ukernel_4x16c4__neondot(
    size_t mr, size_t k, const uint8_t *const *a, const uint8_t *w, const int32_t *wsum,
    int32_t *acc) {
  (void)mr;
  (void)wsum;
  uint32x4_t c[4][4];
  for (int i = 0; i < 4; i++)
    for (int s = 0; s < 4; s++) c[i][s] = vreinterpretq_u32_s32(vld1q_s32(acc + i * QNNPACK_NR + 4 * s));
  for (size_t kk = 0; kk < k; kk += QNNPACK_KR) {
    const uint8x16_t w0 = vld1q_u8(w), w1 = vld1q_u8(w + 16);
    const uint8x16_t w2 = vld1q_u8(w + 32), w3 = vld1q_u8(w + 48);
    const int full = kk + QNNPACK_KR <= k;
    for (int i = 0; i < 4; i++) {
      const uint8x16_t x = qnnpack_neon_dup4(full ? qnnpack_load_u32(a[i] + kk)
                                                  : qnnpack_load_tail4(a[i] + kk, k - kk));
      c[i][0] = vdotq_u32(c[i][0], w0, x);
      c[i][1] = vdotq_u32(c[i][1], w1, x);
      c[i][2] = vdotq_u32(c[i][2], w2, x);
      c[i][3] = vdotq_u32(c[i][3], w3, x);
    }
    w += QNNPACK_NR * QNNPACK_KR;
  }
  for (int i = 0; i < 4; i++)
    for (int s = 0; s < 4; s++) vst1q_s32(acc + i * QNNPACK_NR + 4 * s, vreinterpretq_s32_u32(c[i][s]));
}

static void qnnpack_qu8_requant_neon(size_t mr, size_t nc, const int32_t *acc, const float *mult,
                                     int32_t out_zp, int32_t qmin, int32_t qmax, uint8_t *out,
                                     size_t out_stride) {
  const float32x4_t flo = vdupq_n_f32((float)(qmin - out_zp));
  const float32x4_t fhi = vdupq_n_f32((float)(qmax - out_zp));
  const int32x4_t vzp = vdupq_n_s32(out_zp);
  for (size_t i = 0; i < mr; i++) {
    int32x4_t q[4];
    for (int s = 0; s < 4; s++) {
      float32x4_t v = vcvtq_f32_s32(vld1q_s32(acc + i * QNNPACK_NR + 4 * s));
      v = vmulq_f32(v, vld1q_f32(mult + 4 * s));
      v = vminq_f32(vmaxq_f32(v, flo), fhi);
      q[s] = vaddq_s32(vcvtnq_s32_f32(v), vzp);
    }
    const uint16x8_t h0 = vcombine_u16(vqmovun_s32(q[0]), vqmovun_s32(q[1]));
    const uint16x8_t h1 = vcombine_u16(vqmovun_s32(q[2]), vqmovun_s32(q[3]));
    const uint8x16_t bytes = vcombine_u8(vqmovn_u16(h0), vqmovn_u16(h1));
    if (nc == QNNPACK_NR) {
      vst1q_u8(out + i * out_stride, bytes);
    } else {
      uint8_t tmp[16];
      vst1q_u8(tmp, bytes);
      memcpy(out + i * out_stride, tmp, nc);
    }
  }
}

static void qnnpack_qu8_dequant_neon(size_t mr, size_t nc, const int32_t *acc, const float *scale,
                                     const float *bias, float *out, size_t out_stride) {
  for (size_t i = 0; i < mr; i++) {
    float tmp[16];
    for (int s = 0; s < 4; s++) {
      float32x4_t p = vmulq_f32(vcvtq_f32_s32(vld1q_s32(acc + i * QNNPACK_NR + 4 * s)),
                                vld1q_f32(scale + 4 * s));
      QNNPACK_NO_CONTRACT(p); /* keep vmul + vadd: never fused into vfma */
      vst1q_f32(tmp + 4 * s, vaddq_f32(p, vld1q_f32(bias + 4 * s)));
    }
    memcpy(out + i * out_stride, tmp, nc * sizeof(float));
  }
}

static void qnnpack_qu8_acc_init_rows_neon(size_t mr, const int32_t *wsum, const int32_t *wzp,
                                           const int32_t *rzp, const uint32_t *xsum,
                                           int32_t *acc) {
  for (size_t i = 0; i < mr; i++) {
    const uint32x4_t r = vdupq_n_u32((uint32_t)rzp[i]), s = vdupq_n_u32(xsum[i]);
    for (int q = 0; q < 4; q++) {
      uint32x4_t t = vmulq_u32(vreinterpretq_u32_s32(vld1q_s32(wsum + 4 * q)), r);
      t = vmlaq_u32(t, vreinterpretq_u32_s32(vld1q_s32(wzp + 4 * q)), s);
      vst1q_s32(acc + i * QNNPACK_NR + 4 * q, vnegq_s32(vreinterpretq_s32_u32(t)));
    }
  }
}

static void qnnpack_qu8_dequant_rows_neon(size_t mr, size_t nc, const int32_t *acc,
                                          const float *rscale, const float *wscale,
                                          const float *bias, float *out, size_t out_stride) {
  float s[QNNPACK_NR];
  for (size_t i = 0; i < mr; i++) {
    const float32x4_t r = vdupq_n_f32(rscale[i]);
    for (int q = 0; q < 4; q++) vst1q_f32(s + 4 * q, vmulq_f32(r, vld1q_f32(wscale + 4 * q)));
    qnnpack_qu8_dequant_neon(1, nc, acc + i * QNNPACK_NR, s, bias, out + i * out_stride, out_stride);
  }
}

static void qnnpack_qu8_quant_neon(const float *x, size_t n, float inv_scale, int32_t zp,
                                   uint8_t *out) {
  const float32x4_t vinv = vdupq_n_f32(inv_scale);
  const float32x4_t flo = vdupq_n_f32((float)(0 - zp)), fhi = vdupq_n_f32((float)(255 - zp));
  const int32x4_t vzp = vdupq_n_s32(zp);
  const float32x4_t zero = vdupq_n_f32(0.0f);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    int32x4_t q[4];
    for (int s = 0; s < 4; s++) {
      float32x4_t v = vld1q_f32(x + i + 4 * s);
      v = vbslq_f32(vceqq_f32(v, v), v, zero); /* NaN -> 0 -> zp */
      v = vminq_f32(vmaxq_f32(vmulq_f32(v, vinv), flo), fhi);
      q[s] = vaddq_s32(vcvtnq_s32_f32(v), vzp);
    }
    const uint16x8_t h0 = vcombine_u16(vqmovun_s32(q[0]), vqmovun_s32(q[1]));
    const uint16x8_t h1 = vcombine_u16(vqmovun_s32(q[2]), vqmovun_s32(q[3]));
    vst1q_u8(out + i, vcombine_u8(vqmovn_u16(h0), vqmovn_u16(h1)));
  }
  qnnpack_qu8_quant_scalar(x + i, n - i, inv_scale, zp, out + i);
}

static void qnnpack_f32_minmax_neon(const float *x, size_t n, float *lo, float *hi) {
  float32x4_t vmin = vdupq_n_f32(*lo), vmax = vdupq_n_f32(*hi);
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t v = vld1q_f32(x + i);
    const uint32x4_t ok = vceqq_f32(v, v); /* FMIN propagates NaN: mask them out */
    vmin = vminq_f32(vbslq_f32(ok, v, vmin), vmin);
    vmax = vmaxq_f32(vbslq_f32(ok, v, vmax), vmax);
  }
  float l = *lo, h = *hi;
  float mn = vminvq_f32(vmin), mx = vmaxvq_f32(vmax);
  qnnpack_f32_minmax_scalar(&mn, 1, &l, &h);
  qnnpack_f32_minmax_scalar(&mx, 1, &l, &h);
  qnnpack_f32_minmax_scalar(x + i, n - i, &l, &h);
  *lo = l;
  *hi = h;
}

/* QNNPACK's NEON dwconv: (x - zp) as int16 (vsubl), vmlal_s16 into int32. */
static void qnnpack_qu8_dwconv_ukernel_up16__neon(size_t channels, size_t taps,
                                                  const uint8_t *const *x, const int16_t *w,
                                                  size_t cstride, int32_t x_zp, const int32_t *bias,
                                                  int32_t *acc) {
  const uint8x8_t vzp = vdup_n_u8((uint8_t)x_zp);
  size_t c = 0;
  for (; c + 16 <= channels; c += 16) {
    int32x4_t a0 = vld1q_s32(bias + c), a1 = vld1q_s32(bias + c + 4);
    int32x4_t a2 = vld1q_s32(bias + c + 8), a3 = vld1q_s32(bias + c + 12);
    for (size_t t = 0; t < taps; t++) {
      const uint8x16_t xb = vld1q_u8(x[t] + c);
      const int16x8_t x0 = vreinterpretq_s16_u16(vsubl_u8(vget_low_u8(xb), vzp));
      const int16x8_t x1 = vreinterpretq_s16_u16(vsubl_u8(vget_high_u8(xb), vzp));
      const int16_t *wt = w + t * cstride + c;
      const int16x8_t w0 = vld1q_s16(wt), w1 = vld1q_s16(wt + 8);
      a0 = vmlal_s16(a0, vget_low_s16(x0), vget_low_s16(w0));
      a1 = vmlal_high_s16(a1, x0, w0);
      a2 = vmlal_s16(a2, vget_low_s16(x1), vget_low_s16(w1));
      a3 = vmlal_high_s16(a3, x1, w1);
    }
    vst1q_s32(acc + c, a0);
    vst1q_s32(acc + c + 4, a1);
    vst1q_s32(acc + c + 8, a2);
    vst1q_s32(acc + c + 12, a3);
  }
  qnnpack_qu8_dwconv_scalar_from(c, channels, taps, x, w, cstride, x_zp, bias, acc);
}

/* Clamp, round to nearest even, add the zero point and store 8 bytes (elementwise epilogue). */
static inline void qnnpack_neon_store8(uint8_t *out, float32x4_t v0, float32x4_t v1, float32x4_t flo,
                                       float32x4_t fhi, int32x4_t ozp) {
  const int32x4_t q0 = vaddq_s32(vcvtnq_s32_f32(vminq_f32(vmaxq_f32(v0, flo), fhi)), ozp);
  const int32x4_t q1 = vaddq_s32(vcvtnq_s32_f32(vminq_f32(vmaxq_f32(v1, flo), fhi)), ozp);
  vst1_u8(out, vqmovn_u16(vcombine_u16(vqmovun_s32(q0), vqmovun_s32(q1))));
}

static void qnnpack_qu8_vadd_ukernel__neon(size_t n, const uint8_t *a, const uint8_t *b,
                                           const qnnpack_add_params *p, uint8_t *out) {
  const uint8x8_t azp = vdup_n_u8((uint8_t)p->a_zp), bzp = vdup_n_u8((uint8_t)p->b_zp);
  const float32x4_t as = vdupq_n_f32(p->a_scale), bs = vdupq_n_f32(p->b_scale);
  const float32x4_t inv = vdupq_n_f32(p->inv_out);
  const float32x4_t flo = vdupq_n_f32((float)(p->qmin - p->out_zp));
  const float32x4_t fhi = vdupq_n_f32((float)(p->qmax - p->out_zp));
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const int16x8_t va = vreinterpretq_s16_u16(vsubl_u8(vld1_u8(a + i), azp));
    const int16x8_t vb = vreinterpretq_s16_u16(vsubl_u8(vld1_u8(b + i), bzp));
    float32x4_t v[2];
    for (int h = 0; h < 2; h++) {
      const int32x4_t a32 = h ? vmovl_high_s16(va) : vmovl_s16(vget_low_s16(va));
      const int32x4_t b32 = h ? vmovl_high_s16(vb) : vmovl_s16(vget_low_s16(vb));
      float32x4_t fa = vmulq_f32(vcvtq_f32_s32(a32), as), fb = vmulq_f32(vcvtq_f32_s32(b32), bs);
      QNNPACK_NO_CONTRACT(fa);
      QNNPACK_NO_CONTRACT(fb);
      v[h] = vmulq_f32(vaddq_f32(fa, fb), inv);
    }
    qnnpack_neon_store8(out + i, v[0], v[1], flo, fhi, vdupq_n_s32(p->out_zp));
  }
  qnnpack_qu8_vadd_ukernel__scalar(n - i, a + i, b + i, p, out + i);
}

static void qnnpack_qu8_vmul_ukernel__neon(size_t n, const uint8_t *a, const uint8_t *b,
                                           const qnnpack_mul_params *p, uint8_t *out) {
  const uint8x8_t azp = vdup_n_u8((uint8_t)p->a_zp), bzp = vdup_n_u8((uint8_t)p->b_zp);
  const float32x4_t mult = vdupq_n_f32(p->mult);
  const float32x4_t lo = vdupq_n_f32((float)(p->qmin - p->out_zp)), hi = vdupq_n_f32((float)(p->qmax - p->out_zp));
  for (; n >= 8; n -= 8, a += 8, b += 8, out += 8) {
    /* uint8 - zp wraps in uint16; reinterpreted as int16 it is the exact difference */
    const int16x8_t va = vreinterpretq_s16_u16(vsubl_u8(vld1_u8(a), azp));
    const int16x8_t vb = vreinterpretq_s16_u16(vsubl_u8(vld1_u8(b), bzp));
    const int32x4_t p0 = vmull_s16(vget_low_s16(va), vget_low_s16(vb)), p1 = vmull_high_s16(va, vb);
    qnnpack_neon_store8(out, vmulq_f32(vcvtq_f32_s32(p0), mult), vmulq_f32(vcvtq_f32_s32(p1), mult), lo, hi,
                        vdupq_n_s32(p->out_zp));
  }
  qnnpack_qu8_vmul_ukernel__scalar(n, a, b, p, out);
}

const qnnpack_isa_kernels qnnpack_kernels_neon = {
    .mr = 4,
    .add = qnnpack_qu8_vadd_ukernel__neon,
    .mul = qnnpack_qu8_vmul_ukernel__neon,
    .dwconv = qnnpack_qu8_dwconv_ukernel_up16__neon,
    .gemm = qnnpack_qu8_gemm_ukernel_4x16c4__neon,
    .requant = qnnpack_qu8_requant_neon,
    .dequant = qnnpack_qu8_dequant_neon,
    .acc_init_rows = qnnpack_qu8_acc_init_rows_neon,
    .dequant_rows = qnnpack_qu8_dequant_rows_neon,
    .quant = qnnpack_qu8_quant_neon,
    .minmax = qnnpack_f32_minmax_neon,
};

const qnnpack_isa_kernels qnnpack_kernels_neondot = {
    .mr = 4,
    .add = qnnpack_qu8_vadd_ukernel__neon,
    .mul = qnnpack_qu8_vmul_ukernel__neon,
    .dwconv = qnnpack_qu8_dwconv_ukernel_up16__neon,
    .gemm = qnnpack_qu8_gemm_ukernel_4x16c4__neondot,
    .requant = qnnpack_qu8_requant_neon,
    .dequant = qnnpack_qu8_dequant_neon,
    .acc_init_rows = qnnpack_qu8_acc_init_rows_neon,
    .dequant_rows = qnnpack_qu8_dequant_rows_neon,
    .quant = qnnpack_qu8_quant_neon,
    .minmax = qnnpack_f32_minmax_neon,
};
#else
typedef int qnnpack_gemm_neon_unused; /* ISO C forbids an empty translation unit */
#endif
