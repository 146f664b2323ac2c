/*
 * qs8-qc8w convolution, NHWC, as XNNPACK's igemm: each group's weights are a
 * packed gemm matrix [cout/groups, kh * kw * cin/groups] and every output
 * pixel is one gemm row (its input patch). The patch of one row tile is copied
 * into a small buffer (im2col, a kernel row at a time where it is contiguous;
 * padding filled with the input zero point so it contributes 0), then the same
 * microkernels (the wide 8x32 tiles on VNNI, over x + 128 rows) and epilogues
 * as the linear run, a weight panel at a time so the weights stay in L2.
 * Patch rows are kp (k rounded up to 4) bytes apart and the gemm runs over kp.
 * Stem-like convolutions (one group, kernel rows of kw * cin <= 64 contiguous
 * bytes) first copy x once with its padding materialised (already x + 128 for
 * the u8 kernels), so each kernel row of the patch is one unchecked 16-byte-
 * step copy: the 7x7 stem's per-pixel patch went from ~100 cycles to a few
 * dozen, and the conv from 0.6x to ~1.0x torch's x86 engine.
 * 1x1 stride-1 unpadded convolutions read the input rows in place; depthwise
 * convolutions (groups == cin == cout) take the channel-vectorised dwconv.c.
 *
 * The scalar path is the direct definition (nested loops, padding skipped).
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "quantplug/qp_requant.h"
#include "quantplug/qp_runtime.h"
#include "xnnpack_internal.h"
#include "xnnpack_kernels.h"

size_t xnnpack_qc8w_conv2d_packed_size(size_t groups, size_t cout, size_t cin_per_group, size_t kh,
                                       size_t kw) {
  if (groups == 0 || cout % groups) return 0;
  return groups * xnnpack_qc8w_packed_size(cout / groups, kh * kw * cin_per_group);
}

size_t xnnpack_qc8w_conv2d_row_sums_size(size_t groups, size_t cout) {
  if (groups == 0 || cout % groups) return 0;
  return groups * xnnpack_qc8w_row_sums_size(cout / groups);
}

int xnnpack_pack_qc8w_conv2d(const int8_t *w, size_t cout, size_t cin_g, size_t kh, size_t kw,
                             size_t groups, int8_t *packed, size_t packed_size, int32_t *row_sums,
                             size_t row_sums_size) {
  if (!w || !packed || !row_sums || groups == 0 || cout == 0 || cout % groups || cin_g == 0 || kh == 0 ||
      kw == 0)
    return QP_ERR_INVALID_ARGUMENT;
  const size_t cout_g = cout / groups, k = kh * kw * cin_g;
  if (k > XNN_MAX_K || packed_size != xnnpack_qc8w_conv2d_packed_size(groups, cout, cin_g, kh, kw) ||
      row_sums_size != xnnpack_qc8w_conv2d_row_sums_size(groups, cout))
    return QP_ERR_INVALID_ARGUMENT;
  const size_t gp = xnnpack_qc8w_packed_size(cout_g, k), gr = xnnpack_qc8w_row_sums_size(cout_g);
  int8_t *rows = (int8_t *)malloc(cout_g * k); /* one group's weights, k ordered (ky, kx, c) */
  if (!rows) return QP_ERR_OUT_OF_MEMORY;
  int status = QP_OK;
  for (size_t g = 0; g < groups && status == QP_OK; g++) {
    for (size_t j = 0; j < cout_g; j++)
      for (size_t c = 0; c < cin_g; c++)
        for (size_t ky = 0; ky < kh; ky++)
          for (size_t kx = 0; kx < kw; kx++)
            rows[j * k + (ky * kw + kx) * cin_g + c] = w[(((g * cout_g + j) * cin_g + c) * kh + ky) * kw + kx];
    status = xnnpack_pack_qc8w(rows, cout_g, k, packed + g * gp, gp, row_sums + g * gr, gr);
  }
  free(rows);
  return status;
}

