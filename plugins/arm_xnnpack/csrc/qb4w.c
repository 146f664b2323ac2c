/*
 * f32-qb4w: int4 weight-only linear with group-wise scales (scalar reference).
 *
 * Weights are symmetric int4 in [-8, 7] (zero point 0), two per byte: the low
 * nibble holds the even k, the high nibble the odd k (two's complement).
 * Each group of group_size (32, 64 or 128) consecutive k of one output
 * channel has its own fp32 scale. Activations and outputs are fp32:
 *     out[m][n] = bias[n] + sum_g scale[n][g] * (sum_{k in g} x[m][k] * w[n][k])
 * with every sum in fp32, in k order.
 */
#include <math.h>
#include <string.h>

#include "quantplug/qp_runtime.h"
#include "xnnpack_internal.h"
#include "xnnpack_kernels.h"

size_t xnnpack_qb4w_packed_size(size_t n, size_t k) { return n * ((k + 1) / 2); }

int xnnpack_pack_qb4w(const int8_t *w, size_t n, size_t k, uint8_t *packed, size_t packed_size) {
  if (!w || !packed || n == 0 || k == 0 || k % 2 != 0 || packed_size != xnnpack_qb4w_packed_size(n, k))
    return QP_ERR_INVALID_ARGUMENT;
  for (size_t i = 0; i < n * k; i++)
    if (w[i] < -8 || w[i] > 7) return QP_ERR_INVALID_ARGUMENT;
  for (size_t i = 0; i < n * k; i += 2)
    packed[i / 2] = (uint8_t)(((uint8_t)w[i] & 0x0f) | (((uint8_t)w[i + 1] & 0x0f) << 4));
  return QP_OK;
}

static inline float xnn_nibble(uint8_t byte, int high) {
  const int v = high ? byte >> 4 : byte & 0x0f;
  return (float)(v >= 8 ? v - 16 : v);
}

typedef struct {
  const float *x;
  size_t m, k, group_size, groups;
  const uint8_t *packed;
  const float *scales, *bias;
  float *out;
  size_t n;
} xnn_qb4w_task;

static void xnn_qb4w_run(void *ctx, size_t begin, size_t end) {
  const xnn_qb4w_task *t = (const xnn_qb4w_task *)ctx;
  for (size_t j = begin; j < end; j++) {
    const uint8_t *wj = t->packed + j * (t->k / 2);
    const float *sj = t->scales + j * t->groups;
    for (size_t i = 0; i < t->m; i++) {
      const float *xi = t->x + i * t->k;
      float total = 0.0f;
      for (size_t g = 0; g < t->groups; g++) {
        float part = 0.0f;
        for (size_t p = g * t->group_size; p < (g + 1) * t->group_size; p++)
          part += xi[p] * xnn_nibble(wj[p / 2], (int)(p & 1));
        total += part * sj[g];
      }
      t->out[i * t->n + j] = t->bias ? total + t->bias[j] : total;
    }
  }
}

int xnnpack_f32_qb4w_linear(const float *x, size_t m, size_t k, const uint8_t *packed, size_t n,
                            const float *scales, size_t group_size, const float *bias, float *out) {
  if (!packed || !scales || n == 0 || k == 0 || (m > 0 && (!x || !out))) return QP_ERR_INVALID_ARGUMENT;
  if ((group_size != 32 && group_size != 64 && group_size != 128) || k % group_size != 0)
    return QP_ERR_INVALID_ARGUMENT;
  const size_t groups = k / group_size;
  for (size_t i = 0; i < n * groups; i++)
    if (!isfinite(scales[i]) || scales[i] < 0.0f) return QP_ERR_INVALID_ARGUMENT;
  if (m == 0) return QP_OK;
  xnn_qb4w_task t = {x, m, k, group_size, groups, packed, scales, bias, out, n};
  const size_t work = m * k;
  qp_parallel_for(n, work >= (1u << 15) ? 1 : (1u << 15) / work, xnn_qb4w_run, &t);
  return QP_OK;
}
