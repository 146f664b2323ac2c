/*
 * Prepared linear calls ("plans"): what a static or dynamic linear call computes from the
 * weight and its qparams alone is computed once and kept in one C allocation, so a
 * decode-style call (1x768x768, ~5 us of weight streaming) pays neither the per-call argument
 * checks of the weight (scales, zero points, bias: a pass over n each) nor the per-block
 * epilogue setup (together 8.6 -> 6.5 us per dynamic C call at 1x768x768; the setup alone was
 * ~9% of perf samples), nor cffi pointer casts (the run entry points take raw addresses).
 *
 * Bit-identity with the unplanned calls comes from running the same code:
 *  - static: the plan holds fbgemm_linear_prepare's blocks and runs
 *    fbgemm_linear_u8s8_prepared (the per-block parameters fbgemm_linear_u8s8 computes per call);
 *  - dynamic: the plan holds the per-row epilogue's constant blocks (w_scale, weight row sum,
 *    w_zp, bias: fb_block_setup's per-row case), and a per-tensor call runs the per-row GEMM
 *    with every row given the tensor's scale and zero point. Per column that epilogue computes
 *    acc - x_zp * rs + wz * (k * x_zp - xsum) (mod 2^32, the same integer as the per-tensor
 *    fold acc + (k * x_zp * wz - x_zp * rs) - wz * xsum) and float(v) * (x_scale * w_scale)
 *    (+ bias, unfused), the same float operations as the per-tensor epilogue.
 * Plans are never pickled: Python rebuilds them when a weight field, the bias object, a
 * version counter or a buffer address changes.
 */
#include <stdlib.h>
#include <string.h>

#include "fbgemm_kernels.h"
#include "quantplug/qp_runtime.h"

/* Tag of a live plan: a stale or foreign pointer is rejected instead of being used. */
#define FB_PLAN_MAGIC 0x66626c70u
#define FB_DPLAN_MAGIC 0x6662646cu

struct fbgemm_linear_plan {
  uint32_t magic;
  size_t n, k;
  const int8_t *packed;
  int32_t out_zp, qmin, qmax;
  uint32_t flags;
  void *blocks; /* fbgemm_linear_prepare's output (fbgemm_linear_prepared_size(n) bytes) */
};

fbgemm_linear_plan *fbgemm_linear_plan_new(const int8_t *packed, const int32_t *row_sums,
                                           const float *w_scales, const int32_t *w_zps,
                                           size_t n, size_t k, float x_scale, int32_t x_zp,
                                           const float *bias, float out_scale, int32_t out_zp,
                                           int32_t qmin, int32_t qmax, uint32_t flags) {
  /* the output range and flags are checked here once (prepare checks the rest) */
  if (fb_check_requant(x_scale, x_zp, out_scale, out_zp, qmin, qmax) != QP_OK ||
      (flags & ~(uint32_t)FBGEMM_FLAG_RAW_MADDUBS) || fbgemm_linear_prepared_size(n) == 0)
    return NULL;
  fbgemm_linear_plan *p = (fbgemm_linear_plan *)calloc(1, sizeof(*p));
  if (p == NULL) return NULL;
  p->blocks = malloc(fbgemm_linear_prepared_size(n));
  if (p->blocks == NULL || fbgemm_linear_prepare(k, x_scale, x_zp, packed, row_sums, w_scales,
                                                 w_zps, n, bias, out_scale, p->blocks) != QP_OK) {
    free(p->blocks);
    free(p);
    return NULL;
  }
  p->n = n;
  p->k = k;
  p->packed = packed;
  p->out_zp = out_zp;
  p->qmin = qmin;
  p->qmax = qmax;
  p->flags = flags;
  p->magic = FB_PLAN_MAGIC;
  return p;
}

void fbgemm_linear_plan_free(fbgemm_linear_plan *plan) {
  if (plan == NULL) return;
  plan->magic = 0; /* a use after free fails the magic test more often than not */
  free(plan->blocks);
  free(plan);
}

