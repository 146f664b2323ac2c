/*
 * conv2d on NHWC uint8 activations, as one GEMM per group over the GEMM core of
 * linear.c: rows = output pixels, K = kh segments of kw*ic_per_group (order ky, kx, ic;
 * with one group each segment is padded with zero weights to a multiple of 4 bytes),
 * columns = output channels of the group. 1x1 stride-1 unpadded convolutions read
 * the input directly. Otherwise, where the ISA has an indirect microkernel (AVX-512
 * VNNI) and the kernel columns are adjacent (one group, dilation_w 1), a row is a
 * table of kh pointers into the input, one per kernel row (kw adjacent pixels are
 * kw*C contiguous bytes), and only border segments are built (XNNPACK's igemm idea:
 * no im2col copy). Everywhere else rows are built by im2col into a per-task buffer.
 * Padding is the input zero point, i.e. real 0.0.
 *
 * The x86 conv + add (+ relu) fusion: with `other`, the epilogue computes
 * (float)(acc + bias_q) * m[c] + (float)(other - other_zp) * m_o, then one
 * rounding, the zero point and the clamp (qmin = out_zp gives the relu).
 */
#include <stdlib.h>
#include <string.h>

#include "onednn_kernels.h"
#include "quantplug/qp_requant.h"
#include "xo_internal.h"

static int xo_overflows(size_t a, size_t b) { return a != 0 && b > SIZE_MAX / a; }

/* Length of one kernel-row segment of K: kw*icg bytes, padded with zero weights to a multiple
 * of 4 when groups == 1 so that every segment starts a VNNI k-group and the indirect kernel
 * can read a kernel row straight from the NHWC input (kw adjacent pixels = kw*C contiguous
 * bytes). Grouped / depthwise layouts are unpadded. K = kh * segment. */
static size_t xo_conv_seg(size_t icg, size_t kw, size_t groups) {
  return groups == 1 ? xo_round_up(kw * icg, XO_KC) : kw * icg;
}

size_t x86_onednn_packed_conv2d_size(size_t oc, size_t ic_per_group, size_t kh, size_t kw,
                                     size_t groups) {
  if (groups == 0 || oc % groups != 0) return 0;
  if (xo_overflows(kh, kw) || xo_overflows(kh * kw, ic_per_group) || kw * ic_per_group > SIZE_MAX / 2)
    return 0;
  const size_t seg = xo_conv_seg(ic_per_group, kw, groups);
  if (xo_overflows(kh, seg)) return 0;
  const size_t per = x86_onednn_packed_linear_size(oc / groups, kh * seg);
  if (per == 0 || xo_overflows(per, groups)) return 0;
  return per * groups;
}

int x86_onednn_pack_conv2d_weight(const int8_t *w_ohwi, size_t oc, size_t ic_per_group,
                                  size_t kh, size_t kw, size_t groups, int8_t *packed,
                                  int32_t *col_sums) {
  const size_t size = x86_onednn_packed_conv2d_size(oc, ic_per_group, kh, kw, groups);
  if (size == 0 || w_ohwi == NULL || packed == NULL || col_sums == NULL)
    return QP_ERR_INVALID_ARGUMENT;
  const size_t ocg = oc / groups, run = kw * ic_per_group, k = kh * run;
  const size_t seg = xo_conv_seg(ic_per_group, kw, groups), kpad = kh * seg;
  const size_t per = size / groups;
  int8_t *wpad = NULL;
  if (kpad != k) { /* [oc][kh][seg]: each kernel row padded with zeros */
    wpad = (int8_t *)calloc(ocg * kpad, 1);
    if (wpad == NULL) return QP_ERR_OUT_OF_MEMORY;
  }
  int st = QP_OK;
  for (size_t g = 0; g < groups && st == QP_OK; g++) {
    const int8_t *src = w_ohwi + g * ocg * k;
    if (wpad != NULL) {
      for (size_t o = 0; o < ocg; o++)
        for (size_t ky = 0; ky < kh; ky++) memcpy(wpad + o * kpad + ky * seg, src + o * k + ky * run, run);
      src = wpad;
    }
    st = x86_onednn_pack_linear_weight(src, ocg, kpad, packed + g * per, col_sums + g * ocg);
  }
  free(wpad);
  return st;
}

typedef struct {
  const uint8_t *x;
  size_t h, w, c, icg, group;
  size_t kh, kw, oh, ow;
  int64_t sh, sw, ph, pw, dh, dw;
  uint8_t pad;
  size_t seg;   /* bytes per kernel row in K (kw*icg, padded: xo_conv_seg) */
  size_t total; /* input bytes (the indirect path never points past them) */
} xo_im2col;

