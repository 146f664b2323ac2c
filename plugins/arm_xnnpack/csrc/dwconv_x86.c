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
 * serves two output rows (two weight sets), halving the interleaving. Each task
 * is a row (pair) over all channel groups, so threads never share output lines.
 *
 * Cost notes (Zen 4, where 512-bit operations run on 256-bit pipes): the 3x3
 * row kernel keeps its 12 weight vectors, biases and multipliers in registers
 * and computes two pixels per step, which share the middle columns (8 column
 * loads per pixel instead of 12); each vector j is requantized and packed as
 * soon as it is complete (the float clamp reduced to the upper bound, or to
 * nothing when the setup proves |float(acc) * mult| < 2^30, the rest done on
 * the packed bytes). The staging reads rows through per-slot pointers (padding:
 * a pad buffer with column step 0), so its column loop has no branches. A last
 * group of <= 32 channels (144 = 2 * 64 + 16) runs 16 channels at a time in a
 * second layout, one zmm per staged column (the 16 channels x 4 taps) and four
 * output pixels per step, instead of quarter-filled 64-channel vectors or xmm
 * arithmetic. The weight re-layout (xnn_dwv_prepare) reads the packed gemm
 * weights directly, channels innermost; it runs per call in the plain entry
 * point, or once per layer into a cached plan (dwconv_plan.c), which then only
 * launches the rows (xnn_dwv_launch).
 */
#include <math.h>
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
#define XNN_DWV_TP 4  /* output pixels per step of the 16-channel (tail) kernel: one per 128-bit lane */

typedef struct {
  const xnn_dwconv_problem *p;
  size_t groups, nq, ncols, tcols; /* tcols: staged columns of the 16-channel kernel (whole steps of 4 pixels) */
  const int8_t *wv;  /* [set][group][kx][q][j][64]: byte 4d + t = w[ky = 4q + t - set][kx] of channel xnn_dwv_channel */
  const int32_t *be; /* [group][j][16]: bias - (x_zp + 128) * sum of the channel's weights (wrapping), same order */
  const float *mv;   /* [group][j][16]: requantization multipliers, same order */
  const int8_t *tw;  /* [set][kx][q][C rounded up to 16][4]: the weights again, channels in natural order */
  const int32_t *bn; /* [C rounded up to 16]: be in natural channel order */
  const float *mn;   /* [C rounded up to 16]: mv in natural channel order */
  size_t set_bytes, tset_bytes; /* wv / tw bytes per weight set */
  int pair, nomin, failed; /* nomin: no float clamp needed (see xnn_dwv_req_consts) */
} xnn_dwv_ctx;

/* Channel (within its group of 64) of dword d of interleaved vector j. */
static inline size_t xnn_dwv_channel(size_t j, size_t d) { return 16 * (d / 4) + 4 * j + d % 4; }

/* The requantization constants of every row kernel. The float clamp keeps only its upper bound
 * hi = qmax - zp (so cvtps2dq never meets a float above 2^31, whose 0x80000000 would read as a
 * large negative value); the lower bound moves after the narrowing: the saturating packs (int32
 * -> int16 -> int8) and the saturating zero-point add are monotone and leave every value in
 * [qmin, qmax] unchanged, so clamping the bytes to qmin afterwards gives exactly
 * clamp(round(f), qmin - zp, qmax - zp) + zp, the scalar qp_requantize (the rounding commutes
 * with a clamp to integer bounds). When the setup proves |f| < 2^30 for every accumulator the
 * layer can produce (NOMIN: no float clamp at all), the upper bound moves to the bytes too. */
typedef struct {
  __m512 hi;
  __m512i ozp, qmin, qmax; /* out_zp as int16 lanes, qmin / qmax as int8 lanes */
} xnn_dwv_req_consts;

QP_TARGET_AVX512VNNI static inline xnn_dwv_req_consts xnn_dwv_req_init(const xnn_dwconv_problem *p) {
  const xnn_dwv_req_consts k = {_mm512_set1_ps((float)(p->qmax - p->out_zp)), _mm512_set1_epi16((int16_t)p->out_zp),
                                _mm512_set1_epi8((char)p->qmin), _mm512_set1_epi8((char)p->qmax)};
  return k;
}

/* int32 accumulator (bias included) -> rounded int32 (at most qmax - zp unless NOMIN). */
QP_TARGET_AVX512VNNI static inline __m512i xnn_dwv_req(const int NOMIN, __m512i a, __m512 m, __m512 hi) {
  const __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(a), m);
  return _mm512_cvtps_epi32(NOMIN ? f : _mm512_min_ps(f, hi));
}

