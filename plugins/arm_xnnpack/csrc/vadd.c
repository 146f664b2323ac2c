/*
 * qs8 add: dequantize both inputs to fp32, add, requantize (round half to even).
 *
 *   out = clamp(nearbyint(((float)(a - a_zp) * a_scale + (float)(b - b_zp) * b_scale)
 *                         * (1.0f / out_scale)), qmin - out_zp, qmax - out_zp) + out_zp
 *
 * Every product and the sum are rounded to fp32 on their own (the products
 * pass through XNN_FP_BARRIER so no compiler fuses them into an FMA), which
 * is what quantplug's pure-PyTorch reference computes; the SIMD paths in
 * gemm_x86.c / gemm_arm.c do the same per lane.
 */
#include <math.h>

#include "quantplug/qp_requant.h"
#include "quantplug/qp_runtime.h"
#include "xnnpack_internal.h"
#include "xnnpack_kernels.h"

void xnn_qs8_vadd_minmax_ukernel__scalar(size_t n, const int8_t *a, const int8_t *b,
                                         const xnn_vadd_params *p, int8_t *out) {
  for (size_t i = 0; i < n; i++) {
    float av = (float)((int32_t)a[i] - p->a_zp) * p->a_scale;
    float bv = (float)((int32_t)b[i] - p->b_zp) * p->b_scale;
    XNN_FP_BARRIER(av);
    XNN_FP_BARRIER(bv);
    const float v = (av + bv) * p->inv_out_scale;
    out[i] = (int8_t)(qp_round_clamp(v, p->qmin - p->out_zp, p->qmax - p->out_zp) + p->out_zp);
  }
}

typedef struct {
  xnn_vadd_fn fn;
  const int8_t *a, *b;
  const xnn_vadd_params *p;
  int8_t *out;
} xnn_vadd_task;

static void xnn_vadd_run(void *ctx, size_t begin, size_t end) {
  const xnn_vadd_task *t = (const xnn_vadd_task *)ctx;
  t->fn(end - begin, t->a + begin, t->b + begin, t->p, t->out + begin);
}

int xnnpack_qs8_vadd(const int8_t *a, const int8_t *b, size_t n, int32_t a_zp, float a_scale,
                     int32_t b_zp, float b_scale, float out_scale, int32_t out_zp, int32_t qmin,
                     int32_t qmax, int8_t *out) {
  if (n > 0 && (!a || !b || !out)) return QP_ERR_INVALID_ARGUMENT;
  if (a_zp < -128 || a_zp > 127 || b_zp < -128 || b_zp > 127 || out_zp < -128 || out_zp > 127)
    return QP_ERR_INVALID_ARGUMENT;
  if (qmin < -128 || qmax > 127 || qmin > qmax) return QP_ERR_INVALID_ARGUMENT;
  if (!(a_scale > 0.0f) || !isfinite(a_scale) || !(b_scale > 0.0f) || !isfinite(b_scale) ||
      !(out_scale > 0.0f) || !isfinite(out_scale))
    return QP_ERR_INVALID_ARGUMENT;
  const xnn_vadd_params p = {a_zp, b_zp, out_zp, qmin, qmax, a_scale, b_scale, 1.0f / out_scale};
  const xnn_gemm_config *cfg = xnn_gemm_config_for(qp_active_isa());
  xnn_vadd_task t = {cfg ? cfg->vadd : xnn_qs8_vadd_minmax_ukernel__scalar, a, b, &p, out};
  qp_parallel_for(n, 1u << 14, xnn_vadd_run, &t);
  return QP_OK;
}
