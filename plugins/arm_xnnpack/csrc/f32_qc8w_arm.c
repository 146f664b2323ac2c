/*
 * AArch64 f32-qc8w microkernel (4 rows x 16 channels, k in steps of 4): four
 * float32x4 accumulators per row, one lane per output channel, vfmaq_f32 in k
 * order exactly as the scalar path (f32_qc8w.c). Byte q of each channel's
 * 32-bit word is sign-extended by shifting it to the top and back. NEON is
 * baseline on AArch64: the same code serves the neon and neondot paths.
 */
#include "xnnpack_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>

#define XNN_BYTE_Q_F32(v, Q) vcvtq_f32_s32(vshrq_n_s32(vshlq_n_s32((v), 24 - 8 * (Q)), 24))

__attribute__((always_inline)) static inline void xnn_f32_qc8w_neon_body(const size_t MR, size_t k, const float *x,
                                                                         size_t x_stride, const int8_t *w,
                                                                         float *acc) {
  float32x4_t c[XNN_F32_QC8W_MR][4];
  for (size_t r = 0; r < MR; r++)
    for (int b = 0; b < 4; b++) c[r][b] = vdupq_n_f32(0.0f);
  for (size_t p = 0; p < k; p += 4, w += 64) {
    int32x4_t v[4];
    for (int b = 0; b < 4; b++) v[b] = vreinterpretq_s32_s8(vld1q_s8(w + 16 * b));
    const size_t steps = k - p < 4 ? k - p : 4; /* the padded k of the last row are skipped */
#define XNN_STEP(Q)                                                                         \
  if ((Q) < steps) {                                                                        \
    float32x4_t wq[4];                                                                      \
    for (int b = 0; b < 4; b++) wq[b] = XNN_BYTE_Q_F32(v[b], Q);                            \
    for (size_t r = 0; r < MR; r++) {                                                       \
      const float32x4_t xv = vdupq_n_f32(x[r * x_stride + p + (Q)]);                        \
      for (int b = 0; b < 4; b++) c[r][b] = vfmaq_f32(c[r][b], xv, wq[b]);                  \
    }                                                                                       \
  }
    XNN_STEP(0) XNN_STEP(1) XNN_STEP(2) XNN_STEP(3)
#undef XNN_STEP
  }
  for (size_t r = 0; r < MR; r++)
    for (int b = 0; b < 4; b++) vst1q_f32(acc + r * 16 + 4 * b, c[r][b]);
}

void xnn_f32_qc8w_ukernel_4x16c4__neon(size_t mr, size_t k, const float *x, size_t x_stride, const int8_t *w,
                                       float *acc) {
  XNN_DISPATCH_MR4(mr, xnn_f32_qc8w_neon_body, k, x, x_stride, w, acc);
}

#else
typedef int xnn_f32_qc8w_arm_unused; /* ISO C forbids an empty translation unit */
#endif