/* The first narrowing step: two requantized vectors -> int16 with the zero point added. */
QP_TARGET_AVX512VNNI static inline __m512i xnn_dwv_pack2(__m512i q0, __m512i q1, const xnn_dwv_req_consts *k) {
  return _mm512_adds_epi16(_mm512_packs_epi32(q0, q1), k->ozp);
}

/* The last step: two int16 vectors -> int8, clamped to qmin (and qmax). Lane L of the result holds
 * lane L of the four int32 vectors behind h01 (0, 1) and h23 (2, 3), four bytes each, in order. */
QP_TARGET_AVX512VNNI static inline __m512i xnn_dwv_pack4(const int NOMIN, __m512i h01, __m512i h23,
                                                         const xnn_dwv_req_consts *k) {
  const __m512i v = _mm512_max_epi8(_mm512_packs_epi16(h01, h23), k->qmin);
  return NOMIN ? _mm512_min_epi8(v, k->qmax) : v;
}

/* Four tap vectors a, b, c, d (64 channels each) -> o[j]: dword (L, i) = the 4 taps of channel 16L + 4j + i. */
QP_TARGET_AVX512VNNI static inline void xnn_dwv_interleave(__m512i a, __m512i b, __m512i c, __m512i d, int8_t *o) {
  const __m512i ab_lo = _mm512_unpacklo_epi8(a, b), ab_hi = _mm512_unpackhi_epi8(a, b);
  const __m512i cd_lo = _mm512_unpacklo_epi8(c, d), cd_hi = _mm512_unpackhi_epi8(c, d);
  _mm512_storeu_si512(o, _mm512_unpacklo_epi16(ab_lo, cd_lo));
  _mm512_storeu_si512(o + 64, _mm512_unpackhi_epi16(ab_lo, cd_lo));
  _mm512_storeu_si512(o + 128, _mm512_unpacklo_epi16(ab_hi, cd_hi));
  _mm512_storeu_si512(o + 192, _mm512_unpackhi_epi16(ab_hi, cd_hi));
}

/* The input of the staging: per tap slot (4 per quad), its input row and column step; padding rows
 * and slots past the kernel read the 64 x_zp bytes of a pad buffer with step 0 (slots past kh
 * have zero weights), so the column loops have no branches. */
typedef struct {
  const int8_t *ptr[XNN_DW_MAX_TAPS + 4];
  size_t step[XNN_DW_MAX_TAPS + 4];
} xnn_dwv_src;

static void xnn_dwv_src_init(xnn_dwv_src *s, size_t slots, size_t taps, const int8_t *const *rows, size_t c,
                             const int8_t *pad) {
  for (size_t t = 0; t < slots; t++) {
    const int in = t < taps && rows[t];
    s->ptr[t] = in ? rows[t] : pad;
    s->step[t] = in ? c : 0;
  }
}

/* The interleaved columns of one output row (or row pair), channel group mask cm (FULL: all 64,
 * plain loads), into cb: the nq quads of tap slots of src; columns outside the image are padding. */
__attribute__((always_inline)) QP_TARGET_AVX512VNNI static inline void xnn_dwv_columns_body(
    const xnn_dwconv_problem *p, const int FULL, const size_t NQ, size_t nq, size_t ncols, const xnn_dwv_src *s,
    __mmask64 cm, int8_t *cb) {
  nq = NQ ? NQ : nq;
  const __m512i flip = _mm512_set1_epi8((char)0x80), pad = _mm512_set1_epi8((char)(p->x_zp ^ 0x80));
  const size_t lo = xnn_min(p->pw, ncols), hi = xnn_min(p->pw + p->w, ncols);
  for (size_t col = 0; col < lo; col++)
    for (size_t i = 0; i < 4 * nq; i++) _mm512_storeu_si512(cb + (col * nq * 4 + i) * 64, pad);
  for (size_t col = lo; col < hi; col++) {
    const size_t ix = col - p->pw;
    for (size_t q = 0; q < nq; q++) {
      __m512i v[4];
#pragma GCC unroll 4
      for (size_t t = 0; t < 4; t++) {
        const int8_t *r = s->ptr[4 * q + t] + ix * s->step[4 * q + t];
        v[t] = _mm512_xor_si512(FULL ? _mm512_loadu_si512(r) : _mm512_maskz_loadu_epi8(cm, r), flip);
      }
      xnn_dwv_interleave(v[0], v[1], v[2], v[3], cb + (col * nq + q) * 256);
    }
  }
  for (size_t col = hi; col < ncols; col++)
    for (size_t i = 0; i < 4 * nq; i++) _mm512_storeu_si512(cb + (col * nq * 4 + i) * 64, pad);
}