/* Small copies inline (memcpy calls dominate im2col for few channels per tap). */
static inline void xo_copy(uint8_t *dst, const uint8_t *src, size_t n) {
  while (n >= 16) {
    memcpy(dst, src, 16);
    dst += 16, src += 16, n -= 16;
  }
  if (n >= 8) {
    memcpy(dst, src, 8);
    dst += 8, src += 8, n -= 8;
  }
  while (n-- > 0) *dst++ = *src++;
}

static void xo_im2col_taps(const xo_im2col *g, size_t b, int64_t iy, int y_in, int64_t ix0,
                           uint8_t *dst);

static void xo_im2col_rows(void *vctx, size_t row0, size_t mr, uint8_t *buf, size_t ldb) {
  const xo_im2col *g = (const xo_im2col *)vctx;
  /* one group, dilation_w 1: the kw taps of a kernel row are kw adjacent pixels, i.e.
   * kw*c contiguous bytes when they are all inside the image */
  const int runs = g->icg == g->c && g->dw == 1;
  for (size_t r = 0; r < mr; r++) {
    const size_t p = row0 + r;
    const size_t ox = p % g->ow, oy = (p / g->ow) % g->oh, b = p / (g->ow * g->oh);
    const int64_t ix0 = (int64_t)ox * g->sw - g->pw;
    const int row_inside = ix0 >= 0 && ix0 + (int64_t)(g->kw - 1) * g->dw < (int64_t)g->w;
    uint8_t *dst = buf + r * ldb;
    for (size_t ky = 0; ky < g->kh; ky++) {
      const int64_t iy = (int64_t)oy * g->sh - g->ph + (int64_t)ky * g->dh;
      const int y_in = iy >= 0 && iy < (int64_t)g->h;
      uint8_t *const seg_end = dst + g->seg;
      if (runs && y_in && row_inside) {
        xo_copy(dst, g->x + ((b * g->h + (size_t)iy) * g->w + (size_t)ix0) * g->c, g->kw * g->c);
        dst += g->kw * g->c;
      } else {
        xo_im2col_taps(g, b, iy, y_in, ix0, dst);
        dst += g->kw * g->icg;
      }
      while (dst < seg_end) *dst++ = 0; /* padding of the segment (zero weights) */
    }
  }
}

/* A border segment of the indirect path (one group, dilation_w 1): the taps inside the image
 * are one run of the input row, the others the pad value, then zeros up to seg. */
static void xo_conv_border_seg(const xo_im2col *g, size_t b, int64_t iy, int y_in, int64_t ix0,
                               uint8_t *dst) {
  const size_t run = g->kw * g->c;
  int64_t lo = 0, hi = 0; /* taps [lo, hi) are inside the image */
  if (y_in) {
    lo = ix0 < 0 ? -ix0 : 0;
    hi = (int64_t)g->w - ix0 < (int64_t)g->kw ? (int64_t)g->w - ix0 : (int64_t)g->kw;
    if (hi < lo) hi = lo;
    if (lo > (int64_t)g->kw) lo = hi = (int64_t)g->kw;
  }
  memset(dst, g->pad, (size_t)lo * g->c);
  if (hi > lo)
    memcpy(dst + (size_t)lo * g->c, g->x + ((b * g->h + (size_t)iy) * g->w + (size_t)(ix0 + lo)) * g->c,
           (size_t)(hi - lo) * g->c);
  memset(dst + (size_t)hi * g->c, g->pad, run - (size_t)hi * g->c);
  memset(dst + run, 0, g->seg - run);
}

/* Indirect rows: kernel row ky of output pixel p is the kw*C input bytes at (iy, ix0) when
 * they are all inside the image (and seg bytes from there stay inside the input); border
 * segments are built in scratch like im2col builds them. */
