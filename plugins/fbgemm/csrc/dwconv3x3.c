/*
 * Depthwise 3x3 (dilation 1, channel multiplier 1, symmetric weights) by rows.
 *
 * The generic depthwise kernel (conv.c) gathers tap pointers per output pixel and widens every
 * input byte to int32 once per tap that reads it: 9 widenings, 9 vpmulld and a 16-channel
 * epilogue call per pixel. Here a task owns a band of output rows, taken one 16-channel slice
 * at a time:
 *   - each input row of the slice is staged once into "tap triples" (one uint32 per output
 *     column and channel, bytes 0..2 = the raw inputs under kernel columns 0..2, horizontal
 *     padding = x_zp) and kept in a 3-slot ring, so it serves up to 3 output rows;
 *   - a row kernel then does one 4-byte dot product per kernel row and pixel (vpdpbusd);
 *   - the requantization is fused into the VNNI row kernel (the other paths run the shared
 *     epilogue once per row chunk).
 * Why vpdpbusd on tap triples rather than vpmaddwd on widened int16 operands: the triple keeps
 * the raw u8 inputs (no per-tap widening or zero-point subtraction) and needs one instruction
 * per kernel row instead of 1.5 (3 taps / 2 per vpmaddwd), with no int16 re-layout of the input.
 * With AVX-512 VNNI at stride 1 the staging lives in registers instead (fb_dw3_rows_u8__*,
 * dwconv3x3_x86.c): 8 output rows per pass, tap triples shifted along the row with one byte
 * permute per input row and column, 4 output rows requantized and narrowed at once.
 * Raw uint8 inputs go into the dot products, so sum (x - zp) * w = sum x * w - zp * sum w: the
 * second term (over the kernel rows that are inside the image; rows in the vertical padding
 * contribute nothing and are skipped) is the `init` vector. Both sides are exact int32 sums
 * (mod 2^32), so every path equals the generic scalar loop bit for bit.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fbgemm_kernels.h"
#include "quantplug/qp_runtime.h"

#define FB_DW3_BAND 16 /* output rows per task (at most): stages BAND + 2 input rows for BAND rows */
#define FB_DW3_CHUNK 64 /* output pixels per row-kernel / epilogue call */
/* output columns per chunk of the register-staged kernel (16 and 28 measured slower on the
 * 56-wide MobileNet layer) */
#define FB_DW3_COLS 64

void fb_dw3_stage__scalar(const uint8_t *row, size_t w, size_t cstride, size_t pw, size_t sw,
                          size_t n, size_t nc, uint8_t zp, uint32_t *dst) {
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < FB_NR; j++) {
      uint32_t v = 0;
      for (size_t kx = 0; kx < 3 && j < nc; kx++) {
        const ptrdiff_t ix = (ptrdiff_t)(i * sw + kx) - (ptrdiff_t)pw;
        const uint8_t b = ix >= 0 && ix < (ptrdiff_t)w ? row[(size_t)ix * cstride + j] : zp;
        v |= (uint32_t)b << (8 * kx);
      }
      dst[i * FB_NR + j] = v;
    }
}

void fb_dw3_row__scalar(const uint32_t *const *rows, const uint32_t *wrow, size_t nv, size_t n,
                        const int32_t *init, int32_t *acc) {
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < FB_NR; j++) {
      uint32_t a = (uint32_t)init[j];
      for (size_t r = 0; r < nv; r++) {
        const uint32_t xv = rows[r][i * FB_NR + j], wv = wrow[r * FB_NR + j];
        for (int b = 0; b < 3; b++)
          a += (uint32_t)((int32_t)(uint8_t)(xv >> (8 * b)) * (int32_t)(int8_t)(uint8_t)(wv >> (8 * b)));
      }
      acc[i * FB_NR + j] = (int32_t)a;
    }
}