QP_TARGET_AVX512VNNI static void xnn_dwv_columns(const xnn_dwconv_problem *p, size_t nq, size_t ncols,
                                                 const xnn_dwv_src *s, __mmask64 cm, int8_t *cb) {
  if (cm == ~(__mmask64)0 && nq == 1) xnn_dwv_columns_body(p, 1, 1, 1, ncols, s, cm, cb);
  else if (cm == ~(__mmask64)0) xnn_dwv_columns_body(p, 1, 0, nq, ncols, s, cm, cb);
  else xnn_dwv_columns_body(p, 0, 0, nq, ncols, s, cm, cb);
}

/* One output row of one channel group from its interleaved columns, any kw, quads and strides. */
QP_TARGET_AVX512VNNI static void xnn_dwv_row(const xnn_dwconv_problem *p, size_t nq, const int8_t *cb,
                                             const int8_t *wg, const int32_t *be, const float *mv, __mmask64 cm,
                                             int8_t *orow) {
  const xnn_dwv_req_consts k = xnn_dwv_req_init(p);
  const size_t col_step = p->sw * nq * 256, tap_step = p->dw * nq * 256;
  for (size_t ox = 0; ox < p->ow; ox++, cb += col_step, orow += p->c) {
    __m512i a[4];
    for (size_t j = 0; j < 4; j++) a[j] = _mm512_loadu_si512(be + 16 * j); /* the bias first: sums wrap alike */
    const int8_t *xc = cb, *wk = wg;
    for (size_t kx = 0; kx < p->kw; kx++, xc += tap_step)
      for (size_t q = 0; q < nq; q++, wk += 256)
#pragma GCC unroll 4
        for (size_t j = 0; j < 4; j++)
          XNN_DPBUSD(a[j], _mm512_loadu_si512(xc + q * 256 + 64 * j), _mm512_loadu_si512(wk + 64 * j));
    __m512i qv[4];
    for (size_t j = 0; j < 4; j++) qv[j] = xnn_dwv_req(0, a[j], _mm512_loadu_ps(mv + 16 * j), k.hi);
    /* lane L of the packs = channels 16L .. 16L + 15 in order (vector j held 16L + 4j .. 16L + 4j + 3) */
    const __m512i h01 = xnn_dwv_pack2(qv[0], qv[1], &k), h23 = xnn_dwv_pack2(qv[2], qv[3], &k);
    _mm512_mask_storeu_epi8(orow, cm, xnn_dwv_pack4(0, h01, h23, &k));
  }
}

/* P (1 or 2) adjacent output pixels of a 3-wide kernel (one quad, horizontal dilation 1, stride SW),
 * weights and requantization constants in registers: the P pixels share the columns they read
 * (P * SW + 3 - SW loads per vector j instead of 3 P), and each vector j is requantized and packed
 * as soon as it is complete, which keeps the live registers within the 32 zmm. */
__attribute__((always_inline)) QP_TARGET_AVX512VNNI static inline void xnn_dwv_px3(
    const size_t P, const size_t SW, const int NOMIN, const int8_t *cb, const __m512i *w, const __m512i *b,
    const __m512 *m, const xnn_dwv_req_consts *k, __mmask64 cm, size_t C, int8_t *o) {
  __m512i h01[2], q[2];
#pragma GCC unroll 4
  for (size_t j = 0; j < 4; j++) {
    __m512i a[2];
    for (size_t i = 0; i < P; i++) a[i] = b[j];
    for (size_t i = 0; i < P; i++)
      for (size_t kx = 0; kx < 3; kx++)
        XNN_DPBUSD(a[i], _mm512_loadu_si512(cb + (i * SW + kx) * 256 + 64 * j), w[4 * kx + j]);
    for (size_t i = 0; i < P; i++) {
      const __m512i v = xnn_dwv_req(NOMIN, a[i], m[j], k->hi);
      if (j % 2 == 0) q[i] = v;
      else if (j == 1) h01[i] = xnn_dwv_pack2(q[i], v, k);
      else _mm512_mask_storeu_epi8(o + i * C, cm, xnn_dwv_pack4(NOMIN, h01[i], xnn_dwv_pack2(q[i], v, k), k));
    }
  }
}

