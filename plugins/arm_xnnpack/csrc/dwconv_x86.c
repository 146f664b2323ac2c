/*
 * x86-64 depthwise accumulation (16 channels of one output pixel): per tap,
 * sign-extend 16 int8 activations to int32, subtract the zero point and add
 * the exact products with the [tap][C] int32 weights (vpmulld). AVX2 as two
 * halves of 8 channels, AVX-512 as one register. Padding taps (NULL) skipped.
 */
#include "xnnpack_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

QP_TARGET_AVX2 static void xnn_qs8_dwconv_acc_16__avx2(size_t taps, const int8_t *const *rows, const int32_t *w,
                                                       size_t w_stride, int32_t x_zp, int32_t *acc) {
  const __m256i zp = _mm256_set1_epi32(x_zp);
  __m256i a0 = _mm256_setzero_si256(), a1 = a0;
  for (size_t t = 0; t < taps; t++, w += w_stride) {
    if (!rows[t]) continue;
    const __m128i x = _mm_loadu_si128((const __m128i *)rows[t]);
    const __m256i x0 = _mm256_sub_epi32(_mm256_cvtepi8_epi32(x), zp);
    const __m256i x1 = _mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_srli_si128(x, 8)), zp);
    a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(x0, _mm256_loadu_si256((const __m256i *)w)));
    a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(x1, _mm256_loadu_si256((const __m256i *)(w + 8))));
  }
  _mm256_storeu_si256((__m256i *)acc, a0);
  _mm256_storeu_si256((__m256i *)(acc + 8), a1);
}

QP_TARGET_AVX512 static void xnn_qs8_dwconv_acc_16__avx512(size_t taps, const int8_t *const *rows, const int32_t *w,
                                                           size_t w_stride, int32_t x_zp, int32_t *acc) {
  const __m512i zp = _mm512_set1_epi32(x_zp);
  __m512i a = _mm512_setzero_si512();
  for (size_t t = 0; t < taps; t++, w += w_stride) {
    if (!rows[t]) continue;
    const __m512i x = _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)rows[t])), zp);
    a = _mm512_add_epi32(a, _mm512_mullo_epi32(x, _mm512_loadu_si512(w)));
  }
  _mm512_storeu_si512(acc, a);
}

xnn_dwconv_acc_fn xnn_dwconv_acc_for(int isa) {
  switch (isa) {
    case QP_ISA_AVX2: return xnn_qs8_dwconv_acc_16__avx2;
    case QP_ISA_AVX512:
    case QP_ISA_AVX512VNNI: return xnn_qs8_dwconv_acc_16__avx512;
    default: return NULL;
  }
}

#else
typedef int xnn_dwconv_x86_unused; /* ISO C forbids an empty translation unit */
#endif
