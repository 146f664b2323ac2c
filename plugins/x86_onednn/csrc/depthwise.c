/*
 * Depthwise conv2d (groups == channels == out_channels) on NHWC uint8.
 *
 * The generic path would run one GEMM per channel with N = 1; here each
 * output pixel is a per-channel dot product over the kh*kw taps, 16 channels
 * at a time. Products are formed exactly in int32: the uint8 activation is
 * zero-extended to a 32-bit lane (high 16 bits zero) and the int8 weight
 * sign-extended; vpmaddwd of such lanes is x*w + 0*w_hi, exact. Sums are
 * int32 (wrapping like the GEMM), so full-range 0..255 input never saturates
 * (torch's 16-bit depthwise does). The accumulator block [npx][16] goes
 * through the GEMM epilogue of the active ISA, so requantization (and the
 * conv + add fusion) is bit-exact with the scalar reference.
 *
 * Padding: pixels whose taps all fall inside the image read the input
 * directly; a border pixel gathers its taps (all channels) into a buffer
 * [tap][channel] filled with the input zero point (real 0.0), like im2col.
 *
 * AVX-512 VNNI with dilation_w == 1 has its own schedule (xo_dw_vnni_task): a
 * task copies the input rows it needs for one 16-channel chunk into a padded
 * planar buffer U[row][x][16] (zero point outside the image, so no border
 * cases), then one 64-byte load of U holds 4 horizontally adjacent taps of 16
 * channels; vpermd + vpshufb transpose it so that dword c = the 4 taps of
 * channel c, and one vpdpbusd (uint8 x int8, exact int32) adds 4 taps.
 * A 3x3 output pixel costs 3 of them per 16 channels. With stride-1 columns every U
 * position is a window start used by kh output rows, so U is transposed once per chunk
 * into q[row][x][64] (xo_dwv_transpose) and the taps are plain loads.
 *
 * AVX-512 VNNI 3x3 with stride-1 columns and the plain requantizing epilogue (the MobileNet
 * layer) runs the fused row schedule of depthwise3x3_vnni.c before all of these.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "xo_internal.h"

/* acc[p][c] = sum_t base[p][offs[t] + c] * wt[t*16 + c] for c < nc (16-wide rows). */
typedef void (*xo_dw_fn)(size_t npx, const uint8_t *const *base, const ptrdiff_t *offs,
                         size_t taps, const int8_t *wt, size_t nc, int32_t *acc);

static void xo_dw_scalar(size_t npx, const uint8_t *const *base, const ptrdiff_t *offs,
                         size_t taps, const int8_t *wt, size_t nc, int32_t *acc) {
  for (size_t p = 0; p < npx; p++)
    for (size_t c = 0; c < XO_NR; c++) {
      uint32_t s = 0;
      for (size_t t = 0; c < nc && t < taps; t++)
        s += (uint32_t)((int32_t)base[p][offs[t] + (ptrdiff_t)c] * (int32_t)wt[t * XO_NR + c]);
      acc[p * XO_NR + c] = (int32_t)s;
    }
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

static QP_TARGET_AVX2 __m256i xo_dw_load8(const uint8_t *src, size_t cnt) {
  if (cnt >= 8) return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)src));
  uint8_t tmp[8] = {0};
  memcpy(tmp, src, cnt);
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)tmp));
}

static QP_TARGET_AVX2 void xo_dw_avx2(size_t npx, const uint8_t *const *base,
                                      const ptrdiff_t *offs, size_t taps, const int8_t *wt,
                                      size_t nc, int32_t *acc) {
  for (size_t h = 0; h < nc; h += 8) {
    const size_t cnt = nc - h < 8 ? nc - h : 8;
    for (size_t p = 0; p < npx; p++) {
      __m256i s = _mm256_setzero_si256();
      for (size_t t = 0; t < taps; t++) {
        const __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(wt + t * XO_NR + h)));
        s = _mm256_add_epi32(s, _mm256_madd_epi16(xo_dw_load8(base[p] + offs[t] + h, cnt), w));
      }
      _mm256_storeu_si256((__m256i *)(acc + p * XO_NR + h), s);
    }
  }
}