static void xo_conv_ptrs(void *vctx, size_t row0, size_t mr, const uint8_t **ptrs,
                         uint8_t *scratch) {
  const xo_im2col *g = (const xo_im2col *)vctx;
  const size_t ystep = (size_t)g->dh * g->w * g->c; /* bytes between kernel rows */
  /* the block's first pixel by division, the next ones by stepping (divisions cost more
   * than the rest of the table) */
  size_t ox = row0 % g->ow, oy = (row0 / g->ow) % g->oh, b = row0 / (g->ow * g->oh);
  const size_t xstep = (size_t)g->sw * g->c; /* bytes between horizontally adjacent outputs */
  const int64_t last_ix0 = (int64_t)g->w - (int64_t)g->kw;
  int prev_interior = 0; /* pixel r-1 was interior and in the same output row */
  for (size_t r = 0; r < mr; r++) {
    if (r > 0 && ++ox == g->ow) {
      ox = 0, prev_interior = 0;
      if (++oy == g->oh) oy = 0, b++;
    }
    const int64_t ix0 = (int64_t)ox * g->sw - g->pw;
    if (prev_interior && ix0 <= last_ix0 &&
        (size_t)(ptrs[(g->kh - 1) * XO_MR_MAX + r - 1] - g->x) + xstep + g->seg <= g->total) {
      /* the next interior pixel of the row: every kernel row moves by sw pixels */
      for (size_t ky = 0; ky < g->kh; ky++)
        ptrs[ky * XO_MR_MAX + r] = ptrs[ky * XO_MR_MAX + r - 1] + xstep;
      continue;
    }
    prev_interior = 0;
    const int64_t iy0 = (int64_t)oy * g->sh - g->ph;
    const int64_t iy_last = iy0 + (int64_t)(g->kh - 1) * g->dh;
    if (ix0 >= 0 && ix0 <= last_ix0 && iy0 >= 0 && iy_last < (int64_t)g->h) {
      /* interior pixel: kernel row ky starts ky * ystep bytes after row 0 */
      const size_t off = ((b * g->h + (size_t)iy0) * g->w + (size_t)ix0) * g->c;
      if (off + (g->kh - 1) * ystep + g->seg <= g->total) {
        const uint8_t *q = g->x + off;
        for (size_t ky = 0; ky < g->kh; ky++, q += ystep) ptrs[ky * XO_MR_MAX + r] = q;
        prev_interior = 1;
        continue;
      }
    }
    for (size_t ky = 0; ky < g->kh; ky++) {
      const int64_t iy = iy0 + (int64_t)ky * g->dh;
      const int y_in = iy >= 0 && iy < (int64_t)g->h;
      if (y_in && ix0 >= 0 && ix0 + (int64_t)g->kw <= (int64_t)g->w) {
        const size_t off = ((b * g->h + (size_t)iy) * g->w + (size_t)ix0) * g->c;
        if (off + g->seg <= g->total) {
          ptrs[ky * XO_MR_MAX + r] = g->x + off;
          continue;
        }
      }
      uint8_t *dst = scratch + (r * g->kh + ky) * g->seg;
      xo_conv_border_seg(g, b, iy, y_in, ix0, dst);
      ptrs[ky * XO_MR_MAX + r] = dst;
    }
  }
}

/* The kw taps of one kernel row (icg bytes each; the pad value outside the image). */
static void xo_im2col_taps(const xo_im2col *g, size_t b, int64_t iy, int y_in, int64_t ix0,
                           uint8_t *dst) {
  for (size_t kx = 0; kx < g->kw; kx++, dst += g->icg) {
    const int64_t ix = ix0 + (int64_t)kx * g->dw;
    if (!y_in || ix < 0 || ix >= (int64_t)g->w) {
      memset(dst, g->pad, g->icg);
    } else {
      xo_copy(dst, g->x + ((b * g->h + (size_t)iy) * g->w + (size_t)ix) * g->c + g->group * g->icg,
              g->icg);
    }
  }
}

/* The requantizing epilogue of a conv (optionally with the fused add of `other`), writing
 * columns of `out` / reading `other` with row stride ld. */
static void xo_conv_epilogue(xo_epilogue *e, const int32_t *bias_eff, const float *mult,
                             const uint8_t *other, float other_scale, int32_t other_zp,
                             float out_scale, int32_t out_zp, int32_t qmin, int32_t qmax,
                             uint8_t *out, size_t ld) {
  e->kind = other != NULL ? XO_EPI_REQUANT_ADD : XO_EPI_REQUANT;
  e->bias_eff = bias_eff;
  e->mult = mult;
  e->out_zp = out_zp;
  e->qmin = qmin;
  e->qmax = qmax;
  e->lo = (float)(qmin - out_zp);
  e->hi = (float)(qmax - out_zp);
  e->out_u8 = out;
  e->ldo = ld;
  if (other != NULL) {
    e->other = other;
    e->ld_other = ld;
    e->other_zp = other_zp;
    e->other_mult = other_scale / out_scale;
  }
}

/* Depthwise (one output channel per input channel): the per-channel weights are taken out of
 * the generic packing (channel o is group o's tile column 0) into [chunk][tap][16]. */
