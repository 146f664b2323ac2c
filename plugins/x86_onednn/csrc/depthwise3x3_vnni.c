/*
 * AVX-512 VNNI depthwise 3x3 with stride-1 columns (the MobileNet layer), requantization
 * fused into the row kernel. Used by xo_depthwise_run for the plain requantizing epilogue;
 * conv + add and the other shapes keep the schedules of depthwise.c.
 *
 * Vertical tap triples: for input column ix and output row oy, dword lane c holds the bytes
 * (in[iy0][ix][c], in[iy0 + dh][ix][c], in[iy0 + 2dh][ix][c], 0), iy0 = oy*sh - ph; one
 * vpdpbusd against the weight bytes (w[c][0][kx], w[c][1][kx], w[c][2][kx], 0) adds a whole
 * kernel column exactly in int32 (uint8 x int8 products, no 16-bit intermediate, so
 * full-range input never saturates). With stride-1 columns the triple of column ix serves
 * output columns ix + pw - kx for kx = 0, 1, 2: the row kernel keeps the last three triples in
 * registers and builds one new triple per output pixel, straight from the input (nothing is
 * staged in memory).
 *
 * Full 64-channel groups: the triples of 4 chunks are built from 3 plain 64-byte pixel loads
 * with byte/word unpacks, which leave vector k lane j dword i = channel 16j + 4k + i. The
 * weights, biases and multipliers are permuted the same way at setup; the 4 int32 results
 * are then narrowed by vpackssdw / vpackuswb, which put the 64 channels back in order, and
 * stored as one 64-byte row (no per-vector vpmovusdb, no int32 block round trip).
 * Remaining chunks (c % 64) go one 16-channel chunk at a time through the same row kernel,
 * with lanes standing for 4 output rows instead of 4 chunks (xo_dw3_tail_rows).
 * Measured (Zen 4, 1 thread, 144 x 56 x 56): ~6 cycles per (pixel, 16 channels) in the row
 * kernel, bound by the vector pipes (3 vpdpbusd, 2 unpacks, 3 float ops, ~1.25 narrowing ops).
 *
 * Requantization (bit-exact with xo_epilogue_scalar): the float operations are the same
 * (cvtdq2ps, mul, cvtps2dq round-to-nearest-even); the clamp moves (partly) to the narrowing.
 * With f the product (never NaN: the multipliers are finite) and lo/hi = qmin/qmax - zp
 * (integers in float), the reference is clamp(round(f), lo, hi) + zp = clamp(round(f) + zp,
 * qmin, qmax). Here t = cvtps2dq(min(f, hi)) = min(round(f), hi), or INT_MIN for f < -2^31
 * (a min against an integer commutes with round-to-nearest);
 * vpackssdw, a saturating int16 + zp, vpackuswb and the byte clamp to [qmin, qmax] are
 * monotone clamps to ranges that all contain [qmin - zp, qmax - zp] (before + zp) or
 * [qmin, qmax] (after), so together they give clamp(t + zp, qmin, qmax): the same bytes.
 * When |(acc + bias) * mult| < 2^30 for every channel (checked per call from the int32 bound
 * of the sums), cvtps2dq(f) cannot overflow and the float min goes too (FMIN 0): the byte
 * clamp does the upper bound.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "xo_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define XO_DW3_GC 64 /* channels of a full group */

static atomic_int xo_dw3_probe_off = 0;

int x86_onednn_set_dw3x3_probe(int off) { return atomic_exchange(&xo_dw3_probe_off, off ? 1 : 0); }

typedef struct {
  const xo_depthwise_problem *p;
  size_t groups, units;      /* full 64-channel groups; units = groups + tail chunks */
  size_t rows_per_block, row_blocks;
  const int8_t *wg;          /* [unit][kx][k][64]: permuted weight triples */
  const int32_t *bg;         /* [unit][k][16]: permuted bias_eff */
  const float *mg;           /* [unit][k][16]: permuted mult */
  int fmin;                  /* some product can reach 2^31: keep the float upper clamp */
  atomic_int status;
} xo_dw3_ctx;

