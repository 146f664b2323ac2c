/*
 * Quantized pooling, NHWC. The inner loops run over channels (contiguous in
 * NHWC), written as plain C and compiled three times: scalar (baseline) and
 * under AVX2 / AVX-512 target attributes, where GCC vectorizes the byte max
 * and the int32 sums. Which copy runs is chosen at run time (qp_active_isa).
 */
#include "quantplug/qp_pool.h"

#include <stdlib.h>

#include "quantplug/qp_requant.h"
#include "quantplug/qp_runtime.h"

#define QP_POOL_BODIES(SUFFIX, T, ATTR)                                                            \
  ATTR static void qp_maxpool_rows_##SUFFIX(const T *x, size_t h, size_t w, size_t c, size_t kh,    \
                                            size_t kw, size_t sh, size_t sw, size_t ph, size_t pw,  \
                                            size_t dh, size_t dw, size_t oh, size_t ow, T *out) {   \
    for (size_t oy = 0; oy < oh; oy++)                                                             \
      for (size_t ox = 0; ox < ow; ox++) {                                                         \
        T *dst = out + (oy * ow + ox) * c;                                                         \
        int first = 1;                                                                             \
        for (size_t ky = 0; ky < kh; ky++) {                                                       \
          long iy = (long)(oy * sh + ky * dh) - (long)ph;                                          \
          if (iy < 0 || iy >= (long)h) continue;                                                   \
          for (size_t kx = 0; kx < kw; kx++) {                                                     \
            long ix = (long)(ox * sw + kx * dw) - (long)pw;                                        \
            if (ix < 0 || ix >= (long)w) continue;                                                 \
            const T *src = x + ((size_t)iy * w + (size_t)ix) * c;                                  \
            if (first) {                                                                           \
              for (size_t ch = 0; ch < c; ch++) dst[ch] = src[ch];                                 \
              first = 0;                                                                           \
            } else {                                                                               \
              for (size_t ch = 0; ch < c; ch++) dst[ch] = src[ch] > dst[ch] ? src[ch] : dst[ch];   \
            }                                                                                      \
          }                                                                                        \
        }                                                                                          \
      }                                                                                            \
  }                                                                                                \
  ATTR static void qp_gap_##SUFFIX(const T *x, size_t hw, size_t c, int32_t x_zp, float m,          \
                                   int32_t out_zp, int32_t qmin, int32_t qmax, int32_t *acc,       \
                                   T *out) {                                                       \
    for (size_t ch = 0; ch < c; ch++) acc[ch] = 0;                                                 \
    for (size_t p = 0; p < hw; p++)                                                                \
      for (size_t ch = 0; ch < c; ch++) acc[ch] += (int32_t)x[p * c + ch];                          \
    for (size_t ch = 0; ch < c; ch++)                                                              \
      out[ch] = (T)qp_requantize(acc[ch] - x_zp * (int32_t)hw, m, out_zp, qmin, qmax);             \
  }

#define QP_SCALAR_ATTR
QP_POOL_BODIES(u8_scalar, uint8_t, QP_SCALAR_ATTR)
QP_POOL_BODIES(s8_scalar, int8_t, QP_SCALAR_ATTR)
#if defined(__x86_64__)
QP_POOL_BODIES(u8_avx2, uint8_t, QP_TARGET_AVX2)
QP_POOL_BODIES(s8_avx2, int8_t, QP_TARGET_AVX2)
QP_POOL_BODIES(u8_avx512, uint8_t, QP_TARGET_AVX512)
QP_POOL_BODIES(s8_avx512, int8_t, QP_TARGET_AVX512)
#endif

/* The shared runtime picks AVX-512 or AVX2 only when the CPU has them (these
 * kernels do not depend on the plugin's own compiled-ISA list). */
static int qp_pool_level(void) {
#if defined(__x86_64__)
  uint32_t f = qp_cpu_features();
  int isa = qp_active_isa();
  if (isa == QP_ISA_SCALAR || isa == QP_ISA_SSE2) return 0;
  if ((f & (QP_CPU_AVX512F | QP_CPU_AVX512BW)) == (QP_CPU_AVX512F | QP_CPU_AVX512BW) &&
      (isa == QP_ISA_AVX512 || isa == QP_ISA_AVX512VNNI))
    return 2;
  if (f & QP_CPU_AVX2) return 1;
#endif
  return 0;
}

typedef struct {
  const void *x;
  void *out;
  size_t h, w, c, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow;
  int is_signed;
} qp_maxpool_job;

