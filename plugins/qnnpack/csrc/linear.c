/*
 * Linear drivers: argument checks, ISA dispatch (qp_active_isa()), zero
 * point folding, and the tile loop run on the shared thread pool.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qnnpack_internal.h"
#include "qnnpack_kernels.h"
#include "quantplug/qp_requant.h"

#if defined(__x86_64__) || defined(__i386__)
const uint32_t qp_plugin_compiled_isas = (1u << QP_ISA_SSE2) | (1u << QP_ISA_AVX2) |
                                         (1u << QP_ISA_AVX512) | (1u << QP_ISA_AVX512VNNI);
#elif defined(__aarch64__)
const uint32_t qp_plugin_compiled_isas = (1u << QP_ISA_NEON) | (1u << QP_ISA_NEONDOT);
#else
const uint32_t qp_plugin_compiled_isas = 0;
#endif

const qnnpack_isa_kernels *qnnpack_active_kernels(void) {
  switch (qp_active_isa()) {
#if defined(__x86_64__) || defined(__i386__)
    case QP_ISA_SSE2: return &qnnpack_kernels_sse2;
    case QP_ISA_AVX2: return &qnnpack_kernels_avx2;
    case QP_ISA_AVX512: return &qnnpack_kernels_avx512;
    case QP_ISA_AVX512VNNI: return &qnnpack_kernels_avx512vnni;
#endif
#if defined(__aarch64__)
    case QP_ISA_NEON: return &qnnpack_kernels_neon;
    case QP_ISA_NEONDOT: return &qnnpack_kernels_neondot;
#endif
    default: return &qnnpack_kernels_scalar;
  }
}

typedef struct {
  const qnnpack_isa_kernels *kern;
  size_t m, k, n, kg_count, mt_count, nb_count;
  int rows_prepared; /* x already in the path's xprep format (x_stride, k_kernel set) */
  int m_outer; /* tile order: M tiles outer (all weights cache resident) or weight blocks outer */
  const uint8_t *x;      /* rows the microkernel reads (prepared when kern->xprep) */
  size_t x_stride;       /* bytes between rows of x */
  size_t k_kernel;       /* K the microkernel sees (padded to KR when prepared) */
  const uint8_t *packed;
  const int32_t *wsums;
  const int32_t *cbias; /* [npad] bias - xzp * wsum + k * xzp * wzp */
  const int32_t *wzp;   /* [npad] */
  const uint32_t *xsum; /* [m] */
  /* static output */
  const float *mult; /* [npad] */
  int32_t out_zp, qmin, qmax;
  uint8_t *out;
  size_t out_stride; /* elements between output rows (static and dynamic) */
  /* dynamic output */
  const float *dscale; /* [npad] x_scale * w_scale */
  const float *dbias;  /* [npad] */
  float *fout;
  /* dynamic per row (rzp NULL otherwise): row zero points and scales, w_scales padded to
   * npad; the tiles use the path's acc_init_rows / dequant_rows */
  const int32_t *rzp;
  const float *rscale, *wscale;
} qnnpack_gemm_ctx;

