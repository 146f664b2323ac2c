/*
 * Quantized conv2d on NHWC uint8 activations (FBGEMM's layout).
 *
 * General convolutions are lowered to the linear GEMM: for a tile of FB_MC output pixels
 * the patches are gathered (im2col, padding filled with the activation zero point so that
 * it contributes 0) into a per-thread scratch buffer, and multiplied by the packed weight of
 * each group with the same 4x16c4 microkernels and epilogues as fbgemm_linear_u8s8. A 1x1,
 * stride 1, unpadded, ungrouped conv reads the input rows directly (no copy). On AVX-512 VNNI
 * an ungrouped conv without x dilation or weight zero points takes indirect rows instead
 * (fb_conv_row_runs): the kernel reads each kernel row's kw * cin bytes in place through a
 * pointer table, and only border patches are gathered.
 *
 * Depthwise convolutions (groups == in_channels, one input channel per group) use a direct
 * kernel: per 16-channel block, sum over the valid taps in int32 and requantize with the
 * shared epilogue. The common 3x3 / dilation 1 / multiplier 1 / symmetric-weight case takes
 * the faster row path of dwconv3x3.c. FBGEMM has dedicated depthwise kernels for the same
 * reason: im2col would build a K = kh*kw GEMM of tiny K.
 *
 * Weight layout: GEMM-packed per group ([cout_g, kh*kw*cin_g] with k ordered (ky, kx, c),
 * groups concatenated), or for depthwise [kh*kw][cout] int8 (channels innermost).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fbgemm_kernels.h"
#include "quantplug/qp_requant.h"
#include "quantplug/qp_runtime.h"

static int fb_is_depthwise(size_t cin_g, size_t groups) { return groups > 1 && cin_g == 1; }

size_t fbgemm_packed_conv2d_size(size_t cout, size_t cin_g, size_t kh, size_t kw, size_t groups) {
  if (cout == 0 || cin_g == 0 || kh == 0 || kw == 0 || groups == 0 || cout % groups != 0 ||
      kh > 4096 || kw > 4096)
    return 0;
  if (fb_is_depthwise(cin_g, groups)) return kh * kw * cout;
  const size_t per_group = fbgemm_packed_linear_size(cout / groups, kh * kw * cin_g);
  return per_group == 0 ? 0 : per_group * groups;
}

int fbgemm_pack_conv2d_weight(const int8_t *w, size_t cout, size_t cin_g, size_t kh, size_t kw,
                              size_t groups, int8_t *packed, int32_t *row_sums) {
  const size_t size = fbgemm_packed_conv2d_size(cout, cin_g, kh, kw, groups);
  if (size == 0 || w == NULL || packed == NULL || row_sums == NULL) return QP_ERR_INVALID_ARGUMENT;
  const size_t taps = kh * kw;
  if (fb_is_depthwise(cin_g, groups)) {
    for (size_t oc = 0; oc < cout; oc++) {
      int32_t sum = 0;
      for (size_t t = 0; t < taps; t++) {
        packed[t * cout + oc] = w[oc * taps + t];
        sum += w[oc * taps + t];
      }
      row_sums[oc] = sum;
    }
    return QP_OK;
  }
  const size_t cout_g = cout / groups, k = taps * cin_g;
  const size_t per_group = fbgemm_packed_linear_size(cout_g, k);
  int8_t *tmp = (int8_t *)fb_scratch(cout_g * k);
  if (tmp == NULL) return QP_ERR_OUT_OF_MEMORY;
  for (size_t g = 0; g < groups; g++) {
    /* OIHW -> [oc][ky][kx][c] for this group */
    for (size_t o = 0; o < cout_g; o++)
      for (size_t c = 0; c < cin_g; c++)
        for (size_t t = 0; t < taps; t++)
          tmp[o * k + t * cin_g + c] = w[((g * cout_g + o) * cin_g + c) * taps + t];
    int status = fbgemm_pack_linear_weight(tmp, cout_g, k, packed + g * per_group,
                                           row_sums + g * cout_g);
    if (status != QP_OK) return status;
  }
  return QP_OK;
}