static void qp_maxpool_task(void *ctx, size_t begin, size_t end) {
  const qp_maxpool_job *j = (const qp_maxpool_job *)ctx;
  int level = qp_pool_level();
  (void)level; /* only the x86 paths read it */
  size_t in_img = j->h * j->w * j->c, out_img = j->oh * j->ow * j->c;
  for (size_t b = begin; b < end; b++) {
    if (j->is_signed) {
      const int8_t *x = (const int8_t *)j->x + b * in_img;
      int8_t *o = (int8_t *)j->out + b * out_img;
#if defined(__x86_64__)
      if (level == 2) { qp_maxpool_rows_s8_avx512(x, j->h, j->w, j->c, j->kh, j->kw, j->sh, j->sw, j->ph, j->pw, j->dh, j->dw, j->oh, j->ow, o); continue; }
      if (level == 1) { qp_maxpool_rows_s8_avx2(x, j->h, j->w, j->c, j->kh, j->kw, j->sh, j->sw, j->ph, j->pw, j->dh, j->dw, j->oh, j->ow, o); continue; }
#endif
      qp_maxpool_rows_s8_scalar(x, j->h, j->w, j->c, j->kh, j->kw, j->sh, j->sw, j->ph, j->pw, j->dh, j->dw, j->oh, j->ow, o);
    } else {
      const uint8_t *x = (const uint8_t *)j->x + b * in_img;
      uint8_t *o = (uint8_t *)j->out + b * out_img;
#if defined(__x86_64__)
      if (level == 2) { qp_maxpool_rows_u8_avx512(x, j->h, j->w, j->c, j->kh, j->kw, j->sh, j->sw, j->ph, j->pw, j->dh, j->dw, j->oh, j->ow, o); continue; }
      if (level == 1) { qp_maxpool_rows_u8_avx2(x, j->h, j->w, j->c, j->kh, j->kw, j->sh, j->sw, j->ph, j->pw, j->dh, j->dw, j->oh, j->ow, o); continue; }
#endif
      qp_maxpool_rows_u8_scalar(x, j->h, j->w, j->c, j->kh, j->kw, j->sh, j->sw, j->ph, j->pw, j->dh, j->dw, j->oh, j->ow, o);
    }
  }
}

static int qp_maxpool_check(size_t h, size_t w, size_t kh, size_t kw, size_t sh, size_t sw, size_t ph,
                            size_t pw, size_t dh, size_t dw, size_t oh, size_t ow) {
  if (!kh || !kw || !sh || !sw || !dh || !dw || ph * 2 > kh || pw * 2 > kw) return QP_ERR_INVALID_ARGUMENT;
  /* every output window must overlap the input (as torch requires), so no output stays unset */
  if (oh && (oh - 1) * sh >= h + ph) return QP_ERR_INVALID_ARGUMENT;
  if (ow && (ow - 1) * sw >= w + pw) return QP_ERR_INVALID_ARGUMENT;
  return QP_OK;
}

#define QP_MAXPOOL_ENTRY(SUFFIX, T, SIGNED)                                                         \
  int qp_max_pool2d_nhwc_##SUFFIX(const T *x, size_t n, size_t h, size_t w, size_t c, size_t kh,     \
                                  size_t kw, size_t sh, size_t sw, size_t ph, size_t pw, size_t dh,  \
                                  size_t dw, size_t oh, size_t ow, T *out) {                         \
    int st = qp_maxpool_check(h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow);                         \
    if (st != QP_OK) return st;                                                                      \
    qp_maxpool_job job = {x, out, h, w, c, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, SIGNED};          \
    qp_parallel_for(n, 1, qp_maxpool_task, &job);                                                    \
    return QP_OK;                                                                                    \
  }
QP_MAXPOOL_ENTRY(u8, uint8_t, 0)
QP_MAXPOOL_ENTRY(s8, int8_t, 1)

#define QP_GAP_ENTRY(SUFFIX, T)                                                                      \
  int qp_global_avg_pool_nhwc_##SUFFIX(const T *x, size_t n, size_t hw, size_t c, int32_t x_zp,      \
                                       float m, int32_t out_zp, int32_t qmin, int32_t qmax, T *out) { \
    /* int32 sums of bytes overflow only past 2^23 pixels; reject instead of wrapping */             \
    if (hw == 0 || hw > (1u << 23) || qmin > qmax) return QP_ERR_INVALID_ARGUMENT;                    \
    int32_t *acc = (int32_t *)malloc((c ? c : 1) * sizeof(int32_t));                                 \
    if (!acc) return QP_ERR_OUT_OF_MEMORY;                                                           \
    int level = qp_pool_level();                                                                     \
    for (size_t b = 0; b < n; b++) {                                                                 \
      const T *xb = x + b * hw * c;                                                                  \
      T *ob = out + b * c;                                                                           \
      GAP_DISPATCH_##SUFFIX                                                                          \
    }                                                                                                \
    free(acc);                                                                                       \
    return QP_OK;                                                                                    \
  }
#if defined(__x86_64__)
#define GAP_DISPATCH_u8                                                                          \
  if (level == 2) qp_gap_u8_avx512(xb, hw, c, x_zp, m, out_zp, qmin, qmax, acc, ob);             \
  else if (level == 1) qp_gap_u8_avx2(xb, hw, c, x_zp, m, out_zp, qmin, qmax, acc, ob);          \
  else qp_gap_u8_scalar(xb, hw, c, x_zp, m, out_zp, qmin, qmax, acc, ob);
#define GAP_DISPATCH_s8                                                                          \
  if (level == 2) qp_gap_s8_avx512(xb, hw, c, x_zp, m, out_zp, qmin, qmax, acc, ob);             \
  else if (level == 1) qp_gap_s8_avx2(xb, hw, c, x_zp, m, out_zp, qmin, qmax, acc, ob);          \
  else qp_gap_s8_scalar(xb, hw, c, x_zp, m, out_zp, qmin, qmax, acc, ob);
#else
#define GAP_DISPATCH_u8 (void)level; qp_gap_u8_scalar(xb, hw, c, x_zp, m, out_zp, qmin, qmax, acc, ob);
#define GAP_DISPATCH_s8 (void)level; qp_gap_s8_scalar(xb, hw, c, x_zp, m, out_zp, qmin, qmax, acc, ob);
#endif
QP_GAP_ENTRY(u8, uint8_t)
QP_GAP_ENTRY(s8, int8_t)
