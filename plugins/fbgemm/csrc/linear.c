/*
 * Linear drivers: argument checks, ISA dispatch, tiling and threading around the
 * 4x16c4 microkernels, for the static (uint8 -> uint8) and dynamic (fp32 -> fp32) linear.
 *
 * Work is split into tiles of FB_MC rows x FB_NCB (8x48 kernel: FB_NCB_WIDE) packed column
 * blocks; tiles run on the shared thread pool (qp_parallel_for), each writes a disjoint part
 * of the output, so results do not depend on the thread count. Nothing is allocated per call
 * except the dynamic linear's quantized-activation buffer, which is a per-thread scratch
 * that only grows.
 */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fbgemm_kernels.h"
#include "quantplug/qp_requant.h"
#include "quantplug/qp_runtime.h"

#if defined(FB_HAVE_X86)
const uint32_t qp_plugin_compiled_isas =
    (1u << QP_ISA_AVX2) | (1u << QP_ISA_AVX512) | (1u << QP_ISA_AVX512VNNI);
#else
const uint32_t qp_plugin_compiled_isas = 0; /* scalar only off x86 */
#endif


static fb_gemm_impl fb_impl_for(int isa) {
  fb_gemm_impl impl = {"fbgemm_qu8_gemm_ukernel_4x16c4__scalar",
                       fbgemm_qu8_gemm_ukernel_4x16c4__scalar, fb_epilogue_u8__scalar,
                       fb_epilogue_f32__scalar, 0, NULL, NULL, NULL,
                       fb_epilogue_rows__scalar};
#if defined(FB_HAVE_X86)
  switch (isa) {
    case QP_ISA_AVX512VNNI:
      impl = (fb_gemm_impl){"fbgemm_qu8_gemm_ukernel_4x16c4__avx512vnni",
                            fbgemm_qu8_gemm_ukernel_4x16c4__avx512vnni, fb_epilogue_u8__avx512,
                            fb_epilogue_f32__avx512, 0,
                            fbgemm_qu8_gemm_ukernel_8x48c4__avx512vnni,
                            fbgemm_qu8_gemv_ukernel_2x64c4__avx512vnni,
                            "fbgemm_qu8_gemm_ukernel_8x48c4__avx512vnni",
                            fb_epilogue_rows__avx512,
                            fbgemm_qu8_gemm_ukernel_8x48c4_ind__avx512vnni};
      break;
    case QP_ISA_AVX512:
      impl = (fb_gemm_impl){"fbgemm_qu8_gemm_ukernel_4x16c4__avx512",
                            fbgemm_qu8_gemm_ukernel_4x16c4__avx512, fb_epilogue_u8__avx512,
                            fb_epilogue_f32__avx512, 1, NULL, NULL, NULL,
                            fb_epilogue_rows__avx512};
      break;
    case QP_ISA_AVX2:
      impl = (fb_gemm_impl){"fbgemm_qu8_gemm_ukernel_4x16c4__avx2",
                            fbgemm_qu8_gemm_ukernel_4x16c4__avx2, fb_epilogue_u8__avx2,
                            fb_epilogue_f32__avx2, 1, NULL, NULL, NULL,
                            fb_epilogue_rows__avx2};
      break;
    default:
      break;
  }
#else
  (void)isa;
#endif
  return impl;
}

fb_gemm_impl fb_select(void) { return fb_impl_for(qp_active_isa()); }

const char *fbgemm_gemm_ukernel_name(void) {
  const fb_gemm_impl impl = fb_select();
  return impl.wide_name != NULL ? impl.wide_name : impl.name;
}

int fb_any_above_127(const uint8_t *x, size_t n) {
  uint64_t bits = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    memcpy(&v, x + i, 8);
    bits |= v;
  }
  for (; i < n; i++) bits |= x[i];
  return (bits & 0x8080808080808080ull) != 0;
}

int fb_valid_scale(float s) { return s > 0.0f && isfinite(s); }

void fb_block_setup(const fb_gemm_params *c, size_t n0, size_t nc, fb_block_params *p) {
  memset(p, 0, sizeof(*p));
  const uint32_t kxz = (uint32_t)c->k * (uint32_t)c->x_zp;
  if (c->row_scales != NULL) {
    /* per-row dynamic: the row terms (scale, zero point) are applied by epi_rows */
    memcpy(p->mult, c->ws + n0, nc * sizeof(float));
    memcpy(p->col, c->rs + n0, nc * sizeof(int32_t));
    memcpy(p->wz, c->wz + n0, nc * sizeof(int32_t));
    if (c->bias != NULL) memcpy(p->bias, c->bias + n0, nc * sizeof(float));
    return;
  }
  if (c->dynamic) {
    /* per call for every block (x_scale / x_zp change each call): branch-free loops that the
     * compiler vectorizes; this setup was ~30% of the GEMV's time at M = 1, N = 768 (perf) */
    const float *ws = c->ws + n0;
    const int32_t *wz = c->wz + n0, *rs = c->rs + n0;
    for (size_t j = 0; j < nc; j++) {
      p->mult[j] = c->x_scale * ws[j];
      p->col[j] = (int32_t)(kxz * (uint32_t)wz[j] - (uint32_t)c->x_zp * (uint32_t)rs[j]);
      p->wz[j] = wz[j];
    }
    if (c->bias != NULL) memcpy(p->bias, c->bias + n0, nc * sizeof(float));
    return;
  }
  for (size_t j = 0; j < nc; j++) {
    const size_t col = n0 + j;
    const int32_t wz = c->wz[col];
    /* row-independent part of sum_k (x - x_zp)(w - w_zp): -x_zp * sum(w) + K * x_zp * w_zp */
    uint32_t fold = kxz * (uint32_t)wz - (uint32_t)c->x_zp * (uint32_t)c->rs[col];
    const float acc_scale = c->x_scale * c->ws[col];
    p->mult[j] = acc_scale / c->out_scale;
    if (c->bias != NULL) fold += (uint32_t)fb_f32_to_i32_sat(nearbyintf(c->bias[col] / acc_scale));
    p->col[j] = (int32_t)fold;
    p->wz[j] = wz;
  }
}