typedef struct {
  size_t batch, h, w, cin, cout, cin_g, cout_g, groups;
  size_t kh, kw, sh, sw, ph, pw, dh, dw, oh, ow;
} fb_conv_shape;

static int fb_conv_out_dim(size_t in, size_t k, size_t s, size_t p, size_t d, size_t *out) {
  const size_t span = d * (k - 1) + 1;
  if (s == 0 || d == 0 || in + 2 * p < span) return QP_ERR_INVALID_ARGUMENT;
  *out = (in + 2 * p - span) / s + 1;
  return QP_OK;
}

/* memcpy of a short run of the gather with fixed-size, possibly overlapping pieces (inline
 * moves; never outside [src, src + n) or [dst, dst + n)): the 7x7 RGB stem copies 21-byte
 * runs, 7 per output pixel, and a memcpy call for each cost more than the layer's GEMM. */
static inline void fb_copy_run(uint8_t *dst, const uint8_t *src, size_t n) {
  if (n >= 32) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) memcpy(dst + i, src + i, 32);
    if (i < n) memcpy(dst + n - 32, src + n - 32, 32);
  } else if (n >= 16) {
    memcpy(dst, src, 16);
    memcpy(dst + n - 16, src + n - 16, 16);
  } else if (n >= 8) {
    memcpy(dst, src, 8);
    memcpy(dst + n - 8, src + n - 8, 8);
  } else if (n >= 4) {
    memcpy(dst, src, 4);
    memcpy(dst + n - 4, src + n - 4, 4);
  } else {
    for (size_t i = 0; i < n; i++) dst[i] = src[i];
  }
}

/* Gather the patch of output pixel `pix` for group g into row (K = kh*kw*cin_g bytes). */
static void fb_im2col_row(const fb_conv_shape *s, const uint8_t *x, uint8_t x_zp, size_t pix,
                          size_t g, uint8_t *row) {
  const size_t ox = pix % s->ow, oy = (pix / s->ow) % s->oh, b = pix / (s->ow * s->oh);
  const size_t cg = s->cin_g;
  /* ungrouped, undilated: a kernel row's valid taps are adjacent NHWC pixels, one copy between
   * the padding on either side (a 7x7 RGB stem otherwise made 49 three-byte copies per pixel) */
  const ptrdiff_t ix0 = (ptrdiff_t)(ox * s->sw) - (ptrdiff_t)s->pw, kw = (ptrdiff_t)s->kw;
  const int ungrouped = s->groups == 1 && s->dw == 1;
  /* valid taps kx in [lo, hi) (0 <= ix0 + kx < w), ungrouped case */
  const ptrdiff_t lo = ix0 < 0 ? (-ix0 < kw ? -ix0 : kw) : 0;
  const ptrdiff_t right = (ptrdiff_t)s->w - ix0, hi = right < lo ? lo : (right < kw ? right : kw);
  for (size_t ky = 0; ky < s->kh; ky++) {
    const ptrdiff_t iy = (ptrdiff_t)(oy * s->sh + ky * s->dh) - (ptrdiff_t)s->ph;
    if (ungrouped || iy < 0 || iy >= (ptrdiff_t)s->h) {
      if (iy < 0 || iy >= (ptrdiff_t)s->h) {
        memset(row, x_zp, s->kw * cg);
      } else {
        memset(row, x_zp, (size_t)lo * cg);
        if (hi > lo)
          fb_copy_run(row + (size_t)lo * cg,
                      x + ((b * s->h + (size_t)iy) * s->w + (size_t)(ix0 + lo)) * s->cin,
                      (size_t)(hi - lo) * cg);
        memset(row + (size_t)hi * cg, x_zp, (size_t)(kw - hi) * cg);
      }
      row += s->kw * cg;
      continue;
    }
    for (size_t kx = 0; kx < s->kw; kx++, row += cg) {
      const ptrdiff_t ix = (ptrdiff_t)(ox * s->sw + kx * s->dw) - (ptrdiff_t)s->pw;
      if (ix < 0 || ix >= (ptrdiff_t)s->w) {
        memset(row, x_zp, cg);
      } else {
        fb_copy_run(row, x + ((b * s->h + (size_t)iy) * s->w + (size_t)ix) * s->cin + g * cg, cg);
      }
    }
  }
}