static void qnnpack_gemm_tiles(void *vctx, size_t begin, size_t end) {
  const qnnpack_gemm_ctx *c = (const qnnpack_gemm_ctx *)vctx;
  const size_t MR = c->kern->mr;
  int32_t acc[QNNPACK_MR_MAX * QNNPACK_NR] __attribute__((aligned(64)));
  const uint8_t *a[QNNPACK_MR_MAX];
  /* Rows >= mr of acc may be computed by a kernel but are never used: initialized once here,
   * then each tile fills only its rows < mr (the per-tile cost matters when M is 1). */
  memset(acc, 0, sizeof(acc));
  for (size_t t = begin; t < end; t++) {
    const size_t nb = c->m_outer ? t % c->nb_count : t / c->mt_count;
    const size_t mt = c->m_outer ? t / c->nb_count : t % c->mt_count;
    const size_t m0 = mt * MR, n0 = nb * QNNPACK_NR;
    const size_t mr = c->m - m0 < MR ? c->m - m0 : MR;
    const size_t nc = c->n - n0 < QNNPACK_NR ? c->n - n0 : QNNPACK_NR;
    for (size_t i = 0; i < MR; i++) a[i] = c->x + (m0 + (i < mr ? i : mr - 1)) * c->x_stride;
    if (c->rzp && mr == MR && c->kern->gemm_rows) {
      const qnnpack_rows_tile rt = {.wsum = c->wsums + n0, .wzp = c->wzp + n0, .rzp = c->rzp + m0,
                                    .xsum = c->xsum + m0, .rscale = c->rscale + m0,
                                    .wscale = c->wscale + n0, .bias = c->dbias + n0};
      c->kern->gemm_rows(nc, c->k_kernel, a, c->packed + nb * c->kg_count * QNNPACK_NR * QNNPACK_KR,
                         &rt, c->fout + m0 * c->out_stride + n0, c->out_stride);
      continue;
    }
    if (c->out && mr == MR && c->kern->gemm_requant) {
      const qnnpack_requant_tile rt = {.cbias = c->cbias + n0, .wzp = c->wzp + n0,
                                       .wsum = c->wsums + n0, .xsum = c->xsum + m0,
                                       .mult = c->mult + n0, .out_zp = c->out_zp,
                                       .qmin = c->qmin, .qmax = c->qmax};
      c->kern->gemm_requant(nc, c->k_kernel, a,
                            c->packed + nb * c->kg_count * QNNPACK_NR * QNNPACK_KR, &rt,
                            c->out + m0 * c->out_stride + n0, c->out_stride);
      continue;
    }
    if (c->rzp) {
      c->kern->acc_init_rows(mr, c->wsums + n0, c->wzp + n0, c->rzp + m0, c->xsum + m0, acc);
    } else if (c->kern->acc_init) {
      c->kern->acc_init(mr, c->cbias + n0, c->wzp + n0, c->xsum + m0, acc);
    } else {
      for (size_t i = 0; i < mr; i++) {
        const uint32_t xs = c->xsum[m0 + i];
        for (size_t j = 0; j < QNNPACK_NR; j++)
          acc[i * QNNPACK_NR + j] =
              (int32_t)((uint32_t)c->cbias[n0 + j] - (uint32_t)c->wzp[n0 + j] * xs);
      }
    }
    c->kern->gemm(mr, c->k_kernel, a, c->packed + nb * c->kg_count * QNNPACK_NR * QNNPACK_KR,
                  c->wsums + n0, acc);
    if (c->rzp)
      c->kern->dequant_rows(mr, nc, acc, c->rscale + m0, c->wscale + n0, c->dbias + n0,
                            c->fout + m0 * c->out_stride + n0, c->out_stride);
    else if (c->out)
      c->kern->requant(mr, nc, acc, c->mult + n0, c->out_zp, c->qmin, c->qmax,
                       c->out + m0 * c->out_stride + n0, c->out_stride);
    else
      c->kern->dequant(mr, nc, acc, c->dscale + n0, c->dbias + n0,
                       c->fout + m0 * c->out_stride + n0, c->out_stride);
  }
}

static int qnnpack_bad_gemm_shape(size_t n, size_t k, size_t packed_size) {
  return n == 0 || k == 0 || n > ((size_t)1 << 31) || k > ((size_t)1 << 31) ||
         packed_size != qnnpack_packed_weight_size(n, k);
}

static void qnnpack_row_sums(const uint8_t *x, size_t m, size_t k, uint32_t *xsum) {
  for (size_t i = 0; i < m; i++) xsum[i] = qnnpack_sum_flip_to(NULL, x + i * k, k, 0); /* read only */
}

typedef struct {
  const uint8_t *x;
  size_t k, kpad;
  int xprep;
  uint8_t *out;
} qnnpack_xprep_ctx;

static void qnnpack_xprep_rows(void *vctx, size_t begin, size_t end) {
  const qnnpack_xprep_ctx *c = (const qnnpack_xprep_ctx *)vctx;
  /* locals + restrict: byte stores may alias *c, which would keep GCC from vectorizing */
  const size_t k = c->k, kpad = c->kpad;
  for (size_t r = begin; r < end; r++) {
    const uint8_t *restrict src = c->x + r * k;
    if (c->xprep == QNNPACK_XPREP_FLIP) {
      uint8_t *restrict dst = c->out + r * kpad;
      for (size_t p = 0; p < k; p++) dst[p] = (uint8_t)(src[p] ^ 0x80);
      for (size_t p = k; p < kpad; p++) dst[p] = 0x80; /* meets zero weights */
    } else {
      uint16_t *restrict dst = (uint16_t *)(void *)(c->out + r * kpad * 2);
      for (size_t p = 0; p < k; p++) dst[p] = src[p];
      for (size_t p = k; p < kpad; p++) dst[p] = 0;
    }
  }
}

