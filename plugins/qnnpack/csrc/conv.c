/*
 * 2-D convolution drivers (NHWC): depthwise microkernels, or im2col + the
 * linear GEMM per group. See qnnpack_kernels.h for layouts and numerics.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qnnpack_internal.h"
#include "qnnpack_kernels.h"

#define QNNPACK_ROUND16(n) (((n) + 15) / 16 * 16)

static int qnnpack_conv_is_depthwise(size_t cout, size_t cin_g, size_t groups) {
  return cin_g == 1 && cout == groups;
}

static int qnnpack_conv_bad_weight_shape(size_t cout, size_t cin_g, size_t kh, size_t kw,
                                         size_t groups) {
  const size_t lim = (size_t)1 << 24;
  return cout == 0 || cin_g == 0 || kh == 0 || kw == 0 || groups == 0 || cout % groups != 0 ||
         cout > lim || cin_g > lim || kh > 4096 || kw > 4096 || kh * kw * cin_g > ((size_t)1 << 30);
}

size_t qnnpack_conv2d_packed_size(size_t cout, size_t cin_g, size_t kh, size_t kw, size_t groups) {
  if (qnnpack_conv_bad_weight_shape(cout, cin_g, kh, kw, groups)) return 0;
  if (qnnpack_conv_is_depthwise(cout, cin_g, groups))
    return kh * kw * QNNPACK_ROUND16(cout) * sizeof(int16_t);
  return groups * qnnpack_packed_weight_size(cout / groups, kh * kw * cin_g);
}

size_t qnnpack_conv2d_sums_size(size_t cout, size_t cin_g, size_t groups) {
  if (groups == 0 || cout % groups != 0) return 0;
  if (qnnpack_conv_is_depthwise(cout, cin_g, groups)) return QNNPACK_ROUND16(cout);
  return groups * qnnpack_packed_sums_size(cout / groups);
}

static int qnnpack_pack_conv(const uint8_t *w, uint8_t flip, const int32_t *w_zps, size_t cout,
                             size_t cin_g, size_t kh, size_t kw, size_t groups, uint8_t *packed,
                             size_t packed_size, int32_t *wsums, size_t wsums_size) {
  if (!w || !w_zps || !packed || !wsums ||
      qnnpack_conv_bad_weight_shape(cout, cin_g, kh, kw, groups) ||
      packed_size != qnnpack_conv2d_packed_size(cout, cin_g, kh, kw, groups) ||
      wsums_size != qnnpack_conv2d_sums_size(cout, cin_g, groups))
    return QP_ERR_INVALID_ARGUMENT;
  for (size_t c = 0; c < cout; c++)
    if (w_zps[c] < 0 || w_zps[c] > 255) return QP_ERR_INVALID_ARGUMENT;
  const size_t taps = kh * kw;
  if (qnnpack_conv_is_depthwise(cout, cin_g, groups)) {
    const size_t cstride = QNNPACK_ROUND16(cout);
    int16_t *dw = (int16_t *)(void *)packed;
    for (size_t t = 0; t < taps; t++)
      for (size_t c = 0; c < cstride; c++)
        dw[t * cstride + c] =
            c < cout ? (int16_t)((int32_t)(uint8_t)(w[c * taps + t] ^ flip) - w_zps[c]) : 0;
    memset(wsums, 0, wsums_size * sizeof(int32_t));
    return QP_OK;
  }
  const size_t ng = cout / groups, k = taps * cin_g;
  const size_t gsize = qnnpack_packed_weight_size(ng, k), gsums = qnnpack_packed_sums_size(ng);
  uint8_t *mat = (uint8_t *)malloc(ng * k);
  if (!mat) return QP_ERR_OUT_OF_MEMORY;
  int status = QP_OK;
  for (size_t g = 0; g < groups && status == QP_OK; g++) {
    /* OIHW -> [n][(ky * kw + kx) * cin_g + ci], the im2col order of NHWC rows */
    for (size_t n = 0; n < ng; n++)
      for (size_t ci = 0; ci < cin_g; ci++)
        for (size_t t = 0; t < taps; t++)
          mat[n * k + t * cin_g + ci] = (uint8_t)(w[((g * ng + n) * cin_g + ci) * taps + t] ^ flip);
    status = qnnpack_pack_weight_u8(mat, ng, k, packed + g * gsize, gsize, wsums + g * gsums, gsums);
  }
  free(mat);
  return status;
}

int qnnpack_pack_conv2d_weight_s8(const int8_t *w, const int32_t *w_zps, size_t cout, size_t cin_g,
                                  size_t kh, size_t kw, size_t groups, uint8_t *packed,
                                  size_t packed_size, int32_t *wsums, size_t wsums_size) {
  return qnnpack_pack_conv((const uint8_t *)w, 0x80, w_zps, cout, cin_g, kh, kw, groups, packed,
                           packed_size, wsums, wsums_size);
}

int qnnpack_pack_conv2d_weight_u8(const uint8_t *w, const int32_t *w_zps, size_t cout, size_t cin_g,
                                  size_t kh, size_t kw, size_t groups, uint8_t *packed,
                                  size_t packed_size, int32_t *wsums, size_t wsums_size) {
  return qnnpack_pack_conv(w, 0, w_zps, cout, cin_g, kh, kw, groups, packed, packed_size, wsums,
                           wsums_size);
}

