/*
 * Elementwise and average-pooling kernels on uint8 activations (NHWC for pools; max pooling
 * is the core's shared qp_max_pool2d_nhwc_u8).
 *
 * Each kernel body is written once as plain C and instantiated three times: a baseline clone
 * and AVX2 / AVX-512 clones compiled with the QP_TARGET_* attributes, which GCC vectorizes
 * for that ISA; qp_active_isa() picks one at run time. Integer results do not depend on the
 * vectorization; the float arithmetic of add is kept free of FMA contraction (pragma below)
 * so every clone rounds exactly like PyTorch's separate multiply and add.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include <math.h>
#include <string.h>

#include "fbgemm_kernels.h"
#include "quantplug/qp_requant.h"
#include "quantplug/qp_runtime.h"

#define FB_INLINE static inline __attribute__((always_inline))

#if defined(FB_HAVE_X86)
#define FB_CLONES(NAME, PARAMS, ARGS)                                       \
  static void NAME##__scalar PARAMS { NAME##_body ARGS; }                   \
  QP_TARGET_AVX2 static void NAME##__avx2 PARAMS { NAME##_body ARGS; }      \
  QP_TARGET_AVX512 static void NAME##__avx512 PARAMS { NAME##_body ARGS; }  \
  static void NAME PARAMS {                                                 \
    switch (qp_active_isa()) {                                              \
      case QP_ISA_AVX512VNNI:                                               \
      case QP_ISA_AVX512:                                                   \
        NAME##__avx512 ARGS;                                                \
        break;                                                              \
      case QP_ISA_AVX2:                                                     \
        NAME##__avx2 ARGS;                                                  \
        break;                                                              \
      default:                                                              \
        NAME##__scalar ARGS;                                                \
    }                                                                       \
  }
#else
#define FB_CLONES(NAME, PARAMS, ARGS) \
  static void NAME PARAMS { NAME##_body ARGS; }
#endif

/* ------------------------------------------------------------------ add -- */

FB_INLINE void fb_add_body(const uint8_t *a, float sa, int32_t za, const uint8_t *b, float sb,
                           int32_t zb, size_t n, float inv_out, int32_t zo, int32_t qmin,
                           int32_t qmax, uint8_t *out) {
  const float lo = (float)(qmin - zo), hi = (float)(qmax - zo);
  for (size_t i = 0; i < n; i++) {
    /* the reference: dequantize both (float32), add, multiply by 1/out_scale, round */
    float v = ((float)((int32_t)a[i] - za) * sa + (float)((int32_t)b[i] - zb) * sb) * inv_out;
    v = v < lo ? lo : (v > hi ? hi : v);
    out[i] = (uint8_t)((int32_t)nearbyintf(v) + zo);
  }
}
FB_CLONES(fb_add,
          (const uint8_t *a, float sa, int32_t za, const uint8_t *b, float sb, int32_t zb, size_t n,
           float inv_out, int32_t zo, int32_t qmin, int32_t qmax, uint8_t *out),
          (a, sa, za, b, sb, zb, n, inv_out, zo, qmin, qmax, out))

FB_INLINE void fb_mul_body(const uint8_t *a, int32_t za, const uint8_t *b, int32_t zb, size_t n,
                           float mult, int32_t zo, int32_t qmin, int32_t qmax, uint8_t *out) {
  const float lo = (float)(qmin - zo), hi = (float)(qmax - zo);
  for (size_t i = 0; i < n; i++) {
    /* exact int32 product of the centred values, requantized like a GEMM accumulator */
    float v = (float)(((int32_t)a[i] - za) * ((int32_t)b[i] - zb)) * mult;
    v = v < lo ? lo : (v > hi ? hi : v);
    out[i] = (uint8_t)((int32_t)nearbyintf(v) + zo);
  }
}
FB_CLONES(fb_mul,
          (const uint8_t *a, int32_t za, const uint8_t *b, int32_t zb, size_t n, float mult,
           int32_t zo, int32_t qmin, int32_t qmax, uint8_t *out),
          (a, za, b, zb, n, mult, zo, qmin, qmax, out))

typedef struct {
  const uint8_t *a, *b;
  uint8_t *out;
  size_t n;
  float sa, sb, m;
  int32_t za, zb, zo, qmin, qmax, is_mul;
} fb_binary_ctx;

#define FB_ELTWISE_CHUNK 16384

static void fb_binary_task(void *vctx, size_t begin, size_t end) {
  const fb_binary_ctx *c = (const fb_binary_ctx *)vctx;
  const size_t i0 = begin * FB_ELTWISE_CHUNK;
  const size_t i1 = end * FB_ELTWISE_CHUNK < c->n ? end * FB_ELTWISE_CHUNK : c->n;
  if (c->is_mul)
    fb_mul(c->a + i0, c->za, c->b + i0, c->zb, i1 - i0, c->m, c->zo, c->qmin, c->qmax, c->out + i0);
  else
    fb_add(c->a + i0, c->sa, c->za, c->b + i0, c->sb, c->zb, i1 - i0, c->m, c->zo, c->qmin, c->qmax,
           c->out + i0);
}