/* 64 bytes of input column ix of row r (NULL: a row outside the image; cs bytes between
 * columns), the zero point (pad, a 64-byte buffer) outside the image. A pointer select
 * rather than a vector one: no register is tied up by the pad vector (the row kernel needs
 * nearly all 32). */
#define XO_DW3_PX64(r, ix) \
  _mm512_loadu_si512((r) != NULL && (uint64_t)(ix) < w ? (r) + (size_t)(ix) * cs : pad)

/* The 4 triple vectors of column ix (vector k lane j dword i = byte 4k + i of lane j). */
#define XO_DW3_BUILD64(V, ix)                                                                \
  do {                                                                                       \
    const __m512i p0 = XO_DW3_PX64(r0, ix), p1 = XO_DW3_PX64(r1, ix), p2 = XO_DW3_PX64(r2, ix); \
    const __m512i ab_lo = _mm512_unpacklo_epi8(p0, p1), ab_hi = _mm512_unpackhi_epi8(p0, p1);  \
    /* byte 3 of each dword repeats row 2 (its weight byte is 0) */                         \
    const __m512i c_lo = _mm512_unpacklo_epi8(p2, p2), c_hi = _mm512_unpackhi_epi8(p2, p2);   \
    V##0 = _mm512_unpacklo_epi16(ab_lo, c_lo);                                               \
    V##1 = _mm512_unpackhi_epi16(ab_lo, c_lo);                                               \
    V##2 = _mm512_unpacklo_epi16(ab_hi, c_hi);                                               \
    V##3 = _mm512_unpackhi_epi16(ab_hi, c_hi);                                               \
  } while (0)

/* Vector k of one output pixel: bias + the three kernel columns, requantized to t (see the
 * file comment; the lower clamp comes after the narrowing). */
#define XO_DW3_ACC64(A, B, C, k)                                                             \
  _mm512_cvtps_epi32(XO_DW3_FMIN(                                                           \
      _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(                                  \
                        _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_load_si512(bg + 16 * k), \
                                                                A##k, w0##k),                \
                                            B##k, w1##k),                                    \
                        C##k, w2##k)),                                                       \
                    _mm512_load_ps(mg + 16 * k))))

/* The float upper clamp; left out (FMIN 0) when no product can reach 2^31 (see the file
 * comment), then the byte clamp does it. */
#define XO_DW3_FMIN(f) (FMIN ? _mm512_min_ps((f), hi) : (f))

/* Output pixel with kernel columns A, B, C (taps kx = 0, 1, 2), stored at out. */
#define XO_DW3_PIXEL64(A, B, C, out)                                                         \
  do {                                                                                       \
    const __m512i t0 = XO_DW3_ACC64(A, B, C, 0), t1 = XO_DW3_ACC64(A, B, C, 1);              \
    const __m512i t2 = XO_DW3_ACC64(A, B, C, 2), t3 = XO_DW3_ACC64(A, B, C, 3);              \
    const __m512i lo16 = _mm512_adds_epi16(_mm512_packs_epi32(t0, t1), zp16);                \
    const __m512i hi16 = _mm512_adds_epi16(_mm512_packs_epi32(t2, t3), zp16);                \
    __m512i q = _mm512_packus_epi16(lo16, hi16);                                             \
    if (CLAMP) {                                                                             \
      q = _mm512_max_epu8(q, _mm512_load_si512(qlim));                                       \
      q = _mm512_min_epu8(q, _mm512_load_si512(qlim + 64));                                  \
    }                                                                                        \
    if (SPLIT == 2)                                                                          \
      xo_dw3_store4(q, (out), rs);                                                           \
    else if (SPLIT)                                                                          \
      xo_dw3_store_lanes(q, (out), rs, nrows, m);                                            \
    else                                                                                     \
      _mm512_storeu_si512((out), q);                                                         \
  } while (0)