/* ------------------------------------------------------------------ geometry -- */

typedef struct {
  const uint8_t *x;
  size_t batch, in_h, in_w, cin, out_h, out_w;
  size_t kh, kw, sh, sw, ph, pw, dh, dw;
  const uint8_t *zero_row; /* cin bytes of x_zp */
} qnnpack_conv_geom;

/* The input pixel under tap (ky, kx) of output pixel (b, oy, ox), or zero_row for padding. */
static inline const uint8_t *qnnpack_conv_tap(const qnnpack_conv_geom *g, size_t b, size_t oy,
                                              size_t ox, size_t ky, size_t kx) {
  const size_t iy = oy * g->sh + ky * g->dh; /* + ph: compared without wrapping below */
  const size_t ix = ox * g->sw + kx * g->dw;
  if (iy < g->ph || iy - g->ph >= g->in_h || ix < g->pw || ix - g->pw >= g->in_w)
    return g->zero_row;
  return g->x + ((b * g->in_h + (iy - g->ph)) * g->in_w + (ix - g->pw)) * g->cin;
}

/* The kw taps of kernel row ky as one run of input pixels (dilation 1, every tap inside the
 * image): its first byte; NULL when a tap is padding or the taps are not adjacent. */
static inline const uint8_t *qnnpack_conv_span(const qnnpack_conv_geom *g, size_t b, size_t oy,
                                               size_t ox, size_t ky) {
  const size_t iy = oy * g->sh + ky * g->dh, ix = ox * g->sw; /* + ph / + pw */
  if (g->dw != 1 || iy < g->ph || iy - g->ph >= g->in_h || ix < g->pw ||
      ix - g->pw + g->kw > g->in_w)
    return NULL;
  return g->x + ((b * g->in_h + (iy - g->ph)) * g->in_w + (ix - g->pw)) * g->cin;
}

/* Pointers to the kh * kw input pixels of output pixel `row` (QNNPACK's indirection). */
static void qnnpack_conv_taps(const qnnpack_conv_geom *g, size_t row, const uint8_t **taps) {
  const size_t ox = row % g->out_w, oy = (row / g->out_w) % g->out_h;
  const size_t b = row / (g->out_w * g->out_h);
  size_t t = 0;
  for (size_t ky = 0; ky < g->kh; ky++)
    for (size_t kx = 0; kx < g->kw; kx++) taps[t++] = qnnpack_conv_tap(g, b, oy, ox, ky, kx);
}

/* ----------------------------------------------------------------- depthwise -- */

typedef struct {
  const qnnpack_conv_geom *geom;
  const qnnpack_isa_kernels *kern;
  const int16_t *w;
  size_t cstride;
  qnnpack_dw_params params; /* bias with the input zero point folded in */
  const uint8_t *zero_wide; /* in_w * cin bytes of x_zp: vertically padded taps of a run */
  uint8_t *out;
  int failed;
} qnnpack_dw_ctx;

/* npix output pixels from tap pointers `taps` (pixel p reads taps[t] + p * x_step). */
static void qnnpack_dw_run(const qnnpack_dw_ctx *c, size_t npix, const uint8_t **taps,
                           size_t x_step, uint8_t *o, int32_t *acc) {
  const size_t ntaps = c->geom->kh * c->geom->kw, ch = c->geom->cin;
  if (c->kern->dwconv_run) {
    c->kern->dwconv_run(ch, npix, ntaps, taps, x_step, c->w, c->cstride, &c->params, o, ch);
    return;
  }
  /* paths without a run kernel: their per-pixel dwconv (x_zp 0: it is in the bias) + requant */
  for (size_t p = 0; p < npix; p++) {
    c->kern->dwconv(ch, ntaps, taps, c->w, c->cstride, 0, c->params.bias, acc);
    for (size_t c0 = 0; c0 < ch; c0 += QNNPACK_NR) {
      const size_t nc = ch - c0 < QNNPACK_NR ? ch - c0 : QNNPACK_NR;
      c->kern->requant(1, nc, acc + c0, c->params.mult + c0, c->params.out_zp, c->params.qmin,
                       c->params.qmax, o + p * ch + c0, 0);
    }
    for (size_t t = 0; t < ntaps; t++) taps[t] += x_step;
  }
}

/* Output rows [begin, end) (row = b * out_h + oy): the interior pixels of a row (every tap
 * inside the input horizontally) in one run, the left and right borders pixel by pixel. */
