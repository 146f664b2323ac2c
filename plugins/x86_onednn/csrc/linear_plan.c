/*
 * Prepared linear calls ("plans"): everything of a static int8 linear call that does not
 * depend on the activations is computed once per (weight, qparams) and kept in one C
 * allocation, so a decode-style call (1x768x768: ~5 us of arithmetic) pays neither the
 * per-column work (multiplier checks, bias folding: ~1 us) nor an allocation per call.
 * Dynamic plans do the same for the dynamic linear's padded per-column copies.
 *
 * The plan's numbers are produced by the same functions as the per-call entry point
 * x86_onednn_linear_u8 (xo_requant_params, then bias_eff = bias_q - x_zp * colsum with
 * wrapping uint32 arithmetic), so a planned call is bit-identical to an unplanned one.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "onednn_kernels.h"
#include "xo_internal.h"

/* Tag of a live plan: a stale or foreign pointer is rejected instead of being used. */
#define XO_PLAN_MAGIC 0x786f706cu
#define XO_PLAN_DEAD 0u

struct x86_onednn_linear_plan {
  uint32_t magic;
  size_t n, k;
  const int8_t *packed;
  xo_epilogue epi; /* REQUANT; bias_eff / mult point into this allocation, out set per call */
  /* then: int32_t bias_eff[np]; float mult[np]  (np = n rounded up to whole tiles, zero
   * padded: the SIMD epilogues read whole tiles) */
};

/* Rounded up to 64 bytes so the per-column arrays after the header are cache-line aligned. */
static size_t xo_plan_header(void) { return xo_round_up(sizeof(x86_onednn_linear_plan), 64); }

static int xo_plan_args_ok(const int8_t *packed, const int32_t *col_sums, size_t n, size_t k,
                           int32_t x_zp, const float *w_scales, int32_t out_zp, int32_t qmin,
                           int32_t qmax) {
  if (n > 0 && k > 0 && x86_onednn_packed_linear_size(n, k) == 0) return 0;
  if (n > 0 && k > 0 && packed == NULL) return 0;
  if (n > 0 && (col_sums == NULL || w_scales == NULL)) return 0;
  if (x_zp < 0 || x_zp > 255 || out_zp < 0 || out_zp > 255) return 0;
  return qmin >= 0 && qmax <= 255 && qmin <= qmax;
}

x86_onednn_linear_plan *x86_onednn_linear_plan_new(const int8_t *packed, const int32_t *col_sums,
                                                   size_t n, size_t k, float x_scale,
                                                   int32_t x_zp, const float *w_scales,
                                                   const float *bias, float out_scale,
                                                   int32_t out_zp, int32_t qmin, int32_t qmax) {
  if (!xo_plan_args_ok(packed, col_sums, n, k, x_zp, w_scales, out_zp, qmin, qmax)) return NULL;
  if (!xo_check_scale(x_scale) || !xo_check_scale(out_scale)) return NULL;
  const size_t np = xo_ntiles(n) * XO_NR;
  if (np > (SIZE_MAX - xo_plan_header()) / (2 * sizeof(int32_t))) return NULL;
  /* calloc: the padding columns [n, np) must read as 0 */
  char *block = (char *)calloc(1, xo_plan_header() + np * 2 * sizeof(int32_t));
  if (block == NULL) return NULL;
  x86_onednn_linear_plan *p = (x86_onednn_linear_plan *)block;
  int32_t *bias_eff = (int32_t *)(block + xo_plan_header());
  float *mult = (float *)(bias_eff + np);
  /* bias_q goes into bias_eff first and is folded with the column sums in place */
  if (n > 0 && xo_requant_params(x_scale, w_scales, n, out_scale, bias, mult, bias_eff) != QP_OK) {
    free(block);
    return NULL;
  }
  for (size_t c = 0; c < n; c++)
    bias_eff[c] = (int32_t)((uint32_t)bias_eff[c] - (uint32_t)x_zp * (uint32_t)col_sums[c]);
  p->n = n;
  p->k = k;
  p->packed = packed;
  xo_epi_requant(&p->epi, out_zp, qmin, qmax);
  p->epi.bias_eff = bias_eff;
  p->epi.mult = mult;
  p->epi.ldo = n;
  p->magic = XO_PLAN_MAGIC;
  return p;
}

void x86_onednn_linear_plan_free(x86_onednn_linear_plan *plan) {
  if (plan == NULL) return;
  plan->magic = XO_PLAN_DEAD; /* a use after free fails the magic test more often than not */
  free(plan);
}

int x86_onednn_linear_plan_run(const x86_onednn_linear_plan *plan, uintptr_t x, size_t m,
                               uintptr_t out) {
  if (plan == NULL || plan->magic != XO_PLAN_MAGIC) return QP_ERR_INVALID_ARGUMENT;
  const size_t n = plan->n, k = plan->k;
  if ((k > 0 && m > SIZE_MAX / k) || (n > 0 && m > SIZE_MAX / n)) return QP_ERR_INVALID_ARGUMENT;
  if ((m * k > 0 && x == 0) || (m * n > 0 && out == 0)) return QP_ERR_INVALID_ARGUMENT;
  if (m == 0 || n == 0) return QP_OK;
  xo_epilogue e = plan->epi;
  e.out_u8 = (uint8_t *)out;
  return xo_linear_run((const uint8_t *)x, m, k, plan->packed, n, &e);
}

