/*
 * AArch64 f32-qb4w microkernel (4 rows x 1 output channel), in the canonical
 * 16-lane order of qb4w.c: four float32x4 accumulators per row (lanes 0-3,
 * 4-7, 8-11, 12-15) and vfmaq_f32 (fused, like fmaf). NEON is baseline on
 * AArch64, so the same code serves the neon and neondot paths.
 */
#include "xnnpack_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>

/* 8 packed bytes -> 16 weights as four float32x4 in k order (low nibble = even k). */
static inline void xnn_unpack_int4x16_f32(const uint8_t *w, float32x4_t out[4]) {
  const uint8x8_t bytes = vld1_u8(w);
  const uint8x8x2_t z = vzip_u8(vand_u8(bytes, vdup_n_u8(0x0f)), vshr_n_u8(bytes, 4));
  const int8x16_t eight = vdupq_n_s8(8);
  const int8x16_t q = vsubq_s8(veorq_s8(vreinterpretq_s8_u8(vcombine_u8(z.val[0], z.val[1])), eight), eight);
  const int16x8_t lo = vmovl_s8(vget_low_s8(q)), hi = vmovl_s8(vget_high_s8(q));
  out[0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
  out[1] = vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo)));
  out[2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
  out[3] = vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi)));
}

__attribute__((always_inline)) static inline void xnn_qb4w_neon_body(const size_t MR, size_t k, const float *x,
                                                                     size_t x_stride, const uint8_t *w,
                                                                     const float *scales, size_t group_size,
                                                                     float *res) {
  float32x4_t tot[XNN_QB4W_MR][4];
  for (size_t r = 0; r < MR; r++)
    for (int v = 0; v < 4; v++) tot[r][v] = vdupq_n_f32(0.0f);
  for (size_t g0 = 0; g0 < k; g0 += group_size) {
    float32x4_t acc[XNN_QB4W_MR][4];
    for (size_t r = 0; r < MR; r++)
      for (int v = 0; v < 4; v++) acc[r][v] = vdupq_n_f32(0.0f);
    for (size_t p = g0; p < g0 + group_size; p += 16) {
      float32x4_t wv[4];
      xnn_unpack_int4x16_f32(w + p / 2, wv);
      for (size_t r = 0; r < MR; r++)
        for (int v = 0; v < 4; v++) acc[r][v] = vfmaq_f32(acc[r][v], vld1q_f32(x + r * x_stride + p + 4 * v), wv[v]);
    }
    const float32x4_t s = vdupq_n_f32(scales[g0 / group_size]);
    for (size_t r = 0; r < MR; r++)
      for (int v = 0; v < 4; v++) tot[r][v] = vfmaq_f32(tot[r][v], acc[r][v], s);
  }
  for (size_t r = 0; r < MR; r++) {
    /* lane tree: (l, l + 8) -> [0-3] and [4-7]; (l, l + 4); (l, l + 2); (0, 1) */
    const float32x4_t s4 = vaddq_f32(vaddq_f32(tot[r][0], tot[r][2]), vaddq_f32(tot[r][1], tot[r][3]));
    const float32x2_t s2 = vadd_f32(vget_low_f32(s4), vget_high_f32(s4));
    res[r] = vget_lane_f32(s2, 0) + vget_lane_f32(s2, 1);
  }
}

void xnn_f32_qb4w_ukernel_4x1__neon(size_t mr, size_t k, const float *x, size_t x_stride, const uint8_t *w,
                                    const float *scales, size_t group_size, float *res) {
  XNN_DISPATCH_MR4(mr, xnn_qb4w_neon_body, k, x, x_stride, w, scales, group_size, res);
}

#else
typedef int xnn_qb4w_arm_unused; /* ISO C forbids an empty translation unit */
#endif
