/*
 * Linear layers: weight packing, the parallel GEMM driver, ISA dispatch and
 * the static / dynamic entry points. The per-ISA microkernels live in
 * ukernel_*.c; the numerics are defined by the scalar epilogue.
 */
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "onednn_kernels.h"
#include "quantplug/qp_requant.h"
#include "xo_internal.h"

#if defined(__x86_64__) || defined(__i386__)
const uint32_t qp_plugin_compiled_isas = (1u << QP_ISA_AVX2) | (1u << QP_ISA_AVX512) |
                                         (1u << QP_ISA_AVX512VNNI)
#if defined(XO_HAVE_AVXVNNI)
                                         | (1u << QP_ISA_AVXVNNI)
#endif
    ;
#else
const uint32_t qp_plugin_compiled_isas = 0; /* scalar reference only */
#endif

/* ------------------------------------------------------------ dispatch -- */

static atomic_int xo_ymm_probe = 0;

int x86_onednn_set_ymm_vnni_probe(int on) { return atomic_exchange(&xo_ymm_probe, on ? 1 : 0); }

static atomic_int xo_im2col_probe = 0;

int x86_onednn_set_conv_im2col_probe(int on) { return atomic_exchange(&xo_im2col_probe, on ? 1 : 0); }

const xo_gemm_impl *xo_gemm_select(void) {
  switch (qp_active_isa()) {
#if defined(__x86_64__) || defined(__i386__)
    case QP_ISA_AVX512VNNI:
      return atomic_load(&xo_ymm_probe) ? &xo_impl_avx512vnni_ymm : &xo_impl_avx512vnni;
    case QP_ISA_AVX512:
      return &xo_impl_avx512;
#if defined(XO_HAVE_AVXVNNI)
    case QP_ISA_AVXVNNI:
      return &xo_impl_avxvnni;
#endif
    case QP_ISA_AVX2:
      return &xo_impl_avx2;
#endif
    default:
      return &xo_impl_scalar;
  }
}

const char *x86_onednn_gemm_ukernel_name(void) { return xo_gemm_select()->name; }

/* ------------------------------------------------------------- packing -- */

static int xo_mul_overflows(size_t a, size_t b) { return a != 0 && b > SIZE_MAX / a; }

size_t x86_onednn_packed_linear_size(size_t n, size_t k) {
  size_t kp = xo_round_up(k, XO_KC), tiles = xo_ntiles(n);
  if (xo_mul_overflows(tiles, kp) || xo_mul_overflows(tiles * kp, XO_NR)) return 0;
  return tiles * kp * XO_NR;
}

static void xo_pack(const int8_t *w, size_t ldw, size_t n, size_t k, int8_t *packed,
                    int32_t *col_sums) {
  const size_t kp = xo_round_up(k, XO_KC);
  for (size_t t = 0; t < xo_ntiles(n); t++) {
    int8_t *tile = packed + t * kp * XO_NR;
    memset(tile, 0, kp * XO_NR);
    for (size_t c = 0; c < XO_NR && t * XO_NR + c < n; c++) {
      const int8_t *src = w + (t * XO_NR + c) * ldw;
      int32_t s = 0;
      for (size_t kk = 0; kk < k; kk++) {
        tile[(kk / XO_KC) * (XO_NR * XO_KC) + c * XO_KC + kk % XO_KC] = src[kk];
        s += src[kk];
      }
      col_sums[t * XO_NR + c] = s;
    }
  }
}

int x86_onednn_pack_linear_weight(const int8_t *w, size_t n, size_t k, int8_t *packed,
                                  int32_t *col_sums) {
  if (n == 0) return QP_OK;
  if (k > 0 && x86_onednn_packed_linear_size(n, k) == 0) return QP_ERR_INVALID_ARGUMENT;
  if ((k > 0 && (w == NULL || packed == NULL)) || col_sums == NULL) return QP_ERR_INVALID_ARGUMENT;
  if (k > SIZE_MAX / n) return QP_ERR_INVALID_ARGUMENT;
  if (k == 0) {
    memset(col_sums, 0, n * sizeof(int32_t));
    return QP_OK;
  }
  xo_pack(w, k, n, k, packed, col_sums);
  return QP_OK;
}