void fb_blocks_setup(size_t k, size_t n, const int32_t *row_sums, const int32_t *w_zps,
                     const float *w_scales, const float *bias, float x_scale, int32_t x_zp,
                     float out_scale, int per_row, fb_block_params *blocks) {
  /* fb_block_setup's per-row case only copies the constant columns: any non-NULL row_scales
   * selects it (the row terms are applied per call by the epilogue) */
  static const float any_row_scale = 1.0f;
  fb_gemm_params c;
  memset(&c, 0, sizeof(c));
  c.k = k;
  c.n = n;
  c.rs = row_sums;
  c.wz = w_zps;
  c.ws = w_scales;
  c.bias = bias;
  c.x_scale = x_scale;
  c.out_scale = out_scale;
  c.x_zp = x_zp;
  c.row_scales = per_row ? &any_row_scale : NULL;
  for (size_t b = 0; b * FB_NR < n; b++)
    fb_block_setup(&c, b * FB_NR, n - b * FB_NR < FB_NR ? n - b * FB_NR : FB_NR, &blocks[b]);
}

/* Wide path: FB_WMR-row x FB_WNB-block kernels (GEMV with FB_VNB blocks for one row), each
 * block's accumulators then go through the same epilogue as the 4x16 path. */
static void fb_gemm_rows_wide(const fb_gemm_params *c, const int32_t *xs, const uint8_t *a,
                              size_t a_stride, size_t mc, size_t b0, size_t b1, void *out,
                              size_t out_stride) {
  int32_t acc[FB_VNB * FB_WMR * FB_NR];
  fb_block_params local[FB_VNB];
  const size_t kg = (c->k + FB_KR - 1) / FB_KR, bstride = kg * FB_NR * FB_KR;
  /* one or two rows: the GEMV kernel, FB_VNB blocks per call (fewer epilogue switches) */
  const size_t step = mc <= 2 ? FB_VNB : FB_WNB;
  for (size_t b = b0, nbk; b < b1; b += nbk) {
    nbk = b1 - b < step ? b1 - b : step;
    /* four blocks left for 3-block calls: 2 + 2 keeps 16 chains per call, where 3 + 1 would
     * run a 1-block call (8 chains, one weight load per 8 vpdpbusd) */
    if (step == 3 && b1 - b == 4) nbk = 2;
    const fb_block_params *params = c->pre != NULL ? c->pre + b : local;
    if (c->pre == NULL)
      for (size_t t = 0; t < nbk; t++) {
        const size_t n0 = (b + t) * FB_NR;
        fb_block_setup(c, n0, c->n - n0 < FB_NR ? c->n - n0 : FB_NR, &local[t]);
      }
    const int8_t *wb = c->w + b * bstride;
    for (size_t i = 0; i < mc; i += FB_WMR) {
      const size_t mr = mc - i < FB_WMR ? mc - i : FB_WMR;
      if (mc <= 2)
        c->impl.gemv(mr, nbk, c->k, a + i * a_stride, a_stride, wb, bstride, acc);
      else
        c->impl.wide(mr, nbk, c->k, a + i * a_stride, a_stride, wb, bstride, acc);
      const int32_t *rows = c->has_wz ? xs + i : NULL;
      for (size_t t = 0; t < nbk; t++) {
        const size_t n0 = (b + t) * FB_NR, nc = c->n - n0 < FB_NR ? c->n - n0 : FB_NR;
        const int32_t *bacc = acc + t * FB_WMR * FB_NR;
        if (c->row_scales != NULL)
          c->impl.epi_rows(mr, nc, bacc, rows, &params[t], c->row_scales + i, c->row_zps + i,
                           (int32_t)c->k, c->bias != NULL, (float *)out + i * out_stride + n0,
                           out_stride);
        else if (c->dynamic)
          c->impl.epi_f32(mr, nc, bacc, rows, &params[t], c->bias != NULL,
                          (float *)out + i * out_stride + n0, out_stride);
        else
          c->impl.epi_u8(mr, nc, bacc, rows, &params[t], c->out_zp, c->qmin, c->qmax,
                         (uint8_t *)out + i * out_stride + n0, out_stride);
      }
    }
  }
}

