/*
 * x86-64 f32-qb4w microkernels (4 rows x 1 output channel), in the canonical
 * 16-lane order of qb4w.c:
 *   AVX-512  one zmm accumulator per row (lanes 0-15);
 *   AVX2     two ymm accumulators per row (lanes 0-7 and 8-15).
 * 16 int4 weights (8 bytes) are unpacked once per step and used by every row.
 * The row count is a constant in each instantiation: a one-row call (M = 1,
 * the decode case) does one row of work.
 */
#include "xnnpack_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* 8 packed bytes -> 16 int8 weights in k order (low nibble = even k), sign-extended from 4 bits. */
QP_TARGET_AVX2 static inline __m128i xnn_unpack_int4x16(const uint8_t *w) {
  const __m128i bytes = _mm_loadl_epi64((const __m128i *)w);
  const __m128i mask = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
  const __m128i lo = _mm_and_si128(bytes, mask), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  return _mm_sub_epi8(_mm_xor_si128(_mm_unpacklo_epi8(lo, hi), eight), eight); /* (v ^ 8) - 8 */
}

/* The canonical tail of the lane tree on 4 lanes: (l, l + 2), then (0, 1). */
QP_TARGET_AVX2 static inline float xnn_reduce4(__m128 s4) {
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

/* ------------------------------------------------------------------ AVX2 -- */

__attribute__((always_inline)) QP_TARGET_AVX2 static inline void xnn_qb4w_avx2_body(
    const size_t MR, size_t k, const float *x, size_t x_stride, const uint8_t *w, const float *scales,
    size_t group_size, float *res) {
  __m256 tot[XNN_QB4W_MR][2];
  for (size_t r = 0; r < MR; r++) tot[r][0] = tot[r][1] = _mm256_setzero_ps();
  for (size_t g0 = 0; g0 < k; g0 += group_size) {
    __m256 acc[XNN_QB4W_MR][2];
    for (size_t r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (size_t p = g0; p < g0 + group_size; p += 16) {
      const __m128i q = xnn_unpack_int4x16(w + p / 2);
      const __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
      const __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
      for (size_t r = 0; r < MR; r++) {
        acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * x_stride + p), w0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * x_stride + p + 8), w1, acc[r][1]);
      }
    }
    const __m256 s = _mm256_set1_ps(scales[g0 / group_size]);
    for (size_t r = 0; r < MR; r++) {
      tot[r][0] = _mm256_fmadd_ps(acc[r][0], s, tot[r][0]);
      tot[r][1] = _mm256_fmadd_ps(acc[r][1], s, tot[r][1]);
    }
  }
  for (size_t r = 0; r < MR; r++) {
    const __m256 s8 = _mm256_add_ps(tot[r][0], tot[r][1]);
    res[r] = xnn_reduce4(_mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1)));
  }
}

QP_TARGET_AVX2 void xnn_f32_qb4w_ukernel_4x1__avx2(size_t mr, size_t k, const float *x, size_t x_stride,
                                                   const uint8_t *w, const float *scales, size_t group_size,
                                                   float *res) {
  XNN_DISPATCH_MR4(mr, xnn_qb4w_avx2_body, k, x, x_stride, w, scales, group_size, res);
}

/* --------------------------------------------------------------- AVX-512 -- */

__attribute__((always_inline)) QP_TARGET_AVX512 static inline void xnn_qb4w_avx512_body(
    const size_t MR, size_t k, const float *x, size_t x_stride, const uint8_t *w, const float *scales,
    size_t group_size, float *res) {
  __m512 tot[XNN_QB4W_MR];
  for (size_t r = 0; r < MR; r++) tot[r] = _mm512_setzero_ps();
  for (size_t g0 = 0; g0 < k; g0 += group_size) {
    __m512 acc[XNN_QB4W_MR];
    for (size_t r = 0; r < MR; r++) acc[r] = _mm512_setzero_ps();
    for (size_t p = g0; p < g0 + group_size; p += 16) {
      const __m512 wv = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(xnn_unpack_int4x16(w + p / 2)));
      for (size_t r = 0; r < MR; r++) acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(x + r * x_stride + p), wv, acc[r]);
    }
    const __m512 s = _mm512_set1_ps(scales[g0 / group_size]);
    for (size_t r = 0; r < MR; r++) tot[r] = _mm512_fmadd_ps(acc[r], s, tot[r]);
  }
  for (size_t r = 0; r < MR; r++) {
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(tot[r]),
                                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(tot[r]), 1)));
    res[r] = xnn_reduce4(_mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1)));
  }
}

QP_TARGET_AVX512 void xnn_f32_qb4w_ukernel_4x1__avx512(size_t mr, size_t k, const float *x, size_t x_stride,
                                                       const uint8_t *w, const float *scales, size_t group_size,
                                                       float *res) {
  XNN_DISPATCH_MR4(mr, xnn_qb4w_avx512_body, k, x, x_stride, w, scales, group_size, res);
}

#else
typedef int xnn_qb4w_x86_unused; /* ISO C forbids an empty translation unit */
#endif
