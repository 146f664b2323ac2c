/*
 * f32-qb4w: int4 weight-only linear with group-wise scales: packing, the
 * scalar reference microkernel, and the multi-threaded driver.
 *
 * Weights are symmetric int4 in [-8, 7] (zero point 0), two per byte: the low
 * nibble holds the even k, the high nibble the odd k (two's complement).
 * Each group of group_size (32, 64 or 128) consecutive k of one output
 * channel has its own fp32 scale. Activations and outputs are fp32:
 *     out[m][n] = bias[n] + sum_g scale[n][g] * (sum_{k in g} x[m][k] * w[n][k])
 *
 * Canonical summation order (what every ISA path computes, bit for bit): 16
 * lanes, lane l taking the k = 16 t + l of every group (group sizes are
 * multiples of 16). Per group, acc[l] = fma(x, w, acc[l]) over t in order,
 * then tot[l] = fma(acc[l], scale, tot[l]). At the end the 16 lanes are added
 * as a fixed tree (l + 8, then + 4, + 2, + 1) and the bias is added. Fused
 * multiply-adds everywhere, so AVX2/AVX-512 (2 x 8 / 16 lanes) and NEON (4 x 4
 * lanes) give exactly the scalar result; it differs from a plain k-order fp32
 * sum only by rounding (the Python tests bound that against float64).
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

/* The canonical lane tree: (l, l + 8), then (l, l + 4), (l, l + 2), (0, 1). */
static float xnn_reduce16(float v[16]) {
  for (size_t width = 8; width >= 1; width /= 2)
    for (size_t l = 0; l < width; l++) v[l] = v[l] + v[l + width];
  return v[0];
}

static void xnn_f32_qb4w_ukernel__scalar(size_t mr, size_t k, const float *x, size_t x_stride, const uint8_t *w,
                                         const float *scales, size_t group_size, float *res) {
  for (size_t r = 0; r < mr; r++) {
    const float *xr = x + r * x_stride;
    float tot[16] = {0};
    for (size_t g = 0; g * group_size < k; g++) {
      float acc[16] = {0};
      for (size_t p = g * group_size; p < (g + 1) * group_size; p++)
        acc[p % 16] = fmaf(xr[p], xnn_nibble(w[p / 2], (int)(p & 1)), acc[p % 16]);
      for (size_t l = 0; l < 16; l++) tot[l] = fmaf(acc[l], scales[g], tot[l]);
    }
    res[r] = xnn_reduce16(tot);
  }
}

xnn_qb4w_ukernel_fn xnn_qb4w_ukernel_for(int isa) {
  switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
    case QP_ISA_AVX2: return xnn_f32_qb4w_ukernel_4x1__avx2;
    case QP_ISA_AVX512:
    case QP_ISA_AVX512VNNI: return xnn_f32_qb4w_ukernel_4x1__avx512; /* fp32 FMAs: VNNI adds nothing */
#endif
#if defined(__aarch64__)
    case QP_ISA_NEON:
    case QP_ISA_NEONDOT: return xnn_f32_qb4w_ukernel_4x1__neon;
#endif
    default: return NULL;
  }
}

typedef struct {
  xnn_qb4w_ukernel_fn ukernel;
  const float *x;
  size_t m, k, group_size, groups;
  const uint8_t *packed;
  const float *scales, *bias;
  float *out;
  size_t n;
} xnn_qb4w_task;

static void xnn_qb4w_run(void *ctx, size_t begin, size_t end) {
  const xnn_qb4w_task *t = (const xnn_qb4w_task *)ctx;
  float res[XNN_QB4W_MR];
  for (size_t j = begin; j < end; j++) {
    const uint8_t *wj = t->packed + j * (t->k / 2);
    const float *sj = t->scales + j * t->groups;
    for (size_t i = 0; i < t->m; i += XNN_QB4W_MR) {
      const size_t mr = xnn_min(XNN_QB4W_MR, t->m - i);
      t->ukernel(mr, t->k, t->x + i * t->k, t->k, wj, sj, t->group_size, res);
      for (size_t r = 0; r < mr; r++) t->out[(i + r) * t->n + j] = t->bias ? res[r] + t->bias[j] : res[r];
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
  xnn_qb4w_ukernel_fn ukernel = xnn_qb4w_ukernel_for(qp_active_isa());
  xnn_qb4w_task t = {ukernel ? ukernel : xnn_f32_qb4w_ukernel__scalar, x, m, k, group_size, groups, packed,
                     scales, bias, out, n};
  const size_t work = m * k;
  qp_parallel_for(n, work >= (1u << 15) ? 1 : (1u << 15) / work, xnn_qb4w_run, &t);
  return QP_OK;
}
