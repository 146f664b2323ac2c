/*
 * AVX2 path: QNNPACK's SSE2 scheme widened to 256 bits. uint8 weights are
 * zero-extended to 16 bits (vpmovzxbw) and multiplied with vpmaddwd against
 * the broadcast activations (widened to uint16 once per call by the
 * driver); every product fits in 16x16->32 bits, so the result is exact
 * (there is no uint8 x uint8 byte multiply on AVX2, and vpmaddubsw would
 * saturate). Compiled with QP_TARGET_AVX2 only.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#include "qnnpack_internal.h"

/* 4 rows x 8 channels (half a packed block), c4 groups. The rows are the
 * driver's uint16 copies of the activations (QNNPACK_XPREP_WIDEN16), zero
 * padded to a multiple of 4, so 4 values are one 64-bit broadcast load. */
QP_TARGET_AVX2 static inline void qnnpack_qu8_gemm_ukernel_4x8c4__avx2(size_t k,
                                                                       const uint8_t *const *a,
                                                                       const uint8_t *w,
                                                                       int32_t *acc) {
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00;
  __m256i c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  const uint8_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
#define QNNPACK_AVX2_ROW(P, C0, C1)                                                        \
  do {                                                                                     \
    int64_t xv;                                                                            \
    memcpy(&xv, (P) + 2 * kk, 8);                                                          \
    const __m256i x = _mm256_set1_epi64x(xv);                                              \
    C0 = _mm256_add_epi32(C0, _mm256_madd_epi16(x, w0));                                   \
    C1 = _mm256_add_epi32(C1, _mm256_madd_epi16(x, w1));                                   \
  } while (0)
  for (size_t kk = 0; kk < k; kk += QNNPACK_KR) {
    const __m256i w0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)w));
    const __m256i w1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(w + 16)));
    QNNPACK_AVX2_ROW(a0, c00, c01);
    QNNPACK_AVX2_ROW(a1, c10, c11);
    QNNPACK_AVX2_ROW(a2, c20, c21);
    QNNPACK_AVX2_ROW(a3, c30, c31);
    w += QNNPACK_NR * QNNPACK_KR;
  }
#undef QNNPACK_AVX2_ROW
  /* c?0 lanes: ch0 k01, ch0 k23, ch1.., ch1.. | ch2.., ch3..; c?1 likewise for ch4..7.
   * hadd gives ch0 ch1 ch4 ch5 | ch2 ch3 ch6 ch7; permute 64-bit pairs to order. */
#define QNNPACK_AVX2_REDUCE(C0, C1, ROW)                                                     \
  do {                                                                                       \
    const __m256i s = _mm256_permute4x64_epi64(_mm256_hadd_epi32(C0, C1),                    \
                                               _MM_SHUFFLE(3, 1, 2, 0));                     \
    __m256i *dst = (__m256i *)(acc + (ROW) * QNNPACK_NR);                                    \
    _mm256_storeu_si256(dst, _mm256_add_epi32(_mm256_loadu_si256(dst), s));                  \
  } while (0)
  QNNPACK_AVX2_REDUCE(c00, c01, 0);
  QNNPACK_AVX2_REDUCE(c10, c11, 1);
  QNNPACK_AVX2_REDUCE(c20, c21, 2);
  QNNPACK_AVX2_REDUCE(c30, c31, 3);
#undef QNNPACK_AVX2_REDUCE
}

QP_TARGET_AVX2 static void qnnpack_qu8_gemm_ukernel_4x16c4__avx2(size_t mr, size_t k,
                                                                 const uint8_t *const *a,
                                                                 const uint8_t *w,
                                                                 const int32_t *wsum,
                                                                 int32_t *acc) {
  (void)mr;
  (void)wsum;
  qnnpack_qu8_gemm_ukernel_4x8c4__avx2(k, a, w, acc);
  qnnpack_qu8_gemm_ukernel_4x8c4__avx2(k, a, w + 32, acc + 8);
}

/* Two int32x8 vectors (already offset by the zero point, within 0..255) -> 16 bytes. */
QP_TARGET_AVX2 static inline __m128i qnnpack_avx2_pack16(__m256i lo, __m256i hi) {
  const __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), _MM_SHUFFLE(3, 1, 2, 0));
  return _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
}