static QP_TARGET_AVX512 void xo_dw_avx512(size_t npx, const uint8_t *const *base,
                                          const ptrdiff_t *offs, size_t taps, const int8_t *wt,
                                          size_t nc, int32_t *acc) {
  const __mmask16 m = (__mmask16)(nc >= 16 ? 0xFFFFu : ((1u << nc) - 1u));
  size_t p = 0;
  for (; p + 4 <= npx; p += 4) { /* 4 independent chains hide the add latency */
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t t = 0; t < taps; t++) {
      const __m512i w = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(wt + t * XO_NR)));
      const ptrdiff_t o = offs[t];
      s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, base[p] + o)), w));
      s1 = _mm512_add_epi32(s1, _mm512_madd_epi16(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, base[p + 1] + o)), w));
      s2 = _mm512_add_epi32(s2, _mm512_madd_epi16(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, base[p + 2] + o)), w));
      s3 = _mm512_add_epi32(s3, _mm512_madd_epi16(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, base[p + 3] + o)), w));
    }
    _mm512_storeu_si512(acc + p * XO_NR, s0);
    _mm512_storeu_si512(acc + (p + 1) * XO_NR, s1);
    _mm512_storeu_si512(acc + (p + 2) * XO_NR, s2);
    _mm512_storeu_si512(acc + (p + 3) * XO_NR, s3);
  }
  for (; p < npx; p++) {
    __m512i s = _mm512_setzero_si512();
    for (size_t t = 0; t < taps; t++) {
      const __m512i w = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(wt + t * XO_NR)));
      s = _mm512_add_epi32(s, _mm512_madd_epi16(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, base[p] + offs[t])), w));
    }
    _mm512_storeu_si512(acc + p * XO_NR, s);
  }
}

/* AVX-512 VNNI: vpdpwssd fuses the exact 16x16-bit product (same lane trick) with the add.
 * 3x3 kernels (the common case) keep the 9 weight vectors in registers for all pixels. */
static inline QP_TARGET_AVX512VNNI __m512i xo_dw_ld(const uint8_t *src, __mmask16 m, int full) {
  return _mm512_cvtepu8_epi32(full ? _mm_loadu_si128((const __m128i *)src) : _mm_maskz_loadu_epi8(m, src));
}

static QP_TARGET_AVX512VNNI void xo_dw_avx512vnni(size_t npx, const uint8_t *const *base,
                                                  const ptrdiff_t *offs, size_t taps,
                                                  const int8_t *wt, size_t nc, int32_t *acc) {
  const __mmask16 m = (__mmask16)(nc >= 16 ? 0xFFFFu : ((1u << nc) - 1u));
  const int full = nc >= 16;
  if (taps == 9) {
    __m512i w[9];
    for (size_t t = 0; t < 9; t++) w[t] = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(wt + t * XO_NR)));
    for (size_t p = 0; p < npx; p++) {
      const uint8_t *b = base[p];
      __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0;
      for (size_t t = 0; t < 9; t += 3) {
        s0 = _mm512_dpwssd_epi32(s0, xo_dw_ld(b + offs[t], m, full), w[t]);
        s1 = _mm512_dpwssd_epi32(s1, xo_dw_ld(b + offs[t + 1], m, full), w[t + 1]);
        s2 = _mm512_dpwssd_epi32(s2, xo_dw_ld(b + offs[t + 2], m, full), w[t + 2]);
      }
      _mm512_storeu_si512(acc + p * XO_NR, _mm512_add_epi32(_mm512_add_epi32(s0, s1), s2));
    }
    return;
  }
  for (size_t p = 0; p < npx; p++) {
    __m512i s = _mm512_setzero_si512();
    for (size_t t = 0; t < taps; t++) {
      const __m512i w = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(wt + t * XO_NR)));
      s = _mm512_dpwssd_epi32(s, xo_dw_ld(base[p] + offs[t], m, full), w);
    }
    _mm512_storeu_si512(acc + p * XO_NR, s);
  }
}
#endif