typedef struct {
  const xnn_gemm_config *cfg;
  const int8_t *x;
  /* stem mode (xpad set): a copy of x with the padding materialised (x_zp) and, when u8, every byte
   * stored as x + 128, [batch][hp][wp][cin]; then every kernel row of every pixel is one run */
  const int8_t *xpad;
  size_t hp, wp;
  size_t h, w, cin, groups, cin_g, cout, cout_g, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, k, kp;
  size_t pixels, tile_rows, mtiles, panels, panel_blocks, group_packed, group_rows;
  int32_t x_zp;
  const int8_t *packed;
  const int32_t *row_sums, *bias_eff; /* both in the packed per-group layout */
  const float *mult;
  int per_channel;
  int u8; /* the patch holds x + 128 (x ^ 0x80) for the config's gemm_u8 / gemm_wide_u8 */
  int32_t zp, qmin, qmax;
  int8_t *out;
  atomic_int failed;
} xnn_conv_task;

/* Copy n bytes XORed with flip (0, or 0x80 in every byte for the u8 microkernels) in a few
 * 8-byte moves instead of a memcpy call: kernel-row runs are short (21 bytes in a 7x7 stem over
 * 3 channels) and there are several per output pixel. The last chunk overlaps the previous one
 * rather than falling back to bytes. */
static inline void xnn_copy8(int8_t *dst, const int8_t *src, uint64_t flip) {
  uint64_t v;
  memcpy(&v, src, 8);
  v ^= flip;
  memcpy(dst, &v, 8);
}
static inline void xnn_copy_run(int8_t *dst, const int8_t *src, size_t n, uint64_t flip) {
  if (n >= 8) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) xnn_copy8(dst + i, src + i, flip), xnn_copy8(dst + i + 8, src + i + 8, flip);
    if (i + 8 <= n) xnn_copy8(dst + i, src + i, flip), i += 8;
    if (i < n) xnn_copy8(dst + n - 8, src + n - 8, flip);
  } else {
    for (size_t i = 0; i < n; i++) dst[i] = (int8_t)((uint8_t)src[i] ^ (uint8_t)flip);
  }
}

/* Stem mode: the kernel rows of pixel (b, oy, ox) are kh runs of kw * cin bytes of the padded copy,
 * each copied in 16-byte moves that may run past the run's end: the next run (or row) overwrites
 * the excess, and what is left in [k, kp) of a row meets zero packed weights. The copy and the
 * patch carry 16 bytes of slack for that. Kernel-row runs here are short (21 bytes in the 7x7 stem
 * over 3 channels), so the bounds checks, memsets and XORs of the general path cost more than the
 * copy itself. */
static void xnn_conv_patch_stem(const xnn_conv_task *t, size_t b, size_t oy, size_t ox, int8_t *row) {
  const size_t krow = t->kw * t->cin, ystep = t->dh * t->wp * t->cin;
  const int8_t *src = t->xpad + ((b * t->hp + oy * t->sh) * t->wp + ox * t->sw) * t->cin;
  for (size_t ky = 0; ky < t->kh; ky++, row += krow, src += ystep)
    for (size_t c = 0; c < krow; c += 16) memcpy(row + c, src + c, 16);
}

/* Copy the input patch of output pixel (b, oy, ox) (group g) into row[0 .. k), k ordered (ky, kx, c).
 * When the whole kernel window is inside the row horizontally, dilation is 1 and there is one
 * group, a kernel row is kw * cin contiguous input bytes: one run instead of kw copies. */
