/*
 * quantplug-qnnpack kernels: QNNPACK numerics.
 *
 *   activations  uint8, asymmetric (zero point 0..255), per tensor
 *   weights      uint8, asymmetric, with a kernel zero point per output
 *                channel (the original QNNPACK q8 GEMM takes one kernel zero
 *                point; PyTorch's QNNPACK fork takes one per channel).
 *                int8 weights (torch's qint8 side) are converted at pack
 *                time by adding 128 to values and zero points, as torch's
 *                qnnpack engine does.
 *   bias         int32 (static), fp32 (dynamic)
 *   requantize   qp_requantize(): nearbyint((float)acc * multiplier) + zp,
 *                clamped (PyTorch's QNNPACK fork also requantizes in fp32).
 *
 * Packed weight layout (one layout for every ISA path, so a packed weight
 * can run on any of them): output channels in blocks of NR = 16, the
 * reduction dimension in groups of KR = 4 bytes ("c4"):
 *
 *   packed[((nb * KG + kg) * 16 + j) * 4 + i] = w[nb * 16 + j][kg * 4 + i]
 *
 * with KG = ceil(K / 4), zero padding for k >= K and n >= N. Per channel
 * the packer also returns sum_k w[n][k] (int32), used to fold zero points:
 *
 *   acc[m][n] = bias[n] + sum_k (x[m][k] - xzp) * (w[n][k] - wzp[n])
 *             = dot(x_m, w_n) + bias[n] - xzp * wsum[n] + K * xzp * wzp[n]
 *               - wzp[n] * xsum[m]
 *
 * All int32 arithmetic wraps modulo 2**32 on every path, so every path
 * gives the same bits; the result is the true value whenever that fits in
 * int32 (always for K <= 33025 and a bias within the usual range).
 */
#ifndef QUANTPLUG_QNNPACK_KERNELS_H
#define QUANTPLUG_QNNPACK_KERNELS_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* QP_CDEF_BEGIN */
/* Bytes of the packed buffer for an [n, k] weight. */
size_t qnnpack_packed_weight_size(size_t n, size_t k);
/* Number of int32 entries of the weight sums (n rounded up to 16). */
size_t qnnpack_packed_sums_size(size_t n);
/* Pack a row-major uint8 [n, k] weight (QNNPACK's representation). */
int qnnpack_pack_weight_u8(const uint8_t *w, size_t n, size_t k, uint8_t *packed,
                           size_t packed_size, int32_t *wsums, size_t wsums_size);
/* Pack an int8 [n, k] weight, converting it to uint8 by adding 128. */
int qnnpack_pack_weight_s8(const int8_t *w, size_t n, size_t k, uint8_t *packed,
                           size_t packed_size, int32_t *wsums, size_t wsums_size);
/* Unpack to row-major uint8 [n, k] (inverse of qnnpack_pack_weight_u8). */
int qnnpack_unpack_weight_u8(const uint8_t *packed, size_t packed_size, size_t n, size_t k,
                             uint8_t *w);

/* Static quantized linear: x uint8 [m, k] (zero point x_zp), packed weight
 * with per-channel zero points w_zps [n] (0..255), int32 bias [n] or NULL,
 * float multipliers (1 or n), output uint8 [m, n] clamped to [qmin, qmax]
 * (a fused relu is qmin = out_zp). */
int qnnpack_linear_u8(const uint8_t *x, size_t m, size_t k, int32_t x_zp, const uint8_t *packed,
                      size_t packed_size, const int32_t *wsums, const int32_t *w_zps, size_t n,
                      const int32_t *bias, const float *multipliers, size_t n_multipliers,
                      int32_t out_zp, int32_t qmin, int32_t qmax, uint8_t *out);

/* Dynamic quantization parameters of QNNPACK's dynamic linear: uint8 per
 * tensor over [min(x, 0), max(x, 0)], with the arithmetic of
 * quantplug.affine.choose_qparams (see linear.c). NaNs are ignored;
 * infinities are rejected. */
int qnnpack_choose_qparams_u8(const float *x, size_t n, float *scale, int32_t *zero_point);

/* Dynamic linear: x float32 [m, k] is quantized per call (uint8, per
 * tensor, qnnpack_choose_qparams_u8) into x_q (scratch [m, k], also an
 * output for inspection; NULL: allocated inside), then
 *   out[m][n] = (float)acc * (x_scale * w_scales[n]) + bias[n]
 * (float32 multiply, then float32 add, never fused) with acc the exact
 * integer dot product of the quantized values. The chosen
 * qparams are written to *x_scale_out / *x_zp_out (may be NULL). */
int qnnpack_linear_dynamic_f32(const float *x, size_t m, size_t k, const uint8_t *packed,
                               size_t packed_size, const int32_t *wsums, const int32_t *w_zps,
                               const float *w_scales, size_t n, const float *bias, uint8_t *x_q,
                               float *out, float *x_scale_out, int32_t *x_zp_out);