#define FB_IND_MAX_KH 16 /* kernel rows of the indirect path (its pointer table is on the stack) */

/* The kh runs of output pixel `pix` (at ox, oy of image b) for the indirect kernel, each
 * kw * cin input bytes read as run_pad >= kw * cin bytes (run_pad - kw * cin bytes past a run
 * meet zero weights, see fb_conv_pad_runs): a pointer into x when the run is inside the input
 * (and its padded end inside x, x_end), else into `row` (slot ky at ky * run_pad), where that
 * run alone is gathered with its padding (one group, no dilation in x). Per run, not per
 * patch: a patch on the top or bottom border still reads most of its runs in place, and no
 * patch is gathered whole and then spread (the RGB stem's border patches, 5% of its pixels,
 * took 8% of its time that way). */
static void fb_conv_row_runs(const fb_conv_shape *s, const uint8_t *x, const uint8_t *x_end,
                             uint8_t x_zp, size_t run_pad, size_t pix, size_t ox, size_t oy,
                             size_t b, uint8_t *row, const uint8_t **runs) {
  (void)pix;
  const ptrdiff_t ix0 = (ptrdiff_t)(ox * s->sw) - (ptrdiff_t)s->pw, kw = (ptrdiff_t)s->kw;
  const ptrdiff_t iy0 = (ptrdiff_t)(oy * s->sh) - (ptrdiff_t)s->ph;
  const size_t cin = s->cin, run = s->kw * cin;
  if (ix0 >= 0 && ix0 + kw <= (ptrdiff_t)s->w && iy0 >= 0 &&
      iy0 + (ptrdiff_t)((s->kh - 1) * s->dh) < (ptrdiff_t)s->h) { /* interior: the common case */
    for (size_t ky = 0; ky < s->kh; ky++)
      runs[ky] = x + ((b * s->h + (size_t)iy0 + ky * s->dh) * s->w + (size_t)ix0) * cin;
    if ((size_t)(x_end - runs[s->kh - 1]) >= run_pad) return;
  }
  /* valid taps kx in [lo, hi) (0 <= ix0 + kx < w) */
  const ptrdiff_t lo = ix0 < 0 ? (-ix0 < kw ? -ix0 : kw) : 0;
  const ptrdiff_t right = (ptrdiff_t)s->w - ix0, hi = right < lo ? lo : (right < kw ? right : kw);
  for (size_t ky = 0; ky < s->kh; ky++) {
    const ptrdiff_t iy = iy0 + (ptrdiff_t)(ky * s->dh);
    uint8_t *slot = row + ky * run_pad;
    runs[ky] = slot;
    if (iy < 0 || iy >= (ptrdiff_t)s->h) {
      memset(slot, x_zp, run);
    } else {
      const uint8_t *line = x + (b * s->h + (size_t)iy) * s->w * cin;
      if (lo == 0 && hi == kw && (size_t)(x_end - (line + (size_t)ix0 * cin)) >= run_pad) {
        runs[ky] = line + (size_t)ix0 * cin;
        continue;
      }
      memset(slot, x_zp, (size_t)lo * cin);
      if (hi > lo) fb_copy_run(slot + (size_t)lo * cin, line + (size_t)(ix0 + lo) * cin, (size_t)(hi - lo) * cin);
      memset(slot + (size_t)hi * cin, x_zp, (size_t)(kw - hi) * cin);
    }
    memset(slot + run, 0, run_pad - run);
  }
}

/* The packed weight with each kernel row's kw * cin values followed by zeros up to run_pad
 * (a multiple of FB_KR, so no k group of the indirect kernel straddles two runs): for the
 * 7x7 RGB stem (21-byte runs, 147 -> 168 K) the few extra zero MACs cost much less than the
 * im2col copy they replace. Rebuilt per call (the stem's weight is 9 KB); freed by the caller. */