static xo_dw_fn xo_dw_select(void) {
  switch (qp_active_isa()) {
#if defined(__x86_64__) || defined(__i386__)
    case QP_ISA_AVX512VNNI:
      return xo_dw_avx512vnni;
    case QP_ISA_AVX512:
      return xo_dw_avx512;
    case QP_ISA_AVXVNNI:
    case QP_ISA_AVX2:
      return xo_dw_avx2;
#endif
    default:
      return xo_dw_scalar;
  }
}

typedef struct {
  const xo_depthwise_problem *p;
  const xo_gemm_impl *impl;
  xo_dw_fn dw;
  atomic_int status;
} xo_dw_ctx;

#define XO_DW_PX 16 /* output pixels per epilogue call */

/* One task = one output row (batch b, oy) over all channels. */
static void xo_dw_task(void *vctx, size_t begin, size_t end) {
  xo_dw_ctx *ctx = (xo_dw_ctx *)vctx;
  const xo_depthwise_problem *p = ctx->p;
  const size_t taps = p->kh * p->kw, c = p->c;
  const size_t chunks = (c + XO_NR - 1) / XO_NR;
  int32_t acc[XO_DW_PX * XO_NR] __attribute__((aligned(64)));
  const uint8_t *base[XO_DW_PX];
  /* offs: tap offsets into the image; goffs: into the gather buffer [taps][16] */
  ptrdiff_t *offs = (ptrdiff_t *)malloc(2 * taps * sizeof(ptrdiff_t));
  const size_t cp = chunks * XO_NR;
  uint8_t *gather = (uint8_t *)malloc(taps * cp + 64);
  if (offs == NULL || gather == NULL) {
    free(offs);
    free(gather);
    atomic_store(&ctx->status, QP_ERR_OUT_OF_MEMORY);
    return;
  }
  ptrdiff_t *goffs = offs + taps;
  for (size_t ky = 0; ky < p->kh; ky++)
    for (size_t kx = 0; kx < p->kw; kx++) {
      offs[ky * p->kw + kx] = (ptrdiff_t)(((int64_t)ky * p->dh * (int64_t)p->w + (int64_t)kx * p->dw) * (int64_t)c);
      goffs[ky * p->kw + kx] = (ptrdiff_t)((ky * p->kw + kx) * cp);
    }
  /* interior output columns: every tap inside the image */
  const int64_t span_w = p->dw * ((int64_t)p->kw - 1);
  int64_t ox_lo = (p->pw + p->sw - 1) / p->sw;
  int64_t ox_hi = ((int64_t)p->w - 1 - span_w + p->pw) >= 0
                      ? ((int64_t)p->w - 1 - span_w + p->pw) / p->sw + 1 : 0;
  if (ox_hi > (int64_t)p->ow) ox_hi = (int64_t)p->ow;
  if (ox_lo > ox_hi) ox_lo = ox_hi;
  for (size_t row = begin; row < end; row++) {
    const size_t b = row / p->oh, oy = row % p->oh;
    const int64_t iy0 = (int64_t)oy * p->sh - p->ph;
    const int row_inside = iy0 >= 0 && iy0 + p->dh * ((int64_t)p->kh - 1) < (int64_t)p->h;
    const uint8_t *img = p->x + b * p->h * p->w * c;
    for (size_t ox = 0; ox < p->ow;) {
      const size_t pix = row * p->ow + ox;
      if (row_inside && (int64_t)ox >= ox_lo && (int64_t)ox < ox_hi) {
        size_t n = (size_t)ox_hi - ox;
        if (n > XO_DW_PX) n = XO_DW_PX;
        for (size_t ch = 0; ch < chunks; ch++) {
          const size_t c0 = ch * XO_NR, nc = c - c0 < XO_NR ? c - c0 : XO_NR;
          for (size_t i = 0; i < n; i++)
            base[i] = img + ((size_t)iy0 * p->w + (ox + i) * p->sw - (size_t)p->pw) * c + c0;
          ctx->dw(n, base, offs, taps, p->wt + ch * taps * XO_NR, nc, acc);
          ctx->impl->epilogue(&p->epi, acc, pix, n, c0, nc);
        }
        ox += n;
      } else {
        /* border pixel: gather all channels of every tap once, zero point outside */
        const int64_t ix0 = (int64_t)ox * p->sw - p->pw;
        memset(gather, p->pad, taps * cp);
        for (size_t ky = 0; ky < p->kh; ky++)
          for (size_t kx = 0; kx < p->kw; kx++) {
            const int64_t iy = iy0 + (int64_t)ky * p->dh, ix = ix0 + (int64_t)kx * p->dw;
            if (iy >= 0 && iy < (int64_t)p->h && ix >= 0 && ix < (int64_t)p->w)
              memcpy(gather + (ky * p->kw + kx) * cp, img + ((size_t)iy * p->w + (size_t)ix) * c, c);
          }
        for (size_t ch = 0; ch < chunks; ch++) {
          const size_t c0 = ch * XO_NR, nc = c - c0 < XO_NR ? c - c0 : XO_NR;
          base[0] = gather + c0;
          ctx->dw(1, base, goffs, taps, p->wt + ch * taps * XO_NR, nc, acc);
          ctx->impl->epilogue(&p->epi, acc, pix, 1, c0, nc);
        }
        ox += 1;
      }
    }
  }
  free(offs);
  free(gather);
}


