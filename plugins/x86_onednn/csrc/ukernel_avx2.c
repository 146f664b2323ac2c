/*
 * AVX2 path (no VNNI). u8 x s8 products are summed WITHOUT saturation: both
 * operands are widened to int16 (vpmovzxbw / vpmovsxbw) and multiplied-added
 * by vpmaddwd, whose int32 pair sums are exact (|2 * 255 * 128| << 2^31).
 * vpmaddubsw (which saturates pair sums to int16 for full-range uint8) is
 * never used, so full 0..255 activations are safe without reduce_range.
 *
 * Microkernel 4x16c4: 4 rows, a 16-column tile processed as two 8-column
 * halves. For each k-group of 4, the 4 activation bytes of a row are widened
 * to int16 and broadcast; each 16-byte slice of the tile (4 columns x 4 k) is
 * widened to 16 int16; vpmaddwd then yields 2 partial sums per column, which
 * are folded with vphaddd at the end.
 */
#include "xo_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <math.h>

#include "quantplug/qp_requant.h"

static inline QP_TARGET_AVX2 __m256i xo_bcast_epi16(int32_t a4) {
  return _mm256_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128(a4)));
}

static inline __attribute__((always_inline)) QP_TARGET_AVX2 void xo_avx2_half(
    const size_t MR, size_t k, const uint8_t *a, size_t lda, const int8_t *w, int32_t *acc,
    size_t h) {
  __m256i c0[4], c1[4];
  for (size_t r = 0; r < MR; r++) c0[r] = c1[r] = _mm256_setzero_si256();
  const size_t groups = (k + XO_KC - 1) / XO_KC, full = k / XO_KC;
  for (size_t g = 0; g < groups; g++) {
    const int8_t *wg = w + g * (XO_NR * XO_KC) + h * 4;
    const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)wg));
    const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wg + 16)));
    for (size_t r = 0; r < MR; r++) {
      int32_t a4;
      if (QP_LIKELY(g < full))
        memcpy(&a4, a + r * lda + g * XO_KC, 4);
      else
        a4 = xo_load_a4(a + r * lda, g, k);
      const __m256i av = xo_bcast_epi16(a4);
      c0[r] = _mm256_add_epi32(c0[r], _mm256_madd_epi16(av, w0));
      c1[r] = _mm256_add_epi32(c1[r], _mm256_madd_epi16(av, w1));
    }
  }
  for (size_t r = 0; r < MR; r++) {
    /* hadd: [c0 c1 c4 c5 | c2 c3 c6 c7] -> permute quadwords 0,2,1,3 */
    __m256i s = _mm256_permute4x64_epi64(_mm256_hadd_epi32(c0[r], c1[r]), 0xD8);
    _mm256_storeu_si256((__m256i *)(acc + r * XO_NR + h), s);
  }
}

#define XO_AVX2_MR(MR)                                                                     \
  static QP_TARGET_AVX2 void xo_avx2_mr##MR(size_t k, const uint8_t *a, size_t lda,        \
                                            const int8_t *w, int32_t *acc) {               \
    xo_avx2_half(MR, k, a, lda, w, acc, 0);                                                \
    xo_avx2_half(MR, k, a, lda, w, acc, 8);                                                \
  }
XO_AVX2_MR(1)
XO_AVX2_MR(2)
XO_AVX2_MR(3)
XO_AVX2_MR(4)

static void x86_onednn_qu8_gemm_ukernel_4x16c4__avx2_madd(size_t mr, size_t k, const uint8_t *a,
                                                         size_t lda, const int8_t *w,
                                                         int32_t *acc) {
  switch (mr) {
    case 1: xo_avx2_mr1(k, a, lda, w, acc); break;
    case 2: xo_avx2_mr2(k, a, lda, w, acc); break;
    case 3: xo_avx2_mr3(k, a, lda, w, acc); break;
    default: xo_avx2_mr4(k, a, lda, w, acc); break;
  }
}

/* ---------------------------------------------------------- epilogue -- */

static inline QP_TARGET_AVX2 __m256i xo_mask8(size_t cnt) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)cnt), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline QP_TARGET_AVX2 void xo_store_u8x8(uint8_t *dst, __m256i v, size_t cnt) {
  __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  __m128i p8 = _mm_packus_epi16(p16, p16);
  if (cnt == 8) {
    _mm_storel_epi64((__m128i *)dst, p8);
  } else {
    uint8_t tmp[16];
    _mm_storeu_si128((__m128i *)tmp, p8);
    memcpy(dst, tmp, cnt);
  }
}

static inline QP_TARGET_AVX2 __m256i xo_load_u8x8(const uint8_t *src, size_t cnt) {
  uint8_t tmp[16] = {0};
  memcpy(tmp, src, cnt);
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)tmp));
}

/* clamp to [lo, hi], round half to even (MXCSR default), add the zero point */
static inline QP_TARGET_AVX2 __m256i xo_round_clamp8(__m256 f, const xo_epilogue *e) {
  f = _mm256_min_ps(_mm256_max_ps(f, _mm256_set1_ps(e->lo)), _mm256_set1_ps(e->hi));
  return _mm256_add_epi32(_mm256_cvtps_epi32(f), _mm256_set1_epi32(e->out_zp));
}