/* Lane j (16 bytes) to out + j * rs. */
static inline QP_TARGET_AVX512VNNI void xo_dw3_store4(__m512i q, uint8_t *out, size_t rs) {
  _mm_storeu_si128((__m128i *)out, _mm512_castsi512_si128(q));
  _mm_storeu_si128((__m128i *)(out + rs), _mm512_extracti32x4_epi32(q, 1));
  _mm_storeu_si128((__m128i *)(out + 2 * rs), _mm512_extracti32x4_epi32(q, 2));
  _mm_storeu_si128((__m128i *)(out + 3 * rs), _mm512_extracti32x4_epi32(q, 3));
}

/* Lane j (16 channels, nc valid per mask m) to out + j * rs, for the first nrows lanes. */
static inline QP_TARGET_AVX512VNNI void xo_dw3_store_lanes(__m512i q, uint8_t *out, size_t rs,
                                                           size_t nrows, __mmask16 m) {
  if (nrows == 4 && m == 0xFFFFu) {
    xo_dw3_store4(q, out, rs);
    return;
  }
  uint8_t tmp[64];
  _mm512_storeu_si512(tmp, q);
  for (size_t j = 0; j < nrows; j++)
    _mm_mask_storeu_epi8(out + j * rs, m, _mm_loadu_si128((const __m128i *)(tmp + 16 * j)));
}

/* One output row segment: r0..r2 the data of kernel rows 0..2 (NULL outside the image), cs
 * bytes per input column, output column ox reads input columns ox - pw + kx.
 * Plain (SPLIT 0): a full group, 64 channels of one output row at out + ox * ldo.
 * SPLIT: lanes are output rows (the tail chunk, see xo_dw3_tail_band): lane j of column ox
 * goes to out + ox * ldo + j * rs, first nrows lanes, mask m. */
static inline __attribute__((always_inline)) QP_TARGET_AVX512VNNI void xo_dw3_row_body(
    const int CLAMP, const int FMIN, const int SPLIT, const uint8_t *r0, const uint8_t *r1,
    const uint8_t *r2,
    size_t w, size_t cs, size_t ow, int64_t pw, const int8_t *wg, const int32_t *bg,
    const float *mg, const xo_epilogue *e, const uint8_t *pad, uint8_t *out, size_t ldo,
    size_t rs, size_t nrows, __mmask16 m) {
  const __m512i w00 = _mm512_loadu_si512(wg), w01 = _mm512_loadu_si512(wg + 64);
  const __m512i w02 = _mm512_loadu_si512(wg + 128), w03 = _mm512_loadu_si512(wg + 192);
  const __m512i w10 = _mm512_loadu_si512(wg + 256), w11 = _mm512_loadu_si512(wg + 320);
  const __m512i w12 = _mm512_loadu_si512(wg + 384), w13 = _mm512_loadu_si512(wg + 448);
  const __m512i w20 = _mm512_loadu_si512(wg + 512), w21 = _mm512_loadu_si512(wg + 576);
  const __m512i w22 = _mm512_loadu_si512(wg + 640), w23 = _mm512_loadu_si512(wg + 704);
  const __m512 hi = _mm512_set1_ps(e->hi);
  const __m512i zp16 = _mm512_set1_epi16((short)e->out_zp);
  /* the byte clamp [qmin, qmax] (when needed) from memory: registers are short */
  uint8_t qlim[128] __attribute__((aligned(64)));
  memset(qlim, e->qmin, 64);
  memset(qlim + 64, e->qmax, 64);
  __m512i A0, A1, A2, A3, B0, B1, B2, B3, C0, C1, C2, C3;
  const int64_t ix0 = -pw;
  XO_DW3_BUILD64(A, ix0);
  XO_DW3_BUILD64(B, ix0 + 1);
  /* unrolled by 3 so the three triples rotate through fixed registers */
  for (size_t ox = 0; ox < ow; ox += 3) {
    const int64_t ix = ix0 + (int64_t)ox;
    XO_DW3_BUILD64(C, ix + 2);
    XO_DW3_PIXEL64(A, B, C, out + ox * ldo);
    if (ox + 1 >= ow) break;
    XO_DW3_BUILD64(A, ix + 3);
    XO_DW3_PIXEL64(B, C, A, out + (ox + 1) * ldo);
    if (ox + 2 >= ow) break;
    XO_DW3_BUILD64(B, ix + 4);
    XO_DW3_PIXEL64(C, A, B, out + (ox + 2) * ldo);
  }
}