void fb_gemm_rows_indirect(const fb_gemm_params *c, const uint8_t *const *ptrs, size_t nseg,
                           size_t mc, size_t b0, size_t b1, uint8_t *out, size_t out_stride) {
  int32_t acc[FB_VNB * FB_WMR * FB_NR];
  const size_t kg = (c->k + FB_KR - 1) / FB_KR, bstride = kg * FB_NR * FB_KR;
  for (size_t b = b0, nbk; b < b1; b += nbk) {
    nbk = b1 - b < FB_WNB ? b1 - b : FB_WNB;
    if (b1 - b == 4) nbk = 2; /* 2 + 2, as in fb_gemm_rows_wide */
    const fb_block_params *params = c->pre + b;
    const int8_t *wb = c->w + b * bstride;
    for (size_t i = 0; i < mc; i += FB_WMR) {
      const size_t mr = mc - i < FB_WMR ? mc - i : FB_WMR;
      c->impl.wide_ind(mr, nbk, nseg, c->k / nseg, ptrs + i * nseg, wb, bstride, acc);
      for (size_t t = 0; t < nbk; t++) {
        const size_t n0 = (b + t) * FB_NR, nc = c->n - n0 < FB_NR ? c->n - n0 : FB_NR;
        c->impl.epi_u8(mr, nc, acc + t * FB_WMR * FB_NR, NULL, &params[t], c->out_zp, c->qmin,
                       c->qmax, out + i * out_stride + n0, out_stride);
      }
    }
  }
}

void fb_gemm_rows(const fb_gemm_params *c, const uint8_t *a, size_t a_stride, size_t mc,
                  size_t b0, size_t b1, void *out, size_t out_stride) {
  int32_t acc[FB_MR * FB_NR];
  int32_t xs[FB_MC];
  fb_block_params local;
  if (c->has_wz)
    for (size_t i = 0; i < mc; i++) {
      const uint8_t *row = a + i * a_stride;
      uint32_t s = 0;
      for (size_t p = 0; p < c->k; p++) s += row[p];
      xs[i] = (int32_t)s;
    }
  if (c->impl.wide != NULL) {
    fb_gemm_rows_wide(c, xs, a, a_stride, mc, b0, b1, out, out_stride);
    return;
  }
  const size_t kg = (c->k + FB_KR - 1) / FB_KR;
  for (size_t b = b0; b < b1; b++) {
    const size_t n0 = b * FB_NR, nc = c->n - n0 < FB_NR ? c->n - n0 : FB_NR;
    const fb_block_params *params = c->pre != NULL ? c->pre + b : &local;
    if (c->pre == NULL) fb_block_setup(c, n0, nc, &local);
    const int8_t *wb = c->w + b * kg * FB_NR * FB_KR;
    for (size_t i = 0; i < mc; i += FB_MR) {
      const size_t mr = mc - i < FB_MR ? mc - i : FB_MR;
      c->impl.ukernel(mr, c->k, a + i * a_stride, a_stride, wb, acc, c->split);
      const int32_t *rows = c->has_wz ? xs + i : NULL;
      if (c->row_scales != NULL)
        c->impl.epi_rows(mr, nc, acc, rows, params, c->row_scales + i, c->row_zps + i,
                         (int32_t)c->k, c->bias != NULL, (float *)out + i * out_stride + n0,
                         out_stride);
      else if (c->dynamic)
        c->impl.epi_f32(mr, nc, acc, rows, params, c->bias != NULL,
                        (float *)out + i * out_stride + n0, out_stride);
      else
        c->impl.epi_u8(mr, nc, acc, rows, params, c->out_zp, c->qmin, c->qmax,
                       (uint8_t *)out + i * out_stride + n0, out_stride);
    }
  }
}

typedef struct {
  fb_gemm_params p;
  const uint8_t *x;
  size_t m, nb, ntiles, mtiles;
  size_t ncb; /* packed blocks per column tile */
  size_t panel_mtiles; /* task order: row tiles per row panel (see fb_linear_run) */
  void *out;
  size_t out_elem;
} fb_linear_ctx;

#define FB_ROW_PANEL_BYTES ((size_t)4 << 20)

/* Tile t of the panel order: row panels of c->panel_mtiles row tiles outermost, then the
 * column tiles, then the row tiles of the panel (the last panel may have fewer). */
static void fb_tile_of(const fb_linear_ctx *c, size_t t, size_t *mt, size_t *nt) {
  const size_t per_panel = c->panel_mtiles * c->ntiles, panel = t / per_panel;
  const size_t r = t % per_panel, first = panel * c->panel_mtiles;
  const size_t rows = c->mtiles - first < c->panel_mtiles ? c->mtiles - first : c->panel_mtiles;
  *mt = first + r % rows;
  *nt = r / rows;
}

