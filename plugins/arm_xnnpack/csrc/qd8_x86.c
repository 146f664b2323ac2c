/*
 * x86-64 qd8 activation conversion for the dynamic linear: range (min / max
 * with NaN detection) and fp32 -> int8 quantization, the SIMD twins of the
 * scalar code in gemm.c. x * inv is one rounded product, the clamp is in
 * float, and vcvtps2dq rounds half to even (default MXCSR) like nearbyintf,
 * so every value equals qp_quantize's. Tails use the scalar formula.
 */
#include "quantplug/qp_requant.h"
#include "xnnpack_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* Scalar tail of the range scan (the comparisons of gemm.c's xnn_minmax). */
static inline void xnn_minmax_tail(const float *x, size_t n, float *lo, float *hi, int *nan) {
  for (size_t i = 0; i < n; i++) {
    const float v = x[i];
    *lo = v < *lo ? v : *lo;
    *hi = v > *hi ? v : *hi;
    *nan |= v != v;
  }
}

static inline void xnn_convert_tail(const float *x, size_t n, float inv, int32_t zp, uint8_t flip, int8_t *out) {
  for (size_t i = 0; i < n; i++) out[i] = (int8_t)((uint8_t)qp_quantize(x[i], inv, zp, -128, 127) ^ flip);
}

/* ------------------------------------------------------------------ AVX2 -- */

QP_TARGET_AVX2 static void xnn_f32_minmax__avx2(const float *x, size_t n, float *lo, float *hi, int *nan) {
  size_t i = 0;
  if (n >= 8) {
    __m256 vlo = _mm256_set1_ps(*lo), vhi = _mm256_set1_ps(*hi), bad = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
      const __m256 v = _mm256_loadu_ps(x + i);
      vlo = _mm256_min_ps(v, vlo); /* a NaN v keeps vlo (and sets bad) */
      vhi = _mm256_max_ps(v, vhi);
      bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    float l[8], h[8];
    _mm256_storeu_ps(l, vlo), _mm256_storeu_ps(h, vhi);
    xnn_minmax_tail(l, 8, lo, hi, nan);
    xnn_minmax_tail(h, 8, lo, hi, nan);
    *nan |= _mm256_movemask_ps(bad) != 0;
  }
  xnn_minmax_tail(x + i, n - i, lo, hi, nan);
}

QP_TARGET_AVX2 static void xnn_f32_qs8_convert__avx2(const float *x, size_t n, float inv, int32_t zp, uint8_t flip,
                                                     int8_t *out) {
  const __m128i vflip = _mm_set1_epi8((char)flip);
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256 lo = _mm256_set1_ps((float)(-128 - zp)), hi = _mm256_set1_ps((float)(127 - zp));
  const __m256i vzp = _mm256_set1_epi32(zp);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv), lo), hi);
    const __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(v), vzp);
    const __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64((__m128i *)(out + i), _mm_xor_si128(_mm_packs_epi16(q16, q16), vflip));
  }
  xnn_convert_tail(x + i, n - i, inv, zp, flip, out + i);
}

static const xnn_qd8_config xnn_qd8_avx2 = {xnn_f32_minmax__avx2, xnn_f32_qs8_convert__avx2};

/* --------------------------------------------------------------- AVX-512 -- */

/* Four independent min / max chains (a row of 384 is 6 steps of 64, not 24 dependent steps of
 * 16), folded together and reduced in registers; min / max are exact, so any order gives the
 * same extremes. */
QP_TARGET_AVX512 static void xnn_f32_minmax__avx512(const float *x, size_t n, float *lo, float *hi, int *nan) {
  size_t i = 0;
  if (n >= 16) {
    __m512 lo0 = _mm512_set1_ps(*lo), hi0 = _mm512_set1_ps(*hi);
    __m512 lo1 = lo0, lo2 = lo0, lo3 = lo0, hi1 = hi0, hi2 = hi0, hi3 = hi0;
    __mmask16 bad = 0;
    for (; i + 64 <= n; i += 64) {
      const __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
      const __m512 v2 = _mm512_loadu_ps(x + i + 32), v3 = _mm512_loadu_ps(x + i + 48);
      lo0 = _mm512_min_ps(v0, lo0), lo1 = _mm512_min_ps(v1, lo1);
      lo2 = _mm512_min_ps(v2, lo2), lo3 = _mm512_min_ps(v3, lo3);
      hi0 = _mm512_max_ps(v0, hi0), hi1 = _mm512_max_ps(v1, hi1);
      hi2 = _mm512_max_ps(v2, hi2), hi3 = _mm512_max_ps(v3, hi3);
      bad |= _mm512_cmp_ps_mask(v0, v1, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(v2, v3, _CMP_UNORD_Q);
    }
    for (; i + 16 <= n; i += 16) {
      const __m512 v = _mm512_loadu_ps(x + i);
      lo0 = _mm512_min_ps(v, lo0);
      hi0 = _mm512_max_ps(v, hi0);
      bad |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    }
    lo0 = _mm512_min_ps(_mm512_min_ps(lo0, lo1), _mm512_min_ps(lo2, lo3));
    hi0 = _mm512_max_ps(_mm512_max_ps(hi0, hi1), _mm512_max_ps(hi2, hi3));
    const float l = _mm512_reduce_min_ps(lo0), h = _mm512_reduce_max_ps(hi0);
    *lo = l < *lo ? l : *lo;
    *hi = h > *hi ? h : *hi;
    *nan |= bad != 0;
  }
  xnn_minmax_tail(x + i, n - i, lo, hi, nan);
}

QP_TARGET_AVX512 static void xnn_f32_qs8_convert__avx512(const float *x, size_t n, float inv, int32_t zp,
                                                         uint8_t flip, int8_t *out) {
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512 lo = _mm512_set1_ps((float)(-128 - zp)), hi = _mm512_set1_ps((float)(127 - zp));
  const __m512i vzp = _mm512_set1_epi32(zp);
  const __m128i vflip = _mm_set1_epi8((char)flip);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vinv), lo), hi);
    const __m128i q = _mm512_cvtsepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(v), vzp));
    _mm_storeu_si128((__m128i *)(out + i), _mm_xor_si128(q, vflip));
  }
  xnn_convert_tail(x + i, n - i, inv, zp, flip, out + i);
}

static const xnn_qd8_config xnn_qd8_avx512 = {xnn_f32_minmax__avx512, xnn_f32_qs8_convert__avx512};

const xnn_qd8_config *xnn_qd8_config_for(int isa) {
  switch (isa) {
    case QP_ISA_AVX2: return &xnn_qd8_avx2;
    case QP_ISA_AVX512:
    case QP_ISA_AVX512VNNI: return &xnn_qd8_avx512;
    default: return NULL;
  }
}

#else
typedef int xnn_qd8_x86_unused; /* ISO C forbids an empty translation unit */
#endif
