/*
 * x86-64 depthwise convolution.
 *
 * AVX2 / AVX-512: per-pixel accumulation of 16 channels: per tap, sign-extend
 * 16 int8 activations to int32, subtract the zero point and add the exact
 * products with the [tap][C] int32 weights (vpmulld). AVX2 as two halves of 8
 * channels, AVX-512 as one register. Padding taps (NULL) skipped.
 *
 * AVX-512 VNNI: a row-wise kernel on 64 channels at a time. vpdpbusd sums four
 * u8 x s8 products per int32 lane, so four vertical taps (ky) of one input
 * column are interleaved byte by byte (two rounds of unpack: lane (L, i) of
 * vector j holds channel 16L + 4j + i), once per output row and column, and
 * every output pixel of the row reuses them for its kw horizontal taps:
 * kw * ceil(kh / 4) * 4 vpdpbusd per 64 channels of a pixel, no per-tap widening.
 * Activations go in as x + 128 (x ^ 0x80) and padding as x_zp, so
 * sum (x + 128) * w over all taps minus (x_zp + 128) * sum w, folded into the
 * bias once, is exactly sum (x - x_zp) * w over the inside taps. Two rounds of
 * signed packs put the four permuted vectors back in channel order. With
 * vertical stride and dilation 1 and kh <= 3, one quad of four input rows
 * serves two output rows (two weight sets), halving the interleaving; a last
 * group of <= 32 channels runs 16 at a time in xmm registers. Each task is a
 * row (pair) over all channel groups, so threads never share output lines.
 */
#include <stdlib.h>

#include "quantplug/qp_runtime.h"
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

/* ------------------------------------------------------- AVX-512 VNNI rows -- */

#define XNN_DWV_CG 64 /* channels per group: one zmm of int8 */

typedef struct {
  const xnn_dwconv_problem *p;
  size_t groups, nq, ncols;
  const int8_t *wv;  /* [group][kx][q][j][64]: byte 4d + t = w[ky = 4q + t][kx] of channel xnn_dwv_channel */
  const int32_t *be; /* [group][j][16]: bias - (x_zp + 128) * sum of the channel's weights (wrapping) */
  const float *mv;   /* [group][j][16]: requantization multipliers */
  size_t set_bytes;  /* wv holds two weight sets in pair mode: set r has tap t = ky + r */
  int pair, failed;
} xnn_dwv_ctx;

/* Channel (within its group of 64) of dword d of interleaved vector j. */
static inline size_t xnn_dwv_channel(size_t j, size_t d) { return 16 * (d / 4) + 4 * j + d % 4; }

/* Four tap vectors a, b, c, d (64 channels each) -> o[j]: dword (L, i) = the 4 taps of channel 16L + 4j + i. */
QP_TARGET_AVX512VNNI static inline void xnn_dwv_interleave(__m512i a, __m512i b, __m512i c, __m512i d, int8_t *o) {
  const __m512i ab_lo = _mm512_unpacklo_epi8(a, b), ab_hi = _mm512_unpackhi_epi8(a, b);
  const __m512i cd_lo = _mm512_unpacklo_epi8(c, d), cd_hi = _mm512_unpackhi_epi8(c, d);
  _mm512_storeu_si512(o, _mm512_unpacklo_epi16(ab_lo, cd_lo));
  _mm512_storeu_si512(o + 64, _mm512_unpackhi_epi16(ab_lo, cd_lo));
  _mm512_storeu_si512(o + 128, _mm512_unpacklo_epi16(ab_hi, cd_hi));
  _mm512_storeu_si512(o + 192, _mm512_unpackhi_epi16(ab_hi, cd_hi));
}

/* The interleaved columns of one output row (or row pair), channel group mask cm, into cb: input
 * rows rows[0 .. taps) (NULL: padding, read as x_zp), four per quad q. */
