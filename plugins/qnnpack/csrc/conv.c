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
  int32_t x_zp;
  const int32_t *bias; /* [cstride] */
  const float *mult;   /* [cstride] */
  int32_t out_zp, qmin, qmax;
  uint8_t *out;
  int failed;
} qnnpack_dw_ctx;

static void qnnpack_dw_pixels(void *vctx, size_t begin, size_t end) {
  qnnpack_dw_ctx *c = (qnnpack_dw_ctx *)vctx;
  const size_t taps = c->geom->kh * c->geom->kw, ch = c->geom->cin;
  void *buf = malloc(taps * sizeof(uint8_t *) + c->cstride * sizeof(int32_t) + 64);
  if (!buf) {
    c->failed = 1;
    return;
  }
  int32_t *acc = (int32_t *)buf;
  const uint8_t **ptrs = (const uint8_t **)(void *)(acc + c->cstride);
  for (size_t row = begin; row < end; row++) {
    qnnpack_conv_taps(c->geom, row, ptrs);
    c->kern->dwconv(ch, taps, ptrs, c->w, c->cstride, c->x_zp, c->bias, acc);
    uint8_t *o = c->out + row * ch;
    for (size_t c0 = 0; c0 < ch; c0 += QNNPACK_NR) {
      const size_t nc = ch - c0 < QNNPACK_NR ? ch - c0 : QNNPACK_NR;
      c->kern->requant(1, nc, acc + c0, c->mult + c0, c->out_zp, c->qmin, c->qmax, o + c0, 0);
    }
  }
  free(buf);
}

/* ------------------------------------------------------------------- im2col -- */

typedef struct {
  const qnnpack_conv_geom *geom;
  size_t row0, group, cin_g, k;
  uint8_t *dst;
} qnnpack_im2col_ctx;

static void qnnpack_im2col_rows(void *vctx, size_t begin, size_t end) {
  const qnnpack_im2col_ctx *c = (const qnnpack_im2col_ctx *)vctx;
  const qnnpack_conv_geom *g = c->geom;
  for (size_t r = begin; r < end; r++) {
    const size_t row = c->row0 + r;
    const size_t ox = row % g->out_w, oy = (row / g->out_w) % g->out_h;
    const size_t b = row / (g->out_w * g->out_h);
    uint8_t *d = c->dst + r * c->k;
    for (size_t ky = 0; ky < g->kh; ky++)
      for (size_t kx = 0; kx < g->kw; kx++, d += c->cin_g) {
        const uint8_t *src = qnnpack_conv_tap(g, b, oy, ox, ky, kx);
        /* zero_row holds cin + 64 bytes of x_zp, so the group offset stays inside it */
        memcpy(d, src + c->group * c->cin_g, c->cin_g);
      }
  }
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
    const size_t cstride = QNNPACK_ROUND16(cout);
    void *scratch = malloc(cstride * (sizeof(int32_t) + sizeof(float)));
    if (!scratch) {
      free(zero_row);
      return QP_ERR_OUT_OF_MEMORY;
    }
    int32_t *b = (int32_t *)scratch;
    float *mult = (float *)(b + cstride);
    for (size_t c = 0; c < cstride; c++) {
      b[c] = (c < cout && bias) ? bias[c] : 0;
      mult[c] = c < cout ? multipliers[n_multipliers == 1 ? 0 : c] : 1.0f;
    }
    qnnpack_dw_ctx ctx = {.geom = &geom, .kern = kern, .w = (const int16_t *)(const void *)packed,
                          .cstride = cstride, .x_zp = x_zp, .bias = b, .mult = mult,
                          .out_zp = out_zp, .qmin = qmin, .qmax = qmax, .out = out, .failed = 0};
    const size_t work = kh * kw * cout;
    qp_parallel_for(rows, work >= 16384 ? 1 : 16384 / work, qnnpack_dw_pixels, &ctx);
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

  if (groups == 1 && kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0) {
    /* pointwise: the NHWC input rows are the GEMM rows */
    status = qnnpack_gemm_u8(kern, x, rows, cin, x_zp, packed, wsums, w_zps, cout, bias, mult,
                             out_zp, qmin, qmax, out, cout);
  } else {
    /* im2col in chunks of rows (bounded scratch), one GEMM per chunk and group */
    size_t chunk = ((size_t)1 << 21) / k;
    if (chunk < 64) chunk = 64;
    if (chunk > rows) chunk = rows;
    uint8_t *cols = (uint8_t *)malloc(chunk * k);
    if (!cols) {
      status = QP_ERR_OUT_OF_MEMORY;
    } else {
      for (size_t r0 = 0; r0 < rows && status == QP_OK; r0 += chunk) {
        const size_t nr = rows - r0 < chunk ? rows - r0 : chunk;
        for (size_t g = 0; g < groups && status == QP_OK; g++) {
          qnnpack_im2col_ctx ic = {.geom = &geom, .row0 = r0, .group = g, .cin_g = cin_g, .k = k,
                                   .dst = cols};
          qp_parallel_for(nr, k >= 16384 ? 1 : 16384 / k, qnnpack_im2col_rows, &ic);
          status = qnnpack_gemm_u8(kern, cols, nr, k, x_zp, packed + g * gsize, wsums + g * gsums,
                                   w_zps + g * ng, ng, bias ? bias + g * ng : NULL,
                                   mult + g * gsums, out_zp, qmin, qmax,
                                   out + r0 * cout + g * ng, cout);
        }
      }
    }
    free(cols);
  }
  free(mult);
  free(zero_row);
  return status;
}