static void xnn_conv_patch(const xnn_conv_task *t, size_t b, size_t oy, size_t ox, size_t g, int8_t *row) {
  const uint64_t flip = t->u8 ? 0x8080808080808080ull : 0;
  const int8_t pad = (int8_t)((uint8_t)t->x_zp ^ (uint8_t)flip);
  const size_t ix0 = ox * t->sw, cin_g = t->cin_g, krow = t->kw * cin_g; /* ix0 - pw: first input column */
  const int one_run = t->dw == 1 && cin_g == t->cin && ix0 >= t->pw && ix0 + t->kw <= t->w + t->pw;
  for (size_t ky = 0; ky < t->kh; ky++, row += krow) {
    const size_t iy = oy * t->sh + ky * t->dh; /* + pad offset: iy - ph is the input row */
    if (iy < t->ph || iy - t->ph >= t->h) { /* padding row: x_zp contributes 0 */
      memset(row, pad, krow);
      continue;
    }
    const int8_t *src = t->x + ((b * t->h + (iy - t->ph)) * t->w) * t->cin + g * cin_g;
    if (one_run) {
      xnn_copy_run(row, src + (ix0 - t->pw) * t->cin, krow, flip);
      continue;
    }
    for (size_t kx = 0; kx < t->kw; kx++) {
      const size_t ix = ix0 + kx * t->dw;
      if (ix < t->pw || ix - t->pw >= t->w)
        memset(row + kx * cin_g, pad, cin_g);
      else
        xnn_copy_run(row + kx * cin_g, src + (ix - t->pw) * t->cin, cin_g, flip);
    }
  }
}

/* The stem mode's padded copy of x (see xnn_conv_task.xpad), 16 bytes of slack at the end for the
 * patch copy's overrun; NULL when out of memory. */
static int8_t *xnn_conv_pad_input(const int8_t *x, size_t batch, size_t h, size_t w, size_t cin, size_t ph,
                                  size_t pw, int32_t x_zp, int u8) {
  const size_t hp = h + 2 * ph, wp = w + 2 * pw, row = wp * cin, left = pw * cin, n = w * cin;
  const uint8_t flip = u8 ? 0x80 : 0, pad = (uint8_t)x_zp ^ flip;
  uint8_t *xp = (uint8_t *)malloc(batch * hp * row + 16);
  if (!xp) return NULL;
  memset(xp + batch * hp * row, pad, 16);
  for (size_t b = 0; b < batch; b++)
    for (size_t iy = 0; iy < hp; iy++) {
      uint8_t *d = xp + (b * hp + iy) * row;
      if (iy < ph || iy - ph >= h) {
        memset(d, pad, row);
        continue;
      }
      const uint8_t *s = (const uint8_t *)x + (b * h + iy - ph) * n;
      memset(d, pad, left);
      size_t i = 0;
      for (; i + 8 <= n; i += 8) { /* 8 bytes at a time: the byte loop was not vectorised at -O2 */
        uint64_t v;
        memcpy(&v, s + i, 8);
        v ^= flip * 0x0101010101010101ull;
        memcpy(d + left + i, &v, 8);
      }
      for (; i < n; i++) d[left + i] = s[i] ^ flip;
      memset(d + left + n, pad, row - left - n);
    }
  return (int8_t *)xp;
}

static void xnn_conv_epilogue(const xnn_conv_task *t, size_t g, size_t p0, size_t mr, size_t n0,
                              const int32_t *raw) {
  const size_t nc = xnn_min(XNN_NR, t->cout_g - n0), co = g * t->cout_g + n0, rs = g * t->group_rows + n0;
  const xnn_requant_params p = {t->bias_eff + rs, t->mult + (t->per_channel ? co : 0), t->per_channel, t->zp,
                                t->qmin, t->qmax};
  t->cfg->requant(mr, nc, raw, &p, t->out + p0 * t->cout + co, t->cout); /* any nc <= 16 */
}

/* One task: row tile (i % mtiles) of group g times the channel blocks of one weight panel, with
 * i / mtiles = g * panels + panel. Consecutive tasks share a panel, so its weights stay in L2
 * while the row tiles stream past (the patch of a tile is rebuilt per panel: a few kB). The
 * tiles are the wide microkernel's (8 rows x 32 channels on VNNI) when the ISA has one. */
