/*
 * f32-qc8w: int8 weight-only linear (fp32 activations, int8 per-channel
 * symmetric weights in the packed qc8w layout of gemm.c, fp32 output), as
 * XNNPACK's fully-connected f32_qc8w operator. The scalar reference
 * microkernel and the multi-threaded driver; SIMD microkernels in
 * f32_qc8w_x86.c / f32_qc8w_arm.c.
 *
 * Canonical arithmetic (every path, bit for bit), per output (row r, channel
 * j): four phase sums a[q], q = 0..3, each from +0, a[q] = fma(x[r][k],
 * w[j][k], a[q]) for k = q, q + 4, q + 8, ... < K in that order; then
 * s = (a[0] + a[1]) + (a[2] + a[3]); then y = s * w_scale[j] rounded, then
 * y + bias[j] rounded (never fused). Why phases: the packed qc8w layout holds
 * 4 consecutive k of a channel in 4 adjacent bytes, so 16 bytes sign-extend
 * in one instruction to 4 channels x 4 k, one (channel, k mod 4) pair per
 * lane; a lane-per-channel order (one sum in k order) needed a shift pair per
 * k to bring each byte into place, ~40% more instructions per weight at M = 1
 * where every converted weight feeds one FMA. Phases also give 4 independent
 * FMA chains per output. The tile shape (rows x blocks per call) only changes
 * which outputs share a converted weight vector, never any output's order.
 * The final 3 adds are the scalar epilogue of the driver, on every path.
 */
#include <math.h>

#include "quantplug/qp_runtime.h"
#include "xnnpack_internal.h"
#include "xnnpack_kernels.h"

/* The definition of the canonical phase sums (one output at a time, plain fmaf). */
static void xnn_f32_qc8w_ukernel__scalar(size_t mr, size_t nb, size_t k, const float *x, size_t x_stride,
                                         const int8_t *w, size_t w_block_stride, float *acc) {
  for (size_t r = 0; r < mr; r++)
    for (size_t j = 0; j < nb * XNN_NR; j++) {
      const int8_t *block = w + (j / XNN_NR) * w_block_stride;
      for (size_t q = 0; q < XNN_KR; q++) {
        float a = 0.0f;
        for (size_t p = q; p < k; p += XNN_KR)
          a = fmaf(x[r * x_stride + p], (float)block[(p / XNN_KR) * (XNN_NR * XNN_KR) + (j % XNN_NR) * XNN_KR + q], a);
        acc[r * XNN_F32_QC8W_ACC_STRIDE + XNN_KR * j + q] = a;
      }
    }
}

static const xnn_f32_qc8w_config xnn_f32_qc8w_config_scalar = {xnn_f32_qc8w_ukernel__scalar, 4, 1, 1};

const xnn_f32_qc8w_config *xnn_f32_qc8w_config_for(int isa) {
#if defined(__x86_64__) || defined(__i386__)
  /* Rows per tile: what fits the register file with the weights converted once for all of them
   * (AVX-512: 8 rows x 8 channels per pass, 16 of 32 zmm; AVX2 / NEON: 4 rows x 4 channels); one
   * row takes 4 blocks on AVX-512 (16 independent FMA chains, 64 channels per pass over x). */
  static const xnn_f32_qc8w_config avx2 = {xnn_f32_qc8w_ukernel_4x16c4__avx2, 4, 1, 1};
  static const xnn_f32_qc8w_config avx512 = {xnn_f32_qc8w_ukernel_8x16c4__avx512, 8, 1, 4};
#endif
#if defined(__aarch64__)
  static const xnn_f32_qc8w_config neon = {xnn_f32_qc8w_ukernel_4x16c4__neon, 4, 1, 1};
#endif
  switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
    case QP_ISA_AVX2: return &avx2;
    case QP_ISA_AVX512:
    case QP_ISA_AVX512VNNI: return &avx512; /* fp32 FMAs: VNNI adds nothing */
#endif
#if defined(__aarch64__)
    case QP_ISA_NEON:
    case QP_ISA_NEONDOT: return &neon;
#endif
    default: return NULL;
  }
}