typedef struct {
  fb_dw3_problem p;
  fb_dw3_stage_fn stage;
  fb_dw3_row_fn row;
  /* fused row kernel + requantization (used instead of row + epi when set) */
  void (*row_u8)(const uint32_t *const *, const uint32_t *, size_t, size_t, const int32_t *,
                 const fb_block_params *, int32_t, int32_t, int32_t, size_t, uint8_t *, size_t);
  /* register-staged kernel for nr output rows at stride 1 (replaces staging + row_u8) */
  fb_dw3_rows_fn rows_u8;
  const fb_dw3_block *blocks; /* nblk per-block constants */
  size_t nblk, band, nband, nq;
  int status;
} fb_dw3_ctx;

/* Weight triples, zero-point sums and requantization constants of every 16-channel block:
 * computed once per call (per band and row they cost a tenth of the kernel time). */
static void fb_dw3_blocks(const fb_dw3_problem *p, size_t nblk, fb_dw3_block *blocks) {
  for (size_t blk = 0; blk < nblk; blk++) {
    fb_dw3_block *bk = &blocks[blk];
    const size_t c0 = blk * FB_NR, nc = p->c - c0 < FB_NR ? p->c - c0 : FB_NR;
    fb_dw_block_params(p->ws, p->bias, p->x_scale, p->out_scale, c0, nc, &bk->params);
    for (size_t j = 0; j < FB_NR; j++) {
      uint32_t init = (uint32_t)bk->params.col[j];
      for (size_t ky = 0; ky < 3; ky++) {
        uint32_t v = 0, sum = 0;
        for (size_t kx = 0; kx < 3 && j < nc; kx++) {
          const int8_t wv = p->wt[(ky * 3 + kx) * p->c + c0 + j];
          v |= (uint32_t)(uint8_t)wv << (8 * kx);
          sum += (uint32_t)(int32_t)wv;
        }
        bk->w[ky][j] = v;
        bk->zs[ky][j] = (uint32_t)p->x_zp * sum;
        init -= bk->zs[ky][j];
      }
      bk->init3[j] = (int32_t)init;
    }
    bk->small = 1;
    for (size_t j = 0; j < FB_NR; j++) /* written so that a NaN multiplier clears it */
      if (!(bk->params.mult[j] <= 0.5f)) bk->small = 0;
  }
}

/* Output rows oy0..oy1 of image b with the register-staged kernel (stride 1), in groups of
 * FB_DW3_MAXR rows (4 and 1..3 at the end of the band) and chunks of FB_DW3_COLS columns, every
 * channel block of a chunk in turn (the blocks share the chunk's input and output lines).
 * Input rows in the vertical padding are read from zprow, a row of x_zp bytes (filled on first
 * use). */
static int fb_dw3_band_rows(const fb_dw3_ctx *c, size_t b, size_t oy0, size_t oy1,
                            uint8_t **zprow) {
  const fb_dw3_problem *p = &c->p;
  for (size_t oy = oy0, nr; oy < oy1; oy += nr) {
    nr = oy1 - oy >= FB_DW3_MAXR ? FB_DW3_MAXR : oy1 - oy < 4 ? oy1 - oy : 4; /* 8, 4 or 1..3 */
    const uint8_t *xr[FB_DW3_MAXR + 2];
    for (size_t r = 0; r < nr + 2; r++) {
      const ptrdiff_t iy = (ptrdiff_t)(oy + r) - (ptrdiff_t)p->ph;
      if (iy >= 0 && iy < (ptrdiff_t)p->h) {
        xr[r] = p->x + ((b * p->h + (size_t)iy) * p->w) * p->c;
        continue;
      }
      if (*zprow == NULL) {
        *zprow = fb_scratch(p->w * p->c + FB_NR);
        if (*zprow == NULL) return QP_ERR_OUT_OF_MEMORY;
        memset(*zprow, p->x_zp, p->w * p->c + FB_NR);
      }
      xr[r] = *zprow;
    }
    uint8_t *o = p->out + ((b * p->oh + oy) * p->ow) * p->c;
    for (size_t ox = 0; ox < p->ow; ox += FB_DW3_COLS) {
      const size_t ox1 = p->ow - ox < FB_DW3_COLS ? p->ow : ox + FB_DW3_COLS;
      for (size_t blk = 0; blk < c->nblk; blk++) {
        const size_t c0 = blk * FB_NR, nc = p->c - c0 < FB_NR ? p->c - c0 : FB_NR;
        const uint8_t *xb[FB_DW3_MAXR + 2];
        for (size_t r = 0; r < nr + 2; r++) xb[r] = xr[r] + c0;
        c->rows_u8(xb, nr, p->w, p->c, p->pw, ox, ox1, &c->blocks[blk], (uint8_t)p->x_zp,
                   p->out_zp, p->qmin, p->qmax, nc, o + c0, p->ow * p->c, p->c);
      }
    }
  }
  return QP_OK;
}

