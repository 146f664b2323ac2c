/*
 * f32-qc8w: int8 weight-only linear (fp32 activations, int8 per-channel
 * symmetric weights in the packed qc8w layout of gemm.c, fp32 output), as
 * XNNPACK's fully-connected f32_qc8w operator. The scalar reference
 * microkernel and the multi-threaded driver; SIMD microkernels in
 * f32_qc8w_x86.c / f32_qc8w_arm.c.
 *
 * Canonical arithmetic (every path, bit for bit): per output (row r, channel
 * j), acc = fma(x[r][k], w[j][k], acc) for k = 0, 1, ..., K - 1 from 0; then
 * y = acc * w_scale[j] rounded, then y + bias[j] rounded (never fused). With
 * the weights packed 16 channels wide, a SIMD lane is one channel, so k order
 * is the natural vector order and nothing needs reassociating.
 */
#include <math.h>

#include "quantplug/qp_runtime.h"
#include "xnnpack_internal.h"
#include "xnnpack_kernels.h"

static void xnn_f32_qc8w_ukernel__scalar(size_t mr, size_t k, const float *x, size_t x_stride, const int8_t *w,
                                         float *acc) {
  for (size_t r = 0; r < mr; r++)
    for (size_t j = 0; j < XNN_NR; j++) {
      float a = 0.0f;
      for (size_t p = 0; p < k; p++)
        a = fmaf(x[r * x_stride + p], (float)w[(p / XNN_KR) * (XNN_NR * XNN_KR) + j * XNN_KR + p % XNN_KR], a);
      acc[r * XNN_NR + j] = a;
    }
}

xnn_f32_qc8w_ukernel_fn xnn_f32_qc8w_ukernel_for(int isa) {
  switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
    case QP_ISA_AVX2: return xnn_f32_qc8w_ukernel_4x16c4__avx2;
    case QP_ISA_AVX512:
    case QP_ISA_AVX512VNNI: return xnn_f32_qc8w_ukernel_4x16c4__avx512; /* fp32 FMAs: VNNI adds nothing */
#endif
#if defined(__aarch64__)
    case QP_ISA_NEON:
    case QP_ISA_NEONDOT: return xnn_f32_qc8w_ukernel_4x16c4__neon;
#endif
    default: return NULL;
  }
}

typedef struct {
  xnn_f32_qc8w_ukernel_fn ukernel;
  const float *x;
  size_t m, k, kp, n, mtiles;
  const int8_t *packed;
  const float *w_scales, *bias;
  int per_channel;
  float *out;
} xnn_f32_qc8w_task;

static void xnn_f32_qc8w_run(void *ctx, size_t begin, size_t end) {
  const xnn_f32_qc8w_task *t = (const xnn_f32_qc8w_task *)ctx;
  float acc[XNN_F32_QC8W_MR * XNN_NR];
  for (size_t i = begin; i < end; i++) {
    const size_t nb = i / t->mtiles, m0 = (i % t->mtiles) * XNN_F32_QC8W_MR, n0 = nb * XNN_NR;
    const size_t mr = xnn_min(XNN_F32_QC8W_MR, t->m - m0), nc = xnn_min(XNN_NR, t->n - n0);
    t->ukernel(mr, t->k, t->x + m0 * t->k, t->k, t->packed + nb * XNN_NR * t->kp, acc);
    for (size_t r = 0; r < mr; r++)
      for (size_t j = 0; j < nc; j++) {
        float y = acc[r * XNN_NR + j] * t->w_scales[t->per_channel ? n0 + j : 0];
        XNN_FP_BARRIER(y); /* round the product before the bias add: never an FMA */
        t->out[(m0 + r) * t->n + n0 + j] = t->bias ? y + t->bias[n0 + j] : y;
      }
  }
}

int xnnpack_f32_qc8w_linear(const float *x, size_t m, size_t k, const int8_t *packed, size_t n,
                            const float *w_scales, size_t n_w_scales, const float *bias, float *out) {
  if (k == 0 || k > XNN_MAX_K || n == 0 || !packed || !w_scales || (m > 0 && (!x || !out)))
    return QP_ERR_INVALID_ARGUMENT;
  if (n_w_scales != 1 && n_w_scales != n) return QP_ERR_INVALID_ARGUMENT;
  for (size_t j = 0; j < n_w_scales; j++)
    if (!(w_scales[j] > 0.0f) || !isfinite(w_scales[j])) return QP_ERR_INVALID_ARGUMENT;
  if (m == 0) return QP_OK;
  const xnn_f32_qc8w_ukernel_fn simd = xnn_f32_qc8w_ukernel_for(qp_active_isa());
  xnn_f32_qc8w_task t = {simd ? simd : xnn_f32_qc8w_ukernel__scalar, x, m, k, xnn_round_up(k, XNN_KR), n, 0, packed,
                         w_scales, bias, n_w_scales != 1, out};
  t.mtiles = (m + XNN_F32_QC8W_MR - 1) / XNN_F32_QC8W_MR;
  const size_t tiles = t.mtiles * ((n + XNN_NR - 1) / XNN_NR);
  const size_t tile_work = XNN_F32_QC8W_MR * XNN_NR * t.kp;
  qp_parallel_for(tiles, tile_work >= (1u << 15) ? 1 : (1u << 15) / tile_work, xnn_f32_qc8w_run, &t);
  return QP_OK;
}