static int fb_binary(const uint8_t *a, float sa, int32_t za, const uint8_t *b, float sb, int32_t zb,
                     size_t n, float so, int32_t zo, int32_t qmin, int32_t qmax, uint8_t *out,
                     int is_mul) {
  if (!fb_valid_scale(sa) || !fb_valid_scale(sb) || !fb_valid_scale(so) || za < 0 || za > 255 ||
      zb < 0 || zb > 255 || zo < 0 || zo > 255 || qmin < 0 || qmax > 255 || qmin > qmax ||
      (n > 0 && (a == NULL || b == NULL || out == NULL)))
    return QP_ERR_INVALID_ARGUMENT;
  fb_binary_ctx c = {a, b, out, n, sa, sb, 0.0f, za, zb, zo, qmin, qmax, is_mul};
  c.m = is_mul ? (sa * sb) / so : 1.0f / so;
  const size_t chunks = (n + FB_ELTWISE_CHUNK - 1) / FB_ELTWISE_CHUNK;
  if (chunks <= 1)
    fb_binary_task(&c, 0, chunks);
  else
    qp_parallel_for(chunks, 1, fb_binary_task, &c);
  return QP_OK;
}

int fbgemm_add_u8(const uint8_t *a, float a_scale, int32_t a_zp, const uint8_t *b, float b_scale,
                  int32_t b_zp, size_t n, float out_scale, int32_t out_zp, int32_t qmin,
                  int32_t qmax, uint8_t *out) {
  return fb_binary(a, a_scale, a_zp, b, b_scale, b_zp, n, out_scale, out_zp, qmin, qmax, out, 0);
}

int fbgemm_mul_u8(const uint8_t *a, float a_scale, int32_t a_zp, const uint8_t *b, float b_scale,
                  int32_t b_zp, size_t n, float out_scale, int32_t out_zp, int32_t qmin,
                  int32_t qmax, uint8_t *out) {
  return fb_binary(a, a_scale, a_zp, b, b_scale, b_zp, n, out_scale, out_zp, qmin, qmax, out, 1);
}

/* ---------------------------------------------------------------- pools -- */

typedef struct {
  const uint8_t *x;
  uint8_t *out;
  size_t batch, h, w, c, kh, kw, sh, sw, ph, pw, oh, ow;
  int kind; /* 1 avg, 2 adaptive avg */
  int count_include_pad;
  int32_t divisor_override, zp, qmin, qmax;
} fb_pool_ctx;

FB_INLINE void fb_sum_row_body(const uint8_t *src, int32_t *acc, size_t c) {
  for (size_t j = 0; j < c; j++) acc[j] += src[j];
}
FB_CLONES(fb_sum_row, (const uint8_t *src, int32_t *acc, size_t c), (src, acc, c))

FB_INLINE void fb_avg_out_body(const int32_t *acc, int32_t count_zp, float div, int32_t zp,
                               int32_t qmin, int32_t qmax, uint8_t *dst, size_t c) {
  const float lo = (float)(qmin - zp), hi = (float)(qmax - zp);
  for (size_t j = 0; j < c; j++) {
    /* average of the centred values; padded taps (value zp) contribute 0 */
    float v = (float)(acc[j] - count_zp) / div;
    v = v < lo ? lo : (v > hi ? hi : v);
    dst[j] = (uint8_t)((int32_t)nearbyintf(v) + zp);
  }
}
FB_CLONES(fb_avg_out,
          (const int32_t *acc, int32_t count_zp, float div, int32_t zp, int32_t qmin, int32_t qmax,
           uint8_t *dst, size_t c),
          (acc, count_zp, div, zp, qmin, qmax, dst, c))

#define FB_POOL_CBLOCK 256