static void fb_dw3_task(void *vctx, size_t begin, size_t end) {
  fb_dw3_ctx *c = (fb_dw3_ctx *)vctx;
  const fb_dw3_problem *p = &c->p;
  if (c->rows_u8 != NULL) {
    uint8_t *zprow = NULL;
    for (size_t t = begin; t < end; t++) { /* a task is a band of output rows of one image */
      const size_t band = t % c->nband, b = t / c->nband;
      const size_t oy0 = band * c->band, oy1 = oy0 + c->band < p->oh ? oy0 + c->band : p->oh;
      if (fb_dw3_band_rows(c, b, oy0, oy1, &zprow) != QP_OK) {
        c->status = QP_ERR_OUT_OF_MEMORY; /* benign race: every writer stores the same value */
        return;
      }
    }
    return;
  }
  const size_t row_words = c->nq * FB_NR;
  uint32_t *ring = (uint32_t *)fb_scratch((3 * row_words + FB_DW3_CHUNK * FB_NR) * sizeof(uint32_t));
  if (ring == NULL) {
    c->status = QP_ERR_OUT_OF_MEMORY; /* benign race: every writer stores the same value */
    return;
  }
  int32_t *acc = (int32_t *)(ring + 3 * row_words);
  /* A task is a band of output rows with every channel block: two threads never write into the
   * same output cache line (blocks of one pixel share lines), and the blocks of a band reuse
   * the band's input rows from cache. */
  for (size_t t = begin * c->nblk; t < end * c->nblk; t++) {
    const size_t blk = t % c->nblk, band = (t / c->nblk) % c->nband, b = t / (c->nband * c->nblk);
    const size_t c0 = blk * FB_NR, nc = p->c - c0 < FB_NR ? p->c - c0 : FB_NR;
    const fb_dw3_block *bk = &c->blocks[blk];
    ptrdiff_t tag[3] = {PTRDIFF_MIN, PTRDIFF_MIN, PTRDIFF_MIN};
    const size_t oy0 = band * c->band;
    const size_t oy1 = oy0 + c->band < p->oh ? oy0 + c->band : p->oh;
    for (size_t oy = oy0; oy < oy1; oy++) {
      const uint32_t *rows[3];
      uint32_t wv[3 * FB_NR];
      uint32_t init[FB_NR] = {0};
      size_t nv = 0;
      for (size_t ky = 0; ky < 3; ky++) {
        const ptrdiff_t iy = (ptrdiff_t)(oy * p->sh + ky) - (ptrdiff_t)p->ph;
        if (iy < 0 || iy >= (ptrdiff_t)p->h) continue;
        uint32_t *slot = ring + (size_t)(iy % 3) * row_words;
        if (tag[iy % 3] != iy) {
          c->stage(p->x + ((b * p->h + (size_t)iy) * p->w) * p->c + c0, p->w, p->c, p->pw, p->sw,
                   p->ow, nc, (uint8_t)p->x_zp, slot);
          tag[iy % 3] = iy;
        }
        rows[nv] = slot;
        memcpy(wv + nv * FB_NR, bk->w[ky], sizeof(bk->w[ky]));
        for (size_t j = 0; j < FB_NR; j++) init[j] -= bk->zs[ky][j];
        nv++;
      }
      for (size_t ox = 0; ox < p->ow; ox += FB_DW3_CHUNK) {
        const size_t n = p->ow - ox < FB_DW3_CHUNK ? p->ow - ox : FB_DW3_CHUNK;
        const uint32_t *rp[3];
        for (size_t r = 0; r < nv; r++) rp[r] = rows[r] + ox * FB_NR;
        uint8_t *o = p->out + ((b * p->oh + oy) * p->ow + ox) * p->c + c0;
        if (c->row_u8 != NULL) {
          c->row_u8(rp, wv, nv, n, (const int32_t *)init, &bk->params, p->out_zp, p->qmin,
                    p->qmax, nc, o, p->c);
        } else {
          c->row(rp, wv, nv, n, (const int32_t *)init, acc);
          p->epi(n, nc, acc, NULL, &bk->params, p->out_zp, p->qmin, p->qmax, o, p->c);
        }
      }
    }
  }
}