/* Variants: the float clamp only when needed (fmin), the byte clamp only when it can change
 * something (no relu and qmax = 255, the common case, needs neither). */
static __attribute__((noinline)) QP_TARGET_AVX512VNNI void xo_dw3_row64(
    const uint8_t *r0, const uint8_t *r1, const uint8_t *r2, size_t w, size_t c, size_t ow,
    int64_t pw, const int8_t *wg, const int32_t *bg, const float *mg, const xo_epilogue *e,
    int fmin, const uint8_t *pad, uint8_t *out, size_t ldo) {
  const int clamp = e->qmin > 0 || (!fmin && e->qmax < 255);
  if (fmin && clamp)
    xo_dw3_row_body(1, 1, 0, r0, r1, r2, w, c, ow, pw, wg, bg, mg, e, pad, out, ldo, 0, 1, 0xFFFFu);
  else if (fmin)
    xo_dw3_row_body(0, 1, 0, r0, r1, r2, w, c, ow, pw, wg, bg, mg, e, pad, out, ldo, 0, 1, 0xFFFFu);
  else if (clamp)
    xo_dw3_row_body(1, 0, 0, r0, r1, r2, w, c, ow, pw, wg, bg, mg, e, pad, out, ldo, 0, 1, 0xFFFFu);
  else
    xo_dw3_row_body(0, 0, 0, r0, r1, r2, w, c, ow, pw, wg, bg, mg, e, pad, out, ldo, 0, 1, 0xFFFFu);
}

/* The tail chunks (nc <= 16 channels each) run the full-group row kernel with lanes standing
 * for 4 output rows: lane j of kernel row ky's 64 bytes is input row (oy + j)*sh - ph + ky*dh.
 * Weights, biases and multipliers are repeated in every lane. The 16-byte pieces are staged
 * into t, column ix at t + ix * cs:
 *  - dense (sh == dh == 1): one slot per input row of the task's row block, slot s = input row
 *    oy0 - ph + s, so kernel row ky of the band at oy is the 64 bytes at slot oy - oy0 + ky;
 *    each row is staged once, right after the full groups read it (still in L1);
 *  - otherwise: per band, slot ky*4 + j.
 * One tail buffer per tail chunk, tail_bytes apart. */
typedef struct {
  uint8_t *t;
  size_t cs, tail_bytes, ntails, col0;
  int dense;
} xo_dw3_tail;

/* 16 bytes of every column of input row iy (the zero point outside the image) for each tail
 * chunk, into slot `slot`. */
