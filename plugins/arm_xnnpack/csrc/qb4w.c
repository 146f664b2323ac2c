/*
 * f32-qb4w: int4 weight-only linear with group-wise scales: packing, the
 * scalar reference microkernel, and the multi-threaded driver.
 *
 * Weights are symmetric int4 in [-8, 7] (zero point 0). Each group of
 * group_size (32, 64 or 128) consecutive k of one output channel has its own
 * fp32 scale. Activations and outputs are fp32:
 *     out[m][n] = bias[n] + sum_g scale[n][g] * (sum_{k in g} x[m][k] * w[n][k])
 *
 * Canonical arithmetic (what every ISA path computes, bit for bit), per output
 * (row m, channel n): tot = +0; for each group g in order, acc = +0, then
 * acc = fma(x[m][k], w[n][k], acc) for k in the group in order, then
 * tot = fma(acc, scale[n][g], tot); finally out = tot + bias[n] (one
 * rounding). Why this order: a SIMD lane is one output channel (the packed
 * layout of xnnpack_internal.h), so a tile of rows shares each unpacked weight
 * vector, the k order is the natural loop order, and the scale costs one FMA
 * per group per 16 outputs. (The previous order had 16 lanes along k, which
 * needed 16 scale FMAs per group and output: +50% work at group 32.) It
 * differs from a float64 sum only by fp32 rounding (the Python tests bound
 * that).
 */
#include <math.h>
#include <string.h>

#include "quantplug/qp_runtime.h"
#include "xnnpack_internal.h"
#include "xnnpack_kernels.h"

#define XNN_QB4W_BLOCK 16 /* output channels per packed block */

size_t xnnpack_qb4w_packed_size(size_t n, size_t k) { return xnn_round_up(n, XNN_QB4W_BLOCK) * (k / 2); }

size_t xnnpack_qb4w_packed_scales_size(size_t n, size_t k, size_t group_size) {
  return group_size ? (k / group_size) * xnn_round_up(n, XNN_QB4W_BLOCK) : 0;
}

static int xnn_qb4w_sizes_ok(size_t n, size_t k, size_t group_size) {
  return n > 0 && k > 0 && (group_size == 32 || group_size == 64 || group_size == 128) && k % group_size == 0;
}

/* Nonzero when some scale is NaN, infinite or negative (-0 is fine). On the bits, branch-free, so
 * the per-call check of the driver vectorizes (a 4096 x 4096 group-32 layer has half a million
 * scales; float compares joined by && stayed a scalar loop): above 0x7f7fffff is a set sign bit,
 * inf or NaN. */
static int xnn_qb4w_bad_scales(const float *s, size_t count) {
  uint32_t bad = 0;
  for (size_t i = 0; i < count; i++) {
    uint32_t u;
    memcpy(&u, s + i, sizeof u);
    bad |= (uint32_t)(u > 0x7f7fffffu) & (uint32_t)(u != 0x80000000u);
  }
  return bad != 0;
}

/* The byte of the packed weights holding w[j][p] (j a channel of the block, p an input feature)
 * and which nibble: word j of row p / 8, nibble p % 8 (little-endian, so byte (p % 8) / 2). */
static inline size_t xnn_qb4w_byte(size_t j, size_t p) { return (p / 8) * 64 + j * 4 + (p % 8) / 2; }

int xnnpack_pack_qb4w(const int8_t *w, const float *scales, size_t n, size_t k, size_t group_size,
                      uint8_t *packed, size_t packed_size, float *packed_scales, size_t packed_scales_size) {
  if (!w || !scales || !packed || !packed_scales || !xnn_qb4w_sizes_ok(n, k, group_size) ||
      packed_size != xnnpack_qb4w_packed_size(n, k) ||
      packed_scales_size != xnnpack_qb4w_packed_scales_size(n, k, group_size))
    return QP_ERR_INVALID_ARGUMENT;
  const size_t groups = k / group_size, npad = xnn_round_up(n, XNN_QB4W_BLOCK);
  for (size_t i = 0; i < n * k; i++)
    if (w[i] < -8 || w[i] > 7) return QP_ERR_INVALID_ARGUMENT;
  if (xnn_qb4w_bad_scales(scales, n * groups)) return QP_ERR_INVALID_ARGUMENT;
  memset(packed, 0, packed_size); /* padded channels: zero weights */
  for (size_t c = 0; c < n; c++) {
    uint8_t *block = packed + (c / XNN_QB4W_BLOCK) * XNN_QB4W_BLOCK * (k / 2);
    for (size_t p = 0; p < k; p++)
      block[xnn_qb4w_byte(c % XNN_QB4W_BLOCK, p)] |= (uint8_t)(((uint8_t)w[c * k + p] & 0x0f) << (4 * (p & 1)));
  }
  for (size_t c = 0; c < npad; c++) /* [block][group][16], zero for the padded channels */
    for (size_t g = 0; g < groups; g++)
      packed_scales[((c / XNN_QB4W_BLOCK) * groups + g) * XNN_QB4W_BLOCK + c % XNN_QB4W_BLOCK] =
          c < n ? scales[c * groups + g] : 0.0f;
  return QP_OK;
}