static void qnnpack_dw_rows(void *vctx, size_t begin, size_t end) {
  qnnpack_dw_ctx *c = (qnnpack_dw_ctx *)vctx;
  const qnnpack_conv_geom *g = c->geom;
  const size_t taps = g->kh * g->kw, ch = g->cin, eff_w = g->dw * (g->kw - 1) + 1;
  void *buf = malloc(taps * sizeof(uint8_t *) + c->cstride * sizeof(int32_t) + 64);
  if (!buf) {
    c->failed = 1;
    return;
  }
  int32_t *acc = (int32_t *)buf;
  const uint8_t **ptrs = (const uint8_t **)(void *)(acc + c->cstride);
  /* interior [ox_lo, ox_hi): ox * sw >= pw and ox * sw - pw + eff_w <= in_w */
  size_t ox_hi = g->in_w + g->pw >= eff_w ? (g->in_w + g->pw - eff_w) / g->sw + 1 : 0;
  if (ox_hi > g->out_w) ox_hi = g->out_w;
  size_t ox_lo = (g->pw + g->sw - 1) / g->sw;
  if (ox_lo > ox_hi) ox_lo = ox_hi;
  for (size_t row = begin; row < end; row++) {
    const size_t oy = row % g->out_h, b = row / g->out_h;
    uint8_t *o = c->out + row * g->out_w * ch;
    for (size_t ox = 0; ox < g->out_w; ox++) {
      if (ox == ox_lo && ox_hi > ox_lo) {
        size_t t = 0;
        for (size_t ky = 0; ky < g->kh; ky++) {
          const size_t iy = oy * g->sh + ky * g->dh; /* + ph */
          const int pad = iy < g->ph || iy - g->ph >= g->in_h;
          const uint8_t *base =
              pad ? c->zero_wide : g->x + (b * g->in_h + (iy - g->ph)) * g->in_w * ch;
          for (size_t kx = 0; kx < g->kw; kx++)
            ptrs[t++] = base + (ox * g->sw - g->pw + kx * g->dw) * ch;
        }
        qnnpack_dw_run(c, ox_hi - ox_lo, ptrs, g->sw * ch, o + ox * ch, acc);
        ox = ox_hi - 1;
        continue;
      }
      qnnpack_conv_taps(g, row * g->out_w + ox, ptrs);
      qnnpack_dw_run(c, 1, ptrs, 0, o + ox * ch, acc);
    }
  }
  free(buf);
}

/* ------------------------------------------------------ depthwise 3x3 rows -- */
/*
 * 3x3 depthwise (dilation 1) on paths with dw3 kernels (layout and numerics: qnnpack_internal.h).
 * A task owns a band of output rows of one image and walks it one 16-channel slice at a time:
 * each input row of the slice is staged once into a 3-slot ring (so it serves every output row
 * that reads it): stride 1 as "quads" (4 adjacent input bytes per channel, one entry per two
 * output columns, the odd column's weights shifted up one byte: half the staging and loads of
 * one triple per column), other strides as tap triples. The row kernel then does one 4-byte
 * dot product per kernel row and pixel (two when the slice's w - w_zp leaves int8, see
 * qnnpack_internal.h), with the requantization fused.
 * Rows of vertical padding are skipped: their x_zp * sum w term goes into the row's init.
 */
#define QNNPACK_DW3_BAND 16 /* output rows per task (at most): the band's rows stay in L2 */

typedef struct {
  const qnnpack_conv_geom *geom;
  const qnnpack_isa_kernels *kern;
  const uint32_t *w3;   /* per slice: [set][phase][ky][16] (sets: h then l when split, else d) */
  const int32_t *rsum;  /* per slice: [3][16] sum_kx (w - w_zp) of kernel row ky */
  const uint8_t *split; /* per slice: 1 when some w - w_zp of the slice leaves int8 */
  const uint8_t *small; /* per slice: 1 when |acc * mult| < 2**30 for every input */
  const int32_t *bias;  /* cstride: bias - x_zp * sum_t (w - w_zp), mod 2**32 */
  const float *mult;    /* cstride */
  int32_t x_zp, out_zp, qmin, qmax;
  size_t nblk, band, nband;
  uint8_t *out;
  int failed;
} qnnpack_dw3_ctx;