QP_TARGET_AVX2 static void qnnpack_qu8_requant_avx2(size_t mr, size_t nc, const int32_t *acc,
                                                    const float *mult, int32_t out_zp,
                                                    int32_t qmin, int32_t qmax, uint8_t *out,
                                                    size_t out_stride) {
  const __m256 flo = _mm256_set1_ps((float)(qmin - out_zp));
  const __m256 fhi = _mm256_set1_ps((float)(qmax - out_zp));
  const __m256i vzp = _mm256_set1_epi32(out_zp);
  const __m256 m0 = _mm256_loadu_ps(mult), m1 = _mm256_loadu_ps(mult + 8);
  for (size_t i = 0; i < mr; i++) {
    const int32_t *r = acc + i * QNNPACK_NR;
    __m256 v0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)r)), m0);
    __m256 v1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(r + 8))), m1);
    v0 = _mm256_min_ps(_mm256_max_ps(v0, flo), fhi);
    v1 = _mm256_min_ps(_mm256_max_ps(v1, flo), fhi);
    const __m128i bytes = qnnpack_avx2_pack16(_mm256_add_epi32(_mm256_cvtps_epi32(v0), vzp),
                                              _mm256_add_epi32(_mm256_cvtps_epi32(v1), vzp));
    if (nc == QNNPACK_NR) {
      _mm_storeu_si128((__m128i *)(out + i * out_stride), bytes);
    } else {
      uint8_t tmp[16];
      _mm_storeu_si128((__m128i *)tmp, bytes);
      memcpy(out + i * out_stride, tmp, nc);
    }
  }
}

QP_TARGET_AVX2 static void qnnpack_qu8_dequant_avx2(size_t mr, size_t nc, const int32_t *acc,
                                                    const float *scale, const float *bias,
                                                    float *out, size_t out_stride) {
  const __m256 s0 = _mm256_loadu_ps(scale), s1 = _mm256_loadu_ps(scale + 8);
  const __m256 b0 = _mm256_loadu_ps(bias), b1 = _mm256_loadu_ps(bias + 8);
  for (size_t i = 0; i < mr; i++) {
    const int32_t *r = acc + i * QNNPACK_NR;
    __m256 p0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)r)), s0);
    __m256 p1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(r + 8))), s1);
    QNNPACK_NO_CONTRACT(p0);
    QNNPACK_NO_CONTRACT(p1);
    const __m256 v0 = _mm256_add_ps(p0, b0), v1 = _mm256_add_ps(p1, b1);
    float *dst = out + i * out_stride;
    if (nc == QNNPACK_NR) {
      _mm256_storeu_ps(dst, v0);
      _mm256_storeu_ps(dst + 8, v1);
    } else {
      float tmp[16];
      _mm256_storeu_ps(tmp, v0);
      _mm256_storeu_ps(tmp + 8, v1);
      memcpy(dst, tmp, nc * sizeof(float));
    }
  }
}

QP_TARGET_AVX2 static void qnnpack_qu8_acc_init_rows_avx2(size_t mr, const int32_t *wsum,
                                                          const int32_t *wzp, const int32_t *rzp,
                                                          const uint32_t *xsum, int32_t *acc) {
  const __m256i w0 = _mm256_loadu_si256((const __m256i *)wsum);
  const __m256i w1 = _mm256_loadu_si256((const __m256i *)(wsum + 8));
  const __m256i z0 = _mm256_loadu_si256((const __m256i *)wzp);
  const __m256i z1 = _mm256_loadu_si256((const __m256i *)(wzp + 8));
  const __m256i zero = _mm256_setzero_si256();
  for (size_t i = 0; i < mr; i++) {
    const __m256i r = _mm256_set1_epi32(rzp[i]), s = _mm256_set1_epi32((int32_t)xsum[i]);
    const __m256i t0 = _mm256_add_epi32(_mm256_mullo_epi32(w0, r), _mm256_mullo_epi32(z0, s));
    const __m256i t1 = _mm256_add_epi32(_mm256_mullo_epi32(w1, r), _mm256_mullo_epi32(z1, s));
    _mm256_storeu_si256((__m256i *)(acc + i * QNNPACK_NR), _mm256_sub_epi32(zero, t0));
    _mm256_storeu_si256((__m256i *)(acc + i * QNNPACK_NR + 8), _mm256_sub_epi32(zero, t1));
  }
}

