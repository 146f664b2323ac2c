/*
 * x86-64 f32-qc8w microkernels: the phase sums of f32_qc8w.c (a lane per
 * (channel, k mod 4) pair, fused multiply-adds in k order per lane).
 *   AVX-512  8 rows x 8 channels per pass (one zmm = a group of 4 channels x
 *            4 phases), or one row x 64 channels (16 independent chains);
 *   AVX2     4 rows x 4 channels per pass (two ymm of 2 channels x 4 phases
 *            per row), or one row x 16 channels.
 * A group's 16 packed bytes (4 k of 4 channels) sign-extend with one vpmovsxbd
 * and convert with one vcvtdq2ps, once per tile, for every row of it; the
 * activations x[p .. p + 3] of a row are one 128-bit broadcast, lane i holding
 * x[p + i % 4], the k of weight lane i. Row and group counts are compile-time
 * constants in each instantiation.
 */
#include "xnnpack_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* ------------------------------------------------------------------ AVX2 -- */

/* 8 weights (2 channels x 4 k) at w as floats. */
#define XNN_QC8W_W8_PS(w) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(w))))

/* One packed row of MR rows x NG groups (group g at w + g * 16; xv the rows' activations). */
__attribute__((always_inline)) QP_TARGET_AVX2 static inline void xnn_f32_qc8w_avx2_step(
    const size_t MR, const size_t NG, const __m256 *xv, const int8_t *w, __m256 c[XNN_F32_QC8W_MR_MAX][4][2]) {
  XNN_UNROLL
  for (size_t g = 0; g < NG; g++)
    XNN_UNROLL
    for (size_t h = 0; h < 2; h++) {
      const __m256 wf = XNN_QC8W_W8_PS(w + g * 16 + h * 8);
      XNN_UNROLL
      for (size_t r = 0; r < MR; r++) c[r][g][h] = _mm256_fmadd_ps(xv[r], wf, c[r][g][h]);
    }
}

/* Phase sums of MR rows x NG groups of one block (w: the first group's bytes in packed row 0). */
__attribute__((always_inline)) QP_TARGET_AVX2 static inline void xnn_f32_qc8w_avx2_body(
    const size_t MR, const size_t NG, size_t k, const float *x, size_t x_stride, const int8_t *w, float *acc) {
  __m256 c[XNN_F32_QC8W_MR_MAX][4][2], xv[XNN_F32_QC8W_MR_MAX];
  XNN_UNROLL
  for (size_t r = 0; r < MR; r++)
    XNN_UNROLL
    for (size_t g = 0; g < NG; g++) c[r][g][0] = c[r][g][1] = _mm256_setzero_ps();
  const size_t k4 = k & ~(size_t)3;
  for (size_t p = 0; p < k4; p += 4) {
    XNN_UNROLL
    for (size_t r = 0; r < MR; r++) xv[r] = _mm256_broadcast_ps((const __m128 *)(x + r * x_stride + p));
    xnn_f32_qc8w_avx2_step(MR, NG, xv, w + p * 16, c);
  }
  if (k4 < k) {
    float xt[4];
    XNN_UNROLL
    for (size_t r = 0; r < MR; r++) {
      xnn_f32_qc8w_x_tail(x + r * x_stride, k4, k, xt);
      xv[r] = _mm256_broadcast_ps((const __m128 *)xt);
    }
    xnn_f32_qc8w_avx2_step(MR, NG, xv, w + k4 * 16, c);
  }
  XNN_UNROLL
  for (size_t r = 0; r < MR; r++)
    XNN_UNROLL
    for (size_t g = 0; g < NG; g++) {
      _mm256_storeu_ps(acc + r * XNN_F32_QC8W_ACC_STRIDE + g * 16, c[r][g][0]);
      _mm256_storeu_ps(acc + r * XNN_F32_QC8W_ACC_STRIDE + g * 16 + 8, c[r][g][1]);
    }
}

/* Several rows: a pass per group of 4 channels (at most 8 of the 16 ymm hold accumulators, 4 the
 * rows' activations); one row: a whole block per pass (8 accumulators, 8 independent chains). */
#define XNN_QC8W_AVX2_GROUP(MR, b, g) \
  xnn_f32_qc8w_avx2_body(MR, 1, k, x, x_stride, w + (b) * w_block_stride + (g) * 16, acc + (b) * 64 + (g) * 16)

QP_TARGET_AVX2 void xnn_f32_qc8w_ukernel_4x16c4__avx2(size_t mr, size_t nb, size_t k, const float *x,
                                                      size_t x_stride, const int8_t *w, size_t w_block_stride,
                                                      float *acc) {
  for (size_t b = 0; b < nb; b++) {
    if (mr == 1) {
      xnn_f32_qc8w_avx2_body(1, 4, k, x, x_stride, w + b * w_block_stride, acc + b * 64);
      continue;
    }
    for (size_t g = 0; g < 4; g++) {
      switch (mr) {
        case 2: XNN_QC8W_AVX2_GROUP(2, b, g); break;
        case 3: XNN_QC8W_AVX2_GROUP(3, b, g); break;
        default: XNN_QC8W_AVX2_GROUP(4, b, g); break;
      }
    }
  }
}
#undef XNN_QC8W_AVX2_GROUP

/* --------------------------------------------------------------- AVX-512 -- */

/* Software prefetch distance in the weight stream of each block (bytes, 32 packed rows = 128 k
 * ahead): at 4096 x 4096, one line per block and packed row, M = 1 0.64-0.67 -> 0.60-0.61 ms,
 * M = 8 3.5-4.0 -> 2.9-3.0 ms (1024 and 8192 bytes ahead were no better). A prefetch past the
 * end of the buffer never faults. */