static void qnnpack_dw3_task(void *vctx, size_t begin, size_t end) {
  qnnpack_dw3_ctx *c = (qnnpack_dw3_ctx *)vctx;
  const qnnpack_conv_geom *g = c->geom;
  /* 3 spare entries per slot: a row kernel may read (not store) a group of 4 past the end */
  const size_t row_words = (g->out_w + 3) * 16, ch = g->cin;
  const int quad = g->sw == 1; /* one staged entry per two output columns */
  void *buf = malloc(3 * row_words * sizeof(uint32_t) + 64);
  if (!buf) {
    c->failed = 1; /* benign race: every writer stores the same value */
    return;
  }
  uint32_t *ring = (uint32_t *)(((uintptr_t)buf + 63) & ~(uintptr_t)63);
  memset(ring, 0, 3 * row_words * sizeof(uint32_t));
  for (size_t t = begin; t < end; t++) {
    const size_t b = t / c->nband, oy0 = (t % c->nband) * c->band;
    const size_t oy1 = oy0 + c->band < g->out_h ? oy0 + c->band : g->out_h;
    for (size_t blk = 0; blk < c->nblk; blk++) {
      const size_t c0 = blk * 16, nc = ch - c0 < 16 ? ch - c0 : 16;
      const int split = c->split[blk];
      const uint32_t *w3 = c->w3 + blk * 192;
      const int32_t *rsum = c->rsum + blk * 48;
      size_t tag[3] = {SIZE_MAX, SIZE_MAX, SIZE_MAX};
      for (size_t oy = oy0; oy < oy1; oy++) {
        const uint32_t *rows[3];
        uint32_t wv[4 * 3 * 16];
        int32_t init[16];
        size_t nv = 0, valid[3];
        for (size_t j = 0; j < 16; j++) init[j] = c->bias[c0 + j];
        for (size_t ky = 0; ky < 3; ky++) {
          const size_t iy = oy * g->sh + ky; /* + ph */
          if (iy < g->ph || iy - g->ph >= g->in_h) { /* padding: x_zp * w, folded */
            for (size_t j = 0; j < 16; j++)
              init[j] = (int32_t)((uint32_t)init[j] +
                                  (uint32_t)c->x_zp * (uint32_t)rsum[ky * 16 + j]);
            continue;
          }
          const size_t y = iy - g->ph, slot = y % 3;
          if (tag[slot] != y) {
            c->kern->dw3_stage(g->x + (b * g->in_h + y) * g->in_w * ch + c0, g->in_w, ch, g->pw,
                               g->sw, quad, g->out_w, nc, (uint8_t)c->x_zp,
                               ring + slot * row_words);
            tag[slot] = y;
          }
          rows[nv] = ring + slot * row_words;
          valid[nv++] = ky;
        }
        /* the row kernel's weight sets [st][phase][r < nv][16]: w3 itself for quads and
         * three rows, else its valid rows (and phase 0 only for triples) */
        const size_t phases = quad ? 2 : 1, sets = split ? 2 : 1;
        if (!(quad && nv == 3))
          for (size_t st = 0; st < sets; st++)
            for (size_t ph = 0; ph < phases; ph++)
              for (size_t r = 0; r < nv; r++)
                memcpy(wv + ((st * phases + ph) * nv + r) * 16,
                       w3 + ((st * 2 + ph) * 3 + valid[r]) * 16, 64);
        const qnnpack_dw3_row_params rp = {.w = quad && nv == 3 ? w3 : wv, .init = init,
                                           .mult = c->mult + c0, .nv = nv, .split = split,
                                           .quad = quad, .small = c->small[blk],
                                           .out_zp = c->out_zp, .qmin = c->qmin, .qmax = c->qmax};
        uint8_t *o = c->out + ((b * g->out_h + oy) * g->out_w) * ch + c0;
        c->kern->dw3_row(rows, g->out_w, &rp, nc, o, ch);
      }
    }
  }
  free(buf);
}

/* Runs the 3x3 row path; returns QP_OK or QP_ERR_OUT_OF_MEMORY. */
static int qnnpack_dw3_conv(const qnnpack_conv_geom *g, const qnnpack_isa_kernels *kern,
                            const int16_t *wp, size_t cstride, const int32_t *bias,
                            const int32_t *bias_q, const float *mult, int32_t x_zp,
                            int32_t out_zp, int32_t qmin, int32_t qmax, uint8_t *out) {
  const size_t nblk = cstride / 16;
  void *buf = malloc(nblk * (192 * sizeof(uint32_t) + 48 * sizeof(int32_t) + 2));
  if (!buf) return QP_ERR_OUT_OF_MEMORY;
  uint32_t *w3 = (uint32_t *)buf;
  int32_t *rsum = (int32_t *)(w3 + nblk * 192);
  uint8_t *split = (uint8_t *)(rsum + nblk * 48), *small = split + nblk;
  for (size_t blk = 0; blk < nblk; blk++) {
    int sp = 0, sm = 1;
    for (size_t j = 0; j < 16; j++) {
      const size_t ch = blk * 16 + j;
      /* |acc| <= |bias_q| + 255 * sum |w - w_zp| (and <= 2**31 as an int32) */
      int64_t bound = bias_q && ch < g->cin ? llabs((long long)bias_q[ch]) : 0;
      for (size_t t = 0; t < 9; t++) {
        const int32_t d = wp[t * cstride + ch];
        sp |= d < -128 || d > 127;
        bound += 255 * (int64_t)(d < 0 ? -d : d);
      }
      if (bound > ((int64_t)1 << 31)) bound = (int64_t)1 << 31;
      sm &= (double)bound * (double)mult[ch] < 1073741824.0;
    }
    split[blk] = (uint8_t)sp;
    small[blk] = (uint8_t)sm;
    for (size_t ky = 0; ky < 3; ky++)
      for (size_t j = 0; j < 16; j++) {
        uint32_t v = 0, h = 0, l = 0;
        int32_t sum = 0;
        for (size_t kx = 0; kx < 3; kx++) {
          const int32_t d = wp[(ky * 3 + kx) * cstride + blk * 16 + j];
          sum += d;
          v |= (uint32_t)(uint8_t)(int8_t)(sp ? 0 : d) << (8 * kx);
          /* d = 2 * (d >> 1) + (d & 1), arithmetic shift spelled out (floor division) */
          const int32_t hi = d >= 0 ? d / 2 : -((1 - d) / 2);
          h |= (uint32_t)(uint8_t)(int8_t)hi << (8 * kx);
          l |= (uint32_t)(d - 2 * hi) << (8 * kx);
        }
        /* phase 1 (odd columns of a quad, lanes 1..3) = phase 0 moved up one byte */
        for (size_t ph = 0; ph < 2; ph++) {
          w3[blk * 192 + (ph * 3 + ky) * 16 + j] = (sp ? h : v) << (8 * ph);
          w3[blk * 192 + ((2 + ph) * 3 + ky) * 16 + j] = (sp ? l : 0) << (8 * ph);
        }
        rsum[blk * 48 + ky * 16 + j] = sum;
      }
  }
  qnnpack_dw3_ctx ctx = {.geom = g, .kern = kern, .w3 = w3, .rsum = rsum, .split = split,
                         .small = small, .bias = bias, .mult = mult, .x_zp = x_zp, .out_zp = out_zp,
                         .qmin = qmin, .qmax = qmax, .nblk = nblk, .out = out, .failed = 0};
  /* long bands stage fewer rows twice; with threads, enough bands (>= 3 per thread) to balance */
  const size_t threads = (size_t)(qp_get_num_threads() > 0 ? qp_get_num_threads() : 1);
  size_t band = QNNPACK_DW3_BAND < g->out_h ? QNNPACK_DW3_BAND : g->out_h;
  while (band > 2 && threads > 1 && g->batch * ((g->out_h + band - 1) / band) < 3 * threads)
    band = (band + 1) / 2;
  ctx.band = band;
  ctx.nband = (g->out_h + band - 1) / band;
  qp_parallel_for(g->batch * ctx.nband, 1, qnnpack_dw3_task, &ctx);
  free(buf);
  return ctx.failed ? QP_ERR_OUT_OF_MEMORY : QP_OK;
}