/* Packed-weight bytes up to which the tiles walk M outer (every weight block streamed from L2
 * per M tile): 3/4 of this core's L2 where glibc reports it (1 MB on Zen 4 / Skylake-X, so a
 * 384x1536 weight qualifies: M = 1024 dynamic, fp32 output written row by row, 16% faster
 * than weight blocks outer), else 256 KB. Cached; the race writes the same value. */
static size_t qnnpack_weights_cache_budget(void) {
  static size_t budget; /* 0: not computed yet */
  size_t b = __atomic_load_n(&budget, __ATOMIC_RELAXED);
  if (b) return b;
  b = (size_t)256 << 10;
#if defined(_SC_LEVEL2_CACHE_SIZE)
  const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  if (l2 > 0 && (size_t)l2 / 4 * 3 > b) b = (size_t)l2 / 4 * 3;
  if (b > ((size_t)2 << 20)) b = (size_t)2 << 20;
#endif
  __atomic_store_n(&budget, b, __ATOMIC_RELAXED);
  return b;
}

/* Fill cbias / wzp (padded to npad; padding channels get 0), prepare the
 * activations the path wants, and run the tiles. */
static int qnnpack_run(qnnpack_gemm_ctx *c, int32_t x_zp, const int32_t *w_zps,
                       const int32_t *bias, int32_t *cbias, int32_t *wzp) {
  void *prepared = NULL;
  if (!c->rows_prepared) { /* the caller's plain uint8 rows */
    c->x_stride = c->k;
    c->k_kernel = c->k;
  }
  if (!c->rows_prepared && c->kern->xprep != QNNPACK_XPREP_NONE) {
    const size_t kpad = (c->k + QNNPACK_KR - 1) / QNNPACK_KR * QNNPACK_KR;
    const size_t esize = c->kern->xprep == QNNPACK_XPREP_WIDEN16 ? 2 : 1;
    prepared = malloc(c->m * kpad * esize + 64);
    if (!prepared) return QP_ERR_OUT_OF_MEMORY;
    qnnpack_xprep_ctx p = {.x = c->x, .k = c->k, .kpad = kpad, .xprep = c->kern->xprep,
                           .out = (uint8_t *)prepared};
    const size_t grain = c->k >= 65536 ? 1 : 65536 / c->k;
    qp_parallel_for(c->m, grain, qnnpack_xprep_rows, &p);
    c->x = (const uint8_t *)prepared;
    c->x_stride = kpad * esize;
    c->k_kernel = kpad;
  }
  const size_t npad = qnnpack_packed_sums_size(c->n);
  for (size_t j = 0; j < npad; j++) {
    const uint32_t zp = j < c->n ? (uint32_t)w_zps[j] : 0u;
    const uint32_t b = (j < c->n && bias) ? (uint32_t)bias[j] : 0u;
    wzp[j] = (int32_t)zp;
    cbias[j] = (int32_t)(b - (uint32_t)x_zp * (uint32_t)c->wsums[j] +
                         (uint32_t)c->k * (uint32_t)x_zp * zp);
  }
  c->cbias = cbias;
  c->wzp = wzp;
  c->kg_count = (c->k + QNNPACK_KR - 1) / QNNPACK_KR;
  const size_t MR = c->kern->mr;
  c->mt_count = (c->m + MR - 1) / MR;
  c->nb_count = npad / QNNPACK_NR;
  /* When every packed weight fits in L2 (conv layers: K * N of a few tens of KB), walk M tiles
   * outer: each tile's rows stay in L1 across all weight blocks and the activations stream
   * once. Otherwise walk weight blocks outer: one block stays in L1 while the rows (bounded by
   * the caller's chunking) stream from L2. */
  c->m_outer = c->kg_count * QNNPACK_KR * npad <= qnnpack_weights_cache_budget();
  const size_t tiles = c->mt_count * c->nb_count;
  /* ~1M multiply-adds per chunk before a second thread is worth waking. */
  const size_t work = MR * QNNPACK_NR * c->k;
  const size_t grain = work >= ((size_t)1 << 20) ? 1 : ((size_t)1 << 20) / work;
  qp_parallel_for(tiles, grain, qnnpack_gemm_tiles, c);
  free(prepared);
  return QP_OK;
}