#if defined(__x86_64__) || defined(__i386__)
/* ---- AVX-512 VNNI 4-taps-per-lane schedule (dilation_w == 1) ---- */

typedef struct {
  const xo_depthwise_problem *p;
  const xo_gemm_impl *impl;
  size_t chunks, row_blocks, rows_per_block, ngroups, uw, chunk_stride;
  int8_t *wq; /* [chunk][ky * ngroups + j][16 lanes][4 taps] */
  atomic_int status;
} xo_dwv_ctx;

/* Dword d = 4q + p of the result takes dword 4p + q (a 4x4 transpose of 128-bit blocks'
 * dwords); the same pattern transposes the 4x4 bytes inside each block. */
static inline QP_TARGET_AVX512VNNI __m512i xo_dwv_quads(const uint8_t *u, __m512i perm, __m512i shuf) {
  return _mm512_shuffle_epi8(_mm512_permutexvar_epi32(perm, _mm512_loadu_si512(u)), shuf);
}

/* The quads of one tap group: transposed here from U, or loaded as they are from the
 * pre-transposed buffer (PRE, see xo_dwv_transpose). */
static inline __attribute__((always_inline)) QP_TARGET_AVX512VNNI __m512i xo_dwv_tap(
    const int PRE, const uint8_t *u, __m512i perm, __m512i shuf) {
  return PRE ? _mm512_loadu_si512(u) : xo_dwv_quads(u, perm, shuf);
}

/* acc[i][16] for n output pixels, pixel i's taps at u0 + i * step + off[t]. 4 pixels per
 * iteration keep 4 independent vpdpbusd chains in flight. */