static inline float xnn_qb4w_weight(const uint8_t *block, size_t j, size_t p) {
  const int v = (block[xnn_qb4w_byte(j, p)] >> (4 * (p & 1))) & 0x0f;
  return (float)(v >= 8 ? v - 16 : v);
}

/* The definition of the canonical order (one output at a time, plain fmaf). */
static void xnn_f32_qb4w_ukernel__scalar(size_t mr, size_t nb, size_t k, size_t group_size, const float *x,
                                         size_t x_stride, const uint8_t *w, size_t w_block_stride,
                                         const float *scales, size_t s_block_stride, float *res) {
  for (size_t r = 0; r < mr; r++)
    for (size_t j = 0; j < nb * XNN_QB4W_BLOCK; j++) {
      const uint8_t *block = w + (j / XNN_QB4W_BLOCK) * w_block_stride;
      float tot = 0.0f;
      for (size_t g0 = 0; g0 < k; g0 += group_size) {
        float acc = 0.0f;
        for (size_t p = g0; p < g0 + group_size; p++)
          acc = fmaf(x[r * x_stride + p], xnn_qb4w_weight(block, j % XNN_QB4W_BLOCK, p), acc);
        tot = fmaf(acc, scales[(j / XNN_QB4W_BLOCK) * s_block_stride + (g0 / group_size) * XNN_QB4W_BLOCK +
                               j % XNN_QB4W_BLOCK],
                   tot);
      }
      res[r * XNN_QB4W_NR_MAX + j] = tot;
    }
}

static const xnn_qb4w_config xnn_qb4w_config_scalar = {xnn_f32_qb4w_ukernel__scalar, 4, 1, 1, NULL};

const xnn_qb4w_config *xnn_qb4w_config_for(int isa) {
#if defined(__x86_64__) || defined(__i386__)
  /* The tile is what fits the register file: AVX-512 has 32 zmm for 8 rows x 2 blocks of
   * accumulators plus the weights; AVX2 has 16 ymm (4 rows x 1 block = 8 accumulators). */
  static const xnn_qb4w_config avx2 = {xnn_f32_qb4w_ukernel_4x16__avx2, 4, 1, 2, NULL};
  static const xnn_qb4w_config avx512 = {xnn_f32_qb4w_ukernel_8x32__avx512, 8, 2, 4,
                                              xnn_f32_qb4w_panel_8x32__avx512};
#endif
#if defined(__aarch64__)
  static const xnn_qb4w_config neon = {xnn_f32_qb4w_ukernel_4x16__neon, 4, 1, 2, NULL};
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
  const xnn_qb4w_config *cfg;
  const float *x;
  size_t m, k, group_size;
  const uint8_t *packed;
  const float *scales, *bias;
  float *out;
  size_t n, npad;
  size_t rows_per_tile, mtiles; /* row tiles, balanced: 33 rows are 7 + 7 + 7 + 7 + 5, not 8 x 4 + 1 */
  size_t blocks_per_tile;
} xnn_qb4w_task;

/* The sums (no bias) of rows [m0, m0 + rows) and blocks [b0, b0 + nb) into res: the panel kernel
 * when it applies, else row tiles of the microkernel (balanced). */