/* ------------------------------------------------------ dynamic plans -- */

/* Per-column data of a dynamic linear, copied once and zero padded to whole tiles (the
 * unplanned call copies it on every call, into a fresh allocation). */
struct x86_onednn_dynamic_plan {
  uint32_t magic;
  size_t n, k;
  const int8_t *packed;
  const int32_t *cs;
  const float *ws, *fb; /* fb NULL without bias */
  /* then: int32_t cs[np]; float ws[np]; float fb[np] */
};

/* Scratch of calls small enough for the stack (a 1x768 call: 3 KB): no allocation per call. */
#define XO_DYN_STACK_ROWS 8
#define XO_DYN_STACK_Q ((size_t)16384)

static size_t xo_dyn_header(void) { return xo_round_up(sizeof(x86_onednn_dynamic_plan), 64); }

x86_onednn_dynamic_plan *x86_onednn_dynamic_plan_new(const int8_t *packed, const int32_t *col_sums,
                                                     const float *w_scales, size_t n, size_t k,
                                                     const float *bias) {
  if (k > XO_DYNAMIC_MAX_K || (n > 0 && (col_sums == NULL || w_scales == NULL))) return NULL;
  if (n > 0 && k > 0 && (packed == NULL || x86_onednn_packed_linear_size(n, k) == 0)) return NULL;
  for (size_t c = 0; c < n; c++)
    if (!xo_check_scale(w_scales[c]) || (bias != NULL && !isfinite(bias[c]))) return NULL;
  const size_t np = xo_ntiles(n) * XO_NR;
  if (np > (SIZE_MAX - xo_dyn_header()) / (3 * sizeof(float))) return NULL;
  char *block = (char *)calloc(1, xo_dyn_header() + np * 3 * sizeof(float));
  if (block == NULL) return NULL;
  x86_onednn_dynamic_plan *p = (x86_onednn_dynamic_plan *)block;
  int32_t *cs = (int32_t *)(block + xo_dyn_header());
  float *ws = (float *)(cs + np), *fb = ws + np;
  if (n > 0) {
    memcpy(cs, col_sums, n * sizeof(int32_t));
    memcpy(ws, w_scales, n * sizeof(float));
    if (bias != NULL) memcpy(fb, bias, n * sizeof(float));
  }
  p->n = n;
  p->k = k;
  p->packed = packed;
  p->cs = cs;
  p->ws = ws;
  p->fb = bias != NULL ? fb : NULL;
  p->magic = XO_PLAN_MAGIC;
  return p;
}

void x86_onednn_dynamic_plan_free(x86_onednn_dynamic_plan *plan) {
  if (plan == NULL) return;
  plan->magic = XO_PLAN_DEAD;
  free(plan);
}

int x86_onednn_dynamic_plan_run(const x86_onednn_dynamic_plan *plan, uintptr_t x, size_t m,
                                int per_row, uintptr_t out) {
  if (plan == NULL || plan->magic != XO_PLAN_MAGIC) return QP_ERR_INVALID_ARGUMENT;
  const size_t n = plan->n, k = plan->k;
  if ((k > 0 && m > SIZE_MAX / k) || (n > 0 && m > SIZE_MAX / n)) return QP_ERR_INVALID_ARGUMENT;
  if ((m * k > 0 && x == 0) || (m * n > 0 && out == 0)) return QP_ERR_INVALID_ARGUMENT;
  const size_t nq = per_row && m > 0 ? m : 1;
  float st_scale[XO_DYN_STACK_ROWS], st_inv[XO_DYN_STACK_ROWS];
  int32_t st_zp[XO_DYN_STACK_ROWS];
  uint8_t st_q[XO_DYN_STACK_Q] __attribute__((aligned(64)));
  xo_dynamic_scratch s = {st_scale, st_inv, st_zp, st_q};
  char *heap = NULL;
  if (nq > XO_DYN_STACK_ROWS || m * k > XO_DYN_STACK_Q) {
    if (nq > (SIZE_MAX - m * k - 64) / 12) return QP_ERR_INVALID_ARGUMENT;
    heap = (char *)malloc(nq * 3 * sizeof(float) + m * k + 64);
    if (heap == NULL) return QP_ERR_OUT_OF_MEMORY;
    s.scale = (float *)heap;
    s.inv = s.scale + nq;
    s.zp = (int32_t *)(s.inv + nq);
    s.q = (uint8_t *)(s.zp + nq);
  }
  const int st = xo_dynamic_core((const float *)x, m, k, plan->packed, plan->cs, plan->ws, plan->fb,
                                 n, per_row, (float *)out, &s);
  free(heap);
  return st;
}