int qnnpack_linear_u8(const uint8_t *x, size_t m, size_t k, int32_t x_zp, const uint8_t *packed,
                      size_t packed_size, const int32_t *wsums, const int32_t *w_zps, size_t n,
                      const int32_t *bias, const float *multipliers, size_t n_multipliers,
                      int32_t out_zp, int32_t qmin, int32_t qmax, uint8_t *out) {
  if (qnnpack_bad_gemm_shape(n, k, packed_size) || !packed || !wsums || !w_zps || !multipliers)
    return QP_ERR_INVALID_ARGUMENT;
  if (x_zp < 0 || x_zp > 255 || out_zp < 0 || out_zp > 255 || qmin < 0 || qmax > 255 ||
      qmin > qmax || (n_multipliers != 1 && n_multipliers != n))
    return QP_ERR_INVALID_ARGUMENT;
  for (size_t j = 0; j < n; j++)
    if (w_zps[j] < 0 || w_zps[j] > 255) return QP_ERR_INVALID_ARGUMENT;
  for (size_t j = 0; j < n_multipliers; j++)
    if (!(multipliers[j] > 0.0f) || !isfinite(multipliers[j])) return QP_ERR_INVALID_ARGUMENT;
  if (m == 0) return QP_OK;
  if (!x || !out || m > ((size_t)1 << 40) / k) return QP_ERR_INVALID_ARGUMENT;

  const size_t npad = qnnpack_packed_sums_size(n);
  float *mult = (float *)malloc(npad * sizeof(float));
  if (!mult) return QP_ERR_OUT_OF_MEMORY;
  for (size_t j = 0; j < npad; j++)
    mult[j] = j < n ? multipliers[n_multipliers == 1 ? 0 : j] : 1.0f;
  const int status = qnnpack_gemm_u8(qnnpack_active_kernels(), x, m, k, x_zp, packed, wsums, w_zps,
                                     n, bias, mult, out_zp, qmin, qmax, out, n);
  free(mult);
  return status;
}

int qnnpack_gemm_prepared_u8(const qnnpack_isa_kernels *kern, const uint8_t *xp, size_t x_stride,
                             const uint32_t *xsum, size_t m, size_t k, int32_t x_zp,
                             const uint8_t *packed, const int32_t *wsums, const int32_t *w_zps,
                             size_t n, const int32_t *bias, const float *mult, int32_t out_zp,
                             int32_t qmin, int32_t qmax, uint8_t *out, size_t out_stride) {
  if (m == 0) return QP_OK;
  const size_t npad = qnnpack_packed_sums_size(n);
  int32_t *scratch = (int32_t *)malloc(npad * 2 * sizeof(int32_t));
  if (!scratch) return QP_ERR_OUT_OF_MEMORY;
  qnnpack_gemm_ctx c = {
      .kern = kern, .m = m, .k = k, .n = n, .x = xp, .x_stride = x_stride, .rows_prepared = 1,
      .k_kernel = qnnpack_xprep_k(kern, k), .packed = packed, .wsums = wsums, .xsum = xsum,
      .mult = mult, .out_zp = out_zp, .qmin = qmin, .qmax = qmax, .out = out,
      .out_stride = out_stride,
  };
  const int status = qnnpack_run(&c, x_zp, w_zps, bias, scratch, scratch + npad);
  free(scratch);
  return status;
}

int qnnpack_gemm_u8(const qnnpack_isa_kernels *kern, const uint8_t *x, size_t m, size_t k,
                    int32_t x_zp, const uint8_t *packed, const int32_t *wsums,
                    const int32_t *w_zps, size_t n, const int32_t *bias, const float *mult,
                    int32_t out_zp, int32_t qmin, int32_t qmax, uint8_t *out, size_t out_stride) {
  if (m == 0) return QP_OK;
  const size_t npad = qnnpack_packed_sums_size(n);
  void *scratch = malloc(npad * 2 * sizeof(int32_t) + m * sizeof(uint32_t));
  if (!scratch) return QP_ERR_OUT_OF_MEMORY;
  int32_t *cbias = (int32_t *)scratch;
  int32_t *wzp = cbias + npad;
  uint32_t *xsum = (uint32_t *)(wzp + npad);
  qnnpack_row_sums(x, m, k, xsum);
  qnnpack_gemm_ctx c = {
      .kern = kern, .m = m, .k = k, .n = n, .x = x, .packed = packed, .wsums = wsums,
      .xsum = xsum, .mult = mult, .out_zp = out_zp, .qmin = qmin, .qmax = qmax, .out = out,
      .out_stride = out_stride,
  };
  const int status = qnnpack_run(&c, x_zp, w_zps, bias, cbias, wzp);
  free(scratch);
  return status;
}