static int8_t *fb_conv_pad_runs(const int8_t *packed, size_t n, size_t kh, size_t run,
                                size_t run_pad) {
  const size_t k = kh * run, kp = kh * run_pad;
  int8_t *w = (int8_t *)malloc(n * k), *wp = (int8_t *)calloc(n, kp);
  int32_t *sums = (int32_t *)malloc(n * sizeof(int32_t));
  int8_t *out = (int8_t *)malloc(fbgemm_packed_linear_size(n, kp));
  int ok = w != NULL && wp != NULL && sums != NULL && out != NULL &&
           fbgemm_unpack_linear_weight(packed, n, k, w) == QP_OK;
  if (ok) {
    for (size_t j = 0; j < n; j++)
      for (size_t ky = 0; ky < kh; ky++) memcpy(wp + j * kp + ky * run_pad, w + j * k + ky * run, run);
    ok = fbgemm_pack_linear_weight(wp, n, kp, out, sums) == QP_OK;
  }
  free(w);
  free(wp);
  free(sums);
  if (!ok) {
    free(out);
    return NULL;
  }
  return out;
}

typedef struct {
  fb_conv_shape s;
  fb_gemm_params p; /* group 0; w / rs / wz / ws / bias are offset per group */
  const uint8_t *x;
  uint8_t *out;
  size_t m, packed_group_size;
  size_t nsplit, chunk; /* column split: a task is (row tile, chunk of packed blocks) */
  int indirect; /* rows as kh runs read in place (fb_conv_row_runs), not im2col copies */
  size_t run_pad;   /* indirect: bytes per run in the kernel's rows (p.k = kh * run_pad) */
  int direct; /* 1x1 / stride 1 / no padding / one group: rows are the input itself */
  int status;
} fb_conv_ctx;

static void fb_conv_task(void *vctx, size_t begin, size_t end) {
  fb_conv_ctx *c = (fb_conv_ctx *)vctx;
  const fb_conv_shape *s = &c->s;
  const size_t k = c->p.k;
  uint8_t *scratch = NULL;
  if (!c->direct) {
    scratch = fb_scratch(FB_MC * k);
    if (scratch == NULL) {
      c->status = QP_ERR_OUT_OF_MEMORY; /* benign race: every writer stores the same value */
      return;
    }
  }
  const size_t nb = (s->cout_g + FB_NR - 1) / FB_NR;
  size_t gathered = (size_t)-1; /* row tile whose patches the scratch holds (one group) */
  const uint8_t *runs[FB_MC * FB_IND_MAX_KH];
  for (size_t t = begin; t < end; t++) {
    const size_t mt = t / c->nsplit, b0 = (t % c->nsplit) * c->chunk;
    if (b0 >= nb) continue;
    const size_t b1 = b0 + c->chunk < nb ? b0 + c->chunk : nb;
    const size_t m0 = mt * FB_MC, mc = c->m - m0 < FB_MC ? c->m - m0 : FB_MC;
    if (c->indirect) {
      if (gathered != mt) {
        /* pixel coordinates stepped, not divided out per pixel (three 64-bit divisions per
         * pixel were ~5% of the RGB stem, whose GEMM is short: K = 168) */
        size_t ox = m0 % s->ow, oy = (m0 / s->ow) % s->oh, b = m0 / (s->ow * s->oh);
        for (size_t i = 0; i < mc; i++) {
          fb_conv_row_runs(s, c->x, c->x + s->batch * s->h * s->w * s->cin, (uint8_t)c->p.x_zp,
                           c->run_pad, m0 + i, ox, oy, b, scratch + i * k, runs + i * s->kh);
          if (++ox == s->ow) {
            ox = 0;
            if (++oy == s->oh) {
              oy = 0;
              b++;
            }
          }
        }
      }
      gathered = mt;
      fb_gemm_rows_indirect(&c->p, runs, s->kh, mc, b0, b1, c->out + m0 * s->cout, s->cout);
      continue;
    }
    for (size_t g = 0; g < s->groups; g++) {
      fb_gemm_params p = c->p;
      p.w += g * c->packed_group_size;
      p.pre += g * nb;
      const uint8_t *a;
      size_t a_stride;
      if (c->direct) {
        a = c->x + m0 * s->cin;
        a_stride = s->cin;
      } else {
        /* consecutive tasks of one row tile (column split, one group) reuse the patches */
        if (s->groups > 1 || gathered != mt)
          for (size_t i = 0; i < mc; i++)
            fb_im2col_row(s, c->x, (uint8_t)c->p.x_zp, m0 + i, g, scratch + i * k);
        gathered = mt;
        a = scratch;
        a_stride = k;
      }
      fb_gemm_rows(&p, a, a_stride, mc, b0, b1, c->out + m0 * s->cout + g * s->cout_g, s->cout);
    }
  }
}

