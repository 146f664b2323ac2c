/*
 * Prepared depthwise convolution: the per-call setup of the AVX-512 VNNI row kernel (weight
 * re-layout, biases folded with the activation zero point, multipliers, the overflow proof
 * behind nomin) done once into a caller-owned buffer, so a static layer called again only runs
 * the kernel. The buffer starts with a header recording the geometry, zero point and ISA it was
 * made for; xnnpack_dw_run takes its geometry from there (no mismatch with the constants is
 * possible) and refuses with QP_ERR_UNSUPPORTED_ISA when another ISA is active now (set_isa), so
 * the caller falls back to the unprepared entry point. Same results bit for bit as
 * xnnpack_qs8_qc8w_conv2d_nhwc: both run xnn_dwv_prepare + xnn_dwv_launch on the same inputs.
 * Addresses are uintptr_t so that Python passes tensor.data_ptr() without a cffi cast per call.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "xnnpack_kernels.h"
#include "quantplug/qp_runtime.h"
#include "xnnpack_internal.h"

#define XNN_DW_PLAN_MAGIC 0x71706477706c616eull /* "qpdwplan" */
#define XNN_DW_PLAN_HEADER 128                   /* keeps the constants 64-byte aligned */

typedef struct {
  uint64_t magic;
  size_t size;
  int isa, nomin, per_channel;
  int32_t x_zp;
  size_t c, kh, kw, sh, sw, ph, pw, dh, dw;
} xnn_dw_plan_header;
_Static_assert(sizeof(xnn_dw_plan_header) <= XNN_DW_PLAN_HEADER, "plan header too large");

#if defined(__x86_64__) || defined(__i386__)
/* only the AVX-512 VNNI row kernel has a prepared form; other paths keep the per-call setup */
static int xnn_dw_plan_isa_ok(int isa) { return isa == QP_ISA_AVX512VNNI; }

size_t xnnpack_dw_plan_size(size_t c, size_t kh, size_t kw, size_t sh, size_t dh) {
  if (!xnn_dw_plan_isa_ok(qp_active_isa()) || c == 0 || kh == 0 || kw == 0 || sh == 0 || dh == 0 ||
      kh * kw > XNN_DW_MAX_TAPS || c > ((size_t)1 << 24))
    return 0;
  return XNN_DW_PLAN_HEADER + xnn_dwv_plan_bytes(c, kh, kw, sh, dh);
}

int xnnpack_dw_prepare(uintptr_t plan, size_t plan_size, const int8_t *packed, size_t c, size_t kh, size_t kw,
                       size_t sh, size_t sw, size_t ph, size_t pw, size_t dh, size_t dw, int32_t x_zp,
                       const int32_t *bias, const float *mult, size_t n_mult) {
  if (!plan || plan % 64 || !packed || !mult || sw == 0 || dw == 0 || x_zp < -128 || x_zp > 127)
    return QP_ERR_INVALID_ARGUMENT;
  if (n_mult != 1 && n_mult != c) return QP_ERR_INVALID_ARGUMENT;
  const size_t need = xnnpack_dw_plan_size(c, kh, kw, sh, dh);
  if (need == 0) return xnn_dw_plan_isa_ok(qp_active_isa()) ? QP_ERR_INVALID_ARGUMENT : QP_ERR_UNSUPPORTED_ISA;
  if (plan_size < need) return QP_ERR_INVALID_ARGUMENT;
  for (size_t j = 0; j < n_mult; j++)
    if (!(mult[j] > 0.0f) || !isfinite(mult[j])) return QP_ERR_INVALID_ARGUMENT;
  /* the packed gemm layout of one single-channel group, as xnnpack_qs8_qc8w_conv2d_nhwc sees it */
  const size_t kp = xnn_round_up(kh * kw, XNN_KR), group_packed = XNN_NR * kp;
  xnn_dwconv_problem p = {0};
  p.c = c, p.kh = kh, p.kw = kw, p.sh = sh, p.sw = sw, p.ph = ph, p.pw = pw, p.dh = dh, p.dw = dw, p.x_zp = x_zp;
  p.packed = packed, p.group_packed = group_packed, p.kp = kp, p.bias = bias, p.mult = mult;
  p.per_channel = n_mult != 1;
  xnn_dw_plan_header *h = (xnn_dw_plan_header *)plan;
  memset(h, 0, sizeof *h);
  const int nomin = xnn_dwv_plan_prepare(&p, (char *)plan + XNN_DW_PLAN_HEADER);
  const xnn_dw_plan_header hd = {XNN_DW_PLAN_MAGIC, need, qp_active_isa(), nomin, p.per_channel, x_zp,
                                 c, kh, kw, sh, sw, ph, pw, dh, dw};
  *h = hd; /* written last: a failed prepare never leaves a valid-looking plan */
  return QP_OK;
}