static int fb_dw3_vbmi_allowed = 1;

int fbgemm_dw3_vbmi(int mode) {
  if (mode == 0 || mode == 1) fb_dw3_vbmi_allowed = mode;
#if defined(FB_HAVE_X86)
  return fb_dw3_vbmi_allowed && fb_dw3_cpu_has_vbmi();
#else
  return 0;
#endif
}

/* The problem with its per-block constants already computed (fb_dw3_blocks). */
static int fb_dw3_run_blocks(const fb_dw3_problem *p, const fb_dw3_block *blocks, int isa) {
  fb_dw3_ctx c;
  memset(&c, 0, sizeof(c));
  c.p = *p;
  c.stage = fb_dw3_stage__scalar;
  c.row = fb_dw3_row__scalar;
#if defined(FB_HAVE_X86)
  if (isa == QP_ISA_AVX2 || isa == QP_ISA_AVXVNNI) {
    c.stage = fb_dw3_stage__avx2;
    c.row = fb_dw3_row__avx2;
  } else if (isa == QP_ISA_AVX512 || isa == QP_ISA_AVX512VNNI) {
    c.stage = fb_dw3_stage__avx512;
    c.row = fb_dw3_row__avx512;
    if (isa == QP_ISA_AVX512VNNI) {
      c.row_u8 = fb_dw3_row_u8__avx512vnni;
      if (p->sh == 1 && p->sw == 1)
        c.rows_u8 = fbgemm_dw3_vbmi(-1) ? fb_dw3_rows_u8__avx512vbmi : fb_dw3_rows_u8__avx512vnni;
    }
  }
#else
  (void)isa;
#endif
  c.nblk = (p->c + FB_NR - 1) / FB_NR;
  c.nq = p->ow;
  c.blocks = blocks;
  const int parallel = p->batch * p->oh * p->ow * p->c * 9 >= FB_PARALLEL_MIN_MACS;
  const size_t threads = parallel ? (size_t)qp_get_num_threads() : 1;
  /* long bands stage fewer rows twice; with threads, enough bands (>= 3 per thread) to balance */
  c.band = FB_DW3_BAND;
  while (c.band > 2 && p->batch * ((p->oh + c.band - 1) / c.band) < 3 * threads) c.band /= 2;
  c.nband = (p->oh + c.band - 1) / c.band;
  const size_t ntasks = p->batch * c.nband;
  if (!parallel)
    fb_dw3_task(&c, 0, ntasks);
  else
    qp_parallel_for(ntasks, 1, fb_dw3_task, &c);
  return c.status;
}

int fb_dw3_run(const fb_dw3_problem *p, int isa) {
  const size_t nblk = (p->c + FB_NR - 1) / FB_NR;
  fb_dw3_block *blocks = (fb_dw3_block *)malloc(nblk * sizeof(fb_dw3_block));
  if (blocks == NULL) return QP_ERR_OUT_OF_MEMORY;
  fb_dw3_blocks(p, nblk, blocks);
  const int status = fb_dw3_run_blocks(p, blocks, isa);
  free(blocks);
  return status;
}

int fb_dw3_weights_eligible(size_t cin, size_t cout, size_t groups, size_t kh, size_t kw,
                            size_t dh, size_t dw, const int32_t *w_zps) {
  /* groups > 1: a single-channel conv (groups = 1) is packed for the GEMM, not as [9][c] */
  if (cout != cin || groups != cout || groups < 2 || kh != 3 || kw != 3 || dh != 1 || dw != 1)
    return 0;
  for (size_t j = 0; j < cout; j++)
    if (w_zps[j] != 0) return 0;
  return 1;
}