int x86_onednn_unpack_linear_weight(const int8_t *packed, size_t n, size_t k, int8_t *w) {
  if (n == 0 || k == 0) return QP_OK;
  if (packed == NULL || w == NULL || x86_onednn_packed_linear_size(n, k) == 0)
    return QP_ERR_INVALID_ARGUMENT;
  const size_t kp = xo_round_up(k, XO_KC);
  for (size_t c = 0; c < n; c++)
    for (size_t kk = 0; kk < k; kk++)
      w[c * k + kk] = packed[(c / XO_NR) * kp * XO_NR + (kk / XO_KC) * (XO_NR * XO_KC) +
                             (c % XO_NR) * XO_KC + kk % XO_KC];
  return QP_OK;
}

/* ------------------------------------------------------- GEMM driver ---- */

/* Schedule. A task owns a panel of weight tiles and a range of 8-row blocks; the row blocks
 * iterate inside the panel. With several row blocks a panel is sized to stay in L2
 * (XO_PANEL_BYTES), so the weights are read from memory once per task instead of once per
 * row block, and the threads take different panels (they do not stream the same weights).
 * With one row block (GEMV-like) the columns are split evenly across the threads. */
#define XO_PANEL_BYTES ((size_t)384 * 1024)

typedef struct {
  const xo_gemm_problem *p;
  const xo_gemm_impl *impl;
  size_t kp, n_tiles, panel_tiles, blocks, row_chunks, blocks_per_chunk;
  int indirect; /* p->make_ptrs with the ISA's ukernel_ind */
  size_t mr;    /* rows per block (the indirect kernel's own for indirect runs) */
  atomic_int status;
} xo_gemm_ctx;

/* Tiles [tile0, tile1) for rows [row0, row0+rows): multi-tile microkernel calls of up to nt
 * tiles, then the epilogue of each tile. 1-2 row blocks use the ISA's GEMV kernel if it has
 * one (8 chains over 2 tiles), else the single-tile kernel (whose GEMV path runs 4 chains). */
static void xo_gemm_tiles(const xo_gemm_ctx *ctx, const uint8_t *a, size_t lda,
                          const uint8_t *const *ptrs, size_t row0, size_t rows, size_t tile0,
                          size_t tile1, int32_t *acc) {
  const xo_gemm_problem *p = ctx->p;
  const xo_gemm_impl *impl = ctx->impl;
  const size_t tile_bytes = ctx->kp * XO_NR;
  /* the indirect kernel is multi-tile for every row count (it has no GEMV variant) */
  const int gemv = ptrs == NULL && impl->ukernel_gemv != NULL && rows <= impl->mr_gemv;
  const size_t nt = ptrs != NULL ? impl->nt_ind
                    : gemv       ? impl->nt_gemv
                    : impl->ukernel_nt != NULL && rows > 2 ? impl->nt
                                                           : 1;
  for (size_t tile = tile0, cnt = 0; tile < tile1; tile += cnt) {
    cnt = tile1 - tile < nt ? tile1 - tile : nt;
    /* 4 left with 3-tile calls: 2+2 keeps 16 accumulators busy instead of 3+1 (the
     * 1-tile call needs a weight load per 8 vpdpbusd). */
    if (nt == 3 && tile1 - tile == 4) cnt = 2;
    const int8_t *w = p->w + tile * tile_bytes;
    if (ptrs != NULL) {
      impl->ukernel_ind(rows, cnt, p->segs, p->seg, ptrs, w, tile_bytes, acc);
    } else if (gemv) {
      impl->ukernel_gemv(rows, cnt, p->k, a, lda, w, tile_bytes, acc);
    } else if (nt > 1) {
      impl->ukernel_nt(rows, cnt, p->k, a, lda, w, tile_bytes, acc);
    } else {
      impl->ukernel(rows, p->k, a, lda, w, acc);
    }
    for (size_t j = 0; j < cnt; j++) {
      const size_t col0 = (tile + j) * XO_NR;
      impl->epilogue(&p->epi, acc + j * (XO_MR_MAX * XO_NR), row0, rows, col0,
                     p->n - col0 < XO_NR ? p->n - col0 : XO_NR);
    }
  }
}