int xnnpack_dw_run(uintptr_t plan, uintptr_t x, size_t batch, size_t h, size_t w, size_t oh, size_t ow,
                   int32_t out_zp, int32_t qmin, int32_t qmax, uintptr_t out) {
  const xnn_dw_plan_header *hd = (const xnn_dw_plan_header *)plan;
  if (!hd || hd->magic != XNN_DW_PLAN_MAGIC) return QP_ERR_INVALID_ARGUMENT;
  if (hd->isa != qp_active_isa()) return QP_ERR_UNSUPPORTED_ISA; /* made for another path: caller falls back */
  if (out_zp < -128 || out_zp > 127 || qmin < -128 || qmax > 127 || qmin > qmax) return QP_ERR_INVALID_ARGUMENT;
  const size_t span_h = hd->dh * (hd->kh - 1) + 1, span_w = hd->dw * (hd->kw - 1) + 1;
  if (h + 2 * hd->ph < span_h || w + 2 * hd->pw < span_w) return QP_ERR_INVALID_ARGUMENT;
  if (oh != (h + 2 * hd->ph - span_h) / hd->sh + 1 || ow != (w + 2 * hd->pw - span_w) / hd->sw + 1)
    return QP_ERR_INVALID_ARGUMENT;
  if (batch == 0) return QP_OK;
  if (!x || !out) return QP_ERR_INVALID_ARGUMENT;
  xnn_dwconv_problem p = {0};
  p.x = (const int8_t *)x, p.batch = batch, p.h = h, p.w = w, p.c = hd->c, p.kh = hd->kh, p.kw = hd->kw;
  p.sh = hd->sh, p.sw = hd->sw, p.ph = hd->ph, p.pw = hd->pw, p.dh = hd->dh, p.dw = hd->dw, p.oh = oh, p.ow = ow;
  p.x_zp = hd->x_zp, p.out_zp = out_zp, p.qmin = qmin, p.qmax = qmax, p.per_channel = hd->per_channel;
  p.out = (int8_t *)out;
  return xnn_dwv_plan_run(&p, (const char *)plan + XNN_DW_PLAN_HEADER, hd->nomin);
}
#else
size_t xnnpack_dw_plan_size(size_t c, size_t kh, size_t kw, size_t sh, size_t dh) {
  (void)c, (void)kh, (void)kw, (void)sh, (void)dh;
  return 0; /* no prepared path on this architecture */
}

int xnnpack_dw_prepare(uintptr_t plan, size_t plan_size, const int8_t *packed, size_t c, size_t kh, size_t kw,
                       size_t sh, size_t sw, size_t ph, size_t pw, size_t dh, size_t dw, int32_t x_zp,
                       const int32_t *bias, const float *mult, size_t n_mult) {
  (void)plan, (void)plan_size, (void)packed, (void)c, (void)kh, (void)kw, (void)sh, (void)sw, (void)ph, (void)pw;
  (void)dh, (void)dw, (void)x_zp, (void)bias, (void)mult, (void)n_mult;
  return QP_ERR_UNSUPPORTED_ISA;
}

int xnnpack_dw_run(uintptr_t plan, uintptr_t x, size_t batch, size_t h, size_t w, size_t oh, size_t ow,
                   int32_t out_zp, int32_t qmin, int32_t qmax, uintptr_t out) {
  (void)plan, (void)x, (void)batch, (void)h, (void)w, (void)oh, (void)ow, (void)out_zp, (void)qmin, (void)qmax;
  (void)out;
  return QP_ERR_UNSUPPORTED_ISA;
}
#endif