static int xo_conv_depthwise(const uint8_t *x, size_t batch, size_t h, size_t w, size_t c,
                             int32_t x_zp, const int8_t *packed, size_t per_group,
                             const int32_t *col_sums, const int32_t *bias_q, const float *mult,
                             size_t kh, size_t kw, const int64_t *geometry, const uint8_t *other,
                             float other_scale, int32_t other_zp, float out_scale, int32_t out_zp,
                             int32_t qmin, int32_t qmax, uint8_t *out, size_t oh, size_t ow) {
  const size_t taps = kh * kw, cp = xo_ntiles(c) * XO_NR;
  int8_t *wt = (int8_t *)calloc(cp * taps + 64, 1);
  int32_t *bias_eff = (int32_t *)calloc(cp + 16, sizeof(int32_t));
  float *pmult = (float *)calloc(cp + 16, sizeof(float));
  int st = QP_ERR_OUT_OF_MEMORY;
  if (wt != NULL && bias_eff != NULL && pmult != NULL) {
    for (size_t o = 0; o < c; o++) {
      for (size_t t = 0; t < taps; t++)
        wt[(o / XO_NR) * taps * XO_NR + t * XO_NR + o % XO_NR] =
            packed[o * per_group + (t / XO_KC) * (XO_NR * XO_KC) + t % XO_KC];
      bias_eff[o] = (int32_t)((uint32_t)bias_q[o] - (uint32_t)x_zp * (uint32_t)col_sums[o]);
      pmult[o] = mult[o];
    }
    xo_depthwise_problem p;
    memset(&p, 0, sizeof(p));
    p.x = x;
    p.batch = batch;
    p.h = h;
    p.w = w;
    p.c = c;
    p.oh = oh;
    p.ow = ow;
    p.kh = kh;
    p.kw = kw;
    p.sh = geometry[0];
    p.sw = geometry[1];
    p.ph = geometry[2];
    p.pw = geometry[3];
    p.dh = geometry[4];
    p.dw = geometry[5];
    p.pad = (uint8_t)x_zp;
    p.wt = wt;
    xo_conv_epilogue(&p.epi, bias_eff, pmult, other, other_scale, other_zp, out_scale, out_zp, qmin, qmax,
                     out, c);
    st = xo_depthwise_run(&p);
  }
  free(wt);
  free(bias_eff);
  free(pmult);
  return st;
}

int x86_onednn_nchw_to_nhwc_u8(const uint8_t *x, size_t n, size_t c, size_t hw, uint8_t *out) {
  if (xo_overflows(n, c) || xo_overflows(n * c, hw)) return QP_ERR_INVALID_ARGUMENT;
  if (n * c * hw == 0) return QP_OK;
  if (x == NULL || out == NULL) return QP_ERR_INVALID_ARGUMENT;
  for (size_t b = 0; b < n; b++) {
    const uint8_t *src = x + b * c * hw;
    uint8_t *dst = out + b * c * hw;
    /* channel-outer: every plane is read sequentially, writes stride c within a few lines */
    for (size_t ch = 0; ch < c; ch++)
      for (size_t i = 0; i < hw; i++) dst[i * c + ch] = src[ch * hw + i];
  }
  return QP_OK;
}

