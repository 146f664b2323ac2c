/*
 * qs8-qc8w convolution, NHWC, as XNNPACK's igemm: each group's weights are a
 * packed gemm matrix [cout/groups, kh * kw * cin/groups] and every output
 * pixel is one gemm row (its input patch). The patch of MR pixels is copied
 * into a small buffer (im2col; padding filled with the input zero point so it
 * contributes 0), then the same microkernels and epilogues as the linear run.
 * 1x1 stride-1 unpadded convolutions read the input rows in place; depthwise
 * convolutions (groups == cin == cout) take the channel-vectorised dwconv.c.
 *
 * The scalar path is the direct definition (nested loops, padding skipped).
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "quantplug/qp_requant.h"
#include "quantplug/qp_runtime.h"
#include "xnnpack_internal.h"
#include "xnnpack_kernels.h"

size_t xnnpack_qc8w_conv2d_packed_size(size_t groups, size_t cout, size_t cin_per_group, size_t kh,
                                       size_t kw) {
  if (groups == 0 || cout % groups) return 0;
  return groups * xnnpack_qc8w_packed_size(cout / groups, kh * kw * cin_per_group);
}

size_t xnnpack_qc8w_conv2d_row_sums_size(size_t groups, size_t cout) {
  if (groups == 0 || cout % groups) return 0;
  return groups * xnnpack_qc8w_row_sums_size(cout / groups);
}

int xnnpack_pack_qc8w_conv2d(const int8_t *w, size_t cout, size_t cin_g, size_t kh, size_t kw,
                             size_t groups, int8_t *packed, size_t packed_size, int32_t *row_sums,
                             size_t row_sums_size) {
  if (!w || !packed || !row_sums || groups == 0 || cout == 0 || cout % groups || cin_g == 0 || kh == 0 ||
      kw == 0)
    return QP_ERR_INVALID_ARGUMENT;
  const size_t cout_g = cout / groups, k = kh * kw * cin_g;
  if (k > XNN_MAX_K || packed_size != xnnpack_qc8w_conv2d_packed_size(groups, cout, cin_g, kh, kw) ||
      row_sums_size != xnnpack_qc8w_conv2d_row_sums_size(groups, cout))
    return QP_ERR_INVALID_ARGUMENT;
  const size_t gp = xnnpack_qc8w_packed_size(cout_g, k), gr = xnnpack_qc8w_row_sums_size(cout_g);
  int8_t *rows = (int8_t *)malloc(cout_g * k); /* one group's weights, k ordered (ky, kx, c) */
  if (!rows) return QP_ERR_OUT_OF_MEMORY;
  int status = QP_OK;
  for (size_t g = 0; g < groups && status == QP_OK; g++) {
    for (size_t j = 0; j < cout_g; j++)
      for (size_t c = 0; c < cin_g; c++)
        for (size_t ky = 0; ky < kh; ky++)
          for (size_t kx = 0; kx < kw; kx++)
            rows[j * k + (ky * kw + kx) * cin_g + c] = w[(((g * cout_g + j) * cin_g + c) * kh + ky) * kw + kx];
    status = xnnpack_pack_qc8w(rows, cout_g, k, packed + g * gp, gp, row_sums + g * gr, gr);
  }
  free(rows);
  return status;
}

typedef struct {
  const xnn_gemm_config *cfg;
  const int8_t *x;
  size_t h, w, cin, groups, cin_g, cout, cout_g, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, k, kp;
  size_t pixels, mtiles, group_packed, group_rows;
  int32_t x_zp;
  const int8_t *packed;
  const int32_t *row_sums, *bias_eff; /* both in the packed per-group layout */
  const float *mult;
  int per_channel;
  int32_t zp, qmin, qmax;
  int8_t *out;
  atomic_int failed;
} xnn_conv_task;

/* Copy the input patch of output pixel `pixel` (group g) into row[0 .. k). */
static void xnn_conv_patch(const xnn_conv_task *t, size_t pixel, size_t g, int8_t *row) {
  const size_t b = pixel / (t->oh * t->ow), oy = pixel / t->ow % t->oh, ox = pixel % t->ow;
  for (size_t ky = 0; ky < t->kh; ky++) {
    const size_t iy = oy * t->sh + ky * t->dh; /* + pad offset: iy - ph is the input row */
    for (size_t kx = 0; kx < t->kw; kx++, row += t->cin_g) {
      const size_t ix = ox * t->sw + kx * t->dw;
      if (iy < t->ph || iy - t->ph >= t->h || ix < t->pw || ix - t->pw >= t->w) {
        memset(row, (int8_t)t->x_zp, t->cin_g);
      } else {
        memcpy(row, t->x + ((b * t->h + (iy - t->ph)) * t->w + (ix - t->pw)) * t->cin + g * t->cin_g, t->cin_g);
      }
    }
  }
}