/*
 * Dynamic activation qparams (QNNPACK's dynamic linear: uint8, asymmetric,
 * per tensor), in float32 with exactly the arithmetic of
 * quantplug.affine.choose_qparams (and torch.ao's observers):
 *   lo = min(min(x), 0), hi = max(max(x), 0)
 *   scale = max((hi - lo) / 255, FLT_EPSILON)
 *   zp    = clamp(0 - nearbyint(lo / scale), 0, 255)
 * Infinite inputs are rejected; NaNs are ignored (they quantize to zp).
 * No 2**-12 floor here: that bound is for static activation scales (it
 * keeps QNNPACK's requantization multipliers in range); dynamic outputs
 * are float32 and never requantized.
 */
static int qnnpack_qparams_from_range(float lo, float hi, float *scale, int32_t *zero_point) {
  lo = lo < 0.0f ? lo : 0.0f;
  hi = hi > 0.0f ? hi : 0.0f;
  if (!isfinite(lo) || !isfinite(hi)) return QP_ERR_INVALID_ARGUMENT;
  float s = (hi - lo) / 255.0f;
  if (!isfinite(s)) return QP_ERR_INVALID_ARGUMENT; /* range wider than FLT_MAX */
  if (s < FLT_EPSILON) s = FLT_EPSILON;
  const float z = 0.0f - nearbyintf(lo / s);
  *scale = s;
  *zero_point = z < 0.0f ? 0 : (z > 255.0f ? 255 : (int32_t)z);
  return QP_OK;
}

int qnnpack_choose_qparams_u8(const float *x, size_t n, float *scale, int32_t *zero_point) {
  if ((!x && n) || !scale || !zero_point) return QP_ERR_INVALID_ARGUMENT;
  float lo = 0.0f, hi = 0.0f;
  qnnpack_active_kernels()->minmax(x, n, &lo, &hi);
  return qnnpack_qparams_from_range(lo, hi, scale, zero_point);
}

/* Argument checks shared by the two dynamic linears (m == 0 passes: nothing to do). */
static int qnnpack_check_dynamic(const float *x, size_t m, size_t k, const uint8_t *packed,
                                 size_t packed_size, const int32_t *wsums, const int32_t *w_zps,
                                 const float *w_scales, size_t n, const float *out) {
  if (qnnpack_bad_gemm_shape(n, k, packed_size) || !packed || !wsums || !w_zps || !w_scales)
    return QP_ERR_INVALID_ARGUMENT;
  for (size_t j = 0; j < n; j++) {
    if (w_zps[j] < 0 || w_zps[j] > 255) return QP_ERR_INVALID_ARGUMENT;
    if (!(w_scales[j] > 0.0f) || !isfinite(w_scales[j])) return QP_ERR_INVALID_ARGUMENT;
  }
  if (m && (!x || !out || m > ((size_t)1 << 40) / k)) return QP_ERR_INVALID_ARGUMENT;
  return QP_OK;
}