__attribute__((always_inline)) QP_TARGET_AVX512VNNI static inline void xnn_dwv_columns(
    const xnn_dwconv_problem *p, size_t nq, size_t taps, size_t ncols, const int8_t *const *rows, __mmask64 cm,
    int8_t *cb) {
  const __m512i flip = _mm512_set1_epi8((char)0x80), pad = _mm512_set1_epi8((char)(p->x_zp ^ 0x80));
  for (size_t col = 0; col < ncols; col++) {
    const int inside = col >= p->pw && col - p->pw < p->w;
    const size_t off = inside ? (col - p->pw) * p->c : 0;
    for (size_t q = 0; q < nq; q++) {
      __m512i v[4];
#pragma GCC unroll 4
      for (size_t t = 0; t < 4; t++) {
        const size_t ky = 4 * q + t;
        const int8_t *r = ky < taps && inside ? rows[ky] : NULL;
        v[t] = r ? _mm512_xor_si512(_mm512_maskz_loadu_epi8(cm, r + off), flip) : ky < taps ? pad : flip;
      }
      xnn_dwv_interleave(v[0], v[1], v[2], v[3], cb + (col * nq + q) * 256);
    }
  }
}

/* One output row of one channel group from its interleaved columns; KW and NQ are constants
 * for the specialised shapes (weights and epilogue constants then stay in registers) or 0 (any). */
__attribute__((always_inline)) QP_TARGET_AVX512VNNI static inline void xnn_dwv_row(
    const xnn_dwconv_problem *p, const size_t KW, const size_t NQ, size_t nq, const int8_t *cb, const int8_t *wg,
    const int32_t *be, const float *mv, __mmask64 cm, int8_t *orow) {
  const size_t kw = KW ? KW : p->kw;
  nq = NQ ? NQ : nq;
  const __m512 lo = _mm512_set1_ps((float)(p->qmin - p->out_zp)), hi = _mm512_set1_ps((float)(p->qmax - p->out_zp));
  const __m512i ozp = _mm512_set1_epi16((int16_t)p->out_zp);
  const __m512i b0 = _mm512_loadu_si512(be), b1 = _mm512_loadu_si512(be + 16);
  const __m512i b2 = _mm512_loadu_si512(be + 32), b3 = _mm512_loadu_si512(be + 48);
  const __m512 m0 = _mm512_loadu_ps(mv), m1 = _mm512_loadu_ps(mv + 16);
  const __m512 m2 = _mm512_loadu_ps(mv + 32), m3 = _mm512_loadu_ps(mv + 48);
  const size_t col_step = p->sw * nq * 256, tap_step = p->dw * nq * 256;
  for (size_t ox = 0; ox < p->ow; ox++, cb += col_step, orow += p->c) {
    __m512i a0 = b0, a1 = b1, a2 = b2, a3 = b3; /* the bias first: int32 sums wrap alike in any order */
    const int8_t *xc = cb, *wk = wg;
    for (size_t kx = 0; kx < kw; kx++, xc += tap_step) {
      for (size_t q = 0; q < nq; q++, wk += 256) {
        const int8_t *xq = xc + q * 256;
        XNN_DPBUSD(a0, _mm512_loadu_si512(xq), _mm512_loadu_si512(wk));
        XNN_DPBUSD(a1, _mm512_loadu_si512(xq + 64), _mm512_loadu_si512(wk + 64));
        XNN_DPBUSD(a2, _mm512_loadu_si512(xq + 128), _mm512_loadu_si512(wk + 128));
        XNN_DPBUSD(a3, _mm512_loadu_si512(xq + 192), _mm512_loadu_si512(wk + 192));
      }
    }
    /* the requantization of xnn_qs8_requant__avx512, the zero point added in int16: the clamped
     * values lie in [qmin - zp, qmax - zp] (|.| <= 255) and after the add in [-128, 127], so the
     * saturating packs only reorder (lane L back to channels 16L .. 16L + 15) */
#define XNN_DWV_REQ(a, m) _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), m), lo), hi))
    const __m512i q01 = _mm512_add_epi16(_mm512_packs_epi32(XNN_DWV_REQ(a0, m0), XNN_DWV_REQ(a1, m1)), ozp);
    const __m512i q23 = _mm512_add_epi16(_mm512_packs_epi32(XNN_DWV_REQ(a2, m2), XNN_DWV_REQ(a3, m3)), ozp);
#undef XNN_DWV_REQ
    _mm512_mask_storeu_epi8(orow, cm, _mm512_packs_epi16(q01, q23));
  }
}