/* ------------------------------------------------------------------- im2col -- */

typedef struct {
  const qnnpack_conv_geom *geom;
  size_t row0, group, cin_g, k;
  int xprep;        /* enum qnnpack_xprep of the GEMM path */
  size_t dst_stride; /* bytes per prepared row */
  uint8_t *dst;
  uint32_t *xsum;   /* [rows]: sum of each row's uint8 values */
  int failed;
} qnnpack_im2col_ctx;

/* True when output row r of the conv is input pixel r itself: a 1x1, stride 1, unpadded conv
 * over all channels (a pointwise conv), whose rows need no index arithmetic to find. */
static int qnnpack_rows_are_pixels(const qnnpack_im2col_ctx *c) {
  const qnnpack_conv_geom *g = c->geom;
  return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0 &&
         c->cin_g == g->cin;
}

/* Gathers rows [begin, end) of the chunk and prepares them in the path's xprep format in the
 * same pass (FLIP in place; WIDEN16 from a one-row scratch), with their sums. */
static void qnnpack_im2col_rows(void *vctx, size_t begin, size_t end) {
  qnnpack_im2col_ctx *c = (qnnpack_im2col_ctx *)vctx;
  const qnnpack_conv_geom *g = c->geom;
  const size_t k = c->k, kpad = (k + QNNPACK_KR - 1) / QNNPACK_KR * QNNPACK_KR;
  if (c->xprep == QNNPACK_XPREP_FLIP && qnnpack_rows_are_pixels(c)) {
    /* Pointwise conv on the FLIP path: the per-row coordinate arithmetic of the general loop
     * below was ~40% of this function's time on a 144 -> 24 conv (perf annotate). */
    for (size_t r = begin; r < end; r++) {
      uint8_t *const row_dst = c->dst + r * c->dst_stride;
      c->xsum[r] = qnnpack_sum_flip_to(row_dst, g->x + (c->row0 + r) * k, k, 1);
      for (size_t p = k; p < kpad; p++) row_dst[p] = 0x80; /* meets zero weights */
    }
    return;
  }
  uint8_t *tmp = NULL;
  if (c->xprep == QNNPACK_XPREP_WIDEN16) {
    tmp = (uint8_t *)malloc(k + 64);
    if (!tmp) {
      c->failed = 1;
      return;
    }
  }
  for (size_t r = begin; r < end; r++) {
    const size_t row = c->row0 + r;
    const size_t ox = row % g->out_w, oy = (row / g->out_w) % g->out_h;
    const size_t b = row / (g->out_w * g->out_h);
    uint8_t *const row_dst = c->dst + r * c->dst_stride;
    uint8_t *d = tmp ? tmp : row_dst;
    /* FLIP rows are gathered, flipped and summed in one pass */
    const int flip = c->xprep == QNNPACK_XPREP_FLIP;
    uint32_t sum = 0;
    for (size_t ky = 0; ky < g->kh; ky++) {
      const uint8_t *span = qnnpack_conv_span(g, b, oy, ox, ky);
      if (span && c->cin_g == g->cin) { /* one group: the kw taps are kw * cin contiguous bytes */
        const size_t len = g->kw * c->cin_g;
        if (flip)
          sum += qnnpack_sum_flip_to(d, span, len, 1);
        else
          memcpy(d, span, len);
        d += len;
        continue;
      }
      for (size_t kx = 0; kx < g->kw; kx++, d += c->cin_g) {
        /* zero_row holds cin + 64 bytes of x_zp, so the group offset stays inside it */
        const uint8_t *src = qnnpack_conv_tap(g, b, oy, ox, ky, kx) + c->group * c->cin_g;
        if (flip)
          sum += qnnpack_sum_flip_to(d, src, c->cin_g, 1);
        else
          memcpy(d, src, c->cin_g);
      }
    }
    if (flip) {
      c->xsum[r] = sum;
      for (size_t p = k; p < kpad; p++) row_dst[p] = 0x80; /* meets zero weights */
      continue;
    }
    if (c->xprep == QNNPACK_XPREP_WIDEN16) {
      c->xsum[r] = qnnpack_sum_flip_bytes(tmp, k, 0);
      uint16_t *restrict w16 = (uint16_t *)(void *)row_dst;
      for (size_t p = 0; p < k; p++) w16[p] = tmp[p];
      for (size_t p = k; p < kpad; p++) w16[p] = 0;
    } else {
      c->xsum[r] = qnnpack_sum_flip_bytes(row_dst, k, 0);
    }
  }
  free(tmp);
}

