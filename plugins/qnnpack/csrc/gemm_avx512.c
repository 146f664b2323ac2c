/*
 * AVX-512 paths (Skylake-X and later: F+BW+VL), 8 rows x 16 channels.
 *
 *  avx512     : vpmovzxbw + vpmaddwd, exact 16x16->32 products (as AVX2,
 *               one 16-channel block in two zmm accumulators per row;
 *               activations widened to uint16 once per call).
 *  avx512vnni : vpdpbusd, four uint8 x int8 products per int32 lane in one
 *               instruction. The packed weights are the uint8 operand as
 *               they are; activations become the int8 operand by flipping
 *               their sign bit (x - 128, once per call, so the kernel
 *               broadcasts them from memory), and 128 * sum_k w[n][k] is
 *               added back: the result is the same uint8 x uint8 dot product.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#include "qnnpack_internal.h"

#define QNNPACK_AVX512_MR 8

/* Rows: uint16 copies of the activations (QNNPACK_XPREP_WIDEN16), K padded to 4. */
QP_TARGET_AVX512 static void qnnpack_qu8_gemm_ukernel_8x16c4__avx512skx(
    size_t mr, size_t k, const uint8_t *const *a, const uint8_t *w, const int32_t *wsum,
    int32_t *acc) {
  (void)mr;
  (void)wsum;
  __m512i lo0 = _mm512_setzero_si512(), hi0 = lo0, lo1 = lo0, hi1 = lo0, lo2 = lo0, hi2 = lo0;
  __m512i lo3 = lo0, hi3 = lo0, lo4 = lo0, hi4 = lo0, lo5 = lo0, hi5 = lo0;
  __m512i lo6 = lo0, hi6 = lo0, lo7 = lo0, hi7 = lo0;
  const uint8_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
  const uint8_t *a4 = a[4], *a5 = a[5], *a6 = a[6], *a7 = a[7];
#define QNNPACK_SKX_ROW(P, LO, HI)                                \
  do {                                                            \
    int64_t xv;                                                   \
    memcpy(&xv, (P) + 2 * kk, 8);                                 \
    const __m512i x = _mm512_set1_epi64(xv);                      \
    LO = _mm512_add_epi32(LO, _mm512_madd_epi16(x, w0));          \
    HI = _mm512_add_epi32(HI, _mm512_madd_epi16(x, w1));          \
  } while (0)
  for (size_t kk = 0; kk < k; kk += QNNPACK_KR) {
    const __m512i w0 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)w));
    const __m512i w1 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(w + 32)));
    QNNPACK_SKX_ROW(a0, lo0, hi0);
    QNNPACK_SKX_ROW(a1, lo1, hi1);
    QNNPACK_SKX_ROW(a2, lo2, hi2);
    QNNPACK_SKX_ROW(a3, lo3, hi3);
    QNNPACK_SKX_ROW(a4, lo4, hi4);
    QNNPACK_SKX_ROW(a5, lo5, hi5);
    QNNPACK_SKX_ROW(a6, lo6, hi6);
    QNNPACK_SKX_ROW(a7, lo7, hi7);
    w += QNNPACK_NR * QNNPACK_KR;
  }
#undef QNNPACK_SKX_ROW
  /* lanes: ch0 k01, ch0 k23, ch1 k01, ... ch7 k23 (lo) and ch8..15 (hi). */
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
#define QNNPACK_SKX_REDUCE(LO, HI, ROW)                                                \
  do {                                                                                 \
    const __m512i s = _mm512_add_epi32(_mm512_permutex2var_epi32(LO, even, HI),        \
                                       _mm512_permutex2var_epi32(LO, odd, HI));        \
    int32_t *dst = acc + (ROW) * QNNPACK_NR;                                           \
    _mm512_storeu_si512(dst, _mm512_add_epi32(_mm512_loadu_si512(dst), s));           \
  } while (0)
  QNNPACK_SKX_REDUCE(lo0, hi0, 0);
  QNNPACK_SKX_REDUCE(lo1, hi1, 1);
  QNNPACK_SKX_REDUCE(lo2, hi2, 2);
  QNNPACK_SKX_REDUCE(lo3, hi3, 3);
  QNNPACK_SKX_REDUCE(lo4, hi4, 4);
  QNNPACK_SKX_REDUCE(lo5, hi5, 5);
  QNNPACK_SKX_REDUCE(lo6, hi6, 6);
  QNNPACK_SKX_REDUCE(lo7, hi7, 7);
