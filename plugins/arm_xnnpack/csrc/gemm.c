/*
 * qs8-qc8w / qd8-f32-qc8w linear: weight packing, the scalar reference path,
 * the tiled multi-threaded driver for the SIMD paths, and run-time dispatch
 * through qp_active_isa().
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quantplug/qp_quantize.h"
#include "quantplug/qp_requant.h"
#include "quantplug/qp_runtime.h"
#include "xnnpack_internal.h"
#include "xnnpack_kernels.h"

/* ISA paths compiled into this build (bit per enum qp_isa); scalar is implied. */
#if defined(__x86_64__) || defined(__i386__)
const uint32_t qp_plugin_compiled_isas =
    (1u << QP_ISA_AVX2) | (1u << QP_ISA_AVX512) | (1u << QP_ISA_AVX512VNNI);
#elif defined(__aarch64__)
const uint32_t qp_plugin_compiled_isas = (1u << QP_ISA_NEON) | (1u << QP_ISA_NEONDOT);
#else
const uint32_t qp_plugin_compiled_isas = 0;
#endif

const xnn_gemm_config *xnn_gemm_config_for(int isa) {
  switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
    case QP_ISA_AVX2: return &xnn_config_avx2;
    case QP_ISA_AVX512: return &xnn_config_avx512;
    case QP_ISA_AVX512VNNI: return &xnn_config_avx512vnni;
#endif
#if defined(__aarch64__)
    case QP_ISA_NEON: return &xnn_config_neon;
    case QP_ISA_NEONDOT: return &xnn_config_neondot;
#endif
    default: return NULL;
  }
}

size_t xnnpack_max_k(void) { return XNN_MAX_K; }

size_t xnnpack_qc8w_packed_size(size_t n, size_t k) {
  return xnn_round_up(n, XNN_NR) * xnn_round_up(k, XNN_KR);
}

size_t xnnpack_qc8w_row_sums_size(size_t n) { return xnn_round_up(n, XNN_NR); }

int xnnpack_pack_qc8w(const int8_t *w, size_t n, size_t k, int8_t *packed, size_t packed_size,
                      int32_t *row_sums, size_t row_sums_size) {
  if (!w || !packed || !row_sums || n == 0 || k == 0 || k > XNN_MAX_K) return QP_ERR_INVALID_ARGUMENT;
  if (packed_size != xnnpack_qc8w_packed_size(n, k) || row_sums_size != xnnpack_qc8w_row_sums_size(n))
    return QP_ERR_INVALID_ARGUMENT;
  const size_t kp = xnn_round_up(k, XNN_KR);
  memset(packed, 0, packed_size);
  memset(row_sums, 0, row_sums_size * sizeof(int32_t));
  for (size_t j = 0; j < n; j++) {
    int8_t *dst = packed + (j / XNN_NR) * XNN_NR * kp + (j % XNN_NR) * XNN_KR;
    int32_t sum = 0;
    for (size_t p = 0; p < k; p++) {
      const int8_t v = w[j * k + p];
      if (v == INT8_MIN) return QP_ERR_INVALID_ARGUMENT; /* qc8w is narrow range */
      dst[(p / XNN_KR) * (XNN_NR * XNN_KR) + p % XNN_KR] = v;
      sum += v;
    }
    row_sums[j] = sum;
  }
  return QP_OK;
}

/* ------------------------------------------------------------ epilogues -- */

static inline int32_t xnn_wrap_add(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }

static inline float xnn_dequant_one(int32_t acc, float x_scale, float w_scale, const float *bias) {
  float y = (float)acc * (x_scale * w_scale);
  XNN_FP_BARRIER(y); /* round the product before the bias add: never an FMA */
  return bias ? y + *bias : y;
}

void xnn_qs8_requant__scalar(size_t mr, size_t nc, const int32_t *raw, const xnn_requant_params *p,
                             int8_t *out, size_t out_stride) {
  for (size_t r = 0; r < mr; r++)
    for (size_t j = 0; j < nc; j++)
      out[r * out_stride + j] = (int8_t)qp_requantize(xnn_wrap_add(raw[r * XNN_NR + j], p->bias_eff[j]),
                                                      p->mult[p->per_channel ? j : 0], p->zp, p->qmin,
                                                      p->qmax);
}

void xnn_qd8_f32_dequant__scalar(size_t mr, size_t nc, const int32_t *raw,
                                 const xnn_dequant_params *p, float *out, size_t out_stride) {
  for (size_t r = 0; r < mr; r++)
    for (size_t j = 0; j < nc; j++) {
      const int32_t acc = (int32_t)((uint32_t)raw[r * XNN_NR + j] -
                                    (uint32_t)p->x_zp[r] * (uint32_t)p->row_sums[j]);
      out[r * out_stride + j] = xnn_dequant_one(acc, p->x_scale[r], p->w_scale[p->per_channel ? j : 0],
                                                p->bias ? p->bias + j : NULL);
    }
}

