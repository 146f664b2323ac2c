/*
 * AArch64 depthwise accumulation (16 channels of one output pixel): per tap,
 * widen 16 int8 activations to int16, subtract the zero point (|x - zp| <=
 * 255 fits int16), widen to int32 and multiply-accumulate exactly with the
 * [tap][C] int32 weights (vmlaq_s32). Padding taps (NULL) are skipped.
 */
#include "xnnpack_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>

static void xnn_qs8_dwconv_acc_16__neon(size_t taps, const int8_t *const *rows, const int32_t *w, size_t w_stride,
                                        int32_t x_zp, int32_t *acc) {
  const int16x8_t zp = vdupq_n_s16((int16_t)x_zp);
  int32x4_t a[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
  for (size_t t = 0; t < taps; t++, w += w_stride) {
    if (!rows[t]) continue;
    const int8x16_t x = vld1q_s8(rows[t]);
    const int16x8_t lo = vsubq_s16(vmovl_s8(vget_low_s8(x)), zp), hi = vsubq_s16(vmovl_s8(vget_high_s8(x)), zp);
    a[0] = vmlaq_s32(a[0], vmovl_s16(vget_low_s16(lo)), vld1q_s32(w));
    a[1] = vmlaq_s32(a[1], vmovl_s16(vget_high_s16(lo)), vld1q_s32(w + 4));
    a[2] = vmlaq_s32(a[2], vmovl_s16(vget_low_s16(hi)), vld1q_s32(w + 8));
    a[3] = vmlaq_s32(a[3], vmovl_s16(vget_high_s16(hi)), vld1q_s32(w + 12));
  }
  for (int v = 0; v < 4; v++) vst1q_s32(acc + 4 * v, a[v]);
}

xnn_dwconv_acc_fn xnn_dwconv_acc_for(int isa) {
  return isa == QP_ISA_NEON || isa == QP_ISA_NEONDOT ? xnn_qs8_dwconv_acc_16__neon : NULL;
}

#else
typedef int xnn_dwconv_arm_unused; /* ISO C forbids an empty translation unit */
#endif
