/*
 * AArch64 f32-qb4w microkernel, in the canonical order of qb4w.c (one lane per
 * output channel, fused multiply-adds in k order within a group): up to 4 rows
 * x 16 channels (1 block; 2 blocks with one row). A 16-channel block is four
 * float32x4 vectors; the weights of one k are unpacked once and used by every
 * row of the tile. vfmaq_f32 is fused like fmaf. NEON is baseline on AArch64,
 * so the same code serves the neon and neondot paths (no integer dot product
 * in an fp32 sum).
 */
#include "xnnpack_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>

/* k = 8 kb + Q of 4 channels: nibble Q to the top of each 32-bit word, arithmetic shift back
 * (sign extension from 4 bits), convert (exact). Q is a literal: the shifts take immediates. */
#define XNN_QB4W_NEON_W(v, Q) vcvtq_f32_s32(vshrq_n_s32(vshlq_n_s32((v), 28 - 4 * (Q)), 28))

__attribute__((always_inline)) static inline void xnn_qb4w_neon_body(
    const size_t MR, const size_t NB, size_t k, size_t group_size, const float *x, size_t x_stride,
    const uint8_t *w, size_t w_block_stride, const float *scales, size_t s_block_stride, float *res) {
  XNN_UNROLL
  for (size_t r = 0; r < MR; r++)
    XNN_UNROLL
    for (size_t j = 0; j < NB * 16; j += 4) vst1q_f32(res + r * XNN_QB4W_NR_MAX + j, vdupq_n_f32(0.0f));
  for (size_t g0 = 0; g0 < k; g0 += group_size) {
    float32x4_t acc[XNN_QB4W_MR_MAX][XNN_QB4W_NB_MAX][4];
    XNN_UNROLL
    for (size_t r = 0; r < MR; r++)
      XNN_UNROLL
      for (size_t b = 0; b < NB; b++)
        XNN_UNROLL
        for (size_t h = 0; h < 4; h++) acc[r][b][h] = vdupq_n_f32(0.0f);
    for (size_t p = g0; p < g0 + group_size; p += 8) {
      int32x4_t v[XNN_QB4W_NB_MAX][4];
      XNN_UNROLL
      for (size_t b = 0; b < NB; b++)
        XNN_UNROLL
        for (size_t h = 0; h < 4; h++)  /* byte loads: the packed buffer has no alignment promise */
          v[b][h] = vreinterpretq_s32_u8(vld1q_u8(w + b * w_block_stride + p * 8 + 16 * h));
#define XNN_STEP(Q)                                                                     \
  XNN_UNROLL                                                                            \
  for (size_t b = 0; b < NB; b++) {                                                     \
    float32x4_t wq[4];                                                                  \
    XNN_UNROLL                                                                          \
    for (size_t h = 0; h < 4; h++) wq[h] = XNN_QB4W_NEON_W(v[b][h], Q);                 \
    XNN_UNROLL                                                                          \
    for (size_t r = 0; r < MR; r++) {                                                   \
      const float32x4_t xv = vdupq_n_f32(x[r * x_stride + p + (Q)]);                    \
      XNN_UNROLL                                                                        \
      for (size_t h = 0; h < 4; h++) acc[r][b][h] = vfmaq_f32(acc[r][b][h], xv, wq[h]); \
    }                                                                                   \
  }
      XNN_STEP(0) XNN_STEP(1) XNN_STEP(2) XNN_STEP(3) XNN_STEP(4) XNN_STEP(5) XNN_STEP(6) XNN_STEP(7)
#undef XNN_STEP
    }
    const float *sg = scales + (g0 / group_size) * 16;
    XNN_UNROLL
    for (size_t b = 0; b < NB; b++)
      XNN_UNROLL
      for (size_t h = 0; h < 4; h++) {
        const float32x4_t s = vld1q_f32(sg + b * s_block_stride + h * 4);
        XNN_UNROLL
        for (size_t r = 0; r < MR; r++) {
          float *t = res + r * XNN_QB4W_NR_MAX + b * 16 + h * 4;
          vst1q_f32(t, vfmaq_f32(vld1q_f32(t), acc[r][b][h], s));
        }
      }
  }
}

void xnn_f32_qb4w_ukernel_4x16__neon(size_t mr, size_t nb, size_t k, size_t group_size, const float *x,
                                     size_t x_stride, const uint8_t *w, size_t w_block_stride, const float *scales,
                                     size_t s_block_stride, float *res) {
  XNN_QB4W_DISPATCH_4X16(xnn_qb4w_neon_body)
}

#else
typedef int xnn_qb4w_arm_unused; /* ISO C forbids an empty translation unit */
#endif