/* A partial last group of at most 32 channels: 16 channels at a time in xmm registers, which
 * costs a quarter of a zmm group on CPUs that split 512-bit operations (Zen 4), instead of a
 * full 64-channel group for 16 channels (144 = 2 * 64 + 16 in MobileNet v2). Subgroup s uses
 * 128-bit lane s of the zmm layout (lane L of vector j holds channels 16L + 4j + i), so the
 * weights, biases and multipliers are shared with the zmm path; cbx holds 64 bytes per column. */
__attribute__((always_inline)) QP_TARGET_AVX512VNNI static inline void xnn_dwv_tail16_body(
    const xnn_dwconv_problem *p, const size_t KW, const size_t NQ, size_t nq, size_t ncols, const int8_t *const *rows,
    size_t s, __mmask16 cm, int8_t *cbx, const int8_t *wg, const int32_t *be, const float *mv, int8_t *orow) {
  const size_t kw = KW ? KW : p->kw;
  nq = NQ ? NQ : nq;
  const __m128i flip = _mm_set1_epi8((char)0x80), pad = _mm_set1_epi8((char)(p->x_zp ^ 0x80));
  for (size_t col = 0; col < ncols; col++) {
    const int inside = col >= p->pw && col - p->pw < p->w;
    const size_t off = (inside ? (col - p->pw) * p->c : 0) + 16 * s;
    for (size_t q = 0; q < nq; q++) {
      __m128i v[4];
#pragma GCC unroll 4
      for (size_t t = 0; t < 4; t++) {
        const size_t ky = 4 * q + t;
        const int8_t *r = ky < p->kh && inside ? rows[ky] : NULL;
        v[t] = r ? _mm_xor_si128(_mm_maskz_loadu_epi8(cm, r + off), flip) : ky < p->kh ? pad : flip;
      }
      const __m128i ab_lo = _mm_unpacklo_epi8(v[0], v[1]), ab_hi = _mm_unpackhi_epi8(v[0], v[1]);
      const __m128i cd_lo = _mm_unpacklo_epi8(v[2], v[3]), cd_hi = _mm_unpackhi_epi8(v[2], v[3]);
      int8_t *o = cbx + (col * nq + q) * 64;
      _mm_storeu_si128((__m128i *)o, _mm_unpacklo_epi16(ab_lo, cd_lo));
      _mm_storeu_si128((__m128i *)(o + 16), _mm_unpackhi_epi16(ab_lo, cd_lo));
      _mm_storeu_si128((__m128i *)(o + 32), _mm_unpacklo_epi16(ab_hi, cd_hi));
      _mm_storeu_si128((__m128i *)(o + 48), _mm_unpackhi_epi16(ab_hi, cd_hi));
    }
  }
  const __m128 lo = _mm_set1_ps((float)(p->qmin - p->out_zp)), hi = _mm_set1_ps((float)(p->qmax - p->out_zp));
  const __m128i ozp = _mm_set1_epi32(p->out_zp);
  for (size_t ox = 0; ox < p->ow; ox++) {
    __m128i a[4] = {_mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128()};
    for (size_t kx = 0; kx < kw; kx++) {
      const int8_t *xc = cbx + (ox * p->sw + kx * p->dw) * nq * 64;
      for (size_t q = 0; q < nq; q++)
#pragma GCC unroll 4
        for (size_t j = 0; j < 4; j++)
          XNN_DPBUSD(a[j], _mm_loadu_si128((const __m128i *)(xc + q * 64 + 16 * j)),
                     _mm_loadu_si128((const __m128i *)(wg + (kx * nq + q) * 256 + 64 * j + 16 * s)));
    }
    __m128i qv[4];
#pragma GCC unroll 4
    for (size_t j = 0; j < 4; j++) { /* the requantization of xnn_qs8_requant__avx512 */
      const __m128 f = _mm_mul_ps(_mm_cvtepi32_ps(_mm_add_epi32(a[j], _mm_loadu_si128((const __m128i *)(be + 16 * j + 4 * s)))),
                                  _mm_loadu_ps(mv + 16 * j + 4 * s));
      qv[j] = _mm_add_epi32(_mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(f, lo), hi)), ozp);
    }
    _mm_mask_storeu_epi8(orow + ox * p->c + 16 * s, cm,
                         _mm_packs_epi16(_mm_packs_epi32(qv[0], qv[1]), _mm_packs_epi32(qv[2], qv[3])));
  }
}