#undef QNNPACK_SKX_REDUCE
}

/* Rows: activations with the sign bit flipped (QNNPACK_XPREP_FLIP, x - 128
 * as int8), K padded to 4, broadcast by vpdpbusd straight from memory. */
QP_TARGET_AVX512VNNI static void qnnpack_qu8_gemm_ukernel_8x16c4__avx512vnni(
    size_t mr, size_t k, const uint8_t *const *a, const uint8_t *w, const int32_t *wsum,
    int32_t *acc) {
  (void)mr;
  /* dpbusd(w, x - 128) = dot(w, x) - 128 * wsum: start from acc + 128 * wsum. */
  const __m512i corr = _mm512_slli_epi32(_mm512_loadu_si512(wsum), 7);
  __m512i c0 = _mm512_add_epi32(_mm512_loadu_si512(acc + 0 * QNNPACK_NR), corr);
  __m512i c1 = _mm512_add_epi32(_mm512_loadu_si512(acc + 1 * QNNPACK_NR), corr);
  __m512i c2 = _mm512_add_epi32(_mm512_loadu_si512(acc + 2 * QNNPACK_NR), corr);
  __m512i c3 = _mm512_add_epi32(_mm512_loadu_si512(acc + 3 * QNNPACK_NR), corr);
  __m512i c4 = _mm512_add_epi32(_mm512_loadu_si512(acc + 4 * QNNPACK_NR), corr);
  __m512i c5 = _mm512_add_epi32(_mm512_loadu_si512(acc + 5 * QNNPACK_NR), corr);
  __m512i c6 = _mm512_add_epi32(_mm512_loadu_si512(acc + 6 * QNNPACK_NR), corr);
  __m512i c7 = _mm512_add_epi32(_mm512_loadu_si512(acc + 7 * QNNPACK_NR), corr);
  const uint8_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
  const uint8_t *a4 = a[4], *a5 = a[5], *a6 = a[6], *a7 = a[7];
#define QNNPACK_B(P) _mm512_set1_epi32((int32_t)qnnpack_load_u32((P) + kk))
  for (size_t kk = 0; kk < k; kk += QNNPACK_KR) {
    const __m512i vw = _mm512_loadu_si512(w);
    c0 = _mm512_dpbusd_epi32(c0, vw, QNNPACK_B(a0));
    c1 = _mm512_dpbusd_epi32(c1, vw, QNNPACK_B(a1));
    c2 = _mm512_dpbusd_epi32(c2, vw, QNNPACK_B(a2));
    c3 = _mm512_dpbusd_epi32(c3, vw, QNNPACK_B(a3));
    c4 = _mm512_dpbusd_epi32(c4, vw, QNNPACK_B(a4));
    c5 = _mm512_dpbusd_epi32(c5, vw, QNNPACK_B(a5));
    c6 = _mm512_dpbusd_epi32(c6, vw, QNNPACK_B(a6));
    c7 = _mm512_dpbusd_epi32(c7, vw, QNNPACK_B(a7));
    w += QNNPACK_NR * QNNPACK_KR;
  }
#undef QNNPACK_B
  _mm512_storeu_si512(acc + 0 * QNNPACK_NR, c0);
  _mm512_storeu_si512(acc + 1 * QNNPACK_NR, c1);
  _mm512_storeu_si512(acc + 2 * QNNPACK_NR, c2);
  _mm512_storeu_si512(acc + 3 * QNNPACK_NR, c3);
  _mm512_storeu_si512(acc + 4 * QNNPACK_NR, c4);
  _mm512_storeu_si512(acc + 5 * QNNPACK_NR, c5);
  _mm512_storeu_si512(acc + 6 * QNNPACK_NR, c6);
  _mm512_storeu_si512(acc + 7 * QNNPACK_NR, c7);
}