QP_TARGET_AVX2 void xo_epilogue_avx2(const xo_epilogue *e, const int32_t *acc, size_t row0,
                                     size_t mr, size_t col0, size_t nc) {
  for (size_t r = 0; r < mr; r++) {
    const size_t row = row0 + r;
    for (size_t h = 0; h < nc; h += 8) {
      const size_t cnt = nc - h < 8 ? nc - h : 8;
      const size_t col = col0 + h;
      __m256i v = _mm256_loadu_si256((const __m256i *)(acc + r * XO_NR + h));
      switch (e->kind) {
        case XO_EPI_REQUANT: {
          v = _mm256_add_epi32(v, _mm256_loadu_si256((const __m256i *)(e->bias_eff + col)));
          __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_loadu_ps(e->mult + col));
          xo_store_u8x8(e->out_u8 + row * e->ldo + col, xo_round_clamp8(f, e), cnt);
          break;
        }
        case XO_EPI_REQUANT_ADD: {
          v = _mm256_add_epi32(v, _mm256_loadu_si256((const __m256i *)(e->bias_eff + col)));
          __m256 f1 = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_loadu_ps(e->mult + col));
          __m256i o = _mm256_sub_epi32(xo_load_u8x8(e->other + row * e->ld_other + col, cnt),
                                       _mm256_set1_epi32(e->other_zp));
          __m256 f2 = _mm256_mul_ps(_mm256_cvtepi32_ps(o), _mm256_set1_ps(e->other_mult));
          XO_FP_BARRIER(f1);
          XO_FP_BARRIER(f2);
          xo_store_u8x8(e->out_u8 + row * e->ldo + col, xo_round_clamp8(_mm256_add_ps(f1, f2), e), cnt);
          break;
        }
        case XO_EPI_DEQUANT: {
          const size_t i = e->per_row ? row : 0;
          v = _mm256_sub_epi32(v, _mm256_mullo_epi32(_mm256_set1_epi32(e->row_zp[i]),
                                                     _mm256_loadu_si256((const __m256i *)(e->colsum + col))));
          __m256 s = _mm256_mul_ps(_mm256_set1_ps(e->row_scale[i]), _mm256_loadu_ps(e->wscale + col));
          __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), s);
          if (e->fbias != NULL) {
            XO_FP_BARRIER(f);
            f = _mm256_add_ps(f, _mm256_loadu_ps(e->fbias + col));
          }
          _mm256_maskstore_ps(e->out_f32 + row * e->ldo + col, xo_mask8(cnt), f);
          break;
        }
        default: {
          v = _mm256_add_epi32(v, _mm256_loadu_si256((const __m256i *)(e->bias_eff + col)));
          _mm256_maskstore_epi32((int *)(e->out_i32 + row * e->ldo + col), xo_mask8(cnt), v);
          break;
        }
      }
    }
  }
}

/* ------------------------------------------------- min/max, quantize -- */

QP_TARGET_AVX2 int xo_minmax_avx2(const float *x, size_t n, float *mn, float *mx) {
  __m256 lo = _mm256_set1_ps(INFINITY), hi = _mm256_set1_ps(-INFINITY);
  __m256 nan = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    lo = _mm256_min_ps(v, lo);
    hi = _mm256_max_ps(v, hi);
  }
  float l[8], h[8];
  _mm256_storeu_ps(l, lo);
  _mm256_storeu_ps(h, hi);
  int has_nan = _mm256_movemask_ps(nan) != 0;
  float rl = l[0], rh = h[0];
  for (int j = 1; j < 8; j++) {
    rl = l[j] < rl ? l[j] : rl;
    rh = h[j] > rh ? h[j] : rh;
  }
  for (; i < n; i++) {
    float v = x[i];
    has_nan |= (v != v);
    rl = v < rl ? v : rl;
    rh = v > rh ? v : rh;
  }
  *mn = rl;
  *mx = rh;
  return has_nan;
}

QP_TARGET_AVX2 void xo_quantize_avx2(const float *x, size_t n, float inv, int32_t zp, uint8_t *q) {
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256 lo = _mm256_set1_ps((float)(0 - zp)), hi = _mm256_set1_ps((float)(255 - zp));
  const __m256i vzp = _mm256_set1_epi32(zp);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 f = _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv);
    f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);
    xo_store_u8x8(q + i, _mm256_add_epi32(_mm256_cvtps_epi32(f), vzp), 8);
  }
  for (; i < n; i++) q[i] = (uint8_t)qp_quantize(x[i], inv, zp, 0, 255);
}

const xo_gemm_impl xo_impl_avx2 = {
    "x86_onednn_qu8_gemm_minmax_ukernel_4x16c4__avx2_madd",
    4,
    x86_onednn_qu8_gemm_ukernel_4x16c4__avx2_madd,
    xo_epilogue_avx2,
    xo_minmax_avx2,
    xo_quantize_avx2,
};
#endif