#define XNN_QC8W_PREFETCH 2048

/* One packed row of MR rows x NG groups (group g of the tile at w + (g / 4) * w_block_stride +
 * (g % 4) * 16; xv the rows' activations). */
__attribute__((always_inline)) QP_TARGET_AVX512 static inline void xnn_f32_qc8w_avx512_step(
    const size_t MR, const size_t NG, const __m512 *xv, const int8_t *w, size_t w_block_stride,
    __m512 c[XNN_F32_QC8W_MR_MAX][16]) {
  XNN_UNROLL
  for (size_t g = 0; g < NG; g++) {
    if (g % 4 == 0) _mm_prefetch((const char *)(w + (g / 4) * w_block_stride + XNN_QC8W_PREFETCH), _MM_HINT_T0);
    const __m128i v = _mm_loadu_si128((const __m128i *)(w + (g / 4) * w_block_stride + (g % 4) * 16));
    const __m512 wf = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v));
    XNN_UNROLL
    for (size_t r = 0; r < MR; r++) c[r][g] = _mm512_fmadd_ps(xv[r], wf, c[r][g]);
  }
}

/* The full packed row at p (x[r][p .. p + 3] all inside the rows). */
__attribute__((always_inline)) QP_TARGET_AVX512 static inline void xnn_f32_qc8w_avx512_row4(
    const size_t MR, const size_t NG, size_t p, const float *x, size_t x_stride, const int8_t *w,
    size_t w_block_stride, __m512 c[XNN_F32_QC8W_MR_MAX][16]) {
  __m512 xv[XNN_F32_QC8W_MR_MAX];
  XNN_UNROLL
  for (size_t r = 0; r < MR; r++) xv[r] = _mm512_broadcast_f32x4(_mm_loadu_ps(x + r * x_stride + p));
  xnn_f32_qc8w_avx512_step(MR, NG, xv, w + p * 16, w_block_stride, c);
}

__attribute__((always_inline)) QP_TARGET_AVX512 static inline void xnn_f32_qc8w_avx512_body(
    const size_t MR, const size_t NG, size_t k, const float *x, size_t x_stride, const int8_t *w,
    size_t w_block_stride, float *acc) {
  __m512 c[XNN_F32_QC8W_MR_MAX][16], xv[XNN_F32_QC8W_MR_MAX];
  XNN_UNROLL
  for (size_t r = 0; r < MR; r++)
    XNN_UNROLL
    for (size_t g = 0; g < NG; g++) c[r][g] = _mm512_setzero_ps();
  const size_t k4 = k & ~(size_t)3;
  size_t p = 0;
  /* two packed rows per iteration: at M = 1 the loop counter and branch were ~6% of the time */
  for (; p + 8 <= k4; p += 8) {
    xnn_f32_qc8w_avx512_row4(MR, NG, p, x, x_stride, w, w_block_stride, c);
    xnn_f32_qc8w_avx512_row4(MR, NG, p + 4, x, x_stride, w, w_block_stride, c);
  }
  if (p < k4) xnn_f32_qc8w_avx512_row4(MR, NG, p, x, x_stride, w, w_block_stride, c);
  if (k4 < k) {
    float xt[4];
    XNN_UNROLL
    for (size_t r = 0; r < MR; r++) {
      xnn_f32_qc8w_x_tail(x + r * x_stride, k4, k, xt);
      xv[r] = _mm512_broadcast_f32x4(_mm_loadu_ps(xt));
    }
    xnn_f32_qc8w_avx512_step(MR, NG, xv, w + k4 * 16, w_block_stride, c);
  }
  XNN_UNROLL
  for (size_t r = 0; r < MR; r++)
    XNN_UNROLL
    for (size_t g = 0; g < NG; g++) _mm512_storeu_ps(acc + r * XNN_F32_QC8W_ACC_STRIDE + g * 16, c[r][g]);
}

QP_TARGET_AVX512 void xnn_f32_qc8w_ukernel_8x16c4__avx512(size_t mr, size_t nb, size_t k, const float *x,
                                                          size_t x_stride, const int8_t *w, size_t w_block_stride,
                                                          float *acc) {
  if (mr == 1) { /* 4 groups per block: 4, 8, 12 or 16 independent FMA chains */
    switch (nb) {
      case 1: xnn_f32_qc8w_avx512_body(1, 4, k, x, x_stride, w, w_block_stride, acc); break;
      case 2: xnn_f32_qc8w_avx512_body(1, 8, k, x, x_stride, w, w_block_stride, acc); break;
      case 3: xnn_f32_qc8w_avx512_body(1, 12, k, x, x_stride, w, w_block_stride, acc); break;
      default: xnn_f32_qc8w_avx512_body(1, 16, k, x, x_stride, w, w_block_stride, acc); break;
    }
    return;
  }
  /* Several rows: half a block (2 groups, 8 channels) per pass, so 8 rows fit the register file
   * (16 accumulators + 8 activation vectors) and the weights are converted once for 8 rows. */
  for (size_t b = 0; b < nb; b++)
    for (size_t half = 0; half < 2; half++) {
      const int8_t *wh = w + b * w_block_stride + half * 32;
      float *ah = acc + b * 64 + half * 32;
      XNN_DISPATCH_MR8(mr, xnn_f32_qc8w_avx512_body, 2, k, x, x_stride, wh, w_block_stride, ah)
    }
}

#else
typedef int xnn_f32_qc8w_x86_unused; /* ISO C forbids an empty translation unit */
#endif