static void fb_linear_task(void *vctx, size_t begin, size_t end) {
  const fb_linear_ctx *c = (const fb_linear_ctx *)vctx;
  for (size_t t = begin; t < end; t++) {
    size_t mt, nt;
    fb_tile_of(c, t, &mt, &nt);
    const size_t m0 = mt * FB_MC;
    const size_t mc = c->m - m0 < FB_MC ? c->m - m0 : FB_MC;
    const size_t b0 = nt * c->ncb, b1 = b0 + c->ncb < c->nb ? b0 + c->ncb : c->nb;
    if (c->p.row_scales != NULL) { /* this tile's rows' qparams */
      fb_gemm_params p = c->p;
      p.row_scales += m0;
      p.row_zps += m0;
      fb_gemm_rows(&p, c->x + m0 * c->p.k, c->p.k, mc, b0, b1,
                   (char *)c->out + m0 * c->p.n * c->out_elem, c->p.n);
      continue;
    }
    fb_gemm_rows(&c->p, c->x + m0 * c->p.k, c->p.k, mc, b0, b1,
                 (char *)c->out + m0 * c->p.n * c->out_elem, c->p.n);
  }
}

static void fb_linear_run(fb_linear_ctx *c) {
  c->nb = (c->p.n + FB_NR - 1) / FB_NR;
  c->mtiles = (c->m + FB_MC - 1) / FB_MC;
  /* With the 8x48 kernel a tile is two 3-block calls wide (a 4-block tile runs 2 + 2), unless
   * that leaves too few tiles to balance the threads (small N and M). */
  const size_t wide_tiles = c->mtiles * ((c->nb + FB_NCB_WIDE - 1) / FB_NCB_WIDE);
  c->ncb = c->p.impl.wide != NULL && c->m > 2 &&
                   wide_tiles >= 4 * (size_t)qp_get_num_threads()
               ? FB_NCB_WIDE
               : FB_NCB;
  c->ntiles = (c->nb + c->ncb - 1) / c->ncb;
  /* Row panels of up to FB_ROW_PANEL_BYTES of quantized activations; within a panel every
   * row tile is swept for a column tile before moving on. Each weight panel (ncb blocks:
   * 384 KB at K = 4096) is then read from memory once per row panel and reused from L2 for
   * all its rows, while the activations stream from L3 (kept there: a few MB, where the
   * weights of a large layer would not be, 16 MB at 4096 x 4096, with other jobs sharing
   * the L3). Per 8-row kernel call that moves fewer bytes too: activations are reused over
   * the 96 columns of a tile, the weights over only the 64 rows of a row tile. Measured at
   * K = 4096 against rows outermost (the order above 256 KB before): M = 128 / 512 / 1024
   * +1-4%, less variance (others' L3 traffic no longer evicts the streamed weights); at
   * K = 768 no different. Tiles write disjoint outputs: the order changes no result. */
  const size_t tile_bytes = FB_MC * c->p.k;
  c->panel_mtiles = FB_ROW_PANEL_BYTES / tile_bytes;
  if (c->panel_mtiles < 1) c->panel_mtiles = 1;
  if (c->panel_mtiles > c->mtiles) c->panel_mtiles = c->mtiles;
  const size_t ntasks = c->mtiles * c->ntiles;
  if (ntasks == 0) return;
  if (c->m * c->p.n * c->p.k < FB_PARALLEL_MIN_MACS)
    fb_linear_task(c, 0, ntasks);
  else
    qp_parallel_for(ntasks, 1, fb_linear_task, c);
}

int fb_check_weights(const int8_t *packed, const int32_t *row_sums, const float *w_scales,
                     const int32_t *w_zps, size_t n, size_t k, int *has_wz) {
  if (packed == NULL || row_sums == NULL || w_scales == NULL || w_zps == NULL ||
      fbgemm_packed_linear_size(n, k) == 0)
    return QP_ERR_INVALID_ARGUMENT;
  /* runs on every call of the unprepared paths: branch-free so that it vectorizes
   * (s > 0 && s <= FLT_MAX is fb_valid_scale: NaN and inf fail it) */
  int bad = 0, any_wz = 0;
  for (size_t j = 0; j < n; j++) {
    const float s = w_scales[j];
    const int32_t z = w_zps[j];
    bad |= !((s > 0.0f) & (s <= FLT_MAX)) | (z < -128) | (z > 127);
    any_wz |= z != 0;
  }
  *has_wz = any_wz;
  return bad ? QP_ERR_INVALID_ARGUMENT : QP_OK;
}

int fb_check_requant(float x_scale, int32_t x_zp, float out_scale, int32_t out_zp, int32_t qmin,
                     int32_t qmax) {
  if (!fb_valid_scale(x_scale) || !fb_valid_scale(out_scale) || x_zp < 0 || x_zp > 255 ||
      out_zp < 0 || out_zp > 255 || qmin < 0 || qmax > 255 || qmin > qmax)
    return QP_ERR_INVALID_ARGUMENT;
  return QP_OK;
}