QP_TARGET_AVX2 static void qnnpack_qu8_dequant_rows_avx2(size_t mr, size_t nc, const int32_t *acc,
                                                         const float *rscale, const float *wscale,
                                                         const float *bias, float *out,
                                                         size_t out_stride) {
  float s[QNNPACK_NR];
  for (size_t i = 0; i < mr; i++) {
    const __m256 r = _mm256_set1_ps(rscale[i]);
    _mm256_storeu_ps(s, _mm256_mul_ps(r, _mm256_loadu_ps(wscale)));
    _mm256_storeu_ps(s + 8, _mm256_mul_ps(r, _mm256_loadu_ps(wscale + 8)));
    qnnpack_qu8_dequant_avx2(1, nc, acc + i * QNNPACK_NR, s, bias, out + i * out_stride, out_stride);
  }
}

QP_TARGET_AVX2 static void qnnpack_qu8_quant_avx2(const float *x, size_t n, float inv_scale,
                                                  int32_t zp, uint8_t *out) {
  const __m256 vinv = _mm256_set1_ps(inv_scale);
  const __m256 flo = _mm256_set1_ps((float)(0 - zp)), fhi = _mm256_set1_ps((float)(255 - zp));
  const __m256i vzp = _mm256_set1_epi32(zp);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
    v0 = _mm256_and_ps(v0, _mm256_cmp_ps(v0, v0, _CMP_ORD_Q)); /* NaN -> 0 -> zp */
    v1 = _mm256_and_ps(v1, _mm256_cmp_ps(v1, v1, _CMP_ORD_Q));
    v0 = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v0, vinv), flo), fhi);
    v1 = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v1, vinv), flo), fhi);
    _mm_storeu_si128((__m128i *)(out + i),
                     qnnpack_avx2_pack16(_mm256_add_epi32(_mm256_cvtps_epi32(v0), vzp),
                                         _mm256_add_epi32(_mm256_cvtps_epi32(v1), vzp)));
  }
  qnnpack_qu8_quant_scalar(x + i, n - i, inv_scale, zp, out + i);
}

QP_TARGET_AVX2 static void qnnpack_f32_minmax_avx2(const float *x, size_t n, float *lo,
                                                   float *hi) {
  __m256 vmin = _mm256_set1_ps(*lo), vmax = _mm256_set1_ps(*hi);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    vmin = _mm256_min_ps(v, vmin); /* 2nd operand wins when one is NaN */
    vmax = _mm256_max_ps(v, vmax);
  }
  float mn[8], mx[8];
  _mm256_storeu_ps(mn, vmin);
  _mm256_storeu_ps(mx, vmax);
  float l = *lo, h = *hi;
  qnnpack_f32_minmax_scalar(mn, 8, &l, &h);
  qnnpack_f32_minmax_scalar(mx, 8, &l, &h);
  qnnpack_f32_minmax_scalar(x + i, n - i, &l, &h);
  *lo = l;
  *hi = h;
}

/* 16 channels per step: (x - zp) and w widened to int32, vpmulld. */
QP_TARGET_AVX2 static void qnnpack_qu8_dwconv_ukernel_up16__avx2(
    size_t channels, size_t taps, const uint8_t *const *x, const int16_t *w, size_t cstride,
    int32_t x_zp, const int32_t *bias, int32_t *acc) {
  const __m256i vzp = _mm256_set1_epi32(x_zp);
  size_t c = 0;
  for (; c + 16 <= channels; c += 16) {
    __m256i lo = _mm256_loadu_si256((const __m256i *)(bias + c));
    __m256i hi = _mm256_loadu_si256((const __m256i *)(bias + c + 8));
    for (size_t t = 0; t < taps; t++) {
      const __m128i xb = _mm_loadu_si128((const __m128i *)(x[t] + c));
      const __m256i x0 = _mm256_sub_epi32(_mm256_cvtepu8_epi32(xb), vzp);
      const __m256i x1 = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(xb, xb)), vzp);
      const int16_t *wt = w + t * cstride + c;
      lo = _mm256_add_epi32(lo, _mm256_mullo_epi32(x0, _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)wt))));
      hi = _mm256_add_epi32(hi, _mm256_mullo_epi32(x1, _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(wt + 8)))));
    }
    _mm256_storeu_si256((__m256i *)(acc + c), lo);
    _mm256_storeu_si256((__m256i *)(acc + c + 8), hi);
  }
  qnnpack_qu8_dwconv_scalar_from(c, channels, taps, x, w, cstride, x_zp, bias, acc);
}

/* Clamp, round, add the zero point and store 16 bytes (the elementwise kernels' epilogue). */
QP_TARGET_AVX2 static inline void qnnpack_avx2_store16(uint8_t *out, __m256 v0, __m256 v1, __m256 flo,
                                                       __m256 fhi, __m256i ozp) {
  const __m256i q0 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v0, flo), fhi)), ozp);
  const __m256i q1 = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v1, flo), fhi)), ozp);
  _mm_storeu_si128((__m128i *)out, qnnpack_avx2_pack16(q0, q1));
}