QP_TARGET_AVX512 static void qnnpack_qu8_requant_avx512(size_t mr, size_t nc, const int32_t *acc,
                                                        const float *mult, int32_t out_zp,
                                                        int32_t qmin, int32_t qmax, uint8_t *out,
                                                        size_t out_stride) {
  const __m512 flo = _mm512_set1_ps((float)(qmin - out_zp));
  const __m512 fhi = _mm512_set1_ps((float)(qmax - out_zp));
  const __m512i vzp = _mm512_set1_epi32(out_zp);
  const __m512 vm = _mm512_loadu_ps(mult);
  const __mmask16 mask = (__mmask16)((1u << nc) - 1u);
  for (size_t i = 0; i < mr; i++) {
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(acc + i * QNNPACK_NR)), vm);
    v = _mm512_min_ps(_mm512_max_ps(v, flo), fhi);
    const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), vzp);
    _mm_mask_storeu_epi8(out + i * out_stride, mask, _mm512_cvtusepi32_epi8(q));
  }
}

QP_TARGET_AVX512 static void qnnpack_qu8_dequant_avx512(size_t mr, size_t nc, const int32_t *acc,
                                                        const float *scale, const float *bias,
                                                        float *out, size_t out_stride) {
  const __m512 vs = _mm512_loadu_ps(scale), vb = _mm512_loadu_ps(bias);
  const __mmask16 mask = (__mmask16)((1u << nc) - 1u);
  for (size_t i = 0; i < mr; i++) {
    __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(acc + i * QNNPACK_NR)), vs);
    QNNPACK_NO_CONTRACT(p);
    const __m512 v = _mm512_add_ps(p, vb);
    _mm512_mask_storeu_ps(out + i * out_stride, mask, v);
  }
}

QP_TARGET_AVX512 static void qnnpack_qu8_quant_avx512(const float *x, size_t n, float inv_scale,
                                                      int32_t zp, uint8_t *out) {
  const __m512 vinv = _mm512_set1_ps(inv_scale);
  const __m512 flo = _mm512_set1_ps((float)(0 - zp)), fhi = _mm512_set1_ps((float)(255 - zp));
  const __m512i vzp = _mm512_set1_epi32(zp);
  for (size_t i = 0; i < n; i += 16) {
    const size_t len = n - i < 16 ? n - i : 16;
    const __mmask16 mask = (__mmask16)((1u << len) - 1u);
    __m512 v = _mm512_maskz_loadu_ps(mask, x + i);
    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v); /* NaN -> 0 -> zp */
    v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, vinv), flo), fhi);
    const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), vzp);
    _mm_mask_storeu_epi8(out + i, mask, _mm512_cvtusepi32_epi8(q));
  }
}

QP_TARGET_AVX512 static void qnnpack_f32_minmax_avx512(const float *x, size_t n, float *lo,
                                                       float *hi) {
  __m512 vmin = _mm512_set1_ps(*lo), vmax = _mm512_set1_ps(*hi);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    vmin = _mm512_min_ps(v, vmin); /* 2nd operand wins when one is NaN */
    vmax = _mm512_max_ps(v, vmax);
  }
  float mn[16], mx[16];
  _mm512_storeu_ps(mn, vmin);
  _mm512_storeu_ps(mx, vmax);
  float l = *lo, h = *hi;
  qnnpack_f32_minmax_scalar(mn, 16, &l, &h);
  qnnpack_f32_minmax_scalar(mx, 16, &l, &h);
  qnnpack_f32_minmax_scalar(x + i, n - i, &l, &h);
  *lo = l;
  *hi = h;
}