QP_TARGET_AVX512VNNI static void xnn_dwv_tail16(const xnn_dwconv_problem *p, size_t nq, size_t ncols,
                                               const int8_t *const *rows, size_t s, __mmask16 cm, int8_t *cbx,
                                               const int8_t *wg, const int32_t *be, const float *mv, int8_t *orow) {
  if (p->kw == 3 && nq == 1) xnn_dwv_tail16_body(p, 3, 1, 1, ncols, rows, s, cm, cbx, wg, be, mv, orow);
  else xnn_dwv_tail16_body(p, 0, 0, nq, ncols, rows, s, cm, cbx, wg, be, mv, orow);
}

/* Tasks: (batch, output row or row pair), each over every channel group. */
QP_TARGET_AVX512VNNI static void xnn_dwv_run(void *vctx, size_t begin, size_t end) {
  xnn_dwv_ctx *ctx = (xnn_dwv_ctx *)vctx;
  const xnn_dwconv_problem *p = ctx->p;
  const size_t C = p->c, nq = ctx->nq, ncols = ctx->ncols, kh = p->kh, kw = p->kw;
  int8_t *cb = (int8_t *)malloc(ncols * nq * 256); /* the interleaved columns of one output row */
  if (!cb) {
    __atomic_store_n(&ctx->failed, 1, __ATOMIC_RELAXED);
    return;
  }
  const int8_t *rows[XNN_DW_MAX_TAPS + 1];
  const size_t per_task = ctx->pair ? 2 : 1, row_tasks = (p->oh + per_task - 1) / per_task;
  for (size_t task = begin * ctx->groups; task < end * ctx->groups; task++) {
    /* every channel group of a row in one task: threads writing different groups of the same
     * pixels would share (and fight over) the output cache lines */
    const size_t g = task % ctx->groups, oy0 = task / ctx->groups % row_tasks * per_task;
    const size_t b = task / ctx->groups / row_tasks, n_out = xnn_min(per_task, p->oh - oy0);
    const size_t c0 = g * XNN_DWV_CG, nc = xnn_min(XNN_DWV_CG, C - c0);
    const __mmask64 cm = nc == XNN_DWV_CG ? ~(__mmask64)0 : (((__mmask64)1 << nc) - 1);
    const int8_t *wg = ctx->wv + g * kw * nq * 256;
    const int32_t *be = ctx->be + g * XNN_DWV_CG;
    const float *mv = ctx->mv + g * XNN_DWV_CG;
    int8_t *orow = p->out + (b * p->oh + oy0) * p->ow * C + c0;
    /* input row iy (before padding) of batch b, NULL when it is padding */
#define XNN_DWV_ROW(iy) ((iy) >= p->ph && (iy) - p->ph < p->h ? p->x + (b * p->h + ((iy) - p->ph)) * p->w * C + c0 : NULL)
    if (nc <= 32) {
      for (size_t r = 0; r < n_out; r++, orow += p->ow * C) {
        for (size_t ky = 0; ky < kh; ky++) rows[ky] = XNN_DWV_ROW((oy0 + r) * p->sh + ky * p->dh);
        for (size_t sub = 0; sub * 16 < nc; sub++) {
          const size_t left = nc - sub * 16;
          xnn_dwv_tail16(p, nq, ncols, rows, sub, left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1), cb,
                         wg, be, mv, orow);
        }
      }
    } else if (ctx->pair) { /* rows oy0 .. oy0 + 3 serve output rows oy0 (set 0) and oy0 + 1 (set 1) */
      for (size_t t = 0; t < 4; t++) rows[t] = XNN_DWV_ROW(oy0 + t);
      xnn_dwv_columns(p, 1, 4, ncols, rows, cm, cb);
      for (size_t r = 0; r < n_out; r++, orow += p->ow * C, wg += ctx->set_bytes) {
        if (kw == 3) xnn_dwv_row(p, 3, 1, 1, cb, wg, be, mv, cm, orow);
        else xnn_dwv_row(p, 0, 1, 1, cb, wg, be, mv, cm, orow);
      }
    } else {
      for (size_t ky = 0; ky < kh; ky++) rows[ky] = XNN_DWV_ROW(oy0 * p->sh + ky * p->dh);
      if (kw == 3 && nq == 1) { /* 3x3 (and 2x3, 4x3) */
        xnn_dwv_columns(p, 1, kh, ncols, rows, cm, cb);
        xnn_dwv_row(p, 3, 1, 1, cb, wg, be, mv, cm, orow);
      } else {
        xnn_dwv_columns(p, nq, kh, ncols, rows, cm, cb);
        xnn_dwv_row(p, 0, 0, nq, cb, wg, be, mv, cm, orow);
      }
    }
#undef XNN_DWV_ROW
  }
  free(cb);
}

