/*
 * Pooling on quantized NHWC tensors, shared by every plugin (compiled in by
 * quantplug.build). Max pooling does not change values, so the output keeps
 * the input's qparams; global average pooling requantizes:
 *   out = clamp(nearbyint(sum(x - x_zp) * multiplier) + out_zp), multiplier =
 *   x_scale / (out_scale * H * W).
 */
#ifndef QUANTPLUG_QP_POOL_H
#define QUANTPLUG_QP_POOL_H

#include <stddef.h>
#include <stdint.h>

/* QP_CDEF_BEGIN */
int qp_max_pool2d_nhwc_u8(const uint8_t *x, size_t n, size_t h, size_t w, size_t c, size_t kh, size_t kw,
                          size_t sh, size_t sw, size_t ph, size_t pw, size_t dh, size_t dw, size_t oh,
                          size_t ow, uint8_t *out);
int qp_max_pool2d_nhwc_s8(const int8_t *x, size_t n, size_t h, size_t w, size_t c, size_t kh, size_t kw,
                          size_t sh, size_t sw, size_t ph, size_t pw, size_t dh, size_t dw, size_t oh,
                          size_t ow, int8_t *out);
int qp_global_avg_pool_nhwc_u8(const uint8_t *x, size_t n, size_t hw, size_t c, int32_t x_zp,
                               float multiplier, int32_t out_zp, int32_t qmin, int32_t qmax, uint8_t *out);
int qp_global_avg_pool_nhwc_s8(const int8_t *x, size_t n, size_t hw, size_t c, int32_t x_zp,
                               float multiplier, int32_t out_zp, int32_t qmin, int32_t qmax, int8_t *out);
/* QP_CDEF_END */

#endif /* QUANTPLUG_QP_POOL_H */