/* ------------------------------------------------------------ depthwise -- */

typedef struct {
  fb_conv_shape s;
  const uint8_t *x;
  const int8_t *w;
  const int32_t *wz;
  const float *ws, *bias;
  float x_scale, out_scale;
  int32_t x_zp, out_zp, qmin, qmax;
  fb_epilogue_u8_fn epi;
  uint8_t *out;
  size_t pix_chunk, npix;
  fb_dw_taps_fn taps16; /* SIMD tap sums for one multiplier (NULL: scalar loop) */
} fb_dw_ctx;

/* Valid taps of output pixel `pix` from linear tap index *tap on, at most FB_DW_MAX_TAPS:
 * input pixel pointers (channel 0) and weight tap rows (channel 0). Padding taps contribute
 * (x_zp - x_zp) * w = 0 and are skipped. Advances *tap; returns the count. */
static size_t fb_dw_gather(const fb_dw_ctx *c, size_t pix, size_t *tap, const uint8_t **xs,
                           const int8_t **ws) {
  const fb_conv_shape *s = &c->s;
  const size_t ox = pix % s->ow, oy = (pix / s->ow) % s->oh, b = pix / (s->ow * s->oh);
  size_t nt = 0, t = *tap;
  size_t ky = t / s->kw, kx = t % s->kw; /* divisions once per batch, not per tap */
  for (; t < s->kh * s->kw && nt < FB_DW_MAX_TAPS; t++) {
    const ptrdiff_t iy = (ptrdiff_t)(oy * s->sh + ky * s->dh) - (ptrdiff_t)s->ph;
    const ptrdiff_t ix = (ptrdiff_t)(ox * s->sw + kx * s->dw) - (ptrdiff_t)s->pw;
    if (iy >= 0 && iy < (ptrdiff_t)s->h && ix >= 0 && ix < (ptrdiff_t)s->w) {
      xs[nt] = c->x + ((b * s->h + (size_t)iy) * s->w + (size_t)ix) * s->cin;
      ws[nt++] = c->w + t * s->cout;
    }
    if (++kx == s->kw) {
      kx = 0;
      ky++;
    }
  }
  *tap = t;
  return nt;
}

/* total[j] += sum over the nt taps of (x - x_zp) * (w - wz) for channels c0 + j, j < nc
 * (uint32: wraps like int32). */
static void fb_dw_sum(const fb_dw_ctx *c, const uint8_t *const *xs, const int8_t *const *ws,
                      size_t nt, size_t c0, size_t nc, uint32_t *total) {
  const size_t mult = c->s.cout / c->s.cin;
  if (mult == 1 && c->taps16 != NULL) {
    int32_t acc[FB_NR];
    c->taps16(xs, ws, nt, c0, nc, c->x_zp, c->wz + c0, acc);
    for (size_t j = 0; j < FB_NR; j++) total[j] += (uint32_t)acc[j];
    return;
  }
  int32_t wz[FB_NR] = {0};
  for (size_t j = 0; j < nc; j++) wz[j] = c->wz[c0 + j];
  for (size_t t = 0; t < nt; t++) {
    const int8_t *wp = ws[t] + c0;
    if (mult == 1) {
      const uint8_t *xp = xs[t] + c0;
      for (size_t j = 0; j < FB_NR; j++) { /* fixed trip count: vectorizes */
        const int32_t xv = j < nc ? (int32_t)xp[j] - c->x_zp : 0;
        const int32_t wv = j < nc ? (int32_t)wp[j] - wz[j] : 0;
        total[j] += (uint32_t)(xv * wv);
      }
    } else {
      for (size_t j = 0; j < nc; j++)
        total[j] += (uint32_t)(((int32_t)xs[t][(c0 + j) / mult] - c->x_zp) * ((int32_t)wp[j] - wz[j]));
    }
  }
}