static int xnn_dwconv_rows__avx512vnni(const xnn_dwconv_problem *p) {
  const size_t C = p->c, groups = (C + XNN_DWV_CG - 1) / XNN_DWV_CG, nq = (p->kh + 3) / 4, kw = p->kw;
  /* pair mode (stride and dilation 1 vertically, kh <= 3): one quad of four input rows feeds two
   * output rows, through two weight sets (set r: tap t = ky + r), so each interleaved column
   * serves two rows and no quad slot is wasted on 3-row kernels */
  const int pair = p->sh == 1 && p->dh == 1 && p->kh <= 3;
  const size_t set_bytes = groups * kw * nq * 256, wv_bytes = (pair ? 2 : 1) * set_bytes;
  char *buf = (char *)malloc(wv_bytes + groups * XNN_DWV_CG * (sizeof(int32_t) + sizeof(float)));
  if (!buf) return QP_ERR_OUT_OF_MEMORY;
  int8_t *wv = (int8_t *)buf;
  int32_t *be = (int32_t *)(buf + wv_bytes);
  float *mv = (float *)(be + groups * XNN_DWV_CG);
  for (size_t g = 0; g < groups; g++)
    for (size_t j = 0; j < 4; j++)
      for (size_t d = 0; d < 16; d++) {
        const size_t ch = g * XNN_DWV_CG + xnn_dwv_channel(j, d);
        uint32_t wsum = 0;
        for (size_t kx = 0; kx < kw; kx++)
          for (size_t q = 0; q < nq; q++)
            for (size_t t = 0; t < 4; t++) {
              for (size_t r = 0; r < (pair ? 2u : 1u); r++) {
                const size_t ky = 4 * q + t - r; /* wraps past the end for t < r: no tap */
                const int32_t v = ch < C && ky < p->kh ? p->wt[(ky * kw + kx) * C + ch] : 0;
                wv[r * set_bytes + (((g * kw + kx) * nq + q) * 4 + j) * 64 + 4 * d + t] = (int8_t)v;
              }
              const size_t ky = 4 * q + t;
              wsum += (uint32_t)(ch < C && ky < p->kh ? p->wt[(ky * kw + kx) * C + ch] : 0);
            }
        const size_t e = g * XNN_DWV_CG + 16 * j + d;
        be[e] = ch < C ? (int32_t)((uint32_t)p->bias[ch] - (uint32_t)(p->x_zp + 128) * wsum) : 0;
        mv[e] = ch < C ? p->mult[p->per_channel ? ch : 0] : 1.0f;
      }
  xnn_dwv_ctx ctx = {p, groups, nq, (p->ow - 1) * p->sw + (kw - 1) * p->dw + 1, wv, be, mv, set_bytes, pair, 0};
  const size_t row_tasks = pair ? (p->oh + 1) / 2 : p->oh;
  const size_t tasks = p->batch * row_tasks, work = (pair ? 2 : 1) * groups * p->ow * kw * nq * 4 * 64;
  qp_parallel_for(tasks, work >= (1u << 14) ? 1 : (1u << 14) / work, xnn_dwv_run, &ctx);
  free(buf);
  return ctx.failed ? QP_ERR_OUT_OF_MEMORY : QP_OK;
}

xnn_dwconv_rows_fn xnn_dwconv_rows_for(int isa) {
  return isa == QP_ISA_AVX512VNNI ? xnn_dwconv_rows__avx512vnni : NULL;
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