/* ------------------------------------------------------- fused row tasks -- */

/*
 * A conv whose packed weights stay cache resident runs as one parallel loop over row tasks:
 * each task gathers its own output rows (im2col, prepared for the GEMM path) into a private
 * buffer and multiplies them at once, for every group. Versus a parallel im2col then a
 * parallel GEMM per chunk of rows, there is one pool barrier per conv instead of two per
 * chunk (a descheduled worker stalls every barrier on a loaded machine), and the rows a
 * thread gathers are the rows it multiplies, from its own L1/L2. The GEMMs called from a task
 * run inline (the pool is busy), so the result is the same as on one thread.
 */
typedef struct {
  const qnnpack_conv_geom *geom;
  const qnnpack_isa_kernels *kern;
  size_t rows, tasks, max_rows, groups, cin_g, k, ng, cout, stride, gsize, gsums;
  const uint8_t *packed;
  const int32_t *wsums, *w_zps, *bias;
  const float *mult;
  int32_t x_zp, out_zp, qmin, qmax;
  uint8_t *out;
  int status; /* first failure (written atomically), QP_OK otherwise */
} qnnpack_conv_rows_ctx;

/* First row of task t: tasks hold rows / tasks rows each, boundaries on multiples of 8 (whole
 * tiles of every path's MR) except the end. */
static size_t qnnpack_conv_task_row(const qnnpack_conv_rows_ctx *c, size_t t) {
  return t >= c->tasks ? c->rows : c->rows * t / c->tasks / 8 * 8;
}

static void qnnpack_conv_row_tasks(void *vctx, size_t begin, size_t end) {
  qnnpack_conv_rows_ctx *c = (qnnpack_conv_rows_ctx *)vctx;
  uint8_t *cols = (uint8_t *)malloc(c->max_rows * c->stride + c->max_rows * sizeof(uint32_t) + 64);
  if (!cols) {
    __atomic_store_n(&c->status, QP_ERR_OUT_OF_MEMORY, __ATOMIC_RELAXED);
    return;
  }
  uint32_t *xsum = (uint32_t *)(void *)(cols + (c->max_rows * c->stride + 3) / 4 * 4);
  for (size_t t = begin; t < end; t++) {
    const size_t r0 = qnnpack_conv_task_row(c, t), nr = qnnpack_conv_task_row(c, t + 1) - r0;
    for (size_t g = 0; g < c->groups && nr; g++) {
      qnnpack_im2col_ctx ic = {.geom = c->geom, .row0 = r0, .group = g, .cin_g = c->cin_g,
                               .k = c->k, .xprep = c->kern->xprep, .dst_stride = c->stride,
                               .dst = cols, .xsum = xsum, .failed = 0};
      qnnpack_im2col_rows(&ic, 0, nr);
      const int st = ic.failed ? QP_ERR_OUT_OF_MEMORY
                               : qnnpack_gemm_prepared_u8(
                                     c->kern, cols, c->stride, xsum, nr, c->k, c->x_zp,
                                     c->packed + g * c->gsize, c->wsums + g * c->gsums,
                                     c->w_zps + g * c->ng, c->ng,
                                     c->bias ? c->bias + g * c->ng : NULL,
                                     c->mult + g * c->gsums, c->out_zp, c->qmin, c->qmax,
                                     c->out + r0 * c->cout + g * c->ng, c->cout);
      if (st != QP_OK) {
        __atomic_store_n(&c->status, st, __ATOMIC_RELAXED);
        free(cols);
        return;
      }
    }
  }
  free(cols);
}

/* -------------------------------------------------------------------- driver -- */