static QP_TARGET_AVX512VNNI void xo_dw3_tail_stage(const xo_depthwise_problem *p,
                                                   const xo_dw3_tail *tl, const uint8_t *img,
                                                   int64_t iy, size_t slot, const uint8_t *pad) {
  const size_t w = p->w, c = p->c, cs = tl->cs;
  for (size_t u = 0; u < tl->ntails; u++) {
    const size_t col0 = tl->col0 + u * XO_NR, nc = c - col0 < XO_NR ? c - col0 : XO_NR;
    uint8_t *dst = tl->t + u * tl->tail_bytes + slot * 16;
    if (iy < 0 || iy >= (int64_t)p->h) {
      for (size_t ix = 0; ix < w; ix++) memcpy(dst + ix * cs, pad, 16);
      continue;
    }
    const uint8_t *src = img + (size_t)iy * w * c + col0;
    const __mmask16 m = (__mmask16)(nc >= 16 ? 0xFFFFu : ((1u << nc) - 1u));
    if (nc == 16)
      for (size_t ix = 0; ix < w; ix++)
        _mm_storeu_si128((__m128i *)(dst + ix * cs),
                         _mm_loadu_si128((const __m128i *)(src + ix * c)));
    else
      for (size_t ix = 0; ix < w; ix++)
        _mm_storeu_si128((__m128i *)(dst + ix * cs), _mm_maskz_loadu_epi8(m, src + ix * c));
  }
}

/* Output rows oy..oy+nrows-1 (nrows <= 4) of every tail chunk, from slots sl + ky * rstep. */
static __attribute__((noinline)) QP_TARGET_AVX512VNNI void xo_dw3_tail_rows(
    const xo_dw3_ctx *ctx, const xo_dw3_tail *tl, size_t sl, size_t rstep, size_t nrows,
    const uint8_t *pad, uint8_t *out) {
  const xo_depthwise_problem *p = ctx->p;
  const xo_epilogue *e = &p->epi;
  const size_t rs = p->ow * e->ldo;
  for (size_t u = 0; u < tl->ntails; u++) {
    const size_t unit = ctx->groups + u, col0 = tl->col0 + u * XO_NR;
    const size_t nc = p->c - col0 < XO_NR ? p->c - col0 : XO_NR;
    const __mmask16 m = (__mmask16)(nc >= 16 ? 0xFFFFu : ((1u << nc) - 1u));
    const uint8_t *t = tl->t + u * tl->tail_bytes + sl * 16;
    const int8_t *wg = ctx->wg + unit * 12 * 64;
    const int32_t *bg = ctx->bg + unit * 64;
    const float *mg = ctx->mg + unit * 64;
    const uint8_t *t1 = t + rstep * 16, *t2 = t + 2 * rstep * 16;
    /* the common case (full band and chunk, no clamp) with plain 16-byte stores */
    if (nrows == 4 && nc == 16 && e->qmin == 0 && !ctx->fmin && e->qmax == 255)
      xo_dw3_row_body(0, 0, 2, t, t1, t2, p->w, tl->cs, p->ow, p->pw, wg, bg, mg, e, pad,
                      out + col0, e->ldo, rs, 4, m);
    else
      xo_dw3_row_body(1, 1, 1, t, t1, t2, p->w, tl->cs, p->ow, p->pw, wg, bg, mg, e, pad,
                      out + col0, e->ldo, rs, nrows, m);
  }
}

/* One task = (image, row block): bands of 4 output rows, each every full group row by row,
 * then the tail chunks for the band. */