/* One output row of one channel group, 3-wide kernel, one quad, dilation 1, stride SW (1 or 2). */
__attribute__((always_inline)) QP_TARGET_AVX512VNNI static inline void xnn_dwv_row3_body(
    const xnn_dwconv_problem *p, const size_t SW, const int NOMIN, const int8_t *cb, const int8_t *wg,
    const int32_t *be, const float *mv, __mmask64 cm, int8_t *orow) {
  const xnn_dwv_req_consts k = xnn_dwv_req_init(p);
  __m512i w[12], b[4];
  __m512 m[4];
  for (size_t i = 0; i < 12; i++) w[i] = _mm512_loadu_si512(wg + 64 * i);
  for (size_t j = 0; j < 4; j++) b[j] = _mm512_loadu_si512(be + 16 * j), m[j] = _mm512_loadu_ps(mv + 16 * j);
  const size_t C = p->c;
  size_t ox = 0;
  for (; ox + 2 <= p->ow; ox += 2) xnn_dwv_px3(2, SW, NOMIN, cb + ox * SW * 256, w, b, m, &k, cm, C, orow + ox * C);
  if (ox < p->ow) xnn_dwv_px3(1, SW, NOMIN, cb + ox * SW * 256, w, b, m, &k, cm, C, orow + ox * C);
}

QP_TARGET_AVX512VNNI static void xnn_dwv_row3(const xnn_dwconv_problem *p, int nomin, const int8_t *cb,
                                              const int8_t *wg, const int32_t *be, const float *mv, __mmask64 cm,
                                              int8_t *orow) {
  if (p->sw == 1 && nomin) xnn_dwv_row3_body(p, 1, 1, cb, wg, be, mv, cm, orow);
  else if (p->sw == 1) xnn_dwv_row3_body(p, 1, 0, cb, wg, be, mv, cm, orow);
  else if (nomin) xnn_dwv_row3_body(p, 2, 1, cb, wg, be, mv, cm, orow);
  else xnn_dwv_row3_body(p, 2, 0, cb, wg, be, mv, cm, orow);
}

/* ------------------------------------------ 16 channels at a time (the tail) -- */

/* A partial last group of at most 32 channels runs 16 channels at a time in a second layout,
 * instead of a full 64-channel group for 16 channels (144 = 2 * 64 + 16 in MobileNet v2): a
 * staged column holds the 16 channels x 4 taps as one zmm (dword c = channel c), so one
 * vpdpbusd serves a whole pixel, and four output pixels (one per 128-bit lane after the packs)
 * are narrowed together. Staging: the tap slots of s, 16 channels at offset s16,
 * mask cm, into cbx (64 bytes per column and quad). */
