/*
 * Quantize / dequantize kernels shared by every plugin (compiled into each
 * plugin's extension by quantplug.build). Per-tensor and per-channel, uint8
 * and int8. Numerics: q = clamp(nearbyint(x * (1/scale)) + zp, qmin, qmax),
 * x = (q - zp) * scale, exactly as quantplug.affine computes them.
 *
 * Layout for per-channel: the tensor is viewed as [outer, channels, inner]
 * (channel axis in the middle), so any axis of a contiguous tensor works.
 */
#ifndef QUANTPLUG_QP_QUANTIZE_H
#define QUANTPLUG_QP_QUANTIZE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* QP_CDEF_BEGIN */
int qp_quantize_per_tensor_u8(const float *x, size_t n, float scale, int32_t zero_point,
                              int32_t qmin, int32_t qmax, uint8_t *out);
int qp_quantize_per_tensor_s8(const float *x, size_t n, float scale, int32_t zero_point,
                              int32_t qmin, int32_t qmax, int8_t *out);
int qp_dequantize_per_tensor_u8(const uint8_t *q, size_t n, float scale, int32_t zero_point,
                                float *out);
int qp_dequantize_per_tensor_s8(const int8_t *q, size_t n, float scale, int32_t zero_point,
                                float *out);
int qp_quantize_per_channel_u8(const float *x, size_t outer, size_t channels, size_t inner,
                               const float *scales, const int32_t *zero_points, int32_t qmin,
                               int32_t qmax, uint8_t *out);
int qp_quantize_per_channel_s8(const float *x, size_t outer, size_t channels, size_t inner,
                               const float *scales, const int32_t *zero_points, int32_t qmin,
                               int32_t qmax, int8_t *out);
int qp_dequantize_per_channel_u8(const uint8_t *q, size_t outer, size_t channels, size_t inner,
                                 const float *scales, const int32_t *zero_points, float *out);
int qp_dequantize_per_channel_s8(const int8_t *q, size_t outer, size_t channels, size_t inner,
                                 const float *scales, const int32_t *zero_points, float *out);
/* Requantize int32 accumulators: out = clamp(nearbyint(acc * m[c]) + zp).
 * `multipliers` has `channels` entries (1 for per-tensor); rows x channels. */
int qp_requantize_u8(const int32_t *acc, size_t rows, size_t channels, const float *multipliers,
                     size_t n_multipliers, int32_t zero_point, int32_t qmin, int32_t qmax,
                     uint8_t *out);
int qp_requantize_s8(const int32_t *acc, size_t rows, size_t channels, const float *multipliers,
                     size_t n_multipliers, int32_t zero_point, int32_t qmin, int32_t qmax,
                     int8_t *out);
/* QP_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* QUANTPLUG_QP_QUANTIZE_H */