/* ------------------------------------------------- scalar reference path -- */

/* sum_k (x[k] - zp) * w[j][k], straight from the definition (no row sums). */
static int32_t xnn_dot_ref(const int8_t *x, int32_t zp, const int8_t *packed, size_t kp, size_t j,
                           size_t k) {
  const int8_t *wj = packed + (j / XNN_NR) * XNN_NR * kp + (j % XNN_NR) * XNN_KR;
  int32_t acc = 0;
  for (size_t p = 0; p < k; p++)
    acc += ((int32_t)x[p] - zp) * (int32_t)wj[(p / XNN_KR) * (XNN_NR * XNN_KR) + p % XNN_KR];
  return acc;
}

/* ------------------------------------------------------------ tiled path -- */

typedef struct {
  const xnn_gemm_config *cfg;
  const int8_t *x;
  size_t m, k, kp, n, mtiles, panel_blocks;
  int x_u8; /* x holds x + 128 as uint8: use the config's gemm_u8 / gemm_wide_u8 */
  const int8_t *packed;
  const int32_t *row_sums;
  int dynamic;
  /* static */
  const int32_t *bias_eff;
  const float *mult;
  int mult_per_channel;
  int32_t zp, qmin, qmax;
  int8_t *out;
  /* dynamic */
  const int32_t *x_zp;
  const float *x_scale, *w_scale, *bias;
  int w_per_channel;
  float *fout;
} xnn_gemm_task;

/* Epilogue of one 16-channel block: rows m0 .. m0 + mr, channels n0 .. n0 + 16 (or fewer). */
static void xnn_gemm_epilogue(const xnn_gemm_task *t, size_t m0, size_t mr, size_t n0, const int32_t *raw) {
  const size_t nc = xnn_min(XNN_NR, t->n - n0);
  if (t->dynamic) {
    const xnn_dequant_params p = {t->row_sums + n0, t->x_zp + m0, t->x_scale + m0,
                                  t->w_scale + (t->w_per_channel ? n0 : 0), t->w_per_channel,
                                  t->bias ? t->bias + n0 : NULL};
    t->cfg->dequant(mr, nc, raw, &p, t->fout + m0 * t->n + n0, t->n); /* any nc <= 16 */
  } else {
    const xnn_requant_params p = {t->bias_eff + n0, t->mult + (t->mult_per_channel ? n0 : 0),
                                  t->mult_per_channel, t->zp, t->qmin, t->qmax};
    t->cfg->requant(mr, nc, raw, &p, t->out + m0 * t->n + n0, t->n); /* any nc <= 16 */
  }
}

/* Rows and 16-channel blocks of one tile: the wide microkernel's when the ISA has one. */
static size_t xnn_tile_rows(const xnn_gemm_config *cfg) { return cfg->gemm_wide ? cfg->mr_wide : cfg->mr; }
static size_t xnn_tile_blocks(const xnn_gemm_config *cfg) { return cfg->gemm_wide ? 2 : 1; }

/* One task: row tile (i % mtiles) times the tile columns of panel (i / mtiles). */
static void xnn_gemm_run(void *ctx, size_t begin, size_t end) {
  const xnn_gemm_task *t = (const xnn_gemm_task *)ctx;
  const xnn_gemm_config *cfg = t->cfg;
  const size_t tile_rows = xnn_tile_rows(cfg), tile_blocks = xnn_tile_blocks(cfg);
  const xnn_gemm_ukernel_fn gemm = t->x_u8 ? cfg->gemm_u8 : cfg->gemm;
  const xnn_gemm_wide_ukernel_fn gemm_wide = t->x_u8 ? cfg->gemm_wide_u8 : cfg->gemm_wide;
  const size_t blocks = (t->n + XNN_NR - 1) / XNN_NR;
  int32_t raw[2 * XNN_MR_WIDE_MAX * XNN_NR];
  for (size_t i = begin; i < end; i++) {
    const size_t m0 = (i % t->mtiles) * tile_rows, mr = xnn_min(tile_rows, t->m - m0);
    const size_t b0 = (i / t->mtiles) * t->panel_blocks, b1 = xnn_min(blocks, b0 + t->panel_blocks);
    const int8_t *a = t->x + m0 * t->k;
    for (size_t nb = b0; nb < b1; nb += tile_blocks) {
      const size_t n0 = nb * XNN_NR;
      const int8_t *w = t->packed + nb * XNN_NR * t->kp;
      if (gemm_wide && nb + 1 < b1) {
        gemm_wide(mr, t->k, a, t->k, w, XNN_NR * t->kp, t->row_sums + n0, raw);
        xnn_gemm_epilogue(t, m0, mr, n0, raw);
        xnn_gemm_epilogue(t, m0, mr, n0 + XNN_NR, raw + XNN_MR_WIDE_MAX * XNN_NR);
        continue;
      }
      for (size_t s = 0; s < mr; s += cfg->mr) { /* one block: the narrow microkernel */
        const size_t sr = xnn_min(cfg->mr, mr - s);
        gemm(sr, t->k, a + s * t->k, t->k, w, t->row_sums + n0, raw);
        xnn_gemm_epilogue(t, m0 + s, sr, n0, raw);
      }
    }
  }
}