int fb_check_bias(const float *bias, size_t n) {
  if (bias != NULL)
    for (size_t j = 0; j < n; j++)
      if (!isfinite(bias[j])) return QP_ERR_INVALID_ARGUMENT;
  return QP_OK;
}

/* The fields both static entry points share (the rest is set by the caller). */
static void fb_static_ctx(fb_linear_ctx *c, const uint8_t *x, size_t m, size_t k, size_t n,
                          const int8_t *packed, int32_t out_zp, int32_t qmin, int32_t qmax,
                          uint32_t flags, uint8_t *out) {
  memset(c, 0, sizeof(*c));
  c->p.impl = fb_select();
  c->p.k = k;
  c->p.n = n;
  c->p.w = packed;
  c->p.out_zp = out_zp;
  c->p.qmin = qmin;
  c->p.qmax = qmax;
  /* maddubs paths: 7-bit activations (reduce_range) cannot saturate; 8-bit ones take the
   * exact split form unless the caller asked for FBGEMM's raw behaviour. */
  c->p.split = c->p.impl.uses_maddubs && !(flags & FBGEMM_FLAG_RAW_MADDUBS) &&
               fb_any_above_127(x, m * k);
  c->x = x;
  c->m = m;
  c->out = out;
  c->out_elem = 1;
}

int fbgemm_linear_u8s8(const uint8_t *x, size_t m, size_t k, float x_scale, int32_t x_zp,
                       const int8_t *packed, const int32_t *row_sums, const float *w_scales,
                       const int32_t *w_zps, size_t n, const float *bias, float out_scale,
                       int32_t out_zp, int32_t qmin, int32_t qmax, uint32_t flags,
                       uint8_t *out) {
  int has_wz;
  if (fb_check_weights(packed, row_sums, w_scales, w_zps, n, k, &has_wz) != QP_OK ||
      fb_check_requant(x_scale, x_zp, out_scale, out_zp, qmin, qmax) != QP_OK ||
      fb_check_bias(bias, n) != QP_OK || (m > 0 && (x == NULL || out == NULL)) ||
      (flags & ~(uint32_t)FBGEMM_FLAG_RAW_MADDUBS))
    return QP_ERR_INVALID_ARGUMENT;
  if (m == 0) return QP_OK;
  fb_linear_ctx c;
  fb_static_ctx(&c, x, m, k, n, packed, out_zp, qmin, qmax, flags, out);
  c.p.rs = row_sums;
  c.p.wz = w_zps;
  c.p.ws = w_scales;
  c.p.bias = bias;
  c.p.x_scale = x_scale;
  c.p.out_scale = out_scale;
  c.p.x_zp = x_zp;
  c.p.has_wz = has_wz;
  fb_linear_run(&c);
  return QP_OK;
}

/* ----------------------------------------------------------- prepared -- */
/* Static qparams do not change between calls, so the per-block epilogue parameters
 * (multipliers, folded int32 bias and zero-point terms: divisions and roundings per column)
 * are computed once; the prepared call then only checks what can change per call. */

size_t fbgemm_linear_prepared_size(size_t n) {
  if (n == 0 || n > ((size_t)1 << 31)) return 0;
  return (n + FB_NR - 1) / FB_NR * sizeof(fb_block_params) + sizeof(fb_block_params);
}

int fbgemm_linear_prepare(size_t k, float x_scale, int32_t x_zp, const int8_t *packed,
                          const int32_t *row_sums, const float *w_scales, const int32_t *w_zps,
                          size_t n, const float *bias, float out_scale, void *prepared) {
  int has_wz;
  if (prepared == NULL ||
      fb_check_weights(packed, row_sums, w_scales, w_zps, n, k, &has_wz) != QP_OK ||
      fb_check_requant(x_scale, x_zp, out_scale, 0, 0, 255) != QP_OK ||
      fb_check_bias(bias, n) != QP_OK)
    return QP_ERR_INVALID_ARGUMENT;
  fb_block_params *blocks = (fb_block_params *)prepared;
  const size_t nb = (n + FB_NR - 1) / FB_NR;
  fb_blocks_setup(k, n, row_sums, w_zps, w_scales, bias, x_scale, x_zp, out_scale, 0, blocks);
  /* trailer block: flags (has_wz) and the k / n it was prepared for */
  memset(&blocks[nb], 0, sizeof(fb_block_params));
  blocks[nb].col[0] = has_wz;
  blocks[nb].col[1] = (int32_t)k;
  blocks[nb].col[2] = (int32_t)n;
  blocks[nb].col[3] = x_zp;
  return QP_OK;
}