int qnnpack_linear_dynamic_f32(const float *x, size_t m, size_t k, const uint8_t *packed,
                               size_t packed_size, const int32_t *wsums, const int32_t *w_zps,
                               const float *w_scales, size_t n, const float *bias, uint8_t *x_q,
                               float *out, float *x_scale_out, int32_t *x_zp_out) {
  if (qnnpack_check_dynamic(x, m, k, packed, packed_size, wsums, w_zps, w_scales, n, out) != QP_OK)
    return QP_ERR_INVALID_ARGUMENT;
  if (m == 0) return QP_OK;

  const qnnpack_isa_kernels *kern = qnnpack_active_kernels();
  float lo = 0.0f, hi = 0.0f, x_scale;
  int32_t x_zp;
  kern->minmax(x, m * k, &lo, &hi);
  if (qnnpack_qparams_from_range(lo, hi, &x_scale, &x_zp) != QP_OK)
    return QP_ERR_INVALID_ARGUMENT;

  const size_t npad = qnnpack_packed_sums_size(n);
  const size_t fixed = npad * (2 * sizeof(int32_t) + 2 * sizeof(float)) + m * sizeof(uint32_t);
  void *scratch = malloc(fixed + (x_q ? 0 : m * k));
  if (!scratch) return QP_ERR_OUT_OF_MEMORY;
  int32_t *cbias = (int32_t *)scratch;
  int32_t *wzp = cbias + npad;
  float *dscale = (float *)(wzp + npad);
  float *dbias = dscale + npad;
  uint32_t *xsum = (uint32_t *)(dbias + npad);
  uint8_t *xq = x_q ? x_q : (uint8_t *)scratch + fixed;
  for (size_t j = 0; j < npad; j++) {
    dscale[j] = j < n ? x_scale * w_scales[j] : 0.0f;
    dbias[j] = (j < n && bias) ? bias[j] : 0.0f;
  }
  kern->quant(x, m * k, 1.0f / x_scale, x_zp, xq);
  qnnpack_row_sums(xq, m, k, xsum);

  qnnpack_gemm_ctx c = {
      .kern = kern, .m = m, .k = k, .n = n, .x = xq, .packed = packed, .wsums = wsums,
      .xsum = xsum, .dscale = dscale, .dbias = dbias, .fout = out, .out_stride = n,
  };
  const int status = qnnpack_run(&c, x_zp, w_zps, NULL, cbias, wzp);
  free(scratch);
  if (status != QP_OK) return status;
  if (x_scale_out) *x_scale_out = x_scale;
  if (x_zp_out) *x_zp_out = x_zp;
  return QP_OK;
}

/*
 * Scratch of the per-row dynamic linear, kept per calling thread between calls (up to
 * 16 MB): a fresh malloc of the quantized rows (0.4-1.5 MB for MiniLM's batch-8 layers)
 * comes back as new pages every call, and faulting them in cost ~5% of the layer. Only the
 * calling thread writes it before the parallel loops, which read it; it lives until the
 * thread exits (bounded by the largest call).
 */
#define QNNPACK_SCRATCH_KEEP ((size_t)16 << 20)
static __thread void *qnnpack_tls_scratch;
static __thread size_t qnnpack_tls_scratch_size;

static void *qnnpack_scratch_acquire(size_t bytes) {
  if (bytes > QNNPACK_SCRATCH_KEEP) return malloc(bytes);
  if (bytes > qnnpack_tls_scratch_size) {
    free(qnnpack_tls_scratch);
    qnnpack_tls_scratch_size = 0;
    qnnpack_tls_scratch = malloc(bytes);
    if (!qnnpack_tls_scratch) return NULL;
    qnnpack_tls_scratch_size = bytes;
  }
  return qnnpack_tls_scratch;
}

static void qnnpack_scratch_release(void *p) {
  if (p != qnnpack_tls_scratch) free(p);
}

/* One pass per activation row: range, qparams, quantization straight into the GEMM path's
 * row format, row sum (and the FLIP sign flip in the same pass). */
typedef struct {
  const qnnpack_isa_kernels *kern;
  const float *x;
  size_t k, stride; /* stride: bytes between rows of xp */
  int flip;         /* QNNPACK_XPREP_FLIP: flip and pad to stride with 0x80 */
  uint8_t *xp, *x_q;
  float *rscale;    /* 0 marks a row with an infinity (rejected after the pass) */
  int32_t *rzp;
  uint32_t *xsum;   /* sum_k x_q[i][k] - K * z_i (mod 2**32), what acc_init folds */
} qnnpack_rowq_ctx;

