/*
 * AArch64 f32-qc8w microkernel: the phase sums of f32_qc8w.c (a lane per
 * (channel, k mod 4) pair, vfmaq_f32 in k order per lane, fused like fmaf).
 * A group's 16 packed bytes (4 k of 4 channels) widen (vmovl twice) and
 * convert to four float32x4, one channel's 4 phases each, once per tile for
 * every row of it; x[p .. p + 3] of a row is one vector load, lane q holding
 * the k of weight lane q. Tiles: 4 rows x 4 channels per pass (16
 * accumulators), or one row x 16 channels. NEON is baseline on AArch64: the
 * same code serves the neon and neondot paths.
 */
#include "xnnpack_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>

/* One packed row of MR rows x NG groups (group g at w + g * 16; xv the rows' activations). */
__attribute__((always_inline)) static inline void xnn_f32_qc8w_neon_step(const size_t MR, const size_t NG,
                                                                         const float32x4_t *xv, const int8_t *w,
                                                                         float32x4_t c[XNN_F32_QC8W_MR_MAX][16]) {
  XNN_UNROLL
  for (size_t g = 0; g < NG; g++) {
    const int8x16_t v = vld1q_s8(w + g * 16); /* byte loads: the packed buffer has no alignment promise */
    const int16x8_t lo = vmovl_s8(vget_low_s8(v)), hi = vmovl_high_s8(v);
    float32x4_t wf[4];
    wf[0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
    wf[1] = vcvtq_f32_s32(vmovl_high_s16(lo));
    wf[2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
    wf[3] = vcvtq_f32_s32(vmovl_high_s16(hi));
    XNN_UNROLL
    for (size_t r = 0; r < MR; r++)
      XNN_UNROLL
      for (size_t h = 0; h < 4; h++) c[r][4 * g + h] = vfmaq_f32(c[r][4 * g + h], xv[r], wf[h]);
  }
}

__attribute__((always_inline)) static inline void xnn_f32_qc8w_neon_body(const size_t MR, const size_t NG, size_t k,
                                                                         const float *x, size_t x_stride,
                                                                         const int8_t *w, float *acc) {
  float32x4_t c[XNN_F32_QC8W_MR_MAX][16], xv[XNN_F32_QC8W_MR_MAX];
  XNN_UNROLL
  for (size_t r = 0; r < MR; r++)
    XNN_UNROLL
    for (size_t i = 0; i < 4 * NG; i++) c[r][i] = vdupq_n_f32(0.0f);
  const size_t k4 = k & ~(size_t)3;
  for (size_t p = 0; p < k4; p += 4) {
    XNN_UNROLL
    for (size_t r = 0; r < MR; r++) xv[r] = vld1q_f32(x + r * x_stride + p);
    xnn_f32_qc8w_neon_step(MR, NG, xv, w + p * 16, c);
  }
  if (k4 < k) {
    float xt[4];
    XNN_UNROLL
    for (size_t r = 0; r < MR; r++) {
      xnn_f32_qc8w_x_tail(x + r * x_stride, k4, k, xt);
      xv[r] = vld1q_f32(xt);
    }
    xnn_f32_qc8w_neon_step(MR, NG, xv, w + k4 * 16, c);
  }
  XNN_UNROLL
  for (size_t r = 0; r < MR; r++)
    XNN_UNROLL
    for (size_t i = 0; i < 4 * NG; i++) vst1q_f32(acc + r * XNN_F32_QC8W_ACC_STRIDE + 4 * i, c[r][i]);
}

void xnn_f32_qc8w_ukernel_4x16c4__neon(size_t mr, size_t nb, size_t k, const float *x, size_t x_stride,
                                       const int8_t *w, size_t w_block_stride, float *acc) {
  for (size_t b = 0; b < nb; b++) {
    const int8_t *wb = w + b * w_block_stride;
    if (mr == 1) { /* a whole block per pass: 16 accumulators */
      xnn_f32_qc8w_neon_body(1, 4, k, x, x_stride, wb, acc + b * 64);
      continue;
    }
    for (size_t g = 0; g < 4; g++) /* several rows: a pass per group of 4 channels */
      switch (mr) {
        case 2: xnn_f32_qc8w_neon_body(2, 1, k, x, x_stride, wb + g * 16, acc + b * 64 + g * 16); break;
        case 3: xnn_f32_qc8w_neon_body(3, 1, k, x, x_stride, wb + g * 16, acc + b * 64 + g * 16); break;
        default: xnn_f32_qc8w_neon_body(4, 1, k, x, x_stride, wb + g * 16, acc + b * 64 + g * 16); break;
      }
  }
}

#else
typedef int xnn_f32_qc8w_arm_unused; /* ISO C forbids an empty translation unit */
#endif