int fbgemm_linear_u8s8_prepared(const uint8_t *x, size_t m, size_t k, const int8_t *packed,
                                const void *prepared, size_t n, int32_t out_zp, int32_t qmin,
                                int32_t qmax, uint32_t flags, uint8_t *out) {
  if (packed == NULL || prepared == NULL || fbgemm_packed_linear_size(n, k) == 0 ||
      out_zp < 0 || out_zp > 255 || qmin < 0 || qmax > 255 || qmin > qmax ||
      (m > 0 && (x == NULL || out == NULL)) || (flags & ~(uint32_t)FBGEMM_FLAG_RAW_MADDUBS))
    return QP_ERR_INVALID_ARGUMENT;
  const fb_block_params *blocks = (const fb_block_params *)prepared;
  const size_t nb = (n + FB_NR - 1) / FB_NR;
  if (blocks[nb].col[1] != (int32_t)k || blocks[nb].col[2] != (int32_t)n)
    return QP_ERR_INVALID_ARGUMENT; /* prepared for another weight */
  if (m == 0) return QP_OK;
  fb_linear_ctx c;
  fb_static_ctx(&c, x, m, k, n, packed, out_zp, qmin, qmax, flags, out);
  c.p.pre = blocks;
  c.p.x_zp = blocks[nb].col[3];
  c.p.has_wz = blocks[nb].col[0];
  fb_linear_run(&c);
  return QP_OK;
}

/* ------------------------------------------------------------ dynamic -- */

typedef struct {
  uint8_t *p;
  size_t n;
} fb_scratch_t;

static pthread_key_t fb_scratch_key;
static pthread_once_t fb_scratch_once = PTHREAD_ONCE_INIT;
static int fb_scratch_key_ok = 0;

static void fb_scratch_free(void *v) {
  fb_scratch_t *s = (fb_scratch_t *)v;
  free(s->p);
  free(s);
}

static void fb_scratch_init(void) {
  fb_scratch_key_ok = pthread_key_create(&fb_scratch_key, fb_scratch_free) == 0;
}

/* A per-thread buffer of at least n bytes, reused across calls (freed at thread exit). */
uint8_t *fb_scratch(size_t n) {
  pthread_once(&fb_scratch_once, fb_scratch_init);
  if (!fb_scratch_key_ok) return NULL;
  fb_scratch_t *s = (fb_scratch_t *)pthread_getspecific(fb_scratch_key);
  if (s == NULL) {
    s = (fb_scratch_t *)calloc(1, sizeof(*s));
    if (s == NULL || pthread_setspecific(fb_scratch_key, s) != 0) {
      free(s);
      return NULL;
    }
  }
  if (s->n < n) {
    uint8_t *p = (uint8_t *)malloc(n);
    if (p == NULL) return NULL;
    free(s->p);
    s->p = p;
    s->n = n;
  }
  return s->p;
}

typedef size_t (*fb_quantize_fn)(const float *x, size_t n, float inv_scale, int32_t zp,
                                 int32_t qmin, int32_t qmax, uint8_t *out);

typedef struct {
  const float *x;
  uint8_t *q;
  size_t len;
  float inv_scale;
  int32_t zp, qmin, qmax;
  fb_quantize_fn fn;
} fb_quant_ctx;

static void fb_quant_task(void *vctx, size_t begin, size_t end) {
  const fb_quant_ctx *c = (const fb_quant_ctx *)vctx;
  const size_t chunk = 4096;
  const size_t b = begin * chunk, e = end * chunk < c->len ? end * chunk : c->len;
  c->fn(c->x + b, e - b, c->inv_scale, c->zp, c->qmin, c->qmax, c->q + b);
}

/* min and max of x; non-zero when x holds inf or NaN. */
static int fb_minmax_f32__scalar(const float *x, size_t len, float *mn_out, float *mx_out) {
  float mn = x[0], mx = x[0], bad = 0.0f;
  for (size_t i = 0; i < len; i++) {
    const float v = x[i];
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
    bad += v - v; /* NaN exactly for inf and NaN inputs */
  }
  *mn_out = mn;
  *mx_out = mx;
  return bad != 0.0f;
}

typedef int (*fb_minmax_fn)(const float *x, size_t n, float *mn, float *mx);

/* Argument checks both dynamic entry points share (has_wz: any non-zero weight zero point). */
static int fb_dynamic_check(const float *x, size_t m, size_t k, const int8_t *packed,
                            const int32_t *row_sums, const float *w_scales, const int32_t *w_zps,
                            size_t n, const float *bias, int32_t act_qmin, int32_t act_qmax,
                            const float *out, int *has_wz) {
  if (fb_check_weights(packed, row_sums, w_scales, w_zps, n, k, has_wz) != QP_OK ||
      fb_check_bias(bias, n) != QP_OK || (m > 0 && (x == NULL || out == NULL)) ||
      act_qmin < 0 || act_qmax > 255 || act_qmin >= act_qmax)
    return QP_ERR_INVALID_ARGUMENT;
  return QP_OK;
}

/* The min / max and quantize functions of the active ISA (SIMD and scalar give the same values:
 * min / max are exact, the quantization does the same float32 operations). */
static void fb_dynamic_fns(fb_minmax_fn *minmax, fb_quantize_fn *quantize) {
  *minmax = fb_minmax_f32__scalar;
  *quantize = fb_quantize_row_u8__scalar;
#if defined(FB_HAVE_X86)
  const int isa = qp_active_isa();
  if (isa == QP_ISA_AVX512 || isa == QP_ISA_AVX512VNNI) {
    *minmax = fb_minmax_f32__avx512;
    *quantize = fb_quantize_row_u8__avx512;
  }
#endif
}