/* Dynamic linear with per-row activation qparams (not in QNNPACK, which
 * quantizes per tensor): row i of x gets its own uint8 scale s_i and zero
 * point z_i (qnnpack_choose_qparams_u8 over that row), quantized in one pass
 * per row, and
 *   out[i][j] = (float)acc * (s_i * w_scales[j]) + bias[j]
 * (s_i * w_scales[j] one float32 product; then multiply, then add). x_q
 * (NULL or [m, k]) receives the quantized rows, x_scales_out / x_zps_out
 * (NULL or [m]) the row qparams. Infinities are rejected. */
int qnnpack_linear_dynamic_rows_f32(const float *x, size_t m, size_t k, const uint8_t *packed,
                                    size_t packed_size, const int32_t *wsums,
                                    const int32_t *w_zps, const float *w_scales, size_t n,
                                    const float *bias, uint8_t *x_q, float *out,
                                    float *x_scales_out, int32_t *x_zps_out);
/*
 * 2-D convolution, NHWC activations (QNNPACK's layout). Weights come in
 * OIHW order [cout][cin / groups][kh][kw] (int8 + 128, or uint8) with
 * per-channel zero points w_zps (uint8 representation, 0..255).
 *
 *  - depthwise (cin / groups == 1 and cout == groups): int16 weights
 *    (w - w_zp) laid out [kh * kw][cout rounded up to 16]; the interior
 *    pixels of each output row go through one run-kernel call (requantization
 *    fused, x_zp folded into the bias), border pixels one at a time;
 *  - otherwise, per group, a GEMM over im2col rows (K ordered ky, kx, ci;
 *    padding taps hold x_zp) with the linear layout, gathered in L2-sized
 *    chunks already in the GEMM path's input format (pointwise convs too).
 * Output uint8 NHWC [batch][out_h][out_w][cout], qp_requantize semantics.
 */
size_t qnnpack_conv2d_packed_size(size_t cout, size_t cin_per_group, size_t kh, size_t kw,
                                  size_t groups);
size_t qnnpack_conv2d_sums_size(size_t cout, size_t cin_per_group, size_t groups);
int qnnpack_pack_conv2d_weight_s8(const int8_t *w, const int32_t *w_zps, size_t cout,
                                  size_t cin_per_group, size_t kh, size_t kw, size_t groups,
                                  uint8_t *packed, size_t packed_size, int32_t *wsums,
                                  size_t wsums_size);
int qnnpack_pack_conv2d_weight_u8(const uint8_t *w, const int32_t *w_zps, size_t cout,
                                  size_t cin_per_group, size_t kh, size_t kw, size_t groups,
                                  uint8_t *packed, size_t packed_size, int32_t *wsums,
                                  size_t wsums_size);
int qnnpack_conv2d_u8(const uint8_t *x, size_t batch, size_t in_h, size_t in_w, size_t cin,
                      int32_t x_zp, const uint8_t *packed, size_t packed_size,
                      const int32_t *wsums, size_t wsums_size, const int32_t *w_zps, size_t cout,
                      size_t kh, size_t kw, size_t stride_h, size_t stride_w, size_t pad_h,
                      size_t pad_w, size_t dilation_h, size_t dilation_w, size_t groups,
                      const int32_t *bias, const float *multipliers, size_t n_multipliers,
                      int32_t out_zp, int32_t qmin, int32_t qmax, uint8_t *out, size_t out_h,
                      size_t out_w);
/*
 * Elementwise quantized add (QNNPACK's q8add), n elements of a and b with
 * the same layout:
 *   v   = ((float)(a - a_zp) * a_scale + (float)(b - b_zp) * b_scale) * (1 / out_scale)
 *   out = clamp(nearbyint(v) + out_zp, qmin, qmax)
 * in float32 (two products, one add, never fused), quantplug's add contract;
 * the original QNNPACK requantizes in fixed point instead (<= 1 LSB apart).
 */
int qnnpack_add_u8(const uint8_t *a, float a_scale, int32_t a_zp, const uint8_t *b, float b_scale,
                   int32_t b_zp, size_t n, float out_scale, int32_t out_zp, int32_t qmin,
                   int32_t qmax, uint8_t *out);
/*
 * Elementwise quantized multiply, n elements of a and b with the same layout:
 *   out = clamp(nearbyint((float)((a - a_zp) * (b - b_zp)) * multiplier) + out_zp, qmin, qmax)
 * with multiplier = a_scale * b_scale / out_scale (float32, computed by the
 * caller). The integer product is exact; one float32 rounding follows.
 */
int qnnpack_mul_u8(const uint8_t *a, int32_t a_zp, const uint8_t *b, int32_t b_zp, size_t n,
                   float multiplier, int32_t out_zp, int32_t qmin, int32_t qmax, uint8_t *out);
/*
 * out[i] = table[x[i]] (QNNPACK's x8lut): sigmoid, tanh and hardsigmoid on
 * uint8 run as a 256-entry table built once per (input qparams, op) by the
 * caller. table_size must be 256.
 */
int qnnpack_lut_u8(const uint8_t *x, size_t n, const uint8_t *table, size_t table_size,
                   uint8_t *out);
/* QP_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* QUANTPLUG_QNNPACK_KERNELS_H */