static inline __attribute__((always_inline)) QP_TARGET_AVX512VNNI void xo_dwv_pixels(
    const int PRE, const size_t NGK, size_t n, const uint8_t *u0, size_t step, const size_t *off,
    const __m512i *wq, __m512i perm, __m512i shuf, int32_t *acc) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const uint8_t *u = u0 + i * step;
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t t = 0; t < NGK; t++) {
      const uint8_t *ut = u + off[t];
      s0 = _mm512_dpbusd_epi32(s0, xo_dwv_tap(PRE, ut, perm, shuf), wq[t]);
      s1 = _mm512_dpbusd_epi32(s1, xo_dwv_tap(PRE, ut + step, perm, shuf), wq[t]);
      s2 = _mm512_dpbusd_epi32(s2, xo_dwv_tap(PRE, ut + 2 * step, perm, shuf), wq[t]);
      s3 = _mm512_dpbusd_epi32(s3, xo_dwv_tap(PRE, ut + 3 * step, perm, shuf), wq[t]);
    }
    _mm512_store_si512(acc + i * XO_NR, s0);
    _mm512_store_si512(acc + (i + 1) * XO_NR, s1);
    _mm512_store_si512(acc + (i + 2) * XO_NR, s2);
    _mm512_store_si512(acc + (i + 3) * XO_NR, s3);
  }
  for (; i < n; i++) {
    const uint8_t *u = u0 + i * step;
    __m512i s0 = _mm512_setzero_si512();
    for (size_t t = 0; t < NGK; t++) s0 = _mm512_dpbusd_epi32(s0, xo_dwv_tap(PRE, u + off[t], perm, shuf), wq[t]);
    _mm512_store_si512(acc + i * XO_NR, s0);
  }
}

/* U for output rows [oy0, oy1) of image b, every chunk: u[ch][r][x][16] = input row
 * oy0*sh - ph + r, column x - pw, channels 16ch.., the zero point outside the image (and
 * past c). The source is read sequentially, one pixel (all channels) at a time. */
static QP_TARGET_AVX512VNNI void xo_dwv_fill(const xo_dwv_ctx *ctx, size_t b, size_t oy0,
                                             size_t uh, uint8_t *u) {
  const xo_depthwise_problem *p = ctx->p;
  const size_t c = p->c, uw = ctx->uw, cs = ctx->chunk_stride, full = c / XO_NR;
  const int64_t iy_first = (int64_t)oy0 * p->sh - p->ph;
  const uint8_t *img = p->x + b * p->h * p->w * c;
  const __m128i padv = _mm_set1_epi8((char)p->pad);
  const __mmask16 m = (__mmask16)((1u << (c % XO_NR)) - 1u);
  for (size_t r = 0; r < uh; r++) {
    const int64_t iy = iy_first + (int64_t)r;
    const int row_in = iy >= 0 && iy < (int64_t)p->h;
    for (size_t x = 0; x < uw; x++) {
      const int64_t ix = (int64_t)x - p->pw;
      uint8_t *dst = u + (r * uw + x) * XO_NR;
      if (!row_in || ix < 0 || ix >= (int64_t)p->w) {
        for (size_t ch = 0; ch < ctx->chunks; ch++) _mm_storeu_si128((__m128i *)(dst + ch * cs), padv);
        continue;
      }
      const uint8_t *src = img + ((size_t)iy * p->w + (size_t)ix) * c;
      size_t ch = 0;
      for (; ch < full; ch++)
        _mm_storeu_si128((__m128i *)(dst + ch * cs), _mm_loadu_si128((const __m128i *)(src + ch * XO_NR)));
      if (ch < ctx->chunks)
        _mm_storeu_si128((__m128i *)(dst + ch * cs), _mm_mask_loadu_epi8(padv, m, src + ch * XO_NR));
    }
  }
}

/* Stride-1 columns: every U position x starts the 4-tap window of some output pixel and of
 * kh output rows, so its transpose (xo_dwv_quads) is done once here, into q[r][x][64],
 * instead of once per (output pixel, kernel row). */
static QP_TARGET_AVX512VNNI void xo_dwv_transpose(const uint8_t *u, size_t uh, size_t uw,
                                                  __m512i perm, __m512i shuf, uint8_t *q) {
  for (size_t r = 0; r < uh; r++)
    for (size_t x = 0; x + 3 < uw; x++)
      _mm512_storeu_si512(q + (r * uw + x) * 64, xo_dwv_quads(u + (r * uw + x) * XO_NR, perm, shuf));
}