void fb_dw_block_params(const float *ws, const float *bias, float x_scale, float out_scale,
                        size_t c0, size_t nc, fb_block_params *params) {
  memset(params, 0, sizeof(*params));
  for (size_t j = 0; j < nc; j++) {
    const float acc_scale = x_scale * ws[c0 + j];
    params->mult[j] = acc_scale / out_scale;
    params->col[j] = bias != NULL ? fb_f32_to_i32_sat(nearbyintf(bias[c0 + j] / acc_scale)) : 0;
  }
}

/* The row path (dwconv3x3.c) covers the common MobileNet-style case. */
static int fb_dw3_eligible(const fb_conv_shape *s, const int32_t *w_zps) {
  return fb_dw3_weights_eligible(s->cin, s->cout, s->groups, s->kh, s->kw, s->dh, s->dw, w_zps);
}

#define FB_DW_GROUP 16 /* channel blocks per pass: taps are gathered once per pixel and group */

/* Task = a chunk of output pixels, all channels. */
static void fb_dw_task(void *vctx, size_t begin, size_t end) {
  const fb_dw_ctx *c = (const fb_dw_ctx *)vctx;
  const size_t nb = (c->s.cout + FB_NR - 1) / FB_NR, taps = c->s.kh * c->s.kw;
  fb_block_params params[FB_DW_GROUP];
  uint32_t total[FB_DW_GROUP][FB_NR];
  const uint8_t *xs[FB_DW_MAX_TAPS];
  const int8_t *ws[FB_DW_MAX_TAPS];
  for (size_t t = begin; t < end; t++) {
    const size_t p0 = t * c->pix_chunk;
    const size_t p1 = p0 + c->pix_chunk < c->npix ? p0 + c->pix_chunk : c->npix;
    for (size_t g0 = 0; g0 < nb; g0 += FB_DW_GROUP) {
      const size_t ng = nb - g0 < FB_DW_GROUP ? nb - g0 : FB_DW_GROUP;
      for (size_t g = 0; g < ng; g++) {
        const size_t c0 = (g0 + g) * FB_NR, nc = c->s.cout - c0 < FB_NR ? c->s.cout - c0 : FB_NR;
        fb_dw_block_params(c->ws, c->bias, c->x_scale, c->out_scale, c0, nc, &params[g]);
      }
      for (size_t pix = p0; pix < p1; pix++) {
        memset(total, 0, sizeof(total));
        for (size_t tap = 0; tap < taps;) {
          const size_t nt = fb_dw_gather(c, pix, &tap, xs, ws);
          for (size_t g = 0; g < ng; g++) {
            const size_t c0 = (g0 + g) * FB_NR, nc = c->s.cout - c0 < FB_NR ? c->s.cout - c0 : FB_NR;
            fb_dw_sum(c, xs, ws, nt, c0, nc, total[g]);
          }
        }
        for (size_t g = 0; g < ng; g++) {
          const size_t c0 = (g0 + g) * FB_NR, nc = c->s.cout - c0 < FB_NR ? c->s.cout - c0 : FB_NR;
          c->epi(1, nc, (const int32_t *)total[g], NULL, &params[g], c->out_zp, c->qmin, c->qmax,
                 c->out + pix * c->s.cout + c0, 0);
        }
      }
    }
  }
}