/* ---- prepared entry (fbgemm_dw3_prepare / fbgemm_dw3_u8s8_prepared) ----
 * Layout: this header, then the fb_dw3_block of every 16-channel block. The header records
 * what the blocks were computed for, so a buffer can only run the problem it belongs to. */
#define FB_DW3_PREP_MAGIC 0x33776466u /* "fdw3" */
typedef struct {
  uint32_t magic;
  int32_t x_zp; /* baked into zs / init3, and the value of the padding */
  uint64_t c;
  uint8_t pad[48]; /* 64 bytes: the blocks stay cache-line aligned within the buffer */
} fb_dw3_prep_head;

size_t fbgemm_dw3_prepared_size(size_t c) {
  if (c == 0 || c > ((size_t)1 << 24)) return 0; /* no channel count near an overflow */
  return sizeof(fb_dw3_prep_head) + (c + FB_NR - 1) / FB_NR * sizeof(fb_dw3_block);
}

int fbgemm_dw3_prepare(const int8_t *packed, const int32_t *row_sums, const float *w_scales,
                       const int32_t *w_zps, size_t c, size_t groups, size_t kh, size_t kw,
                       size_t dh, size_t dw, float x_scale, int32_t x_zp, const float *bias,
                       float out_scale, void *prepared) {
  int has_wz;
  if (prepared == NULL || fbgemm_dw3_prepared_size(c) == 0 ||
      fbgemm_packed_conv2d_size(c, 1, kh, kw, groups) == 0 ||
      fb_check_weights(packed, row_sums, w_scales, w_zps, c, 1, &has_wz) != QP_OK ||
      fb_check_requant(x_scale, x_zp, out_scale, 0, 0, 255) != QP_OK ||
      fb_check_bias(bias, c) != QP_OK ||
      !fb_dw3_weights_eligible(c, c, groups, kh, kw, dh, dw, w_zps))
    return QP_ERR_INVALID_ARGUMENT;
  fb_dw3_prep_head *head = (fb_dw3_prep_head *)prepared;
  memset(head, 0, sizeof(*head));
  head->magic = FB_DW3_PREP_MAGIC;
  head->x_zp = x_zp;
  head->c = c;
  /* only the fields fb_dw3_blocks reads (the others zero) */
  const fb_dw3_problem p = {.c = c, .wt = packed, .ws = w_scales, .bias = bias, .x_scale = x_scale,
                            .out_scale = out_scale, .x_zp = x_zp};
  fb_dw3_blocks(&p, (c + FB_NR - 1) / FB_NR, (fb_dw3_block *)(head + 1));
  return QP_OK;
}

int fbgemm_dw3_u8s8_prepared(const uint8_t *x, size_t batch, size_t h, size_t w, size_t c,
                             size_t sh, size_t sw, size_t ph, size_t pw, const void *prepared,
                             int32_t out_zp, int32_t qmin, int32_t qmax, uint8_t *out) {
  const fb_dw3_prep_head *head = (const fb_dw3_prep_head *)prepared;
  size_t oh, ow;
  if (head == NULL || head->magic != FB_DW3_PREP_MAGIC || head->c != c ||
      fbgemm_conv2d_out_size(h, w, 3, 3, sh, sw, ph, pw, 1, 1, &oh, &ow) != QP_OK ||
      out_zp < 0 || out_zp > 255 || qmin < 0 || qmax > 255 || qmin > qmax ||
      (batch > 0 && (x == NULL || out == NULL)))
    return QP_ERR_INVALID_ARGUMENT;
  if (batch * oh * ow == 0) return QP_OK;
  /* the non-fused (non-VNNI) paths requantize with epi; wt / ws / bias are in the blocks */
  const fb_dw3_problem p = {.x = x, .batch = batch, .h = h, .w = w, .c = c, .oh = oh, .ow = ow,
                            .sh = sh, .sw = sw, .ph = ph, .pw = pw, .x_zp = head->x_zp,
                            .out_zp = out_zp, .qmin = qmin, .qmax = qmax,
                            .epi = fb_select().epi_u8, .out = out};
  return fb_dw3_run_blocks(&p, (const fb_dw3_block *)(head + 1), qp_active_isa());
}
