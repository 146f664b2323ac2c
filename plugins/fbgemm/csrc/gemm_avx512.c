/*
 * AVX-512 paths. One 64-byte packed group is one zmm (16 columns x 4 k).
 *   avx512      vpmaddubsw on zmm (saturating int16 pair sums; exact for 7-bit activations,
 *               split form for 8-bit inputs) + vpmaddwd with ones
 *   avx512vnni  vpdpbusd: four u8 x s8 products added straight into int32, never saturates
 * Both share the AVX-512 epilogues (masked stores for the last partial column block).
 */
#include "fbgemm_kernels.h"
#include "quantplug/qp_runtime.h"

#if defined(FB_HAVE_X86)
#include <immintrin.h>
#include <string.h>

#define FB_VBARRIER(v) __asm__("" : "+v"(v))

QP_TARGET_AVX512 static inline __m512i fb_dot_avx512(__m512i c, __m512i va, __m512i w,
                                                     __m512i ones) {
  return _mm512_add_epi32(c, _mm512_madd_epi16(_mm512_maddubs_epi16(va, w), ones));
}

QP_TARGET_AVX512 static inline __m512i fb_dot_split_avx512(__m512i c, __m512i va, __m512i w,
                                                           __m512i ones) {
  const __m512i lo = _mm512_and_si512(va, _mm512_set1_epi8(0x7f));
  const __m512i hi = _mm512_and_si512(va, _mm512_set1_epi8((char)0x80));
  c = _mm512_add_epi32(c, _mm512_madd_epi16(_mm512_maddubs_epi16(lo, w), ones));
  return _mm512_add_epi32(c, _mm512_madd_epi16(_mm512_maddubs_epi16(hi, w), ones));
}

QP_TARGET_AVX512VNNI static inline __m512i fb_dot_vnni(__m512i c, __m512i va, __m512i w,
                                                       __m512i ones) {
  (void)ones;
  return _mm512_dpbusd_epi32(c, va, w);
}

#define FB_Z_STEP(DOT, A0, A1, A2, A3)                                         \
  do {                                                                         \
    const __m512i wv = _mm512_loadu_si512((const void *)w);                    \
    w += 64;                                                                   \
    c0 = DOT(c0, _mm512_set1_epi32((int)(A0)), wv, ones);                      \
    c1 = DOT(c1, _mm512_set1_epi32((int)(A1)), wv, ones);                      \
    c2 = DOT(c2, _mm512_set1_epi32((int)(A2)), wv, ones);                      \
    c3 = DOT(c3, _mm512_set1_epi32((int)(A3)), wv, ones);                      \
  } while (0)

#define FB_Z_LOOP(DOT)                                                                   \
  do {                                                                                   \
    for (size_t g = 0; g < kfull; g++, a0 += 4, a1 += 4, a2 += 4, a3 += 4)               \
      FB_Z_STEP(DOT, fb_load_u32(a0), fb_load_u32(a1), fb_load_u32(a2), fb_load_u32(a3)); \
    if (tail)                                                                            \
      FB_Z_STEP(DOT, fb_load_tail(a0, tail), fb_load_tail(a1, tail),                     \
                fb_load_tail(a2, tail), fb_load_tail(a3, tail));                         \
  } while (0)

#define FB_Z_PROLOGUE                                                  \
  const uint8_t *a0 = a;                                               \
  const uint8_t *a1 = mr > 1 ? a0 + a_stride : a0;                     \
  const uint8_t *a2 = mr > 2 ? a1 + a_stride : a1;                     \
  const uint8_t *a3 = mr > 3 ? a2 + a_stride : a2;                     \
  const __m512i ones = _mm512_set1_epi16(1);                           \
  __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0;      \
  const size_t kfull = k / FB_KR, tail = k % FB_KR

#define FB_Z_EPILOGUE                                  \
  _mm512_storeu_si512((void *)acc, c0);                \
  if (mr > 1) _mm512_storeu_si512((void *)(acc + 16), c1); \
  if (mr > 2) _mm512_storeu_si512((void *)(acc + 32), c2); \
  if (mr > 3) _mm512_storeu_si512((void *)(acc + 48), c3)

QP_TARGET_AVX512 void fbgemm_qu8_gemm_ukernel_4x16c4__avx512(size_t mr, size_t k,
                                                             const uint8_t *a, size_t a_stride,
                                                             const int8_t *w, int32_t *acc,
                                                             int split) {
  FB_Z_PROLOGUE;
  if (!split)
    FB_Z_LOOP(fb_dot_avx512);
  else
    FB_Z_LOOP(fb_dot_split_avx512);
  FB_Z_EPILOGUE;
}

QP_TARGET_AVX512VNNI void fbgemm_qu8_gemm_ukernel_4x16c4__avx512vnni(size_t mr, size_t k,
                                                                     const uint8_t *a,
                                                                     size_t a_stride,
                                                                     const int8_t *w,
                                                                     int32_t *acc, int split) {
  (void)split; /* vpdpbusd sums into int32: exact for the full uint8 range */
  FB_Z_PROLOGUE;
  (void)ones;
  FB_Z_LOOP(fb_dot_vnni);
  FB_Z_EPILOGUE;
}

QP_TARGET_AVX512 static inline __m512i fb_fold_avx512(const int32_t *acc,
                                                      const int32_t *row_sums,
                                                      const fb_block_params *p, size_t r) {
  __m512i v = _mm512_loadu_si512((const void *)(acc + r * FB_NR));
  v = _mm512_add_epi32(v, _mm512_loadu_si512((const void *)p->col));
  if (row_sums != NULL)
    v = _mm512_sub_epi32(v, _mm512_mullo_epi32(_mm512_loadu_si512((const void *)p->wz),
                                               _mm512_set1_epi32(row_sums[r])));
  return v;
}