static void xo_gemm_task(void *vctx, size_t begin, size_t end) {
  xo_gemm_ctx *ctx = (xo_gemm_ctx *)vctx;
  const xo_gemm_problem *p = ctx->p;
  const size_t mr = ctx->mr;
  int32_t acc[XO_NT_MAX * XO_MR_MAX * XO_NR] __attribute__((aligned(64)));
  uint8_t *buf = NULL;
  const uint8_t **ptrs = NULL;
  /* built rows start on 64-byte boundaries: no activation dword load splits a cache line */
  const size_t ldb = xo_round_up(p->k, 64);
  if (ctx->indirect) {
    /* the pointer table, then the scratch for built border segments */
    const size_t table = xo_round_up(p->segs * XO_MR_MAX * sizeof(*ptrs), 64);
    buf = (uint8_t *)malloc(table + XO_MR_MAX * p->segs * p->seg + 64);
    ptrs = (const uint8_t **)buf;
    if (buf == NULL) {
      atomic_store(&ctx->status, QP_ERR_OUT_OF_MEMORY);
      return;
    }
  } else if (p->make_a != NULL) {
    buf = (uint8_t *)malloc(mr * ldb + 64);
    if (buf == NULL) {
      atomic_store(&ctx->status, QP_ERR_OUT_OF_MEMORY);
      return;
    }
  }
  for (size_t t = begin; t < end; t++) {
    const size_t panel = t / ctx->row_chunks, chunk = t % ctx->row_chunks;
    const size_t tile0 = panel * ctx->panel_tiles;
    const size_t tile1 = tile0 + ctx->panel_tiles < ctx->n_tiles ? tile0 + ctx->panel_tiles : ctx->n_tiles;
    const size_t b0 = chunk * ctx->blocks_per_chunk;
    const size_t b1 = b0 + ctx->blocks_per_chunk < ctx->blocks ? b0 + ctx->blocks_per_chunk : ctx->blocks;
    for (size_t block = b0; block < b1; block++) {
      const size_t row0 = block * mr;
      const size_t rows = p->m - row0 < mr ? p->m - row0 : mr;
      if (ptrs != NULL) {
        uint8_t *scratch = buf + xo_round_up(p->segs * XO_MR_MAX * sizeof(*ptrs), 64);
        p->make_ptrs(p->make_a_ctx, row0, rows, ptrs, scratch);
        xo_gemm_tiles(ctx, NULL, 0, ptrs, row0, rows, tile0, tile1, acc);
      } else if (buf != NULL) {
        p->make_a(p->make_a_ctx, row0, rows, buf, ldb);
        xo_gemm_tiles(ctx, buf, ldb, NULL, row0, rows, tile0, tile1, acc);
      } else {
        xo_gemm_tiles(ctx, p->a + row0 * p->lda, p->lda, NULL, row0, rows, tile0, tile1, acc);
      }
    }
  }
  free(buf);
}

/* Materialized A (built rows, row stride ldb) for a GEMM whose rows would otherwise be
 * rebuilt once per weight panel. */
#define XO_MATERIALIZE_MAX ((size_t)8 << 20)

typedef struct {
  const xo_gemm_problem *p;
  size_t mr, ldb;
  uint8_t *a;
} xo_build_ctx;

static void xo_build_task(void *vctx, size_t begin, size_t end) {
  const xo_build_ctx *c = (const xo_build_ctx *)vctx;
  for (size_t b = begin; b < end; b++) {
    const size_t row0 = b * c->mr, rows = c->p->m - row0 < c->mr ? c->p->m - row0 : c->mr;
    c->p->make_a(c->p->make_a_ctx, row0, rows, c->a + row0 * c->ldb, c->ldb);
  }
}

