/*
 * Depthwise convolution (groups == cin == cout), NHWC, as XNNPACK's dwconv:
 * the channels of a pixel are contiguous, so one output pixel is computed 16
 * channels at a time, tap by tap, as exact int32 sums of (x - x_zp) * w
 * (padding taps are skipped: they contribute 0), then requantized by the
 * same SIMD epilogue as the gemm. Bit-identical to the scalar reference in
 * conv.c, which the gemm path would also match, but without the gemm's
 * 16-channel block per single-channel group.
 *
 * The weights are re-laid per call from the packed gemm layout to [tap][C]
 * int32 (kh * kw * C entries: small next to the activations); an ISA with a
 * row-wise kernel (xnn_dwconv_rows_for) re-lays them itself, straight from
 * the packed layout.
 */
#include <stdlib.h>

#include "quantplug/qp_requant.h"
#include "quantplug/qp_runtime.h"
#include "xnnpack_internal.h"

#if !defined(__x86_64__) && !defined(__i386__) && !defined(__aarch64__)
xnn_dwconv_acc_fn xnn_dwconv_acc_for(int isa) {
  (void)isa;
  return NULL;
}
#endif
#if !defined(__x86_64__) && !defined(__i386__)
xnn_dwconv_rows_fn xnn_dwconv_rows_for(int isa) {
  (void)isa;
  return NULL;
}
#endif

static void xnn_dwconv_acc__scalar(size_t nc, size_t taps, const int8_t *const *rows, const int32_t *w,
                                   size_t w_stride, int32_t x_zp, int32_t *acc) {
  for (size_t c = 0; c < nc; c++) {
    int32_t a = 0;
    for (size_t t = 0; t < taps; t++)
      if (rows[t]) a += ((int32_t)rows[t][c] - x_zp) * w[t * w_stride + c];
    acc[c] = a;
  }
}

typedef struct {
  const xnn_gemm_config *cfg;
  xnn_dwconv_acc_fn acc16;
  const int8_t *x;
  size_t h, w, c, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow;
  int32_t x_zp;
  const int32_t *wt, *bias;
  const float *mult;
  int per_channel;
  int32_t zp, qmin, qmax;
  int8_t *out;
} xnn_dwconv_task;

static void xnn_dwconv_run(void *ctx, size_t begin, size_t end) {
  const xnn_dwconv_task *t = (const xnn_dwconv_task *)ctx;
  const int8_t *rows[XNN_DW_MAX_TAPS];
  int32_t acc[XNN_NR];
  for (size_t pix = begin; pix < end; pix++) {
    const size_t b = pix / (t->oh * t->ow), oy = pix / t->ow % t->oh, ox = pix % t->ow;
    for (size_t ky = 0; ky < t->kh; ky++)
      for (size_t kx = 0; kx < t->kw; kx++) {
        const size_t iy = oy * t->sh + ky * t->dh, ix = ox * t->sw + kx * t->dw; /* minus the padding */
        const int inside = iy >= t->ph && iy - t->ph < t->h && ix >= t->pw && ix - t->pw < t->w;
        rows[ky * t->kw + kx] = inside ? t->x + ((b * t->h + (iy - t->ph)) * t->w + (ix - t->pw)) * t->c : NULL;
      }
    const size_t taps = t->kh * t->kw;
    for (size_t c0 = 0; c0 < t->c; c0 += XNN_NR) {
      const size_t nc = xnn_min(XNN_NR, t->c - c0);
      const int8_t *shifted[XNN_DW_MAX_TAPS];
      for (size_t k = 0; k < taps; k++) shifted[k] = rows[k] ? rows[k] + c0 : NULL;
      if (nc == XNN_NR)
        t->acc16(taps, shifted, t->wt + c0, t->c, t->x_zp, acc);
      else
        xnn_dwconv_acc__scalar(nc, taps, shifted, t->wt + c0, t->c, t->x_zp, acc);
      const xnn_requant_params p = {t->bias + c0, t->mult + (t->per_channel ? c0 : 0), t->per_channel, t->zp, t->qmin,
                                    t->qmax};
      t->cfg->requant(1, nc, acc, &p, t->out + pix * t->c + c0, t->c); /* any nc <= 16 */
    }
  }
}

int xnn_dwconv_nhwc(const xnn_gemm_config *cfg, const int8_t *x, size_t batch, size_t h, size_t w, size_t c,
                    int32_t x_zp, const int8_t *packed, size_t group_packed, size_t kp, size_t kh, size_t kw,
                    size_t sh, size_t sw, size_t ph, size_t pw, size_t dh, size_t dw, size_t oh, size_t ow,
                    const int32_t *bias, const float *mult, int per_channel, int32_t out_zp, int32_t qmin,
                    int32_t qmax, int8_t *out) {
  const xnn_dwconv_acc_fn acc16 = xnn_dwconv_acc_for(qp_active_isa());
  const size_t taps = kh * kw;
  if (!acc16 || taps > XNN_DW_MAX_TAPS) return QP_ERR_INVALID_ARGUMENT; /* the caller checks both */
  const xnn_dwconv_rows_fn rows = xnn_dwconv_rows_for(qp_active_isa());
  if (rows) {
    const xnn_dwconv_problem pr = {x, batch, h, w, c, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, x_zp, out_zp, qmin, qmax,
                                   packed, group_packed, kp, bias, mult, per_channel, out};
    return rows(&pr);
  }
  int32_t *buf = (int32_t *)malloc((taps + 1) * c * sizeof(int32_t));
  if (!buf) return QP_ERR_OUT_OF_MEMORY;
  int32_t *wt = buf, *b32 = buf + taps * c;
  for (size_t ch = 0; ch < c; ch++) {
    for (size_t k = 0; k < taps; k++) wt[k * c + ch] = xnn_packed_w(packed + ch * group_packed, kp, 0, k);
    b32[ch] = bias ? bias[ch] : 0;
  }
  const xnn_dwconv_task t = {cfg, acc16, x, h, w, c, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, x_zp, wt, b32, mult,
                             per_channel, out_zp, qmin, qmax, out};
  const size_t pixels = batch * oh * ow, work = taps * c;
  qp_parallel_for(pixels, work >= (1u << 14) ? 1 : (1u << 14) / work, xnn_dwconv_run, (void *)&t);
  free(buf);
  return QP_OK;
}