static void xnn_gemm_parallel(xnn_gemm_task *t) {
  const size_t tile_rows = xnn_tile_rows(t->cfg), tile_blocks = xnn_tile_blocks(t->cfg);
  t->mtiles = (t->m + tile_rows - 1) / tile_rows;
  const size_t blocks = (t->n + XNN_NR - 1) / XNN_NR;
  size_t pb = XNN_PANEL_BYTES / (XNN_NR * t->kp) / tile_blocks * tile_blocks;
  /* few row tiles (small M): narrower panels, so every thread gets several tasks */
  const size_t want = 4 * (size_t)qp_get_num_threads();
  if (t->mtiles < want) {
    const size_t panels = (want + t->mtiles - 1) / t->mtiles;
    const size_t even = (blocks + panels - 1) / panels;
    if (even < pb) pb = even;
  }
  pb = (pb + tile_blocks - 1) / tile_blocks * tile_blocks;
  t->panel_blocks = pb < tile_blocks ? tile_blocks : pb;
  const size_t tasks = t->mtiles * ((blocks + t->panel_blocks - 1) / t->panel_blocks);
  const size_t task_work = tile_rows * t->panel_blocks * XNN_NR * t->kp;
  const size_t grain = task_work >= (1u << 16) ? 1 : (1u << 16) / task_work;
  qp_parallel_for(tasks, grain, xnn_gemm_run, t);
}

/* -------------------------------------------------------- static linear -- */

static int xnn_check_common(const void *x, size_t k, const int8_t *packed, const int32_t *row_sums,
                            size_t n, const void *out, size_t m) {
  if (k == 0 || k > XNN_MAX_K || n == 0) return 0;
  if (!packed || !row_sums) return 0;
  if (m > 0 && (!x || !out)) return 0;
  return 1;
}

int xnnpack_qs8_qc8w_linear(const int8_t *x, size_t m, size_t k, int32_t x_zp,
                            const int8_t *packed, const int32_t *row_sums, size_t n,
                            const int32_t *bias, const float *mult, size_t n_mult,
                            int32_t out_zp, int32_t qmin, int32_t qmax, int8_t *out) {
  if (!xnn_check_common(x, k, packed, row_sums, n, out, m)) return QP_ERR_INVALID_ARGUMENT;
  if (!mult || (n_mult != 1 && n_mult != n)) return QP_ERR_INVALID_ARGUMENT;
  if (x_zp < -128 || x_zp > 127 || out_zp < -128 || out_zp > 127) return QP_ERR_INVALID_ARGUMENT;
  if (qmin < -128 || qmax > 127 || qmin > qmax) return QP_ERR_INVALID_ARGUMENT;
  for (size_t j = 0; j < n_mult; j++)
    if (!(mult[j] > 0.0f) || !isfinite(mult[j])) return QP_ERR_INVALID_ARGUMENT;
  if (m == 0) return QP_OK;
  const size_t kp = xnn_round_up(k, XNN_KR);
  const xnn_gemm_config *cfg = xnn_gemm_config_for(qp_active_isa());
  if (cfg == NULL) { /* scalar reference */
    for (size_t i = 0; i < m; i++)
      for (size_t j = 0; j < n; j++) {
        const int32_t acc = xnn_wrap_add(xnn_dot_ref(x + i * k, x_zp, packed, kp, j, k), bias ? bias[j] : 0);
        out[i * n + j] = (int8_t)qp_requantize(acc, mult[n_mult == 1 ? 0 : j], out_zp, qmin, qmax);
      }
    return QP_OK;
  }
  const size_t np = xnn_round_up(n, XNN_NR);
  int32_t *bias_eff = (int32_t *)malloc(np * sizeof(int32_t));
  if (!bias_eff) return QP_ERR_OUT_OF_MEMORY;
  xnn_qs8_bias_eff(bias, x_zp, row_sums, n, bias_eff);
  const int status = xnn_qs8_linear_run(x, m, k, packed, row_sums, n, bias_eff, mult, n_mult != 1, out_zp, qmin,
                                        qmax, out);
  free(bias_eff);
  return status;
}