static void xnn_conv_run(void *ctx, size_t begin, size_t end) {
  xnn_conv_task *t = (xnn_conv_task *)ctx;
  const xnn_gemm_config *cfg = t->cfg;
  const size_t tile_rows = t->tile_rows, blocks = t->group_rows / XNN_NR;
  const int direct = t->kh == 1 && t->kw == 1 && t->sh == 1 && t->sw == 1 && t->ph == 0 && t->pw == 0;
  /* patch rows are kp bytes apart (4-byte aligned k steps; the gemm runs over kp, whose last
   * k values meet zero weights, so it never takes its byte-wise tail); calloc: those bytes are
   * read, so they must be defined, and 16 bytes of slack for the stem copy's overrun */
  int8_t *patch = direct ? NULL : (int8_t *)calloc(tile_rows * t->kp + 16, 1);
  if (!direct && !patch) {
    atomic_store(&t->failed, 1);
    return;
  }
  /* rows of the patch were written as x + 128 when t->u8 (never the in-place 1x1 rows) */
  const int u8 = t->u8 && !direct;
  const xnn_gemm_ukernel_fn gemm = u8 ? cfg->gemm_u8 : cfg->gemm;
  const xnn_gemm_wide_ukernel_fn gemm_wide = u8 ? cfg->gemm_wide_u8 : cfg->gemm_wide;
  int32_t raw[2 * XNN_MR_WIDE_MAX * XNN_NR];
  for (size_t i = begin; i < end; i++) {
    const size_t gp = i / t->mtiles, g = gp / t->panels, panel = gp % t->panels;
    const size_t p0 = (i % t->mtiles) * tile_rows, mr = xnn_min(tile_rows, t->pixels - p0);
    const int8_t *a;
    size_t a_stride, kg = t->k; /* the gemm's k: kp over the patch */
    if (direct) { /* 1x1, stride 1, no padding: the pixel rows are the gemm rows */
      a = t->x + p0 * t->cin + g * t->cin_g, a_stride = t->cin;
    } else {
      /* the pixel's coordinates step along the row (three divisions per pixel were ~20 ns) */
      size_t b = p0 / (t->oh * t->ow), oy = p0 / t->ow % t->oh, ox = p0 % t->ow;
      for (size_t r = 0; r < mr; r++) {
        if (t->xpad)
          xnn_conv_patch_stem(t, b, oy, ox, patch + r * t->kp);
        else
          xnn_conv_patch(t, b, oy, ox, g, patch + r * t->kp);
        if (++ox == t->ow && (ox = 0, ++oy == t->oh)) oy = 0, b++;
      }
      a = patch, a_stride = t->kp, kg = t->kp;
    }
    const size_t b0 = panel * t->panel_blocks, b1 = xnn_min(blocks, b0 + t->panel_blocks);
    const int8_t *wg = t->packed + g * t->group_packed;
    const int32_t *rsg = t->row_sums + g * t->group_rows;
    for (size_t nb = b0; nb < b1; nb++) {
      const size_t n0 = nb * XNN_NR;
      if (gemm_wide && nb + 1 < b1) { /* two blocks at once */
        gemm_wide(mr, kg, a, a_stride, wg + n0 * t->kp, XNN_NR * t->kp, rsg + n0, raw);
        xnn_conv_epilogue(t, g, p0, mr, n0, raw);
        xnn_conv_epilogue(t, g, p0, mr, n0 + XNN_NR, raw + XNN_MR_WIDE_MAX * XNN_NR);
        nb++;
        continue;
      }
      for (size_t s = 0; s < mr; s += cfg->mr) {
        const size_t sr = xnn_min(cfg->mr, mr - s);
        gemm(sr, kg, a + s * a_stride, a_stride, wg + n0 * t->kp, rsg + n0, raw);
        xnn_conv_epilogue(t, g, p0 + s, sr, n0, raw);
      }
    }
  }
  free(patch);
}