/* x [len] -> q with one scale / zero point chosen from its min / max (non-zero: inf or NaN). */
static int fb_quant_tensor(const float *x, size_t len, int32_t act_qmin, int32_t act_qmax,
                           uint8_t *q, float *scale_out, int32_t *zp_out) {
  fb_minmax_fn minmax;
  fb_quantize_fn quantize;
  fb_dynamic_fns(&minmax, &quantize);
  float mn, mx, scale;
  int32_t zp;
  if (minmax(x, len, &mn, &mx) ||
      fbgemm_choose_qparams(mn, mx, act_qmin, act_qmax, &scale, &zp) != QP_OK)
    return QP_ERR_INVALID_ARGUMENT;
  fb_quant_ctx qc = {x, q, len, 1.0f / scale, zp, act_qmin, act_qmax, quantize};
  const size_t nchunks = (len + 4095) / 4096;
  if (len < ((size_t)1 << 16))
    fb_quant_task(&qc, 0, nchunks);
  else
    qp_parallel_for(nchunks, 4, fb_quant_task, &qc);
  *scale_out = scale;
  *zp_out = zp;
  return QP_OK;
}

/* The GEMM of a dynamic linear on the quantized rows q [m, k] (per-tensor qparams in x_scale /
 * x_zp, or per-row ones in row_scales / row_zps when those are not NULL). pre: a plan's
 * per-row epilogue blocks (then bias is only tested for NULL), or NULL to set blocks up here. */
static void fb_dynamic_gemm(const uint8_t *q, size_t m, size_t k, const int8_t *packed,
                            const int32_t *row_sums, const float *w_scales, const int32_t *w_zps,
                            size_t n, const float *bias, int has_wz, int32_t act_qmax,
                            float x_scale, int32_t x_zp, const float *row_scales,
                            const int32_t *row_zps, const fb_block_params *pre, float *out) {
  fb_linear_ctx c;
  memset(&c, 0, sizeof(c));
  c.p.impl = fb_select();
  c.p.k = k;
  c.p.n = n;
  c.p.w = packed;
  c.p.rs = row_sums;
  c.p.wz = w_zps;
  c.p.ws = w_scales;
  c.p.bias = bias;
  c.p.x_scale = x_scale;
  c.p.x_zp = x_zp;
  c.p.has_wz = has_wz;
  c.p.split = c.p.impl.uses_maddubs && act_qmax > 127; /* exact on the int16 pair paths */
  c.p.dynamic = 1;
  c.p.row_scales = row_scales;
  c.p.row_zps = row_zps;
  c.p.pre = pre;
  c.x = q;
  c.m = m;
  c.out = out;
  c.out_elem = sizeof(float);
  fb_linear_run(&c);
}

int fbgemm_linear_dynamic_f32(const float *x, size_t m, size_t k, const int8_t *packed,
                              const int32_t *row_sums, const float *w_scales,
                              const int32_t *w_zps, size_t n, const float *bias,
                              int32_t act_qmin, int32_t act_qmax, float *out,
                              float *x_scale_out, int32_t *x_zp_out) {
  int has_wz;
  if (fb_dynamic_check(x, m, k, packed, row_sums, w_scales, w_zps, n, bias, act_qmin, act_qmax,
                       out, &has_wz) != QP_OK)
    return QP_ERR_INVALID_ARGUMENT;
  if (m == 0) return QP_OK;
  const size_t len = m * k;
  uint8_t *q = fb_scratch(len);
  if (q == NULL) return QP_ERR_OUT_OF_MEMORY;
  float scale;
  int32_t zp;
  if (fb_quant_tensor(x, len, act_qmin, act_qmax, q, &scale, &zp) != QP_OK)
    return QP_ERR_INVALID_ARGUMENT; /* inf or NaN in x */
  if (x_scale_out != NULL) *x_scale_out = scale;
  if (x_zp_out != NULL) *x_zp_out = zp;
  fb_dynamic_gemm(q, m, k, packed, row_sums, w_scales, w_zps, n, bias, has_wz, act_qmax, scale, zp,
                  NULL, NULL, NULL, out);
  return QP_OK;
}

/* ------------------------------------------------------ dynamic per row -- */

typedef struct {
  const float *x;
  uint8_t *q;
  size_t k;
  int32_t qmin, qmax;
  float *scales;
  int32_t *zps;
  fb_minmax_fn minmax;
  fb_quantize_fn quantize;
  int bad; /* set (atomically) when a row holds inf / NaN */
} fb_row_quant_ctx;