/* 8 bytes at p, zero-extended to int32, minus zp. */
QP_TARGET_AVX2 static inline __m256i qnnpack_avx2_load8_sub(const uint8_t *p, __m256i zp) {
  return _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)), zp);
}

QP_TARGET_AVX2 static void qnnpack_qu8_vadd_ukernel__avx2(size_t n, const uint8_t *a,
                                                          const uint8_t *b,
                                                          const qnnpack_add_params *p, uint8_t *out) {
  const __m256i azp = _mm256_set1_epi32(p->a_zp), bzp = _mm256_set1_epi32(p->b_zp);
  const __m256 as = _mm256_set1_ps(p->a_scale), bs = _mm256_set1_ps(p->b_scale);
  const __m256 inv = _mm256_set1_ps(p->inv_out);
  const __m256 flo = _mm256_set1_ps((float)(p->qmin - p->out_zp));
  const __m256 fhi = _mm256_set1_ps((float)(p->qmax - p->out_zp));
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 v[2];
    for (int h = 0; h < 2; h++) {
      __m256 fa = _mm256_mul_ps(_mm256_cvtepi32_ps(qnnpack_avx2_load8_sub(a + i + 8 * h, azp)), as);
      __m256 fb = _mm256_mul_ps(_mm256_cvtepi32_ps(qnnpack_avx2_load8_sub(b + i + 8 * h, bzp)), bs);
      QNNPACK_NO_CONTRACT(fa);
      QNNPACK_NO_CONTRACT(fb);
      v[h] = _mm256_mul_ps(_mm256_add_ps(fa, fb), inv);
    }
    qnnpack_avx2_store16(out + i, v[0], v[1], flo, fhi, _mm256_set1_epi32(p->out_zp));
  }
  qnnpack_qu8_vadd_ukernel__scalar(n - i, a + i, b + i, p, out + i);
}

QP_TARGET_AVX2 void qnnpack_qu8_vmul_ukernel__avx2(size_t n, const uint8_t *a, const uint8_t *b,
                                                   const qnnpack_mul_params *p, uint8_t *out) {
  const __m256i azp = _mm256_set1_epi32(p->a_zp), bzp = _mm256_set1_epi32(p->b_zp);
  const __m256 mult = _mm256_set1_ps(p->mult);
  const __m256 lo = _mm256_set1_ps((float)(p->qmin - p->out_zp)), hi = _mm256_set1_ps((float)(p->qmax - p->out_zp));
  for (; n >= 16; n -= 16, a += 16, b += 16, out += 16) {
    const __m256i p0 = _mm256_mullo_epi32(qnnpack_avx2_load8_sub(a, azp), qnnpack_avx2_load8_sub(b, bzp));
    const __m256i p1 = _mm256_mullo_epi32(qnnpack_avx2_load8_sub(a + 8, azp), qnnpack_avx2_load8_sub(b + 8, bzp));
    qnnpack_avx2_store16(out, _mm256_mul_ps(_mm256_cvtepi32_ps(p0), mult), _mm256_mul_ps(_mm256_cvtepi32_ps(p1), mult),
                         lo, hi, _mm256_set1_epi32(p->out_zp));
  }
  qnnpack_qu8_vmul_ukernel__scalar(n, a, b, p, out);
}

const qnnpack_isa_kernels qnnpack_kernels_avx2 = {
    .mr = 4,
    .add = qnnpack_qu8_vadd_ukernel__avx2,
    .mul = qnnpack_qu8_vmul_ukernel__avx2,
    .dwconv = qnnpack_qu8_dwconv_ukernel_up16__avx2,
    .xprep = QNNPACK_XPREP_WIDEN16,
    .gemm = qnnpack_qu8_gemm_ukernel_4x16c4__avx2,
    .requant = qnnpack_qu8_requant_avx2,
    .dequant = qnnpack_qu8_dequant_avx2,
    .acc_init_rows = qnnpack_qu8_acc_init_rows_avx2,
    .dequant_rows = qnnpack_qu8_dequant_rows_avx2,
    .quant = qnnpack_qu8_quant_avx2,
    .minmax = qnnpack_f32_minmax_avx2,
};
#else
typedef int qnnpack_gemm_avx2_unused; /* ISO C forbids an empty translation unit */
#endif