int xnnpack_qs8_qc8w_conv2d_nhwc(const int8_t *x, size_t batch, size_t h, size_t w, size_t cin,
                                 int32_t x_zp, const int8_t *packed, const int32_t *row_sums,
                                 size_t groups, size_t cout, size_t kh, size_t kw, size_t sh, size_t sw,
                                 size_t ph, size_t pw, size_t dh, size_t dw, size_t oh, size_t ow,
                                 const int32_t *bias, const float *mult, size_t n_mult, int32_t out_zp,
                                 int32_t qmin, int32_t qmax, int8_t *out) {
  if (!packed || !row_sums || !mult || groups == 0 || cin == 0 || cout == 0 || cin % groups || cout % groups)
    return QP_ERR_INVALID_ARGUMENT;
  if (kh == 0 || kw == 0 || sh == 0 || sw == 0 || dh == 0 || dw == 0) return QP_ERR_INVALID_ARGUMENT;
  const size_t cin_g = cin / groups, cout_g = cout / groups, k = kh * kw * cin_g;
  if (k > XNN_MAX_K || (n_mult != 1 && n_mult != cout)) return QP_ERR_INVALID_ARGUMENT;
  /* the output size must be the one the geometry gives, and at least 1 */
  const size_t span_h = dh * (kh - 1) + 1, span_w = dw * (kw - 1) + 1;
  if (h + 2 * ph < span_h || w + 2 * pw < span_w) return QP_ERR_INVALID_ARGUMENT;
  if (oh != (h + 2 * ph - span_h) / sh + 1 || ow != (w + 2 * pw - span_w) / sw + 1) return QP_ERR_INVALID_ARGUMENT;
  if (x_zp < -128 || x_zp > 127 || out_zp < -128 || out_zp > 127 || qmin < -128 || qmax > 127 || qmin > qmax)
    return QP_ERR_INVALID_ARGUMENT;
  for (size_t j = 0; j < n_mult; j++)
    if (!(mult[j] > 0.0f) || !isfinite(mult[j])) return QP_ERR_INVALID_ARGUMENT;
  const size_t pixels = batch * oh * ow;
  if (pixels == 0) return QP_OK;
  if (!x || !out) return QP_ERR_INVALID_ARGUMENT;
  const size_t kp = xnn_round_up(k, XNN_KR), group_rows = xnn_round_up(cout_g, XNN_NR);
  const size_t group_packed = group_rows * kp;
  const xnn_gemm_config *cfg = xnn_gemm_config_for(qp_active_isa());
  if (cfg == NULL) { /* scalar reference: the definition */
    for (size_t pix = 0; pix < pixels; pix++) {
      const size_t b = pix / (oh * ow), oy = pix / ow % oh, ox = pix % ow;
      for (size_t co = 0; co < cout; co++) {
        const size_t g = co / cout_g, j = co % cout_g;
        int32_t acc = 0;
        for (size_t ky = 0; ky < kh; ky++)
          for (size_t kx = 0; kx < kw; kx++) {
            const size_t iy = oy * sh + ky * dh, ix = ox * sw + kx * dw;
            if (iy < ph || iy - ph >= h || ix < pw || ix - pw >= w) continue; /* padding: x - x_zp = 0 */
            const int8_t *xp = x + ((b * h + (iy - ph)) * w + (ix - pw)) * cin + g * cin_g;
            for (size_t c = 0; c < cin_g; c++)
              acc += ((int32_t)xp[c] - x_zp) *
                     xnn_packed_w(packed + g * group_packed, kp, j, (ky * kw + kx) * cin_g + c);
          }
        acc = (int32_t)((uint32_t)acc + (uint32_t)(bias ? bias[co] : 0));
        out[pix * cout + co] = (int8_t)qp_requantize(acc, mult[n_mult == 1 ? 0 : co], out_zp, qmin, qmax);
      }
    }
    return QP_OK;
  }
  if (groups == cin && cout == cin && xnn_dwconv_acc_for(qp_active_isa()) && kh * kw <= XNN_DW_MAX_TAPS)
    return xnn_dwconv_nhwc(cfg, x, batch, h, w, cin, x_zp, packed, group_packed, kp, kh, kw, sh, sw, ph, pw, dh, dw,
                           oh, ow, bias, mult, n_mult != 1, out_zp, qmin, qmax, out);
  int32_t *bias_eff = (int32_t *)malloc(groups * group_rows * sizeof(int32_t));
  if (!bias_eff) return QP_ERR_OUT_OF_MEMORY;
  for (size_t g = 0; g < groups; g++)
    for (size_t j = 0; j < group_rows; j++) {
      const uint32_t bj = (uint32_t)(bias && j < cout_g ? bias[g * cout_g + j] : 0);
      bias_eff[g * group_rows + j] = (int32_t)(bj - (uint32_t)x_zp * (uint32_t)row_sums[g * group_rows + j]);
    }
  xnn_conv_task t = {0};
  t.cfg = cfg, t.x = x, t.h = h, t.w = w, t.cin = cin, t.groups = groups, t.cin_g = cin_g, t.cout = cout;
  t.cout_g = cout_g, t.kh = kh, t.kw = kw, t.sh = sh, t.sw = sw, t.ph = ph, t.pw = pw, t.dh = dh, t.dw = dw;
  t.oh = oh, t.ow = ow, t.k = k, t.kp = kp, t.pixels = pixels;
  t.tile_rows = cfg->gemm_wide ? cfg->mr_wide : cfg->mr, t.mtiles = (pixels + t.tile_rows - 1) / t.tile_rows;
  t.group_packed = group_packed, t.group_rows = group_rows, t.x_zp = x_zp, t.packed = packed;
  t.row_sums = row_sums, t.bias_eff = bias_eff, t.mult = mult, t.per_channel = n_mult != 1;
  t.zp = out_zp, t.qmin = qmin, t.qmax = qmax, t.out = out;
  t.u8 = cfg->gemm_u8 != NULL; /* with gemm_wide_u8 whenever gemm_wide is set */
  atomic_init(&t.failed, 0);
  /* stem mode: one group, short contiguous kernel rows (kw * cin bytes, the 3-channel 7x7 stem's 21),
   * and a padded copy of a few MB at most */
  int8_t *xpad = NULL;
  const size_t hp = h + 2 * ph, wp = w + 2 * pw;
  const int direct = kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0;
  if (!direct && groups == 1 && dw == 1 && kw * cin <= 64 && batch * hp * wp * cin <= ((size_t)8 << 20)) {
    xpad = xnn_conv_pad_input(x, batch, h, w, cin, ph, pw, x_zp, t.u8);
    if (!xpad) {
      free(bias_eff);
      return QP_ERR_OUT_OF_MEMORY;
    }
    t.xpad = xpad, t.hp = hp, t.wp = wp;
  }
  /* panel width: the L2 budget (as the linear's) in whole tiles; with few row tiles, narrower panels so that every
   * thread gets several tasks */
  const size_t blocks = group_rows / XNN_NR, tile_blocks = cfg->gemm_wide ? 2 : 1;
  size_t pb = XNN_PANEL_BYTES / (XNN_NR * kp) / tile_blocks * tile_blocks;
  const size_t want = 4 * (size_t)qp_get_num_threads(), row_tasks = groups * t.mtiles;
  if (row_tasks < want) {
    const size_t split = (want + row_tasks - 1) / row_tasks, even = (blocks + split - 1) / split;
    if (even < pb) pb = (even + tile_blocks - 1) / tile_blocks * tile_blocks;
  }
  t.panel_blocks = pb < tile_blocks ? tile_blocks : pb;
  t.panels = (blocks + t.panel_blocks - 1) / t.panel_blocks;
  const size_t tile_work = t.tile_rows * t.panel_blocks * XNN_NR * kp;
  qp_parallel_for(groups * t.panels * t.mtiles, tile_work >= (1u << 16) ? 1 : (1u << 16) / tile_work, xnn_conv_run,
                  &t);
  free(xpad);
  free(bias_eff);
  return atomic_load(&t.failed) ? QP_ERR_OUT_OF_MEMORY : QP_OK;
}
