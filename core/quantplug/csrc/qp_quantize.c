/*
 * Shared quantize / dequantize / requantize kernels: scalar reference code
 * written once as type-generic macros instantiated for uint8 and int8.
 * Validation returns QP_ERR_INVALID_ARGUMENT rather than trusting Python.
 */
#include "quantplug/qp_quantize.h"

#include <math.h>

#include "quantplug/qp_requant.h"
#include "quantplug/qp_runtime.h"

static int qp_bad_range(int32_t qmin, int32_t qmax, int32_t lo, int32_t hi) {
  return qmin > qmax || qmin < lo || qmax > hi;
}

#define QP_DEFINE_QUANT(SUFFIX, T, LO, HI)                                                       \
  int qp_quantize_per_tensor_##SUFFIX(const float *x, size_t n, float scale, int32_t zp,          \
                                      int32_t qmin, int32_t qmax, T *out) {                       \
    if (!(scale > 0.0f) || !isfinite(scale) || qp_bad_range(qmin, qmax, LO, HI))                 \
      return QP_ERR_INVALID_ARGUMENT;                                                             \
    const float inv = 1.0f / scale;                                                               \
    for (size_t i = 0; i < n; i++) out[i] = (T)qp_quantize(x[i], inv, zp, qmin, qmax);            \
    return QP_OK;                                                                                 \
  }                                                                                               \
  int qp_dequantize_per_tensor_##SUFFIX(const T *q, size_t n, float scale, int32_t zp,            \
                                        float *out) {                                             \
    for (size_t i = 0; i < n; i++) out[i] = (float)((int32_t)q[i] - zp) * scale;                  \
    return QP_OK;                                                                                 \
  }                                                                                               \
  int qp_quantize_per_channel_##SUFFIX(const float *x, size_t outer, size_t channels,             \
                                       size_t inner, const float *scales, const int32_t *zps,     \
                                       int32_t qmin, int32_t qmax, T *out) {                      \
    if (qp_bad_range(qmin, qmax, LO, HI)) return QP_ERR_INVALID_ARGUMENT;                         \
    for (size_t c = 0; c < channels; c++)                                                         \
      if (!(scales[c] > 0.0f) || !isfinite(scales[c])) return QP_ERR_INVALID_ARGUMENT;            \
    for (size_t o = 0; o < outer; o++)                                                            \
      for (size_t c = 0; c < channels; c++) {                                                     \
        const float inv = 1.0f / scales[c];                                                       \
        const size_t base = (o * channels + c) * inner;                                           \
        for (size_t i = 0; i < inner; i++)                                                        \
          out[base + i] = (T)qp_quantize(x[base + i], inv, zps[c], qmin, qmax);                   \
      }                                                                                           \
    return QP_OK;                                                                                 \
  }                                                                                               \
  int qp_dequantize_per_channel_##SUFFIX(const T *q, size_t outer, size_t channels, size_t inner, \
                                         const float *scales, const int32_t *zps, float *out) {   \
    for (size_t o = 0; o < outer; o++)                                                            \
      for (size_t c = 0; c < channels; c++) {                                                     \
        const size_t base = (o * channels + c) * inner;                                           \
        for (size_t i = 0; i < inner; i++)                                                        \
          out[base + i] = (float)((int32_t)q[base + i] - zps[c]) * scales[c];                     \
      }                                                                                           \
    return QP_OK;                                                                                 \
  }                                                                                               \
  int qp_requantize_##SUFFIX(const int32_t *acc, size_t rows, size_t channels, const float *m,    \
                             size_t n_m, int32_t zp, int32_t qmin, int32_t qmax, T *out) {        \
    if (qp_bad_range(qmin, qmax, LO, HI) || (n_m != 1 && n_m != channels))                        \
      return QP_ERR_INVALID_ARGUMENT;                                                             \
    for (size_t r = 0; r < rows; r++)                                                             \
      for (size_t c = 0; c < channels; c++)                                                       \
        out[r * channels + c] =                                                                   \
            (T)qp_requantize(acc[r * channels + c], m[n_m == 1 ? 0 : c], zp, qmin, qmax);         \
    return QP_OK;                                                                                 \
  }

QP_DEFINE_QUANT(u8, uint8_t, 0, 255)
QP_DEFINE_QUANT(s8, int8_t, -128, 127)
