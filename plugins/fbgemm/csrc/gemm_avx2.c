/*
 * AVX2 path: vpmaddubsw (u8 x s8 -> int16 pair sums, SATURATING) + vpmaddwd with ones
 * (int16 pairs -> int32, exact). This is the path reduce_range exists for: with activations in
 * 0..127 a pair sum is at most 2 * 127 * 128 = 32512 in magnitude and never saturates. For
 * inputs above 127 the `split` form multiplies (a & 0x7f) and (a & 0x80) separately: both
 * pair sums then fit in int16 (|128 * (w0 + w1)| <= 32768), so the result stays exact.
 */
#include "fbgemm_kernels.h"
#include "quantplug/qp_runtime.h"

#if defined(FB_HAVE_X86)
#include <immintrin.h>
#include <string.h>

#define FB_VBARRIER(v) __asm__("" : "+v"(v))

QP_TARGET_AVX2 static inline __m256i fb_dot_avx2(__m256i va, __m256i w, __m256i ones) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(va, w), ones);
}

QP_TARGET_AVX2 static inline __m256i fb_dot_split_avx2(__m256i va, __m256i w, __m256i ones) {
  const __m256i lo = _mm256_and_si256(va, _mm256_set1_epi8(0x7f));
  const __m256i hi = _mm256_and_si256(va, _mm256_set1_epi8((char)0x80));
  return _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo, w), ones),
                          _mm256_madd_epi16(_mm256_maddubs_epi16(hi, w), ones));
}

#define FB_AVX2_STEP(DOT, A0, A1, A2, A3)                                     \
  do {                                                                        \
    const __m256i w0 = _mm256_loadu_si256((const __m256i *)w);                \
    const __m256i w1 = _mm256_loadu_si256((const __m256i *)(w + 32));         \
    w += 64;                                                                  \
    __m256i va = _mm256_set1_epi32((int)(A0));                                \
    c00 = _mm256_add_epi32(c00, DOT(va, w0, ones));                           \
    c01 = _mm256_add_epi32(c01, DOT(va, w1, ones));                           \
    va = _mm256_set1_epi32((int)(A1));                                        \
    c10 = _mm256_add_epi32(c10, DOT(va, w0, ones));                           \
    c11 = _mm256_add_epi32(c11, DOT(va, w1, ones));                           \
    va = _mm256_set1_epi32((int)(A2));                                        \
    c20 = _mm256_add_epi32(c20, DOT(va, w0, ones));                           \
    c21 = _mm256_add_epi32(c21, DOT(va, w1, ones));                           \
    va = _mm256_set1_epi32((int)(A3));                                        \
    c30 = _mm256_add_epi32(c30, DOT(va, w0, ones));                           \
    c31 = _mm256_add_epi32(c31, DOT(va, w1, ones));                           \
  } while (0)