static int xo_gemm_run_materialized(const xo_gemm_problem *p, size_t mr) {
  xo_build_ctx c = {p, mr, xo_round_up(p->k, 64), NULL};
  c.a = (uint8_t *)malloc(p->m * c.ldb + 64);
  if (c.a == NULL) return QP_ERR_OUT_OF_MEMORY;
  const size_t blocks = (p->m + mr - 1) / mr;
  qp_parallel_for(blocks, 1 + 16384 / (mr * c.ldb), xo_build_task, &c);
  xo_gemm_problem q = *p;
  q.a = c.a;
  q.lda = c.ldb;
  q.make_a = NULL;
  q.make_ptrs = NULL;
  const int st = xo_gemm_run(&q);
  free(c.a);
  return st;
}

int xo_gemm_run(const xo_gemm_problem *p) {
  if (p->m == 0 || p->n == 0) return QP_OK;
  xo_gemm_ctx ctx;
  ctx.p = p;
  ctx.impl = xo_gemm_select();
  ctx.kp = xo_round_up(p->k, XO_KC);
  ctx.n_tiles = xo_ntiles(p->n);
  ctx.indirect = p->make_ptrs != NULL && ctx.impl->ukernel_ind != NULL && p->segs * p->seg == p->k &&
                 !atomic_load(&xo_im2col_probe);
  atomic_init(&ctx.status, QP_OK);
  /* Weights over one L2 panel: every panel would rebuild the indirect border segments (most
   * pixels of a 7x7 map), so the materialized im2col rows (built once) are faster there. */
  if (ctx.indirect && ctx.n_tiles > XO_PANEL_BYTES / (ctx.kp * XO_NR)) ctx.indirect = 0;
  const size_t mr = ctx.indirect ? ctx.impl->mr_ind : ctx.impl->mr;
  ctx.mr = mr;
  ctx.blocks = (p->m + mr - 1) / mr;
  /* enough tasks for the dynamic scheduler to balance the threads */
  const size_t want = 4 * (size_t)qp_get_num_threads();
  size_t pt;
  if (ctx.blocks == 1 && !ctx.indirect) {
    pt = (ctx.n_tiles + want - 1) / want;
  } else {
    const size_t nt = ctx.indirect ? ctx.impl->nt_ind : ctx.impl->ukernel_nt != NULL ? ctx.impl->nt : 1;
    pt = XO_PANEL_BYTES / (ctx.kp * XO_NR);
    pt = pt < nt ? nt : pt / nt * nt;
  }
  if (pt > ctx.n_tiles) pt = ctx.n_tiles;
  ctx.panel_tiles = pt;
  const size_t panels = (ctx.n_tiles + pt - 1) / pt;
  /* built rows (conv im2col) would be rebuilt in every panel: build them once instead */
  if (p->make_a != NULL && !ctx.indirect && panels > 1 && p->m <= XO_MATERIALIZE_MAX / xo_round_up(p->k, 64))
    return xo_gemm_run_materialized(p, mr);
  /* Row chunks so that the task count is a multiple of 4 * threads: qp_parallel_for hands
   * out ceil(tasks / (4 * threads)) tasks at a time, and equal tasks in equal chunks keep
   * the threads busy to the end (43 panels on 2 threads alone leave one idle ~10%). */
  size_t chunks = 1;
  if (want > 4) {
    size_t a = want, b = panels % want;
    while (b != 0) {
      const size_t r = a % b;
      a = b;
      b = r;
    }
    chunks = want / a; /* want / gcd(want, panels) */
  }
  if (chunks > ctx.blocks) chunks = ctx.blocks;
  ctx.blocks_per_chunk = (ctx.blocks + chunks - 1) / chunks;
  ctx.row_chunks = (ctx.blocks + ctx.blocks_per_chunk - 1) / ctx.blocks_per_chunk;
  const size_t tasks = panels * ctx.row_chunks;
  const size_t work = ctx.blocks_per_chunk * mr * pt * XO_NR * (ctx.kp + 16); /* MACs per task */
  size_t grain = (size_t)1 << 16;
  grain = work >= grain ? 1 : grain / work;
  qp_parallel_for(tasks, grain, xo_gemm_task, &ctx);
  return atomic_load(&ctx.status);
}