static void xnn_conv_run(void *ctx, size_t begin, size_t end) {
  xnn_conv_task *t = (xnn_conv_task *)ctx;
  const size_t mr_max = t->cfg->mr;
  const int direct = t->kh == 1 && t->kw == 1 && t->sh == 1 && t->sw == 1 && t->ph == 0 && t->pw == 0;
  int8_t *patch = direct ? NULL : (int8_t *)malloc(mr_max * t->k);
  if (!direct && !patch) {
    atomic_store(&t->failed, 1);
    return;
  }
  int32_t raw[XNN_MR_MAX * XNN_NR];
  for (size_t i = begin; i < end; i++) {
    const size_t g = i / t->mtiles, p0 = (i % t->mtiles) * mr_max, mr = xnn_min(mr_max, t->pixels - p0);
    const int8_t *a;
    size_t a_stride;
    if (direct) { /* 1x1, stride 1, no padding: the pixel rows are the gemm rows */
      a = t->x + p0 * t->cin + g * t->cin_g, a_stride = t->cin;
    } else {
      for (size_t r = 0; r < mr; r++) xnn_conv_patch(t, p0 + r, g, patch + r * t->k);
      a = patch, a_stride = t->k;
    }
    for (size_t n0 = 0; n0 < t->cout_g; n0 += XNN_NR) {
      const size_t nc = xnn_min(XNN_NR, t->cout_g - n0), co = g * t->cout_g + n0;
      const size_t rs = g * t->group_rows + n0;
      t->cfg->gemm(mr, t->k, a, a_stride, t->packed + g * t->group_packed + n0 * t->kp, t->row_sums + rs, raw);
      const xnn_requant_params p = {t->bias_eff + rs, t->mult + (t->per_channel ? co : 0), t->per_channel, t->zp,
                                    t->qmin, t->qmax};
      (nc == XNN_NR ? t->cfg->requant : xnn_qs8_requant__scalar)(mr, nc, raw, &p, t->out + p0 * t->cout + co,
                                                                 t->cout);
    }
  }
  free(patch);
}