QP_TARGET_AVX2 void fbgemm_qu8_gemm_ukernel_4x16c4__avx2(size_t mr, size_t k, const uint8_t *a,
                                                         size_t a_stride, const int8_t *w,
                                                         int32_t *acc, int split) {
  /* Rows past mr alias the previous row: computed, never stored (XNNPACK's trick). */
  const uint8_t *a0 = a;
  const uint8_t *a1 = mr > 1 ? a0 + a_stride : a0;
  const uint8_t *a2 = mr > 2 ? a1 + a_stride : a1;
  const uint8_t *a3 = mr > 3 ? a2 + a_stride : a2;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00;
  __m256i c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  const size_t kfull = k / FB_KR, tail = k % FB_KR;
  if (!split) {
    for (size_t g = 0; g < kfull; g++, a0 += 4, a1 += 4, a2 += 4, a3 += 4)
      FB_AVX2_STEP(fb_dot_avx2, fb_load_u32(a0), fb_load_u32(a1), fb_load_u32(a2),
                   fb_load_u32(a3));
    if (tail)
      FB_AVX2_STEP(fb_dot_avx2, fb_load_tail(a0, tail), fb_load_tail(a1, tail),
                   fb_load_tail(a2, tail), fb_load_tail(a3, tail));
  } else {
    for (size_t g = 0; g < kfull; g++, a0 += 4, a1 += 4, a2 += 4, a3 += 4)
      FB_AVX2_STEP(fb_dot_split_avx2, fb_load_u32(a0), fb_load_u32(a1), fb_load_u32(a2),
                   fb_load_u32(a3));
    if (tail)
      FB_AVX2_STEP(fb_dot_split_avx2, fb_load_tail(a0, tail), fb_load_tail(a1, tail),
                   fb_load_tail(a2, tail), fb_load_tail(a3, tail));
  }
  __m256i *o = (__m256i *)acc;
  _mm256_storeu_si256(o + 0, c00);
  _mm256_storeu_si256(o + 1, c01);
  if (mr > 1) {
    _mm256_storeu_si256(o + 2, c10);
    _mm256_storeu_si256(o + 3, c11);
  }
  if (mr > 2) {
    _mm256_storeu_si256(o + 4, c20);
    _mm256_storeu_si256(o + 5, c21);
  }
  if (mr > 3) {
    _mm256_storeu_si256(o + 6, c30);
    _mm256_storeu_si256(o + 7, c31);
  }
}

/* acc + col - wz * row_sum for 8 columns starting at column h*8 of row r. */
QP_TARGET_AVX2 static inline __m256i fb_fold_avx2(const int32_t *acc, const int32_t *row_sums,
                                                  const fb_block_params *p, size_t r,
                                                  size_t h) {
  __m256i v = _mm256_loadu_si256((const __m256i *)(acc + r * FB_NR + h * 8));
  v = _mm256_add_epi32(v, _mm256_loadu_si256((const __m256i *)(p->col + h * 8)));
  if (row_sums != NULL)
    v = _mm256_sub_epi32(v, _mm256_mullo_epi32(_mm256_loadu_si256((const __m256i *)(p->wz + h * 8)),
                                               _mm256_set1_epi32(row_sums[r])));
  return v;
}

QP_TARGET_AVX2 void fb_epilogue_u8__avx2(size_t mr, size_t nc, const int32_t *acc,
                                         const int32_t *row_sums, const fb_block_params *p,
                                         int32_t zp, int32_t qmin, int32_t qmax, uint8_t *out,
                                         size_t out_stride) {
  const __m256 lo = _mm256_set1_ps((float)(qmin - zp)), hi = _mm256_set1_ps((float)(qmax - zp));
  const __m256i vzp = _mm256_set1_epi32(zp);
  const __m256 m0 = _mm256_loadu_ps(p->mult), m1 = _mm256_loadu_ps(p->mult + 8);
  for (size_t r = 0; r < mr; r++) {
    __m256 f0 = _mm256_mul_ps(_mm256_cvtepi32_ps(fb_fold_avx2(acc, row_sums, p, r, 0)), m0);
    __m256 f1 = _mm256_mul_ps(_mm256_cvtepi32_ps(fb_fold_avx2(acc, row_sums, p, r, 1)), m1);
    f0 = _mm256_min_ps(_mm256_max_ps(f0, lo), hi);
    f1 = _mm256_min_ps(_mm256_max_ps(f1, lo), hi);
    /* cvtps2dq rounds with MXCSR: nearest, ties to even, like nearbyintf */
    const __m256i i0 = _mm256_add_epi32(_mm256_cvtps_epi32(f0), vzp);
    const __m256i i1 = _mm256_add_epi32(_mm256_cvtps_epi32(f1), vzp);
    const __m128i s0 = _mm_packs_epi32(_mm256_castsi256_si128(i0), _mm256_extracti128_si256(i0, 1));
    const __m128i s1 = _mm_packs_epi32(_mm256_castsi256_si128(i1), _mm256_extracti128_si256(i1, 1));
    const __m128i bytes = _mm_packus_epi16(s0, s1);
    uint8_t *o = out + r * out_stride;
    if (nc == FB_NR) {
      _mm_storeu_si128((__m128i *)o, bytes);
    } else {
      uint8_t tmp[16];
      _mm_storeu_si128((__m128i *)tmp, bytes);
      memcpy(o, tmp, nc);
    }
  }
}