int qnnpack_conv2d_u8(const uint8_t *x, size_t batch, size_t in_h, size_t in_w, size_t cin,
                      int32_t x_zp, const uint8_t *packed, size_t packed_size,
                      const int32_t *wsums, size_t wsums_size, const int32_t *w_zps, size_t cout,
                      size_t kh, size_t kw, size_t sh, size_t sw, size_t ph, size_t pw, size_t dh,
                      size_t dw, size_t groups, const int32_t *bias, const float *multipliers,
                      size_t n_multipliers, int32_t out_zp, int32_t qmin, int32_t qmax,
                      uint8_t *out, size_t out_h, size_t out_w) {
  if (groups == 0 || cin % groups != 0) return QP_ERR_INVALID_ARGUMENT;
  const size_t cin_g = cin / groups;
  if (qnnpack_conv_bad_weight_shape(cout, cin_g, kh, kw, groups) || !packed || !wsums || !w_zps ||
      !multipliers || packed_size != qnnpack_conv2d_packed_size(cout, cin_g, kh, kw, groups) ||
      wsums_size != qnnpack_conv2d_sums_size(cout, cin_g, groups))
    return QP_ERR_INVALID_ARGUMENT;
  if (sh == 0 || sw == 0 || dh == 0 || dw == 0 || sh > 4096 || sw > 4096 || dh > 4096 ||
      dw > 4096 || ph > 65536 || pw > 65536 || in_h > ((size_t)1 << 24) || in_w > ((size_t)1 << 24))
    return QP_ERR_INVALID_ARGUMENT;
  const size_t eff_h = dh * (kh - 1) + 1, eff_w = dw * (kw - 1) + 1;
  if (in_h + 2 * ph < eff_h || in_w + 2 * pw < eff_w) return QP_ERR_INVALID_ARGUMENT;
  if (out_h != (in_h + 2 * ph - eff_h) / sh + 1 || out_w != (in_w + 2 * pw - eff_w) / sw + 1)
    return QP_ERR_INVALID_ARGUMENT;
  if (x_zp < 0 || x_zp > 255 || out_zp < 0 || out_zp > 255 || qmin < 0 || qmax > 255 ||
      qmin > qmax || (n_multipliers != 1 && n_multipliers != cout))
    return QP_ERR_INVALID_ARGUMENT;
  for (size_t c = 0; c < cout; c++)
    if (w_zps[c] < 0 || w_zps[c] > 255) return QP_ERR_INVALID_ARGUMENT;
  for (size_t j = 0; j < n_multipliers; j++)
    if (!(multipliers[j] > 0.0f) || !isfinite(multipliers[j])) return QP_ERR_INVALID_ARGUMENT;
  const size_t rows = batch * out_h * out_w;
  if (rows == 0) return QP_OK;
  if (!x || !out || batch > ((size_t)1 << 24) || rows > ((size_t)1 << 36) / cout)
    return QP_ERR_INVALID_ARGUMENT;

  const qnnpack_isa_kernels *kern = qnnpack_active_kernels();
  uint8_t *zero_row = (uint8_t *)malloc(cin + 64);
  if (!zero_row) return QP_ERR_OUT_OF_MEMORY;
  memset(zero_row, x_zp, cin + 64);
  qnnpack_conv_geom geom = {.x = x, .batch = batch, .in_h = in_h, .in_w = in_w, .cin = cin,
                            .out_h = out_h, .out_w = out_w, .kh = kh, .kw = kw, .sh = sh,
                            .sw = sw, .ph = ph, .pw = pw, .dh = dh, .dw = dw,
                            .zero_row = zero_row};
  int status = QP_OK;

  if (qnnpack_conv_is_depthwise(cout, cin_g, groups)) {
    const size_t cstride = QNNPACK_ROUND16(cout), taps = kh * kw;
    const int16_t *wp = (const int16_t *)(const void *)packed;
    void *scratch = malloc(cstride * (sizeof(int32_t) + sizeof(float)) + in_w * cin + 64);
    if (!scratch) {
      free(zero_row);
      return QP_ERR_OUT_OF_MEMORY;
    }
    int32_t *b = (int32_t *)scratch;
    float *mult = (float *)(b + cstride);
    uint8_t *zero_wide = (uint8_t *)(mult + cstride);
    memset(zero_wide, x_zp, in_w * cin + 64);
    for (size_t c = 0; c < cstride; c++) {
      uint32_t s = (c < cout && bias) ? (uint32_t)bias[c] : 0u; /* bias - x_zp * sum_t w, mod 2**32 */
      for (size_t t = 0; t < taps; t++) s -= (uint32_t)(x_zp * (int32_t)wp[t * cstride + c]);
      b[c] = (int32_t)s;
      mult[c] = c < cout ? multipliers[n_multipliers == 1 ? 0 : c] : 1.0f;
    }
    if (kern->dw3_row && kh == 3 && kw == 3 && dh == 1 && dw == 1) {
      status = qnnpack_dw3_conv(&geom, kern, wp, cstride, b, bias, mult, x_zp, out_zp, qmin, qmax, out);
      free(scratch);
      free(zero_row);
      return status;
    }
    qnnpack_dw_ctx ctx = {.geom = &geom, .kern = kern, .w = wp, .cstride = cstride,
                          .params = {.bias = b, .mult = mult, .out_zp = out_zp, .qmin = qmin, .qmax = qmax},
                          .zero_wide = zero_wide, .out = out, .failed = 0};
    const size_t work = taps * cout * out_w;
    qp_parallel_for(batch * out_h, work >= 65536 ? 1 : 65536 / work, qnnpack_dw_rows, &ctx);
    status = ctx.failed ? QP_ERR_OUT_OF_MEMORY : QP_OK;
    free(scratch);
    free(zero_row);
    return status;
  }

  const size_t ng = cout / groups, k = kh * kw * cin_g;
  const size_t gsize = qnnpack_packed_weight_size(ng, k), gsums = qnnpack_packed_sums_size(ng);
  float *mult = (float *)malloc(groups * gsums * sizeof(float));
  if (!mult) {
    free(zero_row);
    return QP_ERR_OUT_OF_MEMORY;
  }
  for (size_t g = 0; g < groups; g++)
    for (size_t j = 0; j < gsums; j++)
      mult[g * gsums + j] = j < ng ? multipliers[n_multipliers == 1 ? 0 : g * ng + j] : 1.0f;

  const size_t esize = kern->xprep == QNNPACK_XPREP_WIDEN16 ? 2 : 1;
  const size_t stride = qnnpack_xprep_k(kern, k) * esize;
  /* Fused row tasks (see qnnpack_conv_row_tasks) when all packed weights fit in L2 (each task
   * walks them all; 512->512 3x3, 2.4 MB, keeps the tile-parallel GEMM below) and a task holds
   * at least 32 rows (fewer re-read all the weights too often per row: 256->256 3x3 at 14x14,
   * 196 rows, is faster tile-parallel): 4 tasks per thread for the pool's dynamic balancing,
   * more when a task's rows would pass ~256 KB. */
  const size_t threads = (size_t)qp_get_num_threads();
  size_t ntasks = 4 * threads, max_rows = ((size_t)1 << 18) / stride;
  if (max_rows < 16) max_rows = 16;
  if (rows > ntasks * max_rows)
    ntasks = (rows + ntasks * max_rows - 1) / (ntasks * max_rows) * ntasks;
  if (groups * gsize <= ((size_t)768 << 10) && rows >= ntasks * 32) {
    qnnpack_conv_rows_ctx rc = {
        .geom = &geom, .kern = kern, .rows = rows, .tasks = ntasks, .groups = groups,
        .cin_g = cin_g, .k = k, .ng = ng, .cout = cout, .stride = stride, .gsize = gsize,
        .gsums = gsums, .packed = packed, .wsums = wsums, .w_zps = w_zps, .bias = bias,
        .mult = mult, .x_zp = x_zp, .out_zp = out_zp, .qmin = qmin, .qmax = qmax, .out = out,
        .status = QP_OK};
    rc.max_rows = 0;
    for (size_t t = 0; t < ntasks; t++) {
      const size_t nr = qnnpack_conv_task_row(&rc, t + 1) - qnnpack_conv_task_row(&rc, t);
      if (nr > rc.max_rows) rc.max_rows = nr;
    }
    qp_parallel_for(ntasks, 1, qnnpack_conv_row_tasks, &rc);
    status = rc.status;
  } else {
    /* im2col in chunks of rows (bounded scratch), one GEMM per chunk and group. A pointwise
     * conv goes this way too: its "gather" is one copy per row, fused with the preparation
     * the GEMM path needs, chunk by chunk in L2 (cheaper than preparing the whole input).
     * ~256 KB of im2col rows per chunk: written by im2col and read by the GEMM while in L2 */
    size_t chunk = ((size_t)1 << 18) / stride / 64 * 64;
    if (chunk < 64) chunk = 64;
    if (chunk > rows) chunk = rows;
    uint8_t *cols = (uint8_t *)malloc(chunk * stride + chunk * sizeof(uint32_t) + 64);
    if (!cols) {
      status = QP_ERR_OUT_OF_MEMORY;
    } else {
      uint32_t *xsum = (uint32_t *)(void *)(cols + (chunk * stride + 3) / 4 * 4);
      for (size_t r0 = 0; r0 < rows && status == QP_OK; r0 += chunk) {
        const size_t nr = rows - r0 < chunk ? rows - r0 : chunk;
        for (size_t g = 0; g < groups && status == QP_OK; g++) {
          qnnpack_im2col_ctx ic = {.geom = &geom, .row0 = r0, .group = g, .cin_g = cin_g, .k = k,
                                   .xprep = kern->xprep, .dst_stride = stride, .dst = cols,
                                   .xsum = xsum, .failed = 0};
          qp_parallel_for(nr, k >= 16384 ? 1 : 16384 / k, qnnpack_im2col_rows, &ic);
          if (ic.failed) {
            status = QP_ERR_OUT_OF_MEMORY;
            break;
          }
          status = qnnpack_gemm_prepared_u8(kern, cols, stride, xsum, nr, k, x_zp, packed + g * gsize,
                                            wsums + g * gsums, w_zps + g * ng, ng,
                                            bias ? bias + g * ng : NULL, mult + g * gsums, out_zp,
                                            qmin, qmax, out + r0 * cout + g * ng, cout);
        }
      }
    }
    free(cols);
  }
  free(mult);
  free(zero_row);
  return status;
}