/* ---------------------------------------------------- shared helpers ---- */

int xo_check_scale(float s) { return s > 0.0f && isfinite(s); }

static int32_t xo_saturate_round(float v) {
  if (v >= 2147483648.0f) return INT32_MAX;
  if (v <= -2147483648.0f) return INT32_MIN;
  return (int32_t)nearbyintf(v);
}

int xo_requant_params(float x_scale, const float *w_scales, size_t n, float out_scale,
                      const float *bias, float *mult, int32_t *bias_q) {
  if (!xo_check_scale(x_scale) || !xo_check_scale(out_scale)) return QP_ERR_INVALID_ARGUMENT;
  for (size_t c = 0; c < n; c++) {
    if (!xo_check_scale(w_scales[c])) return QP_ERR_INVALID_ARGUMENT;
    const float acc_scale = x_scale * w_scales[c];
    const float m = acc_scale / out_scale;
    if (!xo_check_scale(acc_scale) || !xo_check_scale(m)) return QP_ERR_INVALID_ARGUMENT;
    mult[c] = m;
    if (bias != NULL) {
      if (!isfinite(bias[c])) return QP_ERR_INVALID_ARGUMENT;
      bias_q[c] = xo_saturate_round(bias[c] / acc_scale);
    } else {
      bias_q[c] = 0;
    }
  }
  return QP_OK;
}

int x86_onednn_requant_params(float x_scale, const float *w_scales, size_t n, float out_scale,
                              const float *bias, float *multipliers, int32_t *bias_q) {
  if (n > 0 && (w_scales == NULL || multipliers == NULL || bias_q == NULL))
    return QP_ERR_INVALID_ARGUMENT;
  return xo_requant_params(x_scale, w_scales, n, out_scale, bias, multipliers, bias_q);
}

static int xo_bad_u8_range(int32_t zp, int32_t qmin, int32_t qmax) {
  return zp < 0 || zp > 255 || qmin < 0 || qmax > 255 || qmin > qmax;
}

/* Common shape / pointer checks of a linear call. */
static int xo_check_linear(const void *x, size_t m, size_t k, const int8_t *packed,
                           const int32_t *col_sums, size_t n, const void *out) {
  if (xo_mul_overflows(m, k) || xo_mul_overflows(m, n)) return QP_ERR_INVALID_ARGUMENT;
  if (n > 0 && k > 0 && x86_onednn_packed_linear_size(n, k) == 0) return QP_ERR_INVALID_ARGUMENT;
  if (m * k > 0 && x == NULL) return QP_ERR_INVALID_ARGUMENT;
  if (n * k > 0 && packed == NULL) return QP_ERR_INVALID_ARGUMENT;
  if (n > 0 && col_sums == NULL) return QP_ERR_INVALID_ARGUMENT;
  if (m * n > 0 && out == NULL) return QP_ERR_INVALID_ARGUMENT;
  return QP_OK;
}

/* Per-column arrays of one call, padded to whole tiles (one allocation). */
typedef struct {
  void *block;
  int32_t *i0, *i1;
  float *f0, *f1;
} xo_colbuf;

/* Callers fill [0, n) of the arrays they use; only the padding up to the whole tile (which the
 * epilogue may read) is zeroed here: calloc of the whole block was ~5% of a 1x768x768 call. */
static int xo_colbuf_alloc(xo_colbuf *b, size_t n) {
  const size_t np = xo_ntiles(n) * XO_NR;
  b->block = malloc((4 * np + 16) * sizeof(int32_t));
  if (b->block == NULL) return QP_ERR_OUT_OF_MEMORY;
  b->i0 = (int32_t *)b->block;
  b->i1 = b->i0 + np;
  b->f0 = (float *)(b->i1 + np);
  b->f1 = b->f0 + np;
  if (np > n) {
    memset(b->i0 + n, 0, (np - n) * sizeof(int32_t));
    memset(b->i1 + n, 0, (np - n) * sizeof(int32_t));
    memset(b->f0 + n, 0, (np - n) * sizeof(float));
    memset(b->f1 + n, 0, (np - n) * sizeof(float));
  }
  return QP_OK;
}