/* 32 channels per step (two zmm of int32), masked loads for the channel tail. */
QP_TARGET_AVX512 static void qnnpack_qu8_dwconv_ukernel_up32__avx512skx(
    size_t channels, size_t taps, const uint8_t *const *x, const int16_t *w, size_t cstride,
    int32_t x_zp, const int32_t *bias, int32_t *acc) {
  const __m512i vzp = _mm512_set1_epi32(x_zp);
  size_t c = 0;
  for (; c + 32 <= channels; c += 32) {
    __m512i lo = _mm512_loadu_si512(bias + c), hi = _mm512_loadu_si512(bias + c + 16);
    for (size_t t = 0; t < taps; t++) {
      const __m512i x0 = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(x[t] + c))), vzp);
      const __m512i x1 = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(x[t] + c + 16))), vzp);
      const int16_t *wt = w + t * cstride + c;
      lo = _mm512_add_epi32(lo, _mm512_mullo_epi32(x0, _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)wt))));
      hi = _mm512_add_epi32(hi, _mm512_mullo_epi32(x1, _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(wt + 16)))));
    }
    _mm512_storeu_si512(acc + c, lo);
    _mm512_storeu_si512(acc + c + 16, hi);
  }
  for (; c < channels; c += 16) {
    const size_t len = channels - c < 16 ? channels - c : 16;
    const __mmask16 mask = (__mmask16)((1u << len) - 1u);
    __m512i s = _mm512_maskz_loadu_epi32(mask, bias + c);
    for (size_t t = 0; t < taps; t++) {
      const __m512i xv = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, x[t] + c)), vzp);
      const __m512i wv = _mm512_cvtepi16_epi32(_mm256_maskz_loadu_epi16(mask, w + t * cstride + c));
      s = _mm512_add_epi32(s, _mm512_mullo_epi32(xv, wv));
    }
    _mm512_mask_storeu_epi32(acc + c, mask, s);
  }
}

QP_TARGET_AVX512 static void qnnpack_qu8_vadd_ukernel__avx512skx(size_t n, const uint8_t *a,
                                                                 const uint8_t *b,
                                                                 const qnnpack_add_params *p,
                                                                 uint8_t *out) {
  const __m512i azp = _mm512_set1_epi32(p->a_zp), bzp = _mm512_set1_epi32(p->b_zp);
  const __m512 as = _mm512_set1_ps(p->a_scale), bs = _mm512_set1_ps(p->b_scale);
  const __m512 inv = _mm512_set1_ps(p->inv_out);
  const __m512 flo = _mm512_set1_ps((float)(p->qmin - p->out_zp));
  const __m512 fhi = _mm512_set1_ps((float)(p->qmax - p->out_zp));
  const __m512i ozp = _mm512_set1_epi32(p->out_zp);
  for (size_t i = 0; i < n; i += 16) {
    const size_t len = n - i < 16 ? n - i : 16;
    const __mmask16 mask = (__mmask16)((1u << len) - 1u);
    const __m512i a32 = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, a + i)), azp);
    const __m512i b32 = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, b + i)), bzp);
    __m512 fa = _mm512_mul_ps(_mm512_cvtepi32_ps(a32), as), fb = _mm512_mul_ps(_mm512_cvtepi32_ps(b32), bs);
    QNNPACK_NO_CONTRACT(fa);
    QNNPACK_NO_CONTRACT(fb);
    const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_add_ps(fa, fb), inv), flo), fhi);
    _mm_mask_storeu_epi8(out + i, mask, _mm512_cvtusepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(v), ozp)));
  }
}

const qnnpack_isa_kernels qnnpack_kernels_avx512 = {
    .mr = QNNPACK_AVX512_MR,
    .add = qnnpack_qu8_vadd_ukernel__avx512skx,
    .dwconv = qnnpack_qu8_dwconv_ukernel_up32__avx512skx,
    .xprep = QNNPACK_XPREP_WIDEN16,
    .gemm = qnnpack_qu8_gemm_ukernel_8x16c4__avx512skx,
    .requant = qnnpack_qu8_requant_avx512,
    .dequant = qnnpack_qu8_dequant_avx512,
    .quant = qnnpack_qu8_quant_avx512,
    .minmax = qnnpack_f32_minmax_avx512,
};

const qnnpack_isa_kernels qnnpack_kernels_avx512vnni = {
    .mr = QNNPACK_AVX512_MR,
    .add = qnnpack_qu8_vadd_ukernel__avx512skx,
    .dwconv = qnnpack_qu8_dwconv_ukernel_up32__avx512skx,
    .xprep = QNNPACK_XPREP_FLIP,
    .gemm = qnnpack_qu8_gemm_ukernel_8x16c4__avx512vnni,
    .requant = qnnpack_qu8_requant_avx512,
    .dequant = qnnpack_qu8_dequant_avx512,
    .quant = qnnpack_qu8_quant_avx512,
    .minmax = qnnpack_f32_minmax_avx512,
};
#else
typedef int qnnpack_gemm_avx512_unused; /* ISO C forbids an empty translation unit */
#endif
