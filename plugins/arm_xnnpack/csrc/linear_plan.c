/*
 * Prepared static and dynamic linears: the per-call work that depends only on the layer (the
 * argument checks, bias - x_zp * row_sums, the multiplier and scale checks) done once into a
 * caller-owned, 64-byte aligned buffer, so a call only passes the input, its row count and the
 * output. Addresses are uintptr_t so Python passes tensor.data_ptr() without a cffi cast.
 *
 * A plan copies the biases, multipliers and scales but only points at the packed weights and
 * row sums: the caller keeps those tensors alive and unchanged while it uses the plan (the
 * Python side checks their identity, address and version before every run). Same results bit
 * for bit as the plain entry points: both call xnn_qs8_linear_run / xnn_qd8_linear_run.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "xnnpack_kernels.h"
#include "quantplug/qp_runtime.h"
#include "xnnpack_internal.h"

#define XNN_STATIC_PLAN_MAGIC 0x71706c696e737461ull  /* "qplinsta" */
#define XNN_DYNAMIC_PLAN_MAGIC 0x71706c696e64796eull /* "qplindyn" */
#define XNN_PLAN_HEADER 64                           /* keeps the arrays after it aligned */

typedef struct {
  uint64_t magic;
  size_t n, k;
  int per_channel, has_bias; /* static: multipliers per channel; dynamic: scales per channel */
  int32_t out_zp, qmin, qmax;
  const int8_t *packed;
  const int32_t *row_sums;
} xnn_linear_plan;
_Static_assert(sizeof(xnn_linear_plan) <= XNN_PLAN_HEADER, "plan header too large");

/* The header of a plan, NULL unless it carries `magic`. */
static const xnn_linear_plan *xnn_plan_of(uintptr_t plan, uint64_t magic) {
  const xnn_linear_plan *p = (const xnn_linear_plan *)plan;
  return p && p->magic == magic ? p : NULL;
}

static int xnn_plan_args_ok(uintptr_t plan, size_t plan_size, size_t need, size_t k, const int8_t *packed,
                            const int32_t *row_sums, size_t n) {
  return plan && plan % 64 == 0 && plan_size >= need && k > 0 && k <= XNN_MAX_K && n > 0 && packed && row_sums;
}

static int xnn_scales_ok(const float *s, size_t count) {
  for (size_t j = 0; j < count; j++)
    if (!(s[j] > 0.0f) || !isfinite(s[j])) return 0;
  return 1;
}

size_t xnnpack_linear_plan_size(size_t n) {
  return XNN_PLAN_HEADER + xnn_round_up(xnn_round_up(n, XNN_NR) * sizeof(int32_t) + n * sizeof(float), 64);
}

int xnnpack_linear_prepare(uintptr_t plan, size_t plan_size, size_t k, int32_t x_zp, const int8_t *packed,
                           const int32_t *row_sums, size_t n, const int32_t *bias, const float *mult, size_t n_mult,
                           int32_t out_zp, int32_t qmin, int32_t qmax) {
  if (!xnn_plan_args_ok(plan, plan_size, xnnpack_linear_plan_size(n), k, packed, row_sums, n))
    return QP_ERR_INVALID_ARGUMENT;
  if (!mult || (n_mult != 1 && n_mult != n) || !xnn_scales_ok(mult, n_mult)) return QP_ERR_INVALID_ARGUMENT;
  if (x_zp < -128 || x_zp > 127 || out_zp < -128 || out_zp > 127 || qmin < -128 || qmax > 127 || qmin > qmax)
    return QP_ERR_INVALID_ARGUMENT;
  xnn_linear_plan *p = (xnn_linear_plan *)plan;
  int32_t *bias_eff = (int32_t *)(plan + XNN_PLAN_HEADER);
  xnn_qs8_bias_eff(bias, x_zp, row_sums, n, bias_eff);
  memcpy(bias_eff + xnn_round_up(n, XNN_NR), mult, n_mult * sizeof(float));
  const xnn_linear_plan h = {XNN_STATIC_PLAN_MAGIC, n, k, n_mult != 1, bias != NULL, out_zp, qmin, qmax,
                             packed, row_sums};
  *p = h; /* the header last: a rejected prepare never leaves a usable plan */
  return QP_OK;
}

int xnnpack_linear_run(uintptr_t plan, uintptr_t x, size_t m, uintptr_t out) {
  const xnn_linear_plan *p = xnn_plan_of(plan, XNN_STATIC_PLAN_MAGIC);
  if (!p || (m > 0 && (!x || !out))) return QP_ERR_INVALID_ARGUMENT;
  const int32_t *bias_eff = (const int32_t *)(plan + XNN_PLAN_HEADER);
  const float *mult = (const float *)(bias_eff + xnn_round_up(p->n, XNN_NR));
  return xnn_qs8_linear_run((const int8_t *)x, m, p->k, p->packed, p->row_sums, p->n, bias_eff, mult,
                            p->per_channel, p->out_zp, p->qmin, p->qmax, (int8_t *)out);
}

size_t xnnpack_dynamic_plan_size(size_t n) { return XNN_PLAN_HEADER + xnn_round_up(2 * n * sizeof(float), 64); }

int xnnpack_dynamic_prepare(uintptr_t plan, size_t plan_size, size_t k, const int8_t *packed,
                            const int32_t *row_sums, size_t n, const float *w_scales, size_t n_w_scales,
                            const float *bias) {
  if (!xnn_plan_args_ok(plan, plan_size, xnnpack_dynamic_plan_size(n), k, packed, row_sums, n))
    return QP_ERR_INVALID_ARGUMENT;
  if (!w_scales || (n_w_scales != 1 && n_w_scales != n) || !xnn_scales_ok(w_scales, n_w_scales))
    return QP_ERR_INVALID_ARGUMENT;
  xnn_linear_plan *p = (xnn_linear_plan *)plan;
  float *scales = (float *)(plan + XNN_PLAN_HEADER);
  memcpy(scales, w_scales, n_w_scales * sizeof(float));
  if (bias) memcpy(scales + n, bias, n * sizeof(float));
  const xnn_linear_plan h = {XNN_DYNAMIC_PLAN_MAGIC, n, k, n_w_scales != 1, bias != NULL, 0, 0, 0, packed, row_sums};
  *p = h; /* the header last: a rejected prepare never leaves a usable plan */
  return QP_OK;
}

int xnnpack_dynamic_run(uintptr_t plan, uintptr_t x, size_t m, int per_row, uintptr_t out) {
  const xnn_linear_plan *p = xnn_plan_of(plan, XNN_DYNAMIC_PLAN_MAGIC);
  if (!p || (m > 0 && (!x || !out))) return QP_ERR_INVALID_ARGUMENT;
  const float *scales = (const float *)(plan + XNN_PLAN_HEADER);
  return xnn_qd8_linear_run((const float *)x, m, p->k, per_row, p->packed, p->row_sums, p->n, scales,
                            p->per_channel, p->has_bias ? scales + p->n : NULL, (float *)out);
}