static void xo_bias_eff(int32_t *bias_eff, const int32_t *bias_q, const int32_t *col_sums,
                        size_t n, int32_t x_zp) {
  for (size_t c = 0; c < n; c++)
    bias_eff[c] = (int32_t)((uint32_t)(bias_q ? bias_q[c] : 0) -
                            (uint32_t)x_zp * (uint32_t)col_sums[c]);
}

/* ------------------------------------------------------- static linear -- */

int xo_linear_run(const uint8_t *x, size_t m, size_t k, const int8_t *packed, size_t n,
                  const xo_epilogue *epi) {
  xo_gemm_problem p;
  memset(&p, 0, sizeof(p));
  p.m = m;
  p.k = k;
  p.n = n;
  p.a = x;
  p.lda = k;
  p.w = packed;
  p.epi = *epi;
  return xo_gemm_run(&p);
}

void xo_epi_requant(xo_epilogue *e, int32_t out_zp, int32_t qmin, int32_t qmax) {
  memset(e, 0, sizeof(*e));
  e->kind = XO_EPI_REQUANT;
  e->out_zp = out_zp;
  e->qmin = qmin;
  e->qmax = qmax;
  e->lo = (float)(qmin - out_zp);
  e->hi = (float)(qmax - out_zp);
}

int x86_onednn_linear_u8(const uint8_t *x, size_t m, size_t k, float x_scale, int32_t x_zp,
                         const int8_t *packed, const int32_t *col_sums, const float *w_scales,
                         size_t n, const float *bias, float out_scale, int32_t out_zp,
                         int32_t qmin, int32_t qmax, uint8_t *out) {
  int st = xo_check_linear(x, m, k, packed, col_sums, n, out);
  if (st != QP_OK) return st;
  if (xo_bad_u8_range(x_zp, 0, 255) || xo_bad_u8_range(out_zp, qmin, qmax))
    return QP_ERR_INVALID_ARGUMENT;
  if (n > 0 && w_scales == NULL) return QP_ERR_INVALID_ARGUMENT;
  if (n == 0) return xo_check_scale(x_scale) && xo_check_scale(out_scale) ? QP_OK : QP_ERR_INVALID_ARGUMENT;
  xo_colbuf b;
  if ((st = xo_colbuf_alloc(&b, n)) != QP_OK) return st;
  st = xo_requant_params(x_scale, w_scales, n, out_scale, bias, b.f0, b.i1);
  if (st == QP_OK) {
    xo_bias_eff(b.i0, b.i1, col_sums, n, x_zp);
    xo_epilogue e;
    xo_epi_requant(&e, out_zp, qmin, qmax);
    e.bias_eff = b.i0;
    e.mult = b.f0;
    e.out_u8 = out;
    e.ldo = n;
    st = xo_linear_run(x, m, k, packed, n, &e);
  }
  free(b.block);
  return st;
}

int x86_onednn_linear_u8_requant(const uint8_t *x, size_t m, size_t k, int32_t x_zp,
                                 const int8_t *packed, const int32_t *col_sums, size_t n,
                                 const int32_t *bias_q, const float *multipliers,
                                 size_t n_multipliers, int32_t out_zp, int32_t qmin,
                                 int32_t qmax, uint8_t *out) {
  int st = xo_check_linear(x, m, k, packed, col_sums, n, out);
  if (st != QP_OK) return st;
  if (xo_bad_u8_range(x_zp, 0, 255) || xo_bad_u8_range(out_zp, qmin, qmax))
    return QP_ERR_INVALID_ARGUMENT;
  if (n == 0) return QP_OK;
  if (multipliers == NULL || (n_multipliers != 1 && n_multipliers != n)) return QP_ERR_INVALID_ARGUMENT;
  for (size_t i = 0; i < n_multipliers; i++)
    if (!xo_check_scale(multipliers[i])) return QP_ERR_INVALID_ARGUMENT;
  xo_colbuf b;
  if ((st = xo_colbuf_alloc(&b, n)) != QP_OK) return st;
  /* per-column multipliers covering whole tiles are read in place (no copy) */
  const int in_place = n_multipliers == n && xo_ntiles(n) * XO_NR == n;
  if (!in_place)
    for (size_t c = 0; c < n; c++) b.f0[c] = multipliers[n_multipliers == 1 ? 0 : c];
  xo_bias_eff(b.i0, bias_q, col_sums, n, x_zp);
  xo_epilogue e;
  xo_epi_requant(&e, out_zp, qmin, qmax);
  e.bias_eff = b.i0;
  e.mult = in_place ? multipliers : b.f0;
  e.out_u8 = out;
  e.ldo = n;
  st = xo_linear_run(x, m, k, packed, n, &e);
  free(b.block);
  return st;
}