void xnn_qs8_bias_eff(const int32_t *bias, int32_t x_zp, const int32_t *row_sums, size_t n, int32_t *bias_eff) {
  const size_t np = xnn_round_up(n, XNN_NR);
  for (size_t j = 0; j < np; j++) /* bias - x_zp * row_sum, wrapping like the SIMD adds */
    bias_eff[j] = (int32_t)((uint32_t)(bias && j < n ? bias[j] : 0) - (uint32_t)x_zp * (uint32_t)row_sums[j]);
}

int xnn_qs8_linear_run(const int8_t *x, size_t m, size_t k, const int8_t *packed, const int32_t *row_sums, size_t n,
                       const int32_t *bias_eff, const float *mult, int mult_per_channel, int32_t out_zp,
                       int32_t qmin, int32_t qmax, int8_t *out) {
  const xnn_gemm_config *cfg = xnn_gemm_config_for(qp_active_isa());
  if (cfg == NULL) return QP_ERR_UNSUPPORTED_ISA; /* the scalar reference needs the plain bias */
  if (m == 0) return QP_OK;
  xnn_gemm_task t = {0};
  t.cfg = cfg;
  t.x = x, t.m = m, t.k = k, t.kp = xnn_round_up(k, XNN_KR), t.n = n, t.packed = packed, t.row_sums = row_sums;
  t.bias_eff = bias_eff, t.mult = mult, t.mult_per_channel = mult_per_channel;
  t.zp = out_zp, t.qmin = qmin, t.qmax = qmax, t.out = out;
  xnn_gemm_parallel(&t);
  return QP_OK;
}

/* ------------------------------------------------------- dynamic linear -- */

/* qparams of torch's affine observers (quantplug.affine.choose_qparams):
 * the range always includes 0; scale = (max - min) / 255, at least
 * FLT_EPSILON; zero_point = -128 - round(min / scale), clamped. */
static int xnn_qd8_qparams(float lo, float hi, float *scale, int32_t *zp) {
  if (!isfinite(lo) || !isfinite(hi)) return QP_ERR_INVALID_ARGUMENT;
  const float mn = lo < 0.0f ? lo : 0.0f, mx = hi > 0.0f ? hi : 0.0f;
  float s = (mx - mn) / 255.0f;
  if (!isfinite(s)) return QP_ERR_INVALID_ARGUMENT;
  if (!(s > FLT_EPSILON)) s = FLT_EPSILON;
  int32_t z = -128 - (int32_t)nearbyintf(mn / s);
  *scale = s;
  *zp = qp_clamp_i32(z, -128, 127);
  return QP_OK;
}

static void xnn_minmax(const float *x, size_t count, float *lo, float *hi, int *nan) {
  float a = *lo, b = *hi;
  int bad = 0;
  for (size_t i = 0; i < count; i++) {
    const float v = x[i];
    a = v < a ? v : a;
    b = v > b ? v : b;
    bad |= v != v;
  }
  *lo = a, *hi = b, *nan |= bad;
}

static void xnn_qd8_convert__scalar(const float *x, size_t n, float inv_scale, int32_t zp, uint8_t flip,
                                    int8_t *out) {
  for (size_t i = 0; i < n; i++) out[i] = (int8_t)((uint8_t)qp_quantize(x[i], inv_scale, zp, -128, 127) ^ flip);
}

#if !defined(__x86_64__) && !defined(__i386__) && !defined(__aarch64__)
const xnn_qd8_config *xnn_qd8_config_for(int isa) {
  (void)isa;
  return NULL;
}
#endif

static const xnn_qd8_config xnn_qd8_scalar = {xnn_minmax, xnn_qd8_convert__scalar};

/* Quantize `count` values with the qparams of their own range (one tensor or one row). */
static int xnn_qd8_block(const xnn_qd8_config *cfg, const float *x, size_t count, uint8_t flip, int8_t *xq,
                         float *scale, int32_t *zp) {
  float lo = x[0], hi = x[0];
  int nan = 0;
  cfg->minmax(x, count, &lo, &hi, &nan);
  if (nan || xnn_qd8_qparams(lo, hi, scale, zp) != QP_OK) return QP_ERR_INVALID_ARGUMENT;
  cfg->convert(x, count, 1.0f / *scale, *zp, flip, xq); /* qp_quantize's reciprocal, as the core computes it */
  return QP_OK;
}

