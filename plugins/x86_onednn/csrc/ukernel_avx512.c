/*
 * AVX-512 (F+BW+VL, no VNNI) path: the widening vpmaddwd scheme of the AVX2
 * path on 512-bit registers (never vpmaddubsw, so no int16 saturation), plus
 * the AVX-512 epilogue, min/max and quantize shared with the VNNI kernel.
 *
 * Microkernel 8x16c4: the 64-byte k-group of a tile is widened to two zmm of
 * 32 int16 (columns 0-7 and 8-15, 4 k each); the row's 4 activation bytes are
 * widened and broadcast; vpmaddwd leaves 2 partial sums per column, folded at
 * the end by adding the odd lanes onto the even ones and narrowing (vpmovqd).
 */
#include "xo_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <math.h>

#include "quantplug/qp_requant.h"

static inline __attribute__((always_inline)) QP_TARGET_AVX512 void xo_avx512_body(
    const size_t MR, size_t k, const uint8_t *a, size_t lda, const int8_t *w, int32_t *acc) {
  __m512i c0[8], c1[8];
  for (size_t r = 0; r < MR; r++) c0[r] = c1[r] = _mm512_setzero_si512();
  const size_t groups = (k + XO_KC - 1) / XO_KC, full = k / XO_KC;
  for (size_t g = 0; g < groups; g++) {
    const int8_t *wg = w + g * (XO_NR * XO_KC);
    const __m512i w0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)wg));
    const __m512i w1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(wg + 32)));
    for (size_t r = 0; r < MR; r++) {
      int32_t a4;
      if (QP_LIKELY(g < full))
        memcpy(&a4, a + r * lda + g * XO_KC, 4);
      else
        a4 = xo_load_a4(a + r * lda, g, k);
      const __m512i av = _mm512_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128(a4)));
      c0[r] = _mm512_add_epi32(c0[r], _mm512_madd_epi16(av, w0));
      c1[r] = _mm512_add_epi32(c1[r], _mm512_madd_epi16(av, w1));
    }
  }
  for (size_t r = 0; r < MR; r++) {
    __m256i lo = _mm512_cvtepi64_epi32(_mm512_add_epi32(c0[r], _mm512_srli_epi64(c0[r], 32)));
    __m256i hi = _mm512_cvtepi64_epi32(_mm512_add_epi32(c1[r], _mm512_srli_epi64(c1[r], 32)));
    _mm512_storeu_si512(acc + r * XO_NR, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
  }
}

#define XO_AVX512_MR(MR)                                                                    \
  static QP_TARGET_AVX512 void xo_avx512_mr##MR(size_t k, const uint8_t *a, size_t lda,     \
                                                const int8_t *w, int32_t *acc) {            \
    xo_avx512_body(MR, k, a, lda, w, acc);                                                  \
  }
XO_AVX512_MR(1)
XO_AVX512_MR(2)
XO_AVX512_MR(3)
XO_AVX512_MR(4)
XO_AVX512_MR(5)
XO_AVX512_MR(6)
XO_AVX512_MR(7)
XO_AVX512_MR(8)

static void x86_onednn_qu8_gemm_ukernel_8x16c4__avx512bw_madd(size_t mr, size_t k,
                                                             const uint8_t *a, size_t lda,
                                                             const int8_t *w, int32_t *acc) {
  switch (mr) {
    case 1: xo_avx512_mr1(k, a, lda, w, acc); break;
    case 2: xo_avx512_mr2(k, a, lda, w, acc); break;
    case 3: xo_avx512_mr3(k, a, lda, w, acc); break;
    case 4: xo_avx512_mr4(k, a, lda, w, acc); break;
    case 5: xo_avx512_mr5(k, a, lda, w, acc); break;
    case 6: xo_avx512_mr6(k, a, lda, w, acc); break;
    case 7: xo_avx512_mr7(k, a, lda, w, acc); break;
    default: xo_avx512_mr8(k, a, lda, w, acc); break;
  }
}

/* ---------------------------------------------------------- epilogue -- */