static QP_TARGET_AVX512VNNI void xo_dw3_task(void *vctx, size_t begin, size_t end) {
  xo_dw3_ctx *ctx = (xo_dw3_ctx *)vctx;
  const xo_depthwise_problem *p = ctx->p;
  const xo_epilogue *e = &p->epi;
  const size_t c = p->c;
  uint8_t pad[64] __attribute__((aligned(64)));
  memset(pad, p->pad, sizeof(pad));
  xo_dw3_tail tl;
  tl.ntails = ctx->units - ctx->groups;
  tl.col0 = ctx->groups * XO_DW3_GC;
  tl.dense = p->sh == 1 && p->dh == 1;
  /* dense: the last band starts at slot round_up(rows_per_block, 4) - 4 and reads 6 slots */
  tl.cs = tl.dense ? (xo_round_up(ctx->rows_per_block, 4) + 2) * 16 : 12 * 16;
  tl.tail_bytes = p->w * tl.cs;
  tl.t = NULL;
  if (tl.ntails > 0 && (tl.t = (uint8_t *)malloc(tl.ntails * tl.tail_bytes)) == NULL) {
    atomic_store(&ctx->status, QP_ERR_OUT_OF_MEMORY);
    return;
  }
  for (size_t task = begin; task < end; task++) {
    const size_t rb = task % ctx->row_blocks, b = task / ctx->row_blocks;
    const size_t oy0 = rb * ctx->rows_per_block;
    const size_t oy1 = oy0 + ctx->rows_per_block < p->oh ? oy0 + ctx->rows_per_block : p->oh;
    const uint8_t *img = p->x + b * p->h * p->w * c;
    const int64_t iy_first = (int64_t)oy0 - p->ph; /* dense slot 0 */
    if (tl.ntails > 0 && tl.dense) {
      xo_dw3_tail_stage(p, &tl, img, iy_first, 0, pad);
      xo_dw3_tail_stage(p, &tl, img, iy_first + 1, 1, pad);
    }
    for (size_t band = oy0; band < oy1; band += 4) {
      const size_t nrows = oy1 - band < 4 ? oy1 - band : 4;
      for (size_t oy = band; oy < band + nrows; oy++) {
        const uint8_t *r[3];
        for (size_t ky = 0; ky < 3; ky++) {
          const int64_t iy = (int64_t)oy * p->sh - p->ph + (int64_t)ky * p->dh;
          r[ky] = iy >= 0 && iy < (int64_t)p->h ? img + (size_t)iy * p->w * c : NULL;
        }
        for (size_t g = 0; g < ctx->groups; g++)
          xo_dw3_row64(r[0] ? r[0] + g * XO_DW3_GC : NULL, r[1] ? r[1] + g * XO_DW3_GC : NULL,
                       r[2] ? r[2] + g * XO_DW3_GC : NULL, p->w, c, p->ow, p->pw,
                       ctx->wg + g * 12 * 64, ctx->bg + g * 64, ctx->mg + g * 64, e, ctx->fmin, pad,
                       e->out_u8 + (b * p->oh + oy) * p->ow * e->ldo + g * XO_DW3_GC, e->ldo);
        if (tl.ntails > 0 && tl.dense) /* the row kernel just read input row oy - ph + 2 */
          xo_dw3_tail_stage(p, &tl, img, (int64_t)oy - p->ph + 2, oy - oy0 + 2, pad);
      }
      if (tl.ntails == 0) continue;
      uint8_t *out = e->out_u8 + (b * p->oh + band) * p->ow * e->ldo;
      if (tl.dense) {
        /* lanes past nrows read slots past the staged ones: never stored, but defined */
        for (size_t s = nrows + 2; s < 6; s++)
          xo_dw3_tail_stage(p, &tl, img, -1, band - oy0 + s, pad);
        xo_dw3_tail_rows(ctx, &tl, band - oy0, 1, nrows, pad, out);
      } else {
        for (size_t s = 0; s < 12; s++) {
          const size_t ky = s / 4, j = s % 4;
          const int64_t iy = (int64_t)(band + j) * p->sh - p->ph + (int64_t)ky * p->dh;
          xo_dw3_tail_stage(p, &tl, img, j < nrows ? iy : -1, s, pad);
        }
        xo_dw3_tail_rows(ctx, &tl, 0, 4, nrows, pad, out);
      }
    }
  }
  free(tl.t);
}