/* xnnpack_qd8_quantize, each stored value XORed with flip (0, or 0x80 for the u8 microkernels). */
static int xnn_qd8_quantize(const float *x, size_t m, size_t k, int per_row, uint8_t flip, int8_t *xq,
                            float *scales, int32_t *zero_points) {
  const xnn_qd8_config *simd = xnn_qd8_config_for(qp_active_isa());
  const xnn_qd8_config *cfg = simd ? simd : &xnn_qd8_scalar;
  if (per_row) {
    for (size_t i = 0; i < m; i++)
      if (xnn_qd8_block(cfg, x + i * k, k, flip, xq + i * k, &scales[i], &zero_points[i]) != QP_OK)
        return QP_ERR_INVALID_ARGUMENT;
    return QP_OK;
  }
  float s;
  int32_t z;
  if (xnn_qd8_block(cfg, x, m * k, flip, xq, &s, &z) != QP_OK) return QP_ERR_INVALID_ARGUMENT;
  for (size_t i = 0; i < m; i++) scales[i] = s, zero_points[i] = z;
  return QP_OK;
}

int xnnpack_qd8_quantize(const float *x, size_t m, size_t k, int per_row, int8_t *xq,
                         float *scales, int32_t *zero_points) {
  if (k == 0 || (m > 0 && (!x || !xq || !scales || !zero_points))) return QP_ERR_INVALID_ARGUMENT;
  if (m == 0) return QP_OK;
  return xnn_qd8_quantize(x, m, k, per_row, 0, xq, scales, zero_points);
}

int xnnpack_qd8_f32_qc8w_linear(const float *x, size_t m, size_t k, int per_row,
                                const int8_t *packed, const int32_t *row_sums, size_t n,
                                const float *w_scales, size_t n_w_scales, const float *bias,
                                float *out) {
  if (!xnn_check_common(x, k, packed, row_sums, n, out, m)) return QP_ERR_INVALID_ARGUMENT;
  if (!w_scales || (n_w_scales != 1 && n_w_scales != n)) return QP_ERR_INVALID_ARGUMENT;
  for (size_t j = 0; j < n_w_scales; j++)
    if (!(w_scales[j] > 0.0f) || !isfinite(w_scales[j])) return QP_ERR_INVALID_ARGUMENT;
  return xnn_qd8_linear_run(x, m, k, per_row, packed, row_sums, n, w_scales, n_w_scales != 1, bias, out);
}

int xnn_qd8_linear_run(const float *x, size_t m, size_t k, int per_row, const int8_t *packed,
                       const int32_t *row_sums, size_t n, const float *w_scales, int w_per_channel, const float *bias,
                       float *out) {
  if (m == 0) return QP_OK;
  /* one allocation: quantized rows, then per-row scales and zero points */
  const size_t xq_bytes = xnn_round_up(m * k, 16);
  char *scratch = (char *)malloc(xq_bytes + m * (sizeof(float) + sizeof(int32_t)));
  if (!scratch) return QP_ERR_OUT_OF_MEMORY;
  int8_t *xq = (int8_t *)scratch;
  float *xs = (float *)(scratch + xq_bytes);
  int32_t *xz = (int32_t *)(xs + m);
  const xnn_gemm_config *cfg = xnn_gemm_config_for(qp_active_isa());
  const int x_u8 = cfg != NULL && cfg->gemm_u8 != NULL;
  int status = xnn_qd8_quantize(x, m, k, per_row, x_u8 ? 0x80 : 0, xq, xs, xz);
  if (status != QP_OK) goto done;
  const size_t kp = xnn_round_up(k, XNN_KR);
  if (cfg == NULL) { /* scalar reference */
    for (size_t i = 0; i < m; i++)
      for (size_t j = 0; j < n; j++)
        out[i * n + j] = xnn_dequant_one(xnn_dot_ref(xq + i * k, xz[i], packed, kp, j, k), xs[i],
                                         w_scales[w_per_channel ? j : 0], bias ? bias + j : NULL);
    goto done;
  }
  xnn_gemm_task t = {0};
  t.cfg = cfg;
  t.x = xq, t.m = m, t.k = k, t.kp = kp, t.n = n, t.packed = packed, t.row_sums = row_sums;
  t.x_u8 = x_u8, t.dynamic = 1, t.x_zp = xz, t.x_scale = xs, t.w_scale = w_scales, t.w_per_channel = w_per_channel;
  t.bias = bias, t.fout = out;
  xnn_gemm_parallel(&t);
done:
  free(scratch);
  return status;
}