static QP_TARGET_AVX512VNNI void xo_dwv_rows(const xo_dwv_ctx *ctx, size_t b, size_t ch,
                                             size_t oy0, size_t oy1, const uint8_t *u, uint8_t *q,
                                             int32_t *acc) {
  const xo_depthwise_problem *p = ctx->p;
  const size_t c0 = ch * XO_NR, nc = p->c - c0 < XO_NR ? p->c - c0 : XO_NR;
  const size_t uw = ctx->uw, ng = ctx->ngroups, ngk = p->kh * ng;
  __m512i wq[16];
  for (size_t t = 0; t < ngk; t++) wq[t] = _mm512_loadu_si512(ctx->wq + (ch * ngk + t) * 64);
  const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i shuf = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
  /* with q, positions are the pre-transposed 64-byte quads; without, U's 16-byte pixels */
  const size_t pos = q != NULL ? 64 : XO_NR;
  const uint8_t *base = u;
  if (q != NULL) {
    xo_dwv_transpose(u, (oy1 - oy0 - 1) * (size_t)p->sh + (p->kh - 1) * (size_t)p->dh + 1, uw, perm,
                     shuf, q);
    base = q;
  }
  size_t off[16];
  for (size_t t = 0; t < ngk; t++) off[t] = ((t / ng) * (size_t)p->dh * uw + (t % ng) * 4) * pos;
  for (size_t oy = oy0; oy < oy1; oy++) {
    const uint8_t *row = base + (oy - oy0) * (size_t)p->sh * uw * pos;
    const size_t pix0 = (b * p->oh + oy) * p->ow;
    for (size_t ox = 0; ox < p->ow; ox += XO_DW_PX) {
      const size_t n = p->ow - ox < XO_DW_PX ? p->ow - ox : XO_DW_PX;
      const uint8_t *r0 = row + ox * (size_t)p->sw * pos;
      const size_t step = (size_t)p->sw * pos;
      if (q != NULL && ngk == 3) /* 3x3 (and kw <= 4, kh == 3): weights stay in registers */
        xo_dwv_pixels(1, 3, n, r0, step, off, wq, perm, shuf, acc);
      else if (q != NULL)
        xo_dwv_pixels(1, ngk, n, r0, step, off, wq, perm, shuf, acc);
      else if (ngk == 3)
        xo_dwv_pixels(0, 3, n, r0, step, off, wq, perm, shuf, acc);
      else
        xo_dwv_pixels(0, ngk, n, r0, step, off, wq, perm, shuf, acc);
      ctx->impl->epilogue(&p->epi, acc, pix0 + ox, n, c0, nc);
    }
  }
}

/* One task = (image, block of output rows): fill U once, then every chunk. */
static void xo_dwv_task(void *vctx, size_t begin, size_t end) {
  xo_dwv_ctx *ctx = (xo_dwv_ctx *)vctx;
  const xo_depthwise_problem *p = ctx->p;
  int32_t acc[XO_DW_PX * XO_NR] __attribute__((aligned(64)));
  uint8_t *u = (uint8_t *)malloc(ctx->chunks * ctx->chunk_stride + 64);
  /* stride-1 columns: one chunk's transposed quads (4x its part of U) */
  uint8_t *q = p->sw == 1 && u != NULL ? (uint8_t *)malloc(ctx->chunk_stride * 4 + 64) : NULL;
  if (u == NULL || (p->sw == 1 && q == NULL)) {
    free(u);
    atomic_store(&ctx->status, QP_ERR_OUT_OF_MEMORY);
    return;
  }
  for (size_t t = begin; t < end; t++) {
    const size_t rb = t % ctx->row_blocks, b = t / ctx->row_blocks;
    const size_t oy0 = rb * ctx->rows_per_block;
    const size_t oy1 = oy0 + ctx->rows_per_block < p->oh ? oy0 + ctx->rows_per_block : p->oh;
    xo_dwv_fill(ctx, b, oy0, (oy1 - oy0 - 1) * (size_t)p->sh + (p->kh - 1) * (size_t)p->dh + 1, u);
    for (size_t ch = 0; ch < ctx->chunks; ch++)
      xo_dwv_rows(ctx, b, ch, oy0, oy1, u + ch * ctx->chunk_stride, q, acc);
  }
  free(q);
  free(u);
}