/* ---------------------------------------------------------------- entry -- */

int fbgemm_conv2d_out_size(size_t h, size_t w, size_t kh, size_t kw, size_t sh, size_t sw,
                           size_t ph, size_t pw, size_t dh, size_t dw, size_t *oh, size_t *ow) {
  if (oh == NULL || ow == NULL || kh == 0 || kw == 0) return QP_ERR_INVALID_ARGUMENT;
  if (fb_conv_out_dim(h, kh, sh, ph, dh, oh) != QP_OK) return QP_ERR_INVALID_ARGUMENT;
  return fb_conv_out_dim(w, kw, sw, pw, dw, ow);
}

int fbgemm_conv2d_u8s8(const uint8_t *x, size_t batch, size_t h, size_t w, size_t cin,
                       float x_scale, int32_t x_zp, const int8_t *packed,
                       const int32_t *row_sums, const float *w_scales, const int32_t *w_zps,
                       size_t cout, size_t kh, size_t kw, size_t sh, size_t sw, size_t ph,
                       size_t pw, size_t dh, size_t dw, size_t groups, const float *bias,
                       float out_scale, int32_t out_zp, int32_t qmin, int32_t qmax,
                       uint8_t *out) {
  fb_conv_shape s = {batch, h, w, cin, cout, 0, 0, groups, kh, kw, sh, sw, ph, pw, dh, dw, 0, 0};
  if (groups == 0 || cin % groups != 0 || cout % groups != 0 || cin == 0) return QP_ERR_INVALID_ARGUMENT;
  s.cin_g = cin / groups;
  s.cout_g = cout / groups;
  int has_wz;
  if (fbgemm_packed_conv2d_size(cout, s.cin_g, kh, kw, groups) == 0 ||
      fbgemm_conv2d_out_size(h, w, kh, kw, sh, sw, ph, pw, dh, dw, &s.oh, &s.ow) != QP_OK ||
      fb_check_weights(packed, row_sums, w_scales, w_zps, cout, 1, &has_wz) != QP_OK ||
      fb_check_requant(x_scale, x_zp, out_scale, out_zp, qmin, qmax) != QP_OK ||
      fb_check_bias(bias, cout) != QP_OK || (batch > 0 && (x == NULL || out == NULL)))
    return QP_ERR_INVALID_ARGUMENT;
  const size_t m = batch * s.oh * s.ow;
  if (m == 0) return QP_OK;
  const size_t taps = kh * kw;
  const fb_gemm_impl impl = fb_select();

  if (fb_is_depthwise(s.cin_g, groups) && fb_dw3_eligible(&s, w_zps)) {
    const fb_dw3_problem p = {x, batch, h, w, cin, s.oh, s.ow, sh, sw, ph, pw, packed,
                              w_scales, bias, x_scale, out_scale, x_zp, out_zp, qmin, qmax,
                              impl.epi_u8, out};
    return fb_dw3_run(&p, qp_active_isa());
  }
  if (fb_is_depthwise(s.cin_g, groups)) {
    fb_dw_ctx c = {s, x, packed, w_zps, w_scales, bias, x_scale, out_scale, x_zp, out_zp,
                   qmin, qmax, impl.epi_u8, out, 64, m, NULL};
#if defined(FB_HAVE_X86)
    const int isa = qp_active_isa();
    if (isa == QP_ISA_AVX512 || isa == QP_ISA_AVX512VNNI) c.taps16 = fb_dw_taps16__avx512;
#endif
    const size_t ntasks = (m + c.pix_chunk - 1) / c.pix_chunk;
    if (m * cout * taps < FB_PARALLEL_MIN_MACS)
      fb_dw_task(&c, 0, ntasks);
    else
      qp_parallel_for(ntasks, 1, fb_dw_task, &c);
    return QP_OK;
  }

  fb_conv_ctx c;
  memset(&c, 0, sizeof(c));
  c.s = s;
  c.p.impl = impl;
  c.p.k = taps * s.cin_g;
  c.p.n = s.cout_g;
  c.p.w = packed;
  c.p.rs = row_sums;
  c.p.wz = w_zps;
  c.p.ws = w_scales;
  c.p.bias = bias;
  c.p.x_scale = x_scale;
  c.p.out_scale = out_scale;
  c.p.x_zp = x_zp;
  c.p.out_zp = out_zp;
  c.p.qmin = qmin;
  c.p.qmax = qmax;
  c.p.has_wz = has_wz;
  /* padding bytes hold x_zp: above 127 they need the split form too */
  c.p.split = impl.uses_maddubs &&
              (fb_any_above_127(x, batch * h * w * cin) || (x_zp > 127 && (ph > 0 || pw > 0)));
  c.x = x;
  c.out = out;
  c.m = m;
  c.packed_group_size = fbgemm_packed_linear_size(s.cout_g, c.p.k);
  c.direct = taps == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0 && groups == 1;
  /* indirect rows: runs of kw * cin bytes, padded to a multiple of FB_KR (zero weights) when
   * that adds at most a quarter more work */
  const size_t run = kw * cin, run_pad = (run + FB_KR - 1) / FB_KR * FB_KR;
  c.indirect = impl.wide_ind != NULL && !c.direct && groups == 1 && dw == 1 && !has_wz &&
               kh <= FB_IND_MAX_KH && (run == run_pad || (run >= 12 && kh * run_pad <= 4096));
  c.run_pad = run_pad;
  int8_t *padded = NULL;
  /* The per-block epilogue parameters (a division and a rounding per channel) once per call,
   * not once per row tile and block as the unprepared GEMM would (2-3% of a 64-channel 3x3). */
  const size_t nb = (s.cout_g + FB_NR - 1) / FB_NR;
  fb_block_params *pre = (fb_block_params *)malloc(groups * nb * sizeof(fb_block_params));
  if (pre == NULL) return QP_ERR_OUT_OF_MEMORY;
  for (size_t g = 0; g < groups; g++) {
    fb_gemm_params pg = c.p;
    pg.rs += g * s.cout_g;
    pg.wz += g * s.cout_g;
    pg.ws += g * s.cout_g;
    if (pg.bias != NULL) pg.bias += g * s.cout_g;
    for (size_t b = 0; b < nb; b++) {
      const size_t n0 = b * FB_NR;
      fb_block_setup(&pg, n0, s.cout_g - n0 < FB_NR ? s.cout_g - n0 : FB_NR, &pre[g * nb + b]);
    }
  }
  c.p.pre = pre;
  if (c.indirect && run_pad != run) {
    padded = fb_conv_pad_runs(packed, cout, kh, run, run_pad);
    if (padded == NULL) {
      free(pre);
      return QP_ERR_OUT_OF_MEMORY;
    }
    c.p.w = padded;
    c.p.k = kh * run_pad;
  }
  /* Few row tiles (the 7x7 and 14x14 layers: M = 49, 196) cannot keep every thread busy, so
   * the packed column blocks are split too (in whole wide-kernel pairs); a task then gathers
   * its tile's patches again, which is small next to its share of the GEMM. Tasks write
   * disjoint outputs: results do not depend on the split. */
  const size_t mtiles = (m + FB_MC - 1) / FB_MC, threads = (size_t)qp_get_num_threads();
  const int parallel = m * cout * c.p.k >= FB_PARALLEL_MIN_MACS && threads > 1;
  c.nsplit = 1;
  if (parallel && mtiles < 4 * threads) {
    const size_t want = (4 * threads + mtiles - 1) / mtiles, pairs = (nb + 1) / 2;
    c.nsplit = want < pairs ? want : pairs;
  }
  const size_t pairs_per = ((nb + 1) / 2 + c.nsplit - 1) / c.nsplit;
  c.chunk = 2 * pairs_per;
  const size_t ntasks = mtiles * c.nsplit;
  if (!parallel)
    fb_conv_task(&c, 0, ntasks);
  else
    qp_parallel_for(ntasks, 1, fb_conv_task, &c);
  free(pre);
  free(padded);
  return c.status;
}