int x86_onednn_conv2d_u8(const uint8_t *x, size_t batch, size_t h, size_t w, size_t c,
                         float x_scale, int32_t x_zp, const int8_t *packed,
                         const int32_t *col_sums, const float *w_scales, size_t oc, size_t kh,
                         size_t kw, size_t groups, const int64_t *geometry, const float *bias,
                         const uint8_t *other, float other_scale, int32_t other_zp,
                         float out_scale, int32_t out_zp, int32_t qmin, int32_t qmax,
                         uint8_t *out, size_t oh, size_t ow) {
  if (geometry == NULL || groups == 0 || c % groups != 0 || oc % groups != 0 || kh == 0 || kw == 0)
    return QP_ERR_INVALID_ARGUMENT;
  const int64_t sh = geometry[0], sw = geometry[1], ph = geometry[2], pw = geometry[3];
  const int64_t dh = geometry[4], dw = geometry[5];
  if (sh < 1 || sw < 1 || ph < 0 || pw < 0 || dh < 1 || dw < 1) return QP_ERR_INVALID_ARGUMENT;
  if (h > (size_t)1 << 30 || w > (size_t)1 << 30 || ph > (1 << 30) || pw > (1 << 30) ||
      kh > (1u << 20) || kw > (1u << 20) || dh > (1 << 20) || dw > (1 << 20))
    return QP_ERR_INVALID_ARGUMENT;
  const int64_t eff_h = (int64_t)h + 2 * ph - dh * ((int64_t)kh - 1) - 1;
  const int64_t eff_w = (int64_t)w + 2 * pw - dw * ((int64_t)kw - 1) - 1;
  if (eff_h < 0 || eff_w < 0) return QP_ERR_INVALID_ARGUMENT;
  if ((size_t)(eff_h / sh + 1) != oh || (size_t)(eff_w / sw + 1) != ow) return QP_ERR_INVALID_ARGUMENT;
  if (x_zp < 0 || x_zp > 255 || out_zp < 0 || out_zp > 255 || qmin < 0 || qmax > 255 || qmin > qmax)
    return QP_ERR_INVALID_ARGUMENT;
  if (other != NULL && (other_zp < 0 || other_zp > 255 || !xo_check_scale(other_scale) ||
                        !xo_check_scale(other_scale / out_scale)))
    return QP_ERR_INVALID_ARGUMENT;
  const size_t icg = c / groups, ocg = oc / groups;
  const size_t size = x86_onednn_packed_conv2d_size(oc, icg, kh, kw, groups);
  if (size == 0 || packed == NULL || col_sums == NULL || w_scales == NULL) return QP_ERR_INVALID_ARGUMENT;
  if (xo_overflows(batch, oh) || xo_overflows(batch * oh, ow) || xo_overflows(batch * oh * ow, oc) ||
      xo_overflows(batch, h) || xo_overflows(batch * h, w) || xo_overflows(batch * h * w, c))
    return QP_ERR_INVALID_ARGUMENT;
  const size_t pixels = batch * oh * ow;
  if ((batch * h * w * c > 0 && x == NULL) || (pixels * oc > 0 && out == NULL)) return QP_ERR_INVALID_ARGUMENT;
  const size_t seg = xo_conv_seg(icg, kw, groups), k = kh * seg;
  const size_t per = size / groups;
  const size_t np = xo_ntiles(ocg) * XO_NR;

  int32_t *bias_q = (int32_t *)calloc(oc + 2 * np + 16, sizeof(int32_t));
  float *mult = (float *)calloc(oc + np + 16, sizeof(float));
  if (bias_q == NULL || mult == NULL) {
    free(bias_q);
    free(mult);
    return QP_ERR_OUT_OF_MEMORY;
  }
  int32_t *bias_eff = bias_q + oc;
  float *gmult = mult + oc;
  int st = xo_requant_params(x_scale, w_scales, oc, out_scale, bias, mult, bias_q);
  if (st == QP_OK && groups == c && oc == c && groups > 1 && pixels > 0) {
    st = xo_conv_depthwise(x, batch, h, w, c, x_zp, packed, per, col_sums, bias_q, mult, kh, kw,
                           geometry, other, other_scale, other_zp, out_scale, out_zp, qmin, qmax,
                           out, oh, ow);
    free(bias_q);
    free(mult);
    return st;
  }
  const int direct = kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0;
  for (size_t g = 0; st == QP_OK && g < groups && pixels > 0; g++) {
    for (size_t j = 0; j < ocg; j++) {
      const size_t o = g * ocg + j;
      bias_eff[j] = (int32_t)((uint32_t)bias_q[o] - (uint32_t)x_zp * (uint32_t)col_sums[o]);
      gmult[j] = mult[o];
    }
    xo_im2col im = {x, h, w, c, icg, g, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, (uint8_t)x_zp,
                    seg, batch * h * w * c};
    xo_gemm_problem p;
    memset(&p, 0, sizeof(p));
    p.m = pixels;
    p.k = k;
    p.n = ocg;
    if (direct) {
      p.k = icg; /* the row's real length (K is only padded up to the k-group the tile has) */
      p.a = x + g * icg;
      p.lda = c;
    } else {
      p.make_a = xo_im2col_rows;
      p.make_a_ctx = &im;
      /* one group with adjacent kernel columns: each kernel row is one run of the input */
      if (groups == 1 && dw == 1) {
        p.make_ptrs = xo_conv_ptrs;
        p.segs = kh;
        p.seg = seg;
      }
    }
    p.w = packed + g * per;
    xo_conv_epilogue(&p.epi, bias_eff, gmult, other != NULL ? other + g * ocg : NULL, other_scale, other_zp,
                     out_scale, out_zp, qmin, qmax, out + g * ocg, oc);
    st = xo_gemm_run(&p);
  }
  free(bias_q);
  free(mult);
  return st;
}