/* Runs the VNNI schedule; returns -1 when it does not apply (caller uses the generic one). */
static int xo_dwv_run(const xo_depthwise_problem *p, const xo_gemm_impl *impl) {
  if (qp_active_isa() != QP_ISA_AVX512VNNI || p->dw != 1) return -1;
  xo_dwv_ctx ctx;
  ctx.p = p;
  ctx.impl = impl;
  ctx.ngroups = (p->kw + 3) / 4;
  if (p->kh * ctx.ngroups > 16 || p->sw > 64 || p->sh > 64 || p->dh > 64) return -1;
  ctx.chunks = (p->c + XO_NR - 1) / XO_NR;
  /* U width: every x a tap can touch, plus the 4-tap groups' overhang (zero weights) */
  size_t uw = (size_t)p->w + 2 * (size_t)p->pw;
  const size_t need = (p->ow - 1) * (size_t)p->sw + 4 * ctx.ngroups;
  if (need > uw) uw = need;
  ctx.uw = uw;
  /* row blocks of ~8 rows: U (all chunks) stays in L2, each chunk's part in L1; enough
   * tasks for the threads */
  const size_t threads = (size_t)qp_get_num_threads();
  size_t rb = (p->oh + 7) / 8;
  if (p->batch * rb < 4 * threads) rb = p->oh < 4 * threads ? p->oh : 4 * threads;
  ctx.rows_per_block = (p->oh + rb - 1) / rb;
  ctx.row_blocks = (p->oh + ctx.rows_per_block - 1) / ctx.rows_per_block;
  const size_t uh_max = (ctx.rows_per_block - 1) * (size_t)p->sh + (p->kh - 1) * (size_t)p->dh + 1;
  ctx.chunk_stride = uh_max * uw * XO_NR;
  const size_t ngk = p->kh * ctx.ngroups;
  ctx.wq = (int8_t *)calloc(ctx.chunks * ngk * 64, 1);
  if (ctx.wq == NULL) return QP_ERR_OUT_OF_MEMORY;
  for (size_t ch = 0; ch < ctx.chunks; ch++)
    for (size_t ky = 0; ky < p->kh; ky++)
      for (size_t kx = 0; kx < p->kw; kx++)
        for (size_t cc = 0; cc < XO_NR; cc++)
          ctx.wq[((ch * ngk + ky * ctx.ngroups + kx / 4) * XO_NR + cc) * 4 + kx % 4] =
              p->wt[(ch * p->kh * p->kw + ky * p->kw + kx) * XO_NR + cc];
  atomic_init(&ctx.status, QP_OK);
  qp_parallel_for(p->batch * ctx.row_blocks, 1, xo_dwv_task, &ctx);
  free(ctx.wq);
  return atomic_load(&ctx.status);
}
#endif

int xo_depthwise_run(const xo_depthwise_problem *p) {
  const size_t rows = p->batch * p->oh;
  if (rows == 0 || p->ow == 0 || p->c == 0) return QP_OK;
  xo_dw_ctx ctx;
  ctx.p = p;
  ctx.impl = xo_gemm_select();
#if defined(__x86_64__) || defined(__i386__)
  int st = xo_dw3_vnni_run(p);
  if (st >= 0) return st;
  st = xo_dwv_run(p, ctx.impl);
  if (st >= 0) return st;
#endif
  ctx.dw = xo_dw_select();
  atomic_init(&ctx.status, QP_OK);
  const size_t work = p->ow * p->c * p->kh * p->kw; /* MACs per row */
  const size_t grain = work >= ((size_t)1 << 16) ? 1 : ((size_t)1 << 16) / (work + 1) + 1;
  qp_parallel_for(rows, grain, xo_dw_task, &ctx);
  return atomic_load(&ctx.status);
}