int x86_onednn_linear_u8_acc(const uint8_t *x, size_t m, size_t k, int32_t x_zp,
                             const int8_t *packed, const int32_t *col_sums, size_t n,
                             int32_t *acc) {
  int st = xo_check_linear(x, m, k, packed, col_sums, n, acc);
  if (st != QP_OK) return st;
  if (xo_bad_u8_range(x_zp, 0, 255)) return QP_ERR_INVALID_ARGUMENT;
  if (n == 0) return QP_OK;
  xo_colbuf b;
  if ((st = xo_colbuf_alloc(&b, n)) != QP_OK) return st;
  xo_bias_eff(b.i0, NULL, col_sums, n, x_zp);
  xo_epilogue e;
  memset(&e, 0, sizeof(e));
  e.kind = XO_EPI_ACC;
  e.bias_eff = b.i0;
  e.out_i32 = acc;
  e.ldo = n;
  st = xo_linear_run(x, m, k, packed, n, &e);
  free(b.block);
  return st;
}

/* ------------------------------------------------------ dynamic linear -- */

/* torch observer arithmetic (float32), uint8 full range, asymmetric. */
static void xo_qparams_from_minmax(float mn, float mx, float *scale, int32_t *zp) {
  const float lo = mn < 0.0f ? mn : 0.0f;
  const float hi = mx > 0.0f ? mx : 0.0f;
  float s = (hi - lo) / 255.0f;
  if (s < FLT_EPSILON) s = FLT_EPSILON;
  int32_t z = 0 - (int32_t)nearbyintf(lo / s);
  *scale = s;
  *zp = z < 0 ? 0 : (z > 255 ? 255 : z);
}

static int xo_choose(const xo_gemm_impl *impl, const float *x, size_t rows, size_t cols,
                     int per_row, float *scales, int32_t *zps) {
  if (per_row) {
    for (size_t r = 0; r < rows; r++) {
      float mn, mx;
      if (impl->minmax(x + r * cols, cols, &mn, &mx)) return QP_ERR_INVALID_ARGUMENT;
      if (cols > 0 && (!isfinite(mn) || !isfinite(mx))) return QP_ERR_INVALID_ARGUMENT;
      xo_qparams_from_minmax(mn, mx, &scales[r], &zps[r]);
    }
  } else {
    float mn, mx;
    if (impl->minmax(x, rows * cols, &mn, &mx)) return QP_ERR_INVALID_ARGUMENT;
    if (rows * cols > 0 && (!isfinite(mn) || !isfinite(mx))) return QP_ERR_INVALID_ARGUMENT;
    xo_qparams_from_minmax(mn, mx, &scales[0], &zps[0]);
  }
  return QP_OK;
}

int x86_onednn_choose_qparams_u8(const float *x, size_t rows, size_t cols, int per_row,
                                 float *scales, int32_t *zero_points) {
  if (xo_mul_overflows(rows, cols) || scales == NULL || zero_points == NULL ||
      (rows * cols > 0 && x == NULL))
    return QP_ERR_INVALID_ARGUMENT;
  return xo_choose(xo_gemm_select(), x, rows, cols, per_row, scales, zero_points);
}

typedef struct {
  const xo_gemm_impl *impl;
  const float *x;
  size_t k;
  const float *inv;
  const int32_t *zp;
  int per_row;
  uint8_t *q;
} xo_quant_ctx;