int xnnpack_qs8_qc8w_conv2d_nhwc(const int8_t *x, size_t batch, size_t h, size_t w, size_t cin,
                                 int32_t x_zp, const int8_t *packed, const int32_t *row_sums,
                                 size_t groups, size_t cout, size_t kh, size_t kw, size_t sh, size_t sw,
                                 size_t ph, size_t pw, size_t dh, size_t dw, size_t oh, size_t ow,
                                 const int32_t *bias, const float *mult, size_t n_mult, int32_t out_zp,
                                 int32_t qmin, int32_t qmax, int8_t *out) {
  if (!packed || !row_sums || !mult || groups == 0 || cin == 0 || cout == 0 || cin % groups || cout % groups)
    return QP_ERR_INVALID_ARGUMENT;
  if (kh == 0 || kw == 0 || sh == 0 || sw == 0 || dh == 0 || dw == 0) return QP_ERR_INVALID_ARGUMENT;
  const size_t cin_g = cin / groups, cout_g = cout / groups, k = kh * kw * cin_g;
  if (k > XNN_MAX_K || (n_mult != 1 && n_mult != cout)) return QP_ERR_INVALID_ARGUMENT;
  /* the output size must be the one the geometry gives, and at least 1 */
  const size_t span_h = dh * (kh - 1) + 1, span_w = dw * (kw - 1) + 1;
  if (h + 2 * ph < span_h || w + 2 * pw < span_w) return QP_ERR_INVALID_ARGUMENT;
  if (oh != (h + 2 * ph - span_h) / sh + 1 || ow != (w + 2 * pw - span_w) / sw + 1) return QP_ERR_INVALID_ARGUMENT;
  if (x_zp < -128 || x_zp > 127 || out_zp < -128 || out_zp > 127 || qmin < -128 || qmax > 127 || qmin > qmax)
    return QP_ERR_INVALID_ARGUMENT;
  for (size_t j = 0; j < n_mult; j++)
    if (!(mult[j] > 0.0f) || !isfinite(mult[j])) return QP_ERR_INVALID_ARGUMENT;
  const size_t pixels = batch * oh * ow;
  if (pixels == 0) return QP_OK;
  if (!x || !out) return QP_ERR_INVALID_ARGUMENT;
  const size_t kp = xnn_round_up(k, XNN_KR), group_rows = xnn_round_up(cout_g, XNN_NR);
  const size_t group_packed = group_rows * kp;
  const xnn_gemm_config *cfg = xnn_gemm_config_for(qp_active_isa());
  if (cfg == NULL) { /* scalar reference: the definition */
    for (size_t pix = 0; pix < pixels; pix++) {
      const size_t b = pix / (oh * ow), oy = pix / ow % oh, ox = pix % ow;
      for (size_t co = 0; co < cout; co++) {
        const size_t g = co / cout_g, j = co % cout_g;
        int32_t acc = 0;
        for (size_t ky = 0; ky < kh; ky++)
          for (size_t kx = 0; kx < kw; kx++) {
            const size_t iy = oy * sh + ky * dh, ix = ox * sw + kx * dw;
            if (iy < ph || iy - ph >= h || ix < pw || ix - pw >= w) continue; /* padding: x - x_zp = 0 */
            const int8_t *xp = x + ((b * h + (iy - ph)) * w + (ix - pw)) * cin + g * cin_g;
            for (size_t c = 0; c < cin_g; c++)
              acc += ((int32_t)xp[c] - x_zp) *
                     xnn_packed_w(packed + g * group_packed, kp, j, (ky * kw + kx) * cin_g + c);
          }
        acc = (int32_t)((uint32_t)acc + (uint32_t)(bias ? bias[co] : 0));
        out[pix * cout + co] = (int8_t)qp_requantize(acc, mult[n_mult == 1 ? 0 : co], out_zp, qmin, qmax);
      }
    }
    return QP_OK;
  }
  if (groups == cin && cout == cin && xnn_dwconv_acc_for(qp_active_isa()) && kh * kw <= XNN_DW_MAX_TAPS)
    return xnn_dwconv_nhwc(cfg, x, batch, h, w, cin, x_zp, packed, group_packed, kp, kh, kw, sh, sw, ph, pw, dh, dw,
                           oh, ow, bias, mult, n_mult != 1, out_zp, qmin, qmax, out);
  int32_t *bias_eff = (int32_t *)malloc(groups * group_rows * sizeof(int32_t));
  if (!bias_eff) return QP_ERR_OUT_OF_MEMORY;
  for (size_t g = 0; g < groups; g++)
    for (size_t j = 0; j < group_rows; j++) {
      const uint32_t bj = (uint32_t)(bias && j < cout_g ? bias[g * cout_g + j] : 0);
      bias_eff[g * group_rows + j] = (int32_t)(bj - (uint32_t)x_zp * (uint32_t)row_sums[g * group_rows + j]);
    }
  xnn_conv_task t = {0};
  t.cfg = cfg, t.x = x, t.h = h, t.w = w, t.cin = cin, t.groups = groups, t.cin_g = cin_g, t.cout = cout;
  t.cout_g = cout_g, t.kh = kh, t.kw = kw, t.sh = sh, t.sw = sw, t.ph = ph, t.pw = pw, t.dh = dh, t.dw = dw;
  t.oh = oh, t.ow = ow, t.k = k, t.kp = kp, t.pixels = pixels, t.mtiles = (pixels + cfg->mr - 1) / cfg->mr;
  t.group_packed = group_packed, t.group_rows = group_rows, t.x_zp = x_zp, t.packed = packed;
  t.row_sums = row_sums, t.bias_eff = bias_eff, t.mult = mult, t.per_channel = n_mult != 1;
  t.zp = out_zp, t.qmin = qmin, t.qmax = qmax, t.out = out;
  atomic_init(&t.failed, 0);
  const size_t tile_work = cfg->mr * group_rows * kp;
  qp_parallel_for(groups * t.mtiles, tile_work >= (1u << 16) ? 1 : (1u << 16) / tile_work, xnn_conv_run, &t);
  free(bias_eff);
  return atomic_load(&t.failed) ? QP_ERR_OUT_OF_MEMORY : QP_OK;
}