static void xnn_qb4w_tile(const xnn_qb4w_task *t, size_t m0, size_t rows, size_t b0, size_t nb, float *res) {
  const size_t block_stride = XNN_QB4W_BLOCK * (t->k / 2), s_block_stride = XNN_QB4W_BLOCK * (t->k / t->group_size);
  const uint8_t *w = t->packed + b0 * block_stride;
  const float *scales = t->scales + b0 * s_block_stride;
  if (t->cfg->panel && nb == XNN_QB4W_PANEL_NB && rows > t->cfg->mr) {
    t->cfg->panel(rows, t->k, t->group_size, t->x + m0 * t->k, t->k, w, block_stride, scales, s_block_stride, res);
    return;
  }
  const size_t tiles = (rows + t->cfg->mr - 1) / t->cfg->mr, mr = (rows + tiles - 1) / tiles;
  for (size_t r = 0; r < rows; r += mr)
    t->cfg->ukernel(xnn_min(mr, rows - r), nb, t->k, t->group_size, t->x + (m0 + r) * t->k, t->k, w, block_stride,
                    scales, s_block_stride, res + r * XNN_QB4W_NR_MAX);
}

static void xnn_qb4w_run(void *ctx, size_t begin, size_t end) {
  const xnn_qb4w_task *t = (const xnn_qb4w_task *)ctx;
  float res[XNN_QB4W_PANEL_ROWS * XNN_QB4W_NR_MAX];
  for (size_t i = begin; i < end; i++) {
    /* row tiles innermost: the consecutive tiles of a task reuse one channel panel from L1/L2 */
    const size_t b0 = (i / t->mtiles) * t->blocks_per_tile, m0 = (i % t->mtiles) * t->rows_per_tile;
    const size_t nb = xnn_min(t->blocks_per_tile, t->npad / XNN_QB4W_BLOCK - b0);
    const size_t mr = xnn_min(t->rows_per_tile, t->m - m0), n0 = b0 * XNN_QB4W_BLOCK;
    xnn_qb4w_tile(t, m0, mr, b0, nb, res);
    const size_t nc = xnn_min(nb * XNN_QB4W_BLOCK, t->n - n0);
    for (size_t r = 0; r < mr; r++)
      for (size_t j = 0; j < nc; j++) {
        const float y = res[r * XNN_QB4W_NR_MAX + j];
        t->out[(m0 + r) * t->n + n0 + j] = t->bias ? y + t->bias[n0 + j] : y;
      }
  }
}

int xnnpack_f32_qb4w_linear(const float *x, size_t m, size_t k, const uint8_t *packed, size_t n,
                            const float *packed_scales, size_t group_size, const float *bias, float *out) {
  if (!packed || !packed_scales || !xnn_qb4w_sizes_ok(n, k, group_size) || (m > 0 && (!x || !out)))
    return QP_ERR_INVALID_ARGUMENT;
  const size_t npad = xnn_round_up(n, XNN_QB4W_BLOCK);
  if (xnn_qb4w_bad_scales(packed_scales, (k / group_size) * npad)) return QP_ERR_INVALID_ARGUMENT;
  if (m == 0) return QP_OK;
  const xnn_qb4w_config *simd = xnn_qb4w_config_for(qp_active_isa());
  const xnn_qb4w_config *cfg = simd ? simd : &xnn_qb4w_config_scalar;
  xnn_qb4w_task t = {cfg, x, m, k, group_size, packed, packed_scales, bias, out, n, npad, 0, 0, 0};
  /* a task's rows: one microkernel tile, or with a panel kernel up to XNN_QB4W_PANEL_ROWS rows */
  const size_t task_rows = cfg->panel && m > cfg->mr ? XNN_QB4W_PANEL_ROWS : cfg->mr;
  t.mtiles = (m + task_rows - 1) / task_rows;
  t.rows_per_tile = (m + t.mtiles - 1) / t.mtiles;
  t.blocks_per_tile = t.rows_per_tile == 1 ? cfg->nb_row1 : cfg->nb;
  const size_t ctiles = (npad / XNN_QB4W_BLOCK + t.blocks_per_tile - 1) / t.blocks_per_tile;
  const size_t tile_work = t.rows_per_tile * t.blocks_per_tile * XNN_QB4W_BLOCK * k;
  qp_parallel_for(ctiles * t.mtiles, tile_work >= (1u << 15) ? 1 : (1u << 15) / tile_work, xnn_qb4w_run, &t);
  return QP_OK;
}