QP_TARGET_AVX512VNNI static void xnn_dwv_tcolumns(const xnn_dwconv_problem *p, size_t nq, size_t ncols,
                                                  const xnn_dwv_src *s, size_t s16, __mmask16 cm, int8_t *cbx) {
  const __m128i flip = _mm_set1_epi8((char)0x80), pad = _mm_set1_epi8((char)(p->x_zp ^ 0x80));
  const size_t lo = xnn_min(p->pw, ncols), hi = xnn_min(p->pw + p->w, ncols);
  for (size_t col = 0; col < lo; col++)
    for (size_t i = 0; i < 4 * nq; i++) _mm_storeu_si128((__m128i *)(cbx + (col * nq * 4 + i) * 16), pad);
  for (size_t col = lo; col < hi; col++) {
    const size_t ix = col - p->pw;
    for (size_t q = 0; q < nq; q++) {
      __m128i v[4];
#pragma GCC unroll 4
      for (size_t t = 0; t < 4; t++) {
        const size_t step = s->step[4 * q + t];
        /* the pad bytes have no channel offset */
        v[t] = _mm_xor_si128(_mm_maskz_loadu_epi8(cm, s->ptr[4 * q + t] + ix * step + (step ? s16 : 0)), flip);
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
  for (size_t col = hi; col < ncols; col++)
    for (size_t i = 0; i < 4 * nq; i++) _mm_storeu_si128((__m128i *)(cbx + (col * nq * 4 + i) * 16), pad);
}

/* One output row of 16 channels from the columns of xnn_dwv_tcolumns; tw: the [kx][q] weight
 * vectors of these channels (stride tq bytes between them), bn / mn their biases and multipliers.
 * KW, NQ, SW, DW are constants for the specialised shapes (the weights then stay in registers and
 * shared columns are loaded once per step) or 0 (any). Columns are staged for whole steps. */
__attribute__((always_inline)) QP_TARGET_AVX512VNNI static inline void xnn_dwv_trow_body(
    const xnn_dwconv_problem *p, const size_t KW, const size_t NQ, const size_t SW, const size_t DW, const int NOMIN,
    size_t nq, const int8_t *cbx, const int8_t *tw, size_t tq, const int32_t *bn, const float *mn, __mmask16 cm,
    int8_t *orow) {
  const size_t kw = KW ? KW : p->kw, sw = SW ? SW : p->sw, dw = DW ? DW : p->dw, C = p->c;
  nq = NQ ? NQ : nq;
  const xnn_dwv_req_consts k = xnn_dwv_req_init(p);
  /* packs leave lane L = four bytes of each pixel's channels 4L .. 4L + 3: dword 4L + i -> 4i + L */
  const __m512i unlace = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i b = _mm512_loadu_si512(bn);
  const __m512 m = _mm512_loadu_ps(mn);
  __m512i wr[3];
  if (KW == 3 && NQ == 1)
    for (size_t kx = 0; kx < 3; kx++) wr[kx] = _mm512_loadu_si512(tw + kx * tq);
  for (size_t ox = 0; ox < p->ow; ox += XNN_DWV_TP) {
    __m512i a[XNN_DWV_TP];
    for (size_t i = 0; i < XNN_DWV_TP; i++) a[i] = b;
    for (size_t kx = 0; kx < kw; kx++)
      for (size_t q = 0; q < nq; q++) {
        const __m512i wk = KW == 3 && NQ == 1 ? wr[kx] : _mm512_loadu_si512(tw + (kx * nq + q) * tq);
#pragma GCC unroll 4
        for (size_t i = 0; i < XNN_DWV_TP; i++)
          XNN_DPBUSD(a[i], _mm512_loadu_si512(cbx + (((ox + i) * sw + kx * dw) * nq + q) * 64), wk);
      }
    __m512i qv[XNN_DWV_TP];
    for (size_t i = 0; i < XNN_DWV_TP; i++) qv[i] = xnn_dwv_req(NOMIN, a[i], m, k.hi);
    const __m512i v = _mm512_permutexvar_epi32(
        unlace, xnn_dwv_pack4(NOMIN, xnn_dwv_pack2(qv[0], qv[1], &k), xnn_dwv_pack2(qv[2], qv[3], &k), &k));
    int8_t *o = orow + ox * C;
    const size_t n = xnn_min(XNN_DWV_TP, p->ow - ox);
    _mm_mask_storeu_epi8(o, cm, _mm512_castsi512_si128(v));
    if (n > 1) _mm_mask_storeu_epi8(o + C, cm, _mm512_extracti32x4_epi32(v, 1));
    if (n > 2) _mm_mask_storeu_epi8(o + 2 * C, cm, _mm512_extracti32x4_epi32(v, 2));
    if (n > 3) _mm_mask_storeu_epi8(o + 3 * C, cm, _mm512_extracti32x4_epi32(v, 3));
  }
}

QP_TARGET_AVX512VNNI static void xnn_dwv_trow(const xnn_dwconv_problem *p, int nomin, size_t nq, const int8_t *cbx,
                                              const int8_t *tw, size_t tq, const int32_t *bn, const float *mn,
                                              __mmask16 cm, int8_t *orow) {
  const int k3 = p->kw == 3 && nq == 1 && p->dw == 1;
  if (k3 && p->sw == 1 && nomin) xnn_dwv_trow_body(p, 3, 1, 1, 1, 1, 1, cbx, tw, tq, bn, mn, cm, orow);
  else if (k3 && p->sw == 1) xnn_dwv_trow_body(p, 3, 1, 1, 1, 0, 1, cbx, tw, tq, bn, mn, cm, orow);
  else if (k3 && p->sw == 2) xnn_dwv_trow_body(p, 3, 1, 2, 1, 0, 1, cbx, tw, tq, bn, mn, cm, orow);
  else xnn_dwv_trow_body(p, 0, 0, 0, 0, 0, nq, cbx, tw, tq, bn, mn, cm, orow);
}

/* Tasks: (batch, output row or row pair), each over every channel group. */
QP_TARGET_AVX512VNNI static void xnn_dwv_run(void *vctx, size_t begin, size_t end) {
  xnn_dwv_ctx *ctx = (xnn_dwv_ctx *)vctx;
  const xnn_dwconv_problem *p = ctx->p;
  const size_t C = p->c, nq = ctx->nq, ncols = ctx->ncols, tcols = ctx->tcols, kh = p->kh, kw = p->kw;
  const size_t cb_bytes = xnn_round_up(ncols * nq * 256 > tcols * nq * 64 ? ncols * nq * 256 : tcols * nq * 64, 64);
  int8_t *cb = (int8_t *)aligned_alloc(64, cb_bytes); /* the interleaved columns of one output row (pair) */
  if (!cb) {
    __atomic_store_n(&ctx->failed, 1, __ATOMIC_RELAXED);
    return;
  }
  /* the fast 3-wide row kernel: one quad, dilation 1, stride 1 or 2 */
  const int row3 = kw == 3 && nq == 1 && p->dw == 1 && p->sw <= 2;
  const int8_t *rows[XNN_DW_MAX_TAPS + 1];
  xnn_dwv_src src;
  int8_t padb[64]; /* the padding rows: x_zp */
  memset(padb, (int)(int8_t)p->x_zp, sizeof padb);
  const size_t per_task = ctx->pair ? 2 : 1, row_tasks = (p->oh + per_task - 1) / per_task;
  const size_t tq = xnn_round_up(C, 16) * 4; /* bytes per [kx][q] weight vector of tw */
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
#define XNN_DWV_ROW(iy) \
  ((iy) >= p->ph && (iy) - p->ph < p->h ? p->x + (b * p->h + ((iy) - p->ph)) * p->w * C + c0 : NULL)
    if (ctx->pair) /* rows oy0 .. oy0 + 3 serve output rows oy0 (set 0) and oy0 + 1 (set 1) */
      for (size_t t = 0; t < 4; t++) rows[t] = XNN_DWV_ROW(oy0 + t);
    else
      for (size_t ky = 0; ky < kh; ky++) rows[ky] = XNN_DWV_ROW(oy0 * p->sh + ky * p->dh);
#undef XNN_DWV_ROW
    xnn_dwv_src_init(&src, 4 * nq, ctx->pair ? 4 : kh, rows, C, padb);
    if (nc <= 32) {
      for (size_t s = 0; s * 16 < nc; s++) {
        const size_t left = nc - s * 16;
        const __mmask16 cm16 = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        xnn_dwv_tcolumns(p, nq, tcols, &src, 16 * s, cm16, cb);
        for (size_t r = 0; r < n_out; r++)
          xnn_dwv_trow(p, ctx->nomin, nq, cb, ctx->tw + r * ctx->tset_bytes + (c0 + 16 * s) * 4, tq,
                       ctx->bn + c0 + 16 * s, ctx->mn + c0 + 16 * s, cm16, orow + r * p->ow * C + 16 * s);
      }
    } else {
      xnn_dwv_columns(p, nq, ncols, &src, cm, cb);
      for (size_t r = 0; r < n_out; r++, orow += p->ow * C, wg += ctx->set_bytes) {
        if (row3) xnn_dwv_row3(p, ctx->nomin, cb, wg, be, mv, cm, orow);
        else xnn_dwv_row(p, nq, cb, wg, be, mv, cm, orow);
      }
    }
  }
  free(cb);
}

/* Where the prepared constants of a problem live in one buffer (xnn_dwv_prepare fills it,
 * xnn_dwv_launch reads it): a function of the geometry only, so a cached buffer can be
 * re-read by later calls without storing any pointer. */
typedef struct {
  size_t groups, nq, C16, sets, set_bytes, tset_bytes, wv_bytes, nat, taps;
  int pair;
} xnn_dwv_layout;

static xnn_dwv_layout xnn_dwv_layout_of(size_t C, size_t kh, size_t kw, size_t sh, size_t dh) {
  xnn_dwv_layout l;
  l.groups = (C + XNN_DWV_CG - 1) / XNN_DWV_CG, l.nq = (kh + 3) / 4, l.C16 = xnn_round_up(C, 16);
  /* pair mode (stride and dilation 1 vertically, kh <= 3): one quad of four input rows feeds two
   * output rows, through two weight sets (set r: tap t = ky + r), so each interleaved column
   * serves two rows and no quad slot is wasted on 3-row kernels */
  l.pair = sh == 1 && dh == 1 && kh <= 3;
  l.sets = l.pair ? 2 : 1;
  l.set_bytes = l.groups * kw * l.nq * 256, l.tset_bytes = kw * l.nq * l.C16 * 4;
  l.wv_bytes = l.sets * (l.set_bytes + l.tset_bytes), l.nat = l.groups * XNN_DWV_CG, l.taps = kh * kw;
  return l;
}

/* Constants (weights, biases, multipliers) + the prepare step's scratch: the taps as [k][C16]
 * bytes and per channel sums of w and |w| (kept in the buffer: no second allocation). */
static size_t xnn_dwv_bytes(const xnn_dwv_layout *l) {
  return l->wv_bytes + 2 * l->nat * (sizeof(int32_t) + sizeof(float)) + l->taps * l->C16 + 2 * l->C16 * 4;
}

/* Fills buf (xnn_dwv_bytes) from p's packed weights, bias, multipliers and x_zp; returns nomin. */
static int xnn_dwv_prepare(const xnn_dwconv_problem *p, const xnn_dwv_layout *l, char *buf) {
  const size_t C = p->c, groups = l->groups, nq = l->nq, kw = p->kw, C16 = l->C16, sets = l->sets;
  const size_t set_bytes = l->set_bytes, tset_bytes = l->tset_bytes, nat = l->nat, taps = l->taps;
  int8_t *wv = (int8_t *)buf, *tw = wv + sets * set_bytes;
  int32_t *be = (int32_t *)(buf + l->wv_bytes), *bn = be + nat;
  float *mv = (float *)(bn + nat), *mn = mv + nat;
  uint32_t *wsum = (uint32_t *)(mn + nat), *wabs = wsum + C16;
  int8_t *wk = (int8_t *)(wabs + C16);
  /* loops over channels innermost (vectorised) except the strided reads of the packed weights */
  memset(wk, 0, taps * C16);
  for (size_t ch = 0; ch < C; ch++)
    for (size_t k = 0; k < taps; k++)
      wk[k * C16 + ch] = (int8_t)xnn_packed_w(p->packed + ch * p->group_packed, p->kp, 0, k);
  memset(wsum, 0, 2 * C16 * 4);
  for (size_t k = 0; k < taps; k++)
    for (size_t ch = 0; ch < C16; ch++) {
      const int32_t v = wk[k * C16 + ch];
      wsum[ch] += (uint32_t)v;
      wabs[ch] += (uint32_t)(v < 0 ? -v : v);
    }
  /* the tap quads in natural channel order: byte t of channel ch = tap (4q + t - r, kx), 0 past kh */
  for (size_t r = 0; r < sets; r++)
    for (size_t kx = 0; kx < kw; kx++)
      for (size_t q = 0; q < nq; q++) {
        const int8_t *src[4];
        for (size_t t = 0; t < 4; t++) {
          const size_t ky = 4 * q + t - r; /* wraps past the end for t < r: no tap */
          src[t] = ky < p->kh ? wk + (ky * kw + kx) * C16 : NULL;
        }
        uint32_t *dst = (uint32_t *)(tw + r * tset_bytes + (kx * nq + q) * C16 * 4);
        for (size_t ch = 0; ch < C16; ch++) {
          uint32_t v = 0;
          for (size_t t = 0; t < 4; t++)
            if (src[t]) v |= (uint32_t)(uint8_t)src[t][ch] << (8 * t);
          dst[ch] = v;
        }
      }
  int nomin = 1; /* every |float(acc) * mult| < 2^30: cvtps2dq cannot overflow without the float clamp */
  for (size_t ch = 0; ch < nat; ch++) {
    if (ch >= C) {
      bn[ch] = 0, mn[ch] = 1.0f;
      continue;
    }
    bn[ch] = (int32_t)((uint32_t)(p->bias ? p->bias[ch] : 0) - (uint32_t)(p->x_zp + 128) * wsum[ch]);
    mn[ch] = p->mult[p->per_channel ? ch : 0];
    /* |accumulator| <= |bias| + 255 * sum |w| (|x - x_zp| <= 255), and never above 2^31 */
    double bound = (p->bias ? fabs((double)p->bias[ch]) : 0.0) + 255.0 * wabs[ch];
    if (bound > 2147483648.0) bound = 2147483648.0;
    if (bound * mn[ch] >= 1073741824.0) nomin = 0;
  }
  /* the 64-channel group layout: lane L of vector j = channels 16L + 4j .. 16L + 4j + 3 (see
   * xnn_dwv_channel), so each lane is 16 consecutive bytes of the natural layout */
  for (size_t r = 0; r < sets; r++)
    for (size_t g = 0; g < groups; g++)
      for (size_t kx = 0; kx < kw; kx++)
        for (size_t q = 0; q < nq; q++)
          for (size_t j = 0; j < 4; j++) {
            const int8_t *src = tw + r * tset_bytes + (kx * nq + q) * C16 * 4;
            int8_t *dst = wv + r * set_bytes + (((g * kw + kx) * nq + q) * 4 + j) * 64;
            for (size_t L = 0; L < 4; L++) {
              const size_t ch = g * XNN_DWV_CG + 16 * L + 4 * j;
              if (ch < C16) memcpy(dst + 16 * L, src + 4 * ch, 16);
              else memset(dst + 16 * L, 0, 16);
            }
          }
  for (size_t g = 0; g < groups; g++)
    for (size_t j = 0; j < 4; j++)
      for (size_t L = 0; L < 4; L++) {
        const size_t ch = g * XNN_DWV_CG + 16 * L + 4 * j, e = g * XNN_DWV_CG + 16 * j + 4 * L;
        memcpy(be + e, bn + ch, 4 * sizeof(int32_t));
        memcpy(mv + e, mn + ch, 4 * sizeof(float));
      }
  return nomin;
}

/* Runs p with the constants xnn_dwv_prepare left in buf. */
static int xnn_dwv_launch(const xnn_dwconv_problem *p, const xnn_dwv_layout *l, const char *buf, int nomin) {
  const size_t kw = p->kw, groups = l->groups, nq = l->nq, nat = l->nat, sets = l->sets;
  const int8_t *wv = (const int8_t *)buf, *tw = wv + sets * l->set_bytes;
  const int32_t *be = (const int32_t *)(buf + l->wv_bytes), *bn = be + nat;
  const float *mv = (const float *)(bn + nat), *mn = mv + nat;
  /* staged columns: every column the output row reads; the 16-channel kernel reads whole steps */
  const size_t ncols = (p->ow - 1) * p->sw + (kw - 1) * p->dw + 1;
  const size_t tcols = (xnn_round_up(p->ow, XNN_DWV_TP) - 1) * p->sw + (kw - 1) * p->dw + 1;
  xnn_dwv_ctx ctx = {p,  groups, nq, ncols,         tcols,          wv,      be,    mv,
                     tw, bn,     mn, l->set_bytes, l->tset_bytes, l->pair, nomin, 0};
  const size_t row_tasks = l->pair ? (p->oh + 1) / 2 : p->oh;
  const size_t tasks = p->batch * row_tasks, work = sets * groups * p->ow * kw * nq * 4 * 64;
  qp_parallel_for(tasks, work >= (1u << 14) ? 1 : (1u << 14) / work, xnn_dwv_run, &ctx);
  return ctx.failed ? QP_ERR_OUT_OF_MEMORY : QP_OK;
}

static int xnn_dwconv_rows__avx512vnni(const xnn_dwconv_problem *p) {
  const xnn_dwv_layout l = xnn_dwv_layout_of(p->c, p->kh, p->kw, p->sh, p->dh);
  char *buf = (char *)malloc(xnn_dwv_bytes(&l));
  if (!buf) return QP_ERR_OUT_OF_MEMORY;
  const int status = xnn_dwv_launch(p, &l, buf, xnn_dwv_prepare(p, &l, buf));
  free(buf);
  return status;
}

size_t xnn_dwv_plan_bytes(size_t c, size_t kh, size_t kw, size_t sh, size_t dh) {
  const xnn_dwv_layout l = xnn_dwv_layout_of(c, kh, kw, sh, dh);
  return xnn_dwv_bytes(&l);
}

int xnn_dwv_plan_prepare(const xnn_dwconv_problem *p, void *buf) {
  const xnn_dwv_layout l = xnn_dwv_layout_of(p->c, p->kh, p->kw, p->sh, p->dh);
  return xnn_dwv_prepare(p, &l, (char *)buf);
}

int xnn_dwv_plan_run(const xnn_dwconv_problem *p, const void *buf, int nomin) {
  const xnn_dwv_layout l = xnn_dwv_layout_of(p->c, p->kh, p->kw, p->sh, p->dh);
  return xnn_dwv_launch(p, &l, (const char *)buf, nomin);
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