int xo_dw3_vnni_run(const xo_depthwise_problem *p) {
  if (qp_active_isa() != QP_ISA_AVX512VNNI || atomic_load(&xo_dw3_probe_off) || p->kh != 3 ||
      p->kw != 3 || p->sw != 1 || p->dw != 1 || p->epi.kind != XO_EPI_REQUANT)
    return -1;
  xo_dw3_ctx ctx;
  const size_t c = p->c, chunks = (c + XO_NR - 1) / XO_NR;
  ctx.p = p;
  ctx.groups = c / XO_DW3_GC;
  const size_t tails = chunks - ctx.groups * 4;
  ctx.units = ctx.groups + tails;
  /* row blocks (multiples of the 4-row tail band): the whole image on one thread; with more,
   * about 4 blocks per thread so that the pool can balance them */
  const size_t threads = (size_t)qp_get_num_threads();
  size_t rpb = p->oh;
  if (threads > 1 && p->batch < 4 * threads) {
    rpb = p->oh * p->batch / (4 * threads) / 4 * 4;
    if (rpb < 4) rpb = 4;
  }
  if (rpb > 64) rpb = 64; /* bounds the tail buffer (w * (rpb + 2) * 16 bytes per tail chunk) */
  ctx.rows_per_block = rpb < p->oh ? rpb : p->oh;
  ctx.row_blocks = (p->oh + ctx.rows_per_block - 1) / ctx.rows_per_block;
  /* permuted weights, biases and multipliers, one 12 x 64-byte set per unit: full group g,
   * channel 64g + 16j + 4k + i in vector k lane j dword i; tail chunk ch, channel 16ch + 4k + i
   * in vector k dword i of every lane */
  const size_t nu = ctx.units;
  const size_t bytes = nu * 12 * 64 + nu * 64 * (sizeof(int32_t) + sizeof(float));
  uint8_t *buf = (uint8_t *)aligned_alloc(64, xo_round_up(bytes, 64));
  if (buf == NULL) return QP_ERR_OUT_OF_MEMORY;
  memset(buf, 0, bytes);
  int8_t *wg = (int8_t *)buf;
  int32_t *bg = (int32_t *)(buf + nu * 12 * 64);
  float *mg = (float *)(buf + nu * 12 * 64 + nu * 64 * sizeof(int32_t));
  for (size_t ch = 0; ch < c; ch++) {
    const size_t chunk = ch / XO_NR, cc = ch % XO_NR, k = cc / 4, i = cc % 4;
    const int8_t *src = p->wt + chunk * 9 * XO_NR + cc; /* tap ky*3+kx at src[tap * 16] */
    const int full = ch < ctx.groups * XO_DW3_GC;
    const size_t unit = full ? ch / XO_DW3_GC : ctx.groups + chunk - ctx.groups * 4;
    for (size_t j = 0; j < 4; j++) {
      if (full && j != chunk % 4) continue;
      const size_t d = j * 4 + i;
      for (size_t kx = 0; kx < 3; kx++)
        for (size_t ky = 0; ky < 3; ky++)
          wg[((unit * 3 + kx) * 4 + k) * 64 + d * 4 + ky] = src[(ky * 3 + kx) * XO_NR];
      bg[(unit * 4 + k) * 16 + d] = p->epi.bias_eff[ch];
      mg[(unit * 4 + k) * 16 + d] = p->epi.mult[ch];
    }
  }
  ctx.wg = wg;
  ctx.bg = bg;
  ctx.mg = mg;
  /* |acc| <= 9 * 255 * 128 (u8 x s8 products; weights beyond c are 0): with |bias_eff| added
   * (no int32 wrap) and times mult, far below 2^31 on real layers, so cvtps2dq cannot overflow
   * and the float min against hi can go (the byte clamp gives the same result) */
  ctx.fmin = 0;
  for (size_t ch = 0; ch < c && !ctx.fmin; ch++) {
    const double v = fabs((double)p->epi.bias_eff[ch]) + 9.0 * 255.0 * 128.0;
    ctx.fmin = !(v < 2147483647.0 - 293760.0 && v * (double)p->epi.mult[ch] < 1073741824.0);
  }
  atomic_init(&ctx.status, QP_OK);
  qp_parallel_for(p->batch * ctx.row_blocks, 1, xo_dw3_task, &ctx);
  free(buf);
  return atomic_load(&ctx.status);
}

#else
int x86_onednn_set_dw3x3_probe(int off) {
  (void)off;
  return 0;
}
#endif