static void qnnpack_quant_rows(void *vctx, size_t begin, size_t end) {
  const qnnpack_rowq_ctx *c = (const qnnpack_rowq_ctx *)vctx;
  const size_t k = c->k;
  for (size_t r = begin; r < end; r++) {
    const float *xr = c->x + r * k;
    float lo = 0.0f, hi = 0.0f, s;
    int32_t z;
    c->kern->minmax(xr, k, &lo, &hi);
    if (qnnpack_qparams_from_range(lo, hi, &s, &z) != QP_OK) {
      c->rscale[r] = 0.0f;
      continue;
    }
    uint8_t *dst = c->xp + r * c->stride;
    c->kern->quant(xr, k, 1.0f / s, z, dst);
    if (c->x_q) memcpy(c->x_q + r * k, dst, k);
    const uint32_t sum = qnnpack_sum_flip_bytes(dst, k, c->flip);
    if (c->flip) memset(dst + k, 0x80, c->stride - k); /* meets zero weights */
    c->rscale[r] = s;
    c->rzp[r] = z;
    c->xsum[r] = sum - (uint32_t)k * (uint32_t)z;
  }
}

int qnnpack_linear_dynamic_rows_f32(const float *x, size_t m, size_t k, const uint8_t *packed,
                                    size_t packed_size, const int32_t *wsums,
                                    const int32_t *w_zps, const float *w_scales, size_t n,
                                    const float *bias, uint8_t *x_q, float *out,
                                    float *x_scales_out, int32_t *x_zps_out) {
  if (qnnpack_check_dynamic(x, m, k, packed, packed_size, wsums, w_zps, w_scales, n, out) != QP_OK)
    return QP_ERR_INVALID_ARGUMENT;
  if (m == 0) return QP_OK;

  const qnnpack_isa_kernels *kern = qnnpack_active_kernels();
  const int flip = kern->xprep == QNNPACK_XPREP_FLIP;
  /* FLIP rows are the microkernel's input as they are; NONE and WIDEN16 rows are plain uint8
   * (qnnpack_run widens the latter). */
  const size_t stride = flip ? (k + QNNPACK_KR - 1) / QNNPACK_KR * QNNPACK_KR : k;
  const size_t npad = qnnpack_packed_sums_size(n);
  const size_t fixed = npad * (2 * sizeof(int32_t) + 2 * sizeof(float)) +
                       m * (sizeof(uint32_t) + sizeof(int32_t) + sizeof(float));
  void *scratch = qnnpack_scratch_acquire(fixed + m * stride + 64);
  if (!scratch) return QP_ERR_OUT_OF_MEMORY;
  int32_t *cbias = (int32_t *)scratch;
  int32_t *wzp = cbias + npad;
  float *wscale = (float *)(wzp + npad);
  float *dbias = wscale + npad;
  uint32_t *xsum = (uint32_t *)(dbias + npad);
  int32_t *rzp = (int32_t *)(xsum + m);
  float *rscale = (float *)(rzp + m);
  uint8_t *xp = (uint8_t *)scratch + fixed;
  for (size_t j = 0; j < npad; j++) {
    wscale[j] = j < n ? w_scales[j] : 0.0f;
    dbias[j] = (j < n && bias) ? bias[j] : 0.0f;
  }
  qnnpack_rowq_ctx q = {.kern = kern, .x = x, .k = k, .stride = stride, .flip = flip, .xp = xp,
                        .x_q = x_q, .rscale = rscale, .rzp = rzp, .xsum = xsum};
  qp_parallel_for(m, k >= 16384 ? 1 : 16384 / k, qnnpack_quant_rows, &q);
  for (size_t i = 0; i < m; i++) {
    if (rscale[i] == 0.0f) { /* a row with an infinity */
      qnnpack_scratch_release(scratch);
      return QP_ERR_INVALID_ARGUMENT;
    }
  }
  /* acc_init_rows folds the row zero points (cbias, filled with x_zp = 0, is unused) */
  qnnpack_gemm_ctx c = {
      .kern = kern, .m = m, .k = k, .n = n, .x = xp, .rows_prepared = flip, .x_stride = stride,
      .k_kernel = stride, .packed = packed, .wsums = wsums, .xsum = xsum, .dbias = dbias,
      .fout = out, .out_stride = n, .rzp = rzp, .rscale = rscale, .wscale = wscale,
  };
  const int status = qnnpack_run(&c, 0, w_zps, NULL, cbias, wzp);
  if (status == QP_OK) {
    if (x_scales_out) memcpy(x_scales_out, rscale, m * sizeof(float));
    if (x_zps_out) memcpy(x_zps_out, rzp, m * sizeof(int32_t));
  }
  qnnpack_scratch_release(scratch);
  return status;
}