/* The pool size torch was told to use (what the Python side's sync_threads does, here to save
 * its extra cffi call per planned call); threads <= 0 leaves the pool as it is. */
static void fb_sync_threads(int threads) {
  if (threads > 0 && threads != qp_get_num_threads()) qp_set_num_threads(threads);
}

int fbgemm_linear_plan_run(const fbgemm_linear_plan *plan, uintptr_t x, size_t m, uintptr_t out,
                           int threads) {
  if (plan == NULL || plan->magic != FB_PLAN_MAGIC) return QP_ERR_INVALID_ARGUMENT;
  fb_sync_threads(threads);
  return fbgemm_linear_u8s8_prepared((const uint8_t *)x, m, plan->k, plan->packed, plan->blocks,
                                     plan->n, plan->out_zp, plan->qmin, plan->qmax, plan->flags,
                                     (uint8_t *)out);
}

/* ------------------------------------------------------ dynamic plans -- */

struct fbgemm_dynamic_plan {
  uint32_t magic;
  size_t n, k;
  const int8_t *packed;
  int has_wz, has_bias;
  int32_t range[2][2]; /* activation [qmin, qmax] per tensor, per row */
  fb_block_params *blocks; /* per-row epilogue constants of each 16-column block */
};

/* A valid activation range of a dynamic linear (the unplanned entry points' test). */
static int fb_act_range_ok(int32_t qmin, int32_t qmax) {
  return qmin >= 0 && qmax <= 255 && qmin < qmax;
}

fbgemm_dynamic_plan *fbgemm_dynamic_plan_new(const int8_t *packed, const int32_t *row_sums,
                                             const float *w_scales, const int32_t *w_zps,
                                             size_t n, size_t k, const float *bias,
                                             int32_t qmin, int32_t qmax, int32_t row_qmin,
                                             int32_t row_qmax) {
  int has_wz;
  if (fb_check_weights(packed, row_sums, w_scales, w_zps, n, k, &has_wz) != QP_OK ||
      fb_check_bias(bias, n) != QP_OK || !fb_act_range_ok(qmin, qmax) ||
      !fb_act_range_ok(row_qmin, row_qmax))
    return NULL;
  const size_t nb = (n + FB_NR - 1) / FB_NR;
  fbgemm_dynamic_plan *p = (fbgemm_dynamic_plan *)calloc(1, sizeof(*p));
  if (p == NULL) return NULL;
  p->blocks = (fb_block_params *)calloc(nb, sizeof(fb_block_params));
  if (p->blocks == NULL) {
    free(p);
    return NULL;
  }
  fb_blocks_setup(k, n, row_sums, w_zps, w_scales, bias, 0.0f, 0, 0.0f, 1, p->blocks);
  p->n = n;
  p->k = k;
  p->packed = packed;
  p->has_wz = has_wz;
  p->has_bias = bias != NULL;
  p->range[0][0] = qmin;
  p->range[0][1] = qmax;
  p->range[1][0] = row_qmin;
  p->range[1][1] = row_qmax;
  p->magic = FB_DPLAN_MAGIC;
  return p;
}

void fbgemm_dynamic_plan_free(fbgemm_dynamic_plan *plan) {
  if (plan == NULL) return;
  plan->magic = 0;
  free(plan->blocks);
  free(plan);
}

int fbgemm_dynamic_plan_run(const fbgemm_dynamic_plan *plan, uintptr_t x, size_t m, int per_row,
                            uintptr_t out, int threads) {
  if (plan == NULL || plan->magic != FB_DPLAN_MAGIC) return QP_ERR_INVALID_ARGUMENT;
  fb_sync_threads(threads);
  const fb_dynamic_weights w = {plan->packed, plan->n, plan->k, plan->has_wz, plan->has_bias,
                                plan->blocks};
  const int32_t *range = plan->range[per_row != 0];
  return fb_dynamic_rows((const float *)x, m, &w, per_row, range[0], range[1], (float *)out);
}