typedef struct {
  const xnn_f32_qc8w_config *cfg;
  const float *x;
  size_t m, k, kp, n, nblocks;
  const int8_t *packed;
  const float *w_scales, *bias;
  int per_channel;
  float *out;
  size_t rows_per_tile, mtiles; /* row tiles, balanced: 9 rows are 5 + 4, not 8 + 1 */
  size_t blocks_per_tile;
} xnn_f32_qc8w_task;

/* s = (a0 + a1) + (a2 + a3) of the phase sums, y = s * w_scale rounded, then + bias rounded, for
 * the nc channels from n0 of rows [m0, m0 + mr). */
static void xnn_f32_qc8w_store(const xnn_f32_qc8w_task *t, size_t m0, size_t mr, size_t n0, size_t nc,
                               const float *acc) {
  for (size_t r = 0; r < mr; r++)
    for (size_t j = 0; j < nc; j++) {
      const float *a = acc + r * XNN_F32_QC8W_ACC_STRIDE + XNN_KR * j;
      float y = ((a[0] + a[1]) + (a[2] + a[3])) * t->w_scales[t->per_channel ? n0 + j : 0];
      XNN_FP_BARRIER(y); /* round the product before the bias add: never an FMA */
      t->out[(m0 + r) * t->n + n0 + j] = t->bias ? y + t->bias[n0 + j] : y;
    }
}

static void xnn_f32_qc8w_run(void *ctx, size_t begin, size_t end) {
  const xnn_f32_qc8w_task *t = (const xnn_f32_qc8w_task *)ctx;
  float acc[XNN_F32_QC8W_MR_MAX * XNN_F32_QC8W_ACC_STRIDE];
  const size_t block_stride = XNN_NR * t->kp;
  for (size_t i = begin; i < end; i++) {
    /* row tiles innermost: the consecutive tiles of a task reuse one weight panel from L1/L2 */
    const size_t b0 = (i / t->mtiles) * t->blocks_per_tile, m0 = (i % t->mtiles) * t->rows_per_tile;
    const size_t nb = xnn_min(t->blocks_per_tile, t->nblocks - b0), mr = xnn_min(t->rows_per_tile, t->m - m0);
    t->cfg->ukernel(mr, nb, t->k, t->x + m0 * t->k, t->k, t->packed + b0 * block_stride, block_stride, acc);
    xnn_f32_qc8w_store(t, m0, mr, b0 * XNN_NR, xnn_min(nb * XNN_NR, t->n - b0 * XNN_NR), acc);
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
  const xnn_f32_qc8w_config *simd = xnn_f32_qc8w_config_for(qp_active_isa());
  xnn_f32_qc8w_task t = {simd ? simd : &xnn_f32_qc8w_config_scalar, x, m, k, xnn_round_up(k, XNN_KR), n,
                         (n + XNN_NR - 1) / XNN_NR, packed, w_scales, bias, n_w_scales != 1, out, 0, 0, 0};
  t.mtiles = (m + t.cfg->mr - 1) / t.cfg->mr;
  t.rows_per_tile = (m + t.mtiles - 1) / t.mtiles;
  t.blocks_per_tile = t.rows_per_tile == 1 ? t.cfg->nb_row1 : t.cfg->nb;
  const size_t tiles = t.mtiles * ((t.nblocks + t.blocks_per_tile - 1) / t.blocks_per_tile);
  const size_t tile_work = t.rows_per_tile * t.blocks_per_tile * XNN_NR * t.kp;
  qp_parallel_for(tiles, tile_work >= (1u << 15) ? 1 : (1u << 15) / tile_work, xnn_f32_qc8w_run, &t);
  return QP_OK;
}