static void fb_pool_task(void *vctx, size_t begin, size_t end) {
  const fb_pool_ctx *p = (const fb_pool_ctx *)vctx;
  int32_t acc[FB_POOL_CBLOCK];
  for (size_t pix = begin; pix < end; pix++) {
    const size_t ox = pix % p->ow, oy = (pix / p->ow) % p->oh, b = pix / (p->ow * p->oh);
    ptrdiff_t y0, y1, x0, x1;
    size_t pool_size = 0;
    if (p->kind == 2) {
      y0 = (ptrdiff_t)(oy * p->h / p->oh);
      y1 = (ptrdiff_t)(((oy + 1) * p->h + p->oh - 1) / p->oh);
      x0 = (ptrdiff_t)(ox * p->w / p->ow);
      x1 = (ptrdiff_t)(((ox + 1) * p->w + p->ow - 1) / p->ow);
    } else {
      y0 = (ptrdiff_t)(oy * p->sh) - (ptrdiff_t)p->ph;
      x0 = (ptrdiff_t)(ox * p->sw) - (ptrdiff_t)p->pw;
      /* torch: the window is clipped to the padded input before counting its size */
      y1 = y0 + (ptrdiff_t)p->kh;
      x1 = x0 + (ptrdiff_t)p->kw;
      const ptrdiff_t ylim = (ptrdiff_t)(p->h + p->ph), xlim = (ptrdiff_t)(p->w + p->pw);
      y1 = y1 < ylim ? y1 : ylim;
      x1 = x1 < xlim ? x1 : xlim;
      pool_size = (size_t)((y1 - y0) * (x1 - x0));
    }
    /* only the taps inside the input are summed (padding is the zero point: adds 0) */
    if (y0 < 0) y0 = 0;
    if (x0 < 0) x0 = 0;
    if (y1 > (ptrdiff_t)p->h) y1 = (ptrdiff_t)p->h;
    if (x1 > (ptrdiff_t)p->w) x1 = (ptrdiff_t)p->w;
    uint8_t *dst = p->out + pix * p->c;
    const uint8_t *base = p->x + b * p->h * p->w * p->c;
    const size_t valid = (size_t)((y1 > y0 ? y1 - y0 : 0) * (x1 > x0 ? x1 - x0 : 0));
    size_t div = p->kind == 2 ? valid : (p->count_include_pad ? pool_size : valid);
    if (p->divisor_override > 0) div = (size_t)p->divisor_override;
    for (size_t c0 = 0; c0 < p->c; c0 += FB_POOL_CBLOCK) {
      const size_t nc = p->c - c0 < FB_POOL_CBLOCK ? p->c - c0 : FB_POOL_CBLOCK;
      memset(acc, 0, nc * sizeof(int32_t));
      for (ptrdiff_t y = y0; y < y1; y++)
        for (ptrdiff_t x = x0; x < x1; x++)
          fb_sum_row(base + ((size_t)y * p->w + (size_t)x) * p->c + c0, acc, nc);
      fb_avg_out(acc, (int32_t)valid * p->zp, (float)div, p->zp, p->qmin, p->qmax, dst + c0, nc);
    }
  }
}

static int fb_pool_run(fb_pool_ctx *p) {
  const size_t npix = p->batch * p->oh * p->ow;
  if (npix == 0) return QP_OK;
  const size_t grain = 64;
  if (npix * p->c < ((size_t)1 << 16))
    fb_pool_task(p, 0, npix);
  else
    qp_parallel_for(npix, grain, fb_pool_task, p);
  return QP_OK;
}

static int fb_pool_check(const uint8_t *x, size_t batch, size_t h, size_t w, size_t c, size_t oh,
                         size_t ow, const uint8_t *out) {
  if (h == 0 || w == 0 || c == 0 || oh == 0 || ow == 0 ||
      (batch > 0 && (x == NULL || out == NULL)))
    return QP_ERR_INVALID_ARGUMENT;
  return QP_OK;
}

/* Every window must overlap the input: the last window starts inside it. */
static int fb_pool_windows_ok(size_t in, size_t k, size_t s, size_t p, size_t out) {
  if (k == 0 || s == 0 || 2 * p > k) return 0;
  return (out - 1) * s < in + p;
}

int fbgemm_avg_pool2d_u8(const uint8_t *x, size_t batch, size_t h, size_t w, size_t c, size_t kh,
                         size_t kw, size_t sh, size_t sw, size_t ph, size_t pw, size_t oh,
                         size_t ow, int count_include_pad, int32_t divisor_override, int32_t zp,
                         int32_t qmin, int32_t qmax, uint8_t *out) {
  if (fb_pool_check(x, batch, h, w, c, oh, ow, out) != QP_OK ||
      !fb_pool_windows_ok(h, kh, sh, ph, oh) || !fb_pool_windows_ok(w, kw, sw, pw, ow) ||
      divisor_override < 0 || zp < 0 || zp > 255 || qmin < 0 || qmax > 255 || qmin > qmax)
    return QP_ERR_INVALID_ARGUMENT;
  fb_pool_ctx p = {x, out, batch, h, w, c, kh, kw, sh, sw, ph, pw, oh, ow, 1,
                   count_include_pad != 0, divisor_override, zp, qmin, qmax};
  return fb_pool_run(&p);
}

int fbgemm_adaptive_avg_pool2d_u8(const uint8_t *x, size_t batch, size_t h, size_t w, size_t c,
                                  size_t oh, size_t ow, int32_t zp, int32_t qmin, int32_t qmax,
                                  uint8_t *out) {
  if (fb_pool_check(x, batch, h, w, c, oh, ow, out) != QP_OK || zp < 0 || zp > 255 || qmin < 0 ||
      qmax > 255 || qmin > qmax)
    return QP_ERR_INVALID_ARGUMENT;
  fb_pool_ctx p = {x, out, batch, h, w, c, 1, 1, 1, 1, 0, 0, oh, ow, 2, 0, 0, zp, qmin, qmax};
  return fb_pool_run(&p);
}