QP_TARGET_AVX512 void fb_epilogue_u8__avx512(size_t mr, size_t nc, const int32_t *acc,
                                             const int32_t *row_sums, const fb_block_params *p,
                                             int32_t zp, int32_t qmin, int32_t qmax,
                                             uint8_t *out, size_t out_stride) {
  const __m512 lo = _mm512_set1_ps((float)(qmin - zp)), hi = _mm512_set1_ps((float)(qmax - zp));
  const __m512i vzp = _mm512_set1_epi32(zp);
  const __m512 m = _mm512_loadu_ps(p->mult);
  const __mmask16 mask = (__mmask16)((1u << nc) - 1u);
  for (size_t r = 0; r < mr; r++) {
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(fb_fold_avx512(acc, row_sums, p, r)), m);
    f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
    /* vcvtps2dq with the default MXCSR rounding: nearest, ties to even (= nearbyintf) */
    const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(f), vzp);
    _mm_mask_storeu_epi8(out + r * out_stride, mask, _mm512_cvtepi32_epi8(q));
  }
}

QP_TARGET_AVX512 void fb_epilogue_f32__avx512(size_t mr, size_t nc, const int32_t *acc,
                                              const int32_t *row_sums, const fb_block_params *p,
                                              int has_bias, float *out, size_t out_stride) {
  const __m512 m = _mm512_loadu_ps(p->mult), b = _mm512_loadu_ps(p->bias);
  const __mmask16 mask = (__mmask16)((1u << nc) - 1u);
  for (size_t r = 0; r < mr; r++) {
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(fb_fold_avx512(acc, row_sums, p, r)), m);
    if (has_bias) {
      FB_VBARRIER(f); /* no FMA: PyTorch multiplies, rounds, then adds */
      f = _mm512_add_ps(f, b);
    }
    _mm512_mask_storeu_ps(out + r * out_stride, mask, f);
  }
}

QP_TARGET_AVX512 void fb_epilogue_rows__avx512(size_t mr, size_t nc, const int32_t *acc,
                                               const int32_t *xsum, const fb_block_params *p,
                                               const float *rscale, const int32_t *rzp,
                                               int32_t k, int has_bias, float *out,
                                               size_t out_stride) {
  const __m512 ws = _mm512_loadu_ps(p->mult), b = _mm512_loadu_ps(p->bias);
  const __m512i rs = _mm512_loadu_si512((const void *)p->col);
  const __m512i wz = _mm512_loadu_si512((const void *)p->wz);
  const __mmask16 mask = (__mmask16)((1u << nc) - 1u);
  for (size_t r = 0; r < mr; r++) {
    __m512i v = _mm512_loadu_si512((const void *)(acc + r * FB_NR));
    v = _mm512_sub_epi32(v, _mm512_mullo_epi32(rs, _mm512_set1_epi32(rzp[r])));
    if (xsum != NULL) /* w_zp term: wz * (k * zp - sum_k q), wrapping like the scalar path */
      v = _mm512_add_epi32(v, _mm512_mullo_epi32(wz, _mm512_set1_epi32((int32_t)(
                                                         (uint32_t)k * (uint32_t)rzp[r] -
                                                         (uint32_t)xsum[r]))));
    const __m512 mult = _mm512_mul_ps(_mm512_set1_ps(rscale[r]), ws);
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), mult);
    if (has_bias) {
      FB_VBARRIER(f); /* no FMA: PyTorch multiplies, rounds, then adds */
      f = _mm512_add_ps(f, b);
    }
    _mm512_mask_storeu_ps(out + r * out_stride, mask, f);
  }
}

/* Depthwise tap sums, 16 channels per zmm in int32 lanes (vpmulld keeps the low 32 bits:
 * the same wrapping as the scalar uint32 sums; with 8-bit operands nothing wraps anyway). */
QP_TARGET_AVX512 void fb_dw_taps16__avx512(const uint8_t *const *x, const int8_t *const *w,
                                           size_t nt, size_t c0, size_t nc, int32_t x_zp,
                                           const int32_t *wz, int32_t *acc) {
  const __mmask16 m = (__mmask16)((1u << nc) - 1u);
  const __m512i vzp = _mm512_set1_epi32(x_zp);
  const __m512i vwz = _mm512_maskz_loadu_epi32(m, wz);
  __m512i a0 = _mm512_setzero_si512(), a1 = a0;
  size_t t = 0;
  for (; t + 2 <= nt; t += 2) { /* two chains: vpmulld has a long latency */
    const __m512i x0 = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, x[t] + c0)), vzp);
    const __m512i w0 = _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, w[t] + c0)), vwz);
    const __m512i x1 = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, x[t + 1] + c0)), vzp);
    const __m512i w1 = _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, w[t + 1] + c0)), vwz);
    a0 = _mm512_add_epi32(a0, _mm512_mullo_epi32(x0, w0));
    a1 = _mm512_add_epi32(a1, _mm512_mullo_epi32(x1, w1));
  }
  if (t < nt) {
    const __m512i x0 = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, x[t] + c0)), vzp);
    const __m512i w0 = _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, w[t] + c0)), vwz);
    a0 = _mm512_add_epi32(a0, _mm512_mullo_epi32(x0, w0));
  }
  /* lanes >= nc are zero (masked loads, zero wz): the caller's acc has 16 entries */
  _mm512_storeu_si512((void *)acc, _mm512_add_epi32(a0, a1));
}

#endif /* FB_HAVE_X86 */