QP_TARGET_AVX2 void fb_epilogue_f32__avx2(size_t mr, size_t nc, const int32_t *acc,
                                          const int32_t *row_sums, const fb_block_params *p,
                                          int has_bias, float *out, size_t out_stride) {
  const __m256 m0 = _mm256_loadu_ps(p->mult), m1 = _mm256_loadu_ps(p->mult + 8);
  const __m256 b0 = _mm256_loadu_ps(p->bias), b1 = _mm256_loadu_ps(p->bias + 8);
  for (size_t r = 0; r < mr; r++) {
    __m256 f0 = _mm256_mul_ps(_mm256_cvtepi32_ps(fb_fold_avx2(acc, row_sums, p, r, 0)), m0);
    __m256 f1 = _mm256_mul_ps(_mm256_cvtepi32_ps(fb_fold_avx2(acc, row_sums, p, r, 1)), m1);
    if (has_bias) {
      FB_VBARRIER(f0); /* no FMA: PyTorch multiplies, rounds, then adds */
      FB_VBARRIER(f1);
      f0 = _mm256_add_ps(f0, b0);
      f1 = _mm256_add_ps(f1, b1);
    }
    float *o = out + r * out_stride;
    if (nc == FB_NR) {
      _mm256_storeu_ps(o, f0);
      _mm256_storeu_ps(o + 8, f1);
    } else {
      float tmp[16];
      _mm256_storeu_ps(tmp, f0);
      _mm256_storeu_ps(tmp + 8, f1);
      memcpy(o, tmp, nc * sizeof(float));
    }
  }
}

QP_TARGET_AVX2 void fb_epilogue_rows__avx2(size_t mr, size_t nc, const int32_t *acc,
                                           const int32_t *xsum, const fb_block_params *p,
                                           const float *rscale, const int32_t *rzp, int32_t k,
                                           int has_bias, float *out, size_t out_stride) {
  for (size_t r = 0; r < mr; r++) {
    const __m256i zr = _mm256_set1_epi32(rzp[r]);
    const __m256i wc = _mm256_set1_epi32(
        xsum != NULL ? (int32_t)((uint32_t)k * (uint32_t)rzp[r] - (uint32_t)xsum[r]) : 0);
    const __m256 sr = _mm256_set1_ps(rscale[r]);
    float tmp[16];
    for (size_t h = 0; h < 2; h++) {
      __m256i v = _mm256_loadu_si256((const __m256i *)(acc + r * FB_NR + h * 8));
      v = _mm256_sub_epi32(v, _mm256_mullo_epi32(
                                  zr, _mm256_loadu_si256((const __m256i *)(p->col + h * 8))));
      v = _mm256_add_epi32(v, _mm256_mullo_epi32(
                                  wc, _mm256_loadu_si256((const __m256i *)(p->wz + h * 8))));
      const __m256 mult = _mm256_mul_ps(sr, _mm256_loadu_ps(p->mult + h * 8));
      __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), mult);
      if (has_bias) {
        FB_VBARRIER(f); /* no FMA: PyTorch multiplies, rounds, then adds */
        f = _mm256_add_ps(f, _mm256_loadu_ps(p->bias + h * 8));
      }
      _mm256_storeu_ps(tmp + h * 8, f);
    }
    memcpy(out + r * out_stride, tmp, nc * sizeof(float));
  }
}

#endif /* FB_HAVE_X86 */