/* Rows [begin, end): min / max, qparams, quantize; the row is re-read from L1. */
static void fb_row_quant_task(void *vctx, size_t begin, size_t end) {
  fb_row_quant_ctx *c = (fb_row_quant_ctx *)vctx;
  for (size_t i = begin; i < end; i++) {
    const float *row = c->x + i * c->k;
    float mn, mx, scale;
    int32_t zp;
    if (c->minmax(row, c->k, &mn, &mx) ||
        fbgemm_choose_qparams(mn, mx, c->qmin, c->qmax, &scale, &zp) != QP_OK) {
      __atomic_store_n(&c->bad, 1, __ATOMIC_RELAXED);
      return;
    }
    c->scales[i] = scale;
    c->zps[i] = zp;
    c->quantize(row, c->k, 1.0f / scale, zp, c->qmin, c->qmax, c->q + i * c->k);
  }
}

/* Quantizes x into scratch, per row (per_row) or per tensor with the tensor's qparams repeated
 * for every row, and runs the per-row GEMM; the chosen qparams go to *scales_out / *zps_out
 * (pointers into the scratch, valid until the thread's next dynamic call). */
static int fb_dynamic_quant_rows(const float *x, size_t m, size_t k, int per_row, int32_t act_qmin,
                                 int32_t act_qmax, uint8_t **q_out, float **scales_out,
                                 int32_t **zps_out) {
  if (m > (SIZE_MAX - 64) / (k + 8)) return QP_ERR_INVALID_ARGUMENT;
  fb_minmax_fn minmax;
  fb_quantize_fn quantize;
  fb_dynamic_fns(&minmax, &quantize);
  /* one scratch block: per-row scales and zero points (aligned first), then the uint8 rows */
  uint8_t *buf = fb_scratch(m * 8 + m * k);
  if (buf == NULL) return QP_ERR_OUT_OF_MEMORY;
  float *scales = (float *)buf;
  int32_t *zps = (int32_t *)(buf + m * 4);
  uint8_t *q = buf + m * 8;
  if (per_row) {
    fb_row_quant_ctx qc = {x, q, k, act_qmin, act_qmax, scales, zps, minmax, quantize, 0};
    if (m * k < ((size_t)1 << 16))
      fb_row_quant_task(&qc, 0, m);
    else
      qp_parallel_for(m, 4, fb_row_quant_task, &qc);
    if (__atomic_load_n(&qc.bad, __ATOMIC_RELAXED)) return QP_ERR_INVALID_ARGUMENT;
  } else {
    float scale;
    int32_t zp;
    if (fb_quant_tensor(x, m * k, act_qmin, act_qmax, q, &scale, &zp) != QP_OK)
      return QP_ERR_INVALID_ARGUMENT; /* inf or NaN in x */
    for (size_t i = 0; i < m; i++) {
      scales[i] = scale;
      zps[i] = zp;
    }
  }
  *q_out = q;
  *scales_out = scales;
  *zps_out = zps;
  return QP_OK;
}

int fb_dynamic_rows(const float *x, size_t m, const fb_dynamic_weights *w, int per_row,
                    int32_t act_qmin, int32_t act_qmax, float *out) {
  if ((m > 0 && (x == NULL || out == NULL)) || act_qmin < 0 || act_qmax > 255 ||
      act_qmin >= act_qmax)
    return QP_ERR_INVALID_ARGUMENT;
  if (m == 0) return QP_OK;
  uint8_t *q;
  float *scales;
  int32_t *zps;
  const int st = fb_dynamic_quant_rows(x, m, w->k, per_row, act_qmin, act_qmax, &q, &scales, &zps);
  if (st != QP_OK) return st;
  /* with blocks prepared, bias only says whether they hold one (any non-NULL pointer) */
  const float *bias = w->has_bias ? w->blocks[0].bias : NULL;
  fb_dynamic_gemm(q, m, w->k, w->packed, NULL, NULL, NULL, w->n, bias, w->has_wz, act_qmax, 0.0f,
                  0, scales, zps, w->blocks, out);
  return QP_OK;
}

int fbgemm_linear_dynamic_per_row_f32(const float *x, size_t m, size_t k, const int8_t *packed,
                                      const int32_t *row_sums, const float *w_scales,
                                      const int32_t *w_zps, size_t n, const float *bias,
                                      int32_t act_qmin, int32_t act_qmax, float *out,
                                      float *x_scales_out, int32_t *x_zps_out) {
  int has_wz;
  if (fb_dynamic_check(x, m, k, packed, row_sums, w_scales, w_zps, n, bias, act_qmin, act_qmax,
                       out, &has_wz) != QP_OK ||
      m > (SIZE_MAX - 64) / (k + 8))
    return QP_ERR_INVALID_ARGUMENT;
  if (m == 0) return QP_OK;
  uint8_t *q;
  float *scales;
  int32_t *zps;
  const int st = fb_dynamic_quant_rows(x, m, k, 1, act_qmin, act_qmax, &q, &scales, &zps);
  if (st != QP_OK) return st;
  if (x_scales_out != NULL) memcpy(x_scales_out, scales, m * sizeof(float));
  if (x_zps_out != NULL) memcpy(x_zps_out, zps, m * sizeof(int32_t));
  fb_dynamic_gemm(q, m, k, packed, row_sums, w_scales, w_zps, n, bias, has_wz, act_qmax, 0.0f, 0,
                  scales, zps, NULL, out);
  return QP_OK;
}