QP_TARGET_AVX512 void xo_epilogue_avx512(const xo_epilogue *e, const int32_t *acc, size_t row0,
                                         size_t mr, size_t col0, size_t nc) {
  const __mmask16 mask = (__mmask16)(nc >= 16 ? 0xFFFFu : ((1u << nc) - 1u));
  if (e->kind == XO_EPI_REQUANT) {
    /* The hot conv/linear case with the per-column constants hoisted: the uint8 stores may
     * alias anything, so the compiler would reload them (and e) for every row. The float
     * operations of xo_epilogue_scalar, in its order. */
    const __m512i bias = _mm512_loadu_si512(e->bias_eff + col0);
    const __m512 mult = _mm512_loadu_ps(e->mult + col0);
    const __m512 lo = _mm512_set1_ps(e->lo), hi = _mm512_set1_ps(e->hi);
    const __m512i zp = _mm512_set1_epi32(e->out_zp);
    uint8_t *o = e->out_u8 + row0 * e->ldo + col0;
    const size_t ldo = e->ldo;
    for (size_t r = 0; r < mr; r++, o += ldo) {
      const __m512i v = _mm512_add_epi32(_mm512_loadu_si512(acc + r * XO_NR), bias);
      __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), mult);
      f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
      xo_store_u8x16(o, mask, _mm512_add_epi32(_mm512_cvtps_epi32(f), zp));
    }
    return;
  }
  if (e->kind == XO_EPI_REQUANT_ADD) { /* the fused conv + add, hoisted the same way */
    const __m512i bias = _mm512_loadu_si512(e->bias_eff + col0);
    const __m512 mult = _mm512_loadu_ps(e->mult + col0), omult = _mm512_set1_ps(e->other_mult);
    const __m512 lo = _mm512_set1_ps(e->lo), hi = _mm512_set1_ps(e->hi);
    const __m512i zp = _mm512_set1_epi32(e->out_zp), ozp = _mm512_set1_epi32(e->other_zp);
    uint8_t *o = e->out_u8 + row0 * e->ldo + col0;
    const uint8_t *other = e->other + row0 * e->ld_other + col0;
    const size_t ldo = e->ldo, ldx = e->ld_other;
    for (size_t r = 0; r < mr; r++, o += ldo, other += ldx) {
      const __m512i v = _mm512_add_epi32(_mm512_loadu_si512(acc + r * XO_NR), bias);
      __m512 f1 = _mm512_mul_ps(_mm512_cvtepi32_ps(v), mult);
      const __m512i x = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, other)), ozp);
      __m512 f2 = _mm512_mul_ps(_mm512_cvtepi32_ps(x), omult);
      XO_FP_BARRIER_ZMM(f1);
      XO_FP_BARRIER_ZMM(f2);
      __m512 f = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(f1, f2), lo), hi);
      xo_store_u8x16(o, mask, _mm512_add_epi32(_mm512_cvtps_epi32(f), zp));
    }
    return;
  }
  for (size_t r = 0; r < mr; r++) {
    const size_t row = row0 + r;
    __m512i v = _mm512_loadu_si512(acc + r * XO_NR);
    switch (e->kind) { /* the requantizing kinds returned above */
      case XO_EPI_DEQUANT: {
        const size_t i = e->per_row ? row : 0;
        v = _mm512_sub_epi32(v, _mm512_mullo_epi32(_mm512_set1_epi32(e->row_zp[i]),
                                                   _mm512_loadu_si512(e->colsum + col0)));
        __m512 s = _mm512_mul_ps(_mm512_set1_ps(e->row_scale[i]), _mm512_loadu_ps(e->wscale + col0));
        __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), s);
        if (e->fbias != NULL) {
          XO_FP_BARRIER_ZMM(f);
          f = _mm512_add_ps(f, _mm512_loadu_ps(e->fbias + col0));
        }
        _mm512_mask_storeu_ps(e->out_f32 + row * e->ldo + col0, mask, f);
        break;
      }
      default: {
        v = _mm512_add_epi32(v, _mm512_loadu_si512(e->bias_eff + col0));
        _mm512_mask_storeu_epi32(e->out_i32 + row * e->ldo + col0, mask, v);
        break;
      }
    }
  }
}

/* ------------------------------------------------- min/max, quantize -- */

QP_TARGET_AVX512 int xo_minmax_avx512(const float *x, size_t n, float *mn, float *mx) {
  __m512 lo = _mm512_set1_ps(INFINITY), hi = _mm512_set1_ps(-INFINITY);
  __mmask16 nan = 0;
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m = (__mmask16)(n - i >= 16 ? 0xFFFFu : ((1u << (n - i)) - 1u));
    __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    nan |= _mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q);
    lo = _mm512_mask_min_ps(lo, m, v, lo);
    hi = _mm512_mask_max_ps(hi, m, v, hi);
  }
  *mn = _mm512_reduce_min_ps(lo);
  *mx = _mm512_reduce_max_ps(hi);
  return nan != 0;
}

QP_TARGET_AVX512 void xo_quantize_avx512(const float *x, size_t n, float inv, int32_t zp,
                                         uint8_t *q) {
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512 lo = _mm512_set1_ps((float)(0 - zp)), hi = _mm512_set1_ps((float)(255 - zp));
  const __m512i vzp = _mm512_set1_epi32(zp);
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 m = (__mmask16)(n - i >= 16 ? 0xFFFFu : ((1u << (n - i)) - 1u));
    __m512 f = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vinv);
    f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
    xo_store_u8x16(q + i, m, _mm512_add_epi32(_mm512_cvtps_epi32(f), vzp));
  }
}

const xo_gemm_impl xo_impl_avx512 = {
    "x86_onednn_qu8_gemm_minmax_ukernel_8x16c4__avx512bw_madd",
    8,
    x86_onednn_qu8_gemm_ukernel_8x16c4__avx512bw_madd,
    xo_epilogue_avx512,
    xo_minmax_avx512,
    xo_quantize_avx512,
};
#endif