static void xo_quant_task(void *vctx, size_t begin, size_t end) {
  const xo_quant_ctx *c = (const xo_quant_ctx *)vctx;
  for (size_t r = begin; r < end; r++) {
    const size_t i = c->per_row ? r : 0;
    c->impl->quantize(c->x + r * c->k, c->k, c->inv[i], c->zp[i], c->q + r * c->k);
  }
}

int xo_dynamic_core(const float *x, size_t m, size_t k, const int8_t *packed, const int32_t *cs,
                    const float *ws, const float *fb, size_t n, int per_row, float *out,
                    xo_dynamic_scratch *s) {
  const xo_gemm_impl *impl = xo_gemm_select();
  const size_t nq = per_row ? (m > 0 ? m : 1) : 1;
  int st = xo_choose(impl, x, m, k, per_row, s->scale, s->zp);
  if (st != QP_OK || n == 0 || m == 0) return st;
  for (size_t i = 0; i < nq; i++) s->inv[i] = 1.0f / s->scale[i];
  xo_quant_ctx qc = {impl, x, k, s->inv, s->zp, per_row, s->q};
  size_t grain = k >= 4096 ? 1 : 4096 / (k + 1) + 1;
  qp_parallel_for(m, grain, xo_quant_task, &qc);
  xo_epilogue e;
  memset(&e, 0, sizeof(e));
  e.kind = XO_EPI_DEQUANT;
  e.colsum = cs;
  e.wscale = ws;
  e.fbias = fb;
  e.row_scale = s->scale;
  e.row_zp = s->zp;
  e.per_row = per_row;
  e.out_f32 = out;
  e.ldo = n;
  return xo_linear_run(s->q, m, k, packed, n, &e);
}

int x86_onednn_linear_dynamic_f32(const float *x, size_t m, size_t k, const int8_t *packed,
                                  const int32_t *col_sums, const float *w_scales, size_t n,
                                  const float *bias, int per_row, float *out, float *x_scales,
                                  int32_t *x_zps) {
  int st = xo_check_linear(x, m, k, packed, col_sums, n, out);
  if (st != QP_OK) return st;
  if (k > XO_DYNAMIC_MAX_K || (n > 0 && w_scales == NULL)) return QP_ERR_INVALID_ARGUMENT;
  for (size_t c = 0; c < n; c++) {
    if (!xo_check_scale(w_scales[c])) return QP_ERR_INVALID_ARGUMENT;
    if (bias != NULL && !isfinite(bias[c])) return QP_ERR_INVALID_ARGUMENT;
  }
  const size_t nq = per_row ? (m > 0 ? m : 1) : 1;
  const size_t np = xo_ntiles(n) * XO_NR;
  /* one block: row scales, row inverse scales, row zps, padded colsum/wscale/bias, q(x) */
  size_t bytes = nq * (2 * sizeof(float) + sizeof(int32_t)) + np * (sizeof(int32_t) + 2 * sizeof(float)) + m * k + 64;
  char *block = (char *)calloc(1, bytes);
  if (block == NULL) return QP_ERR_OUT_OF_MEMORY;
  xo_dynamic_scratch sc;
  sc.scale = (float *)block;
  sc.inv = sc.scale + nq;
  sc.zp = (int32_t *)(sc.inv + nq);
  int32_t *cs = sc.zp + nq;
  float *ws = (float *)(cs + np);
  float *fb = ws + np;
  sc.q = (uint8_t *)(fb + np);
  memcpy(cs, col_sums, n * sizeof(int32_t));
  memcpy(ws, w_scales, n * sizeof(float));
  if (bias != NULL) memcpy(fb, bias, n * sizeof(float));
  st = xo_dynamic_core(x, m, k, packed, cs, ws, bias != NULL ? fb : NULL, n, per_row, out, &sc);
  if (st == QP_OK && x_scales != NULL) memcpy(x_scales, sc.scale, nq * sizeof(float));
  if (st == QP_OK && x_zps != NULL) memcpy(x_zps, sc.zp, nq * sizeof(int32_t));
  free(block);
  return st;
}
