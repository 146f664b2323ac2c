/*
 * quantplug-arm-xnnpack kernels: XNNPACK numerics (qs8 / qc8w / qd8 / qb4w).
 *
 *   qs8   activations int8 ASYMMETRIC, [-128, 127], any zero point
 *   qc8w  weights int8 symmetric per output channel, NARROW range [-127, 127],
 *         zero point 0 (the NEON "mlal" microkernel sums two products in
 *         int16: 2 * 128 * 127 = 32512 fits, 2 * 128 * 128 would not)
 *   qd8   dynamic int8 asymmetric activations quantized per call, per row or
 *         per tensor; fp32 output
 *   qb4w  int4 symmetric weights in [-8, 7], group-wise fp32 scales (group
 *         32/64/128), two per byte; fp32 activations and output
 *
 * Weight layout ("gemm goi, nr=16, kr=4"): K is padded to a multiple of 4 and
 * N to a multiple of 16 (zeros); for each block of 16 output channels, for
 * each group of 4 k, the 16 channels' 4 bytes follow each other:
 *     packed[nb][kb][j][t] = w[nb*16 + j][kb*4 + t]
 * One 64-byte row is exactly one zmm for vpdpbusd (16 int32 lanes x 4 bytes),
 * four NEON SDOT operands, or four AVX2 / NEON widening-multiply operands.
 * row_sums[n] = sum_k w[n][k] (int32, padded to a multiple of 16) lets the
 * SIMD paths compute sum (x - zp) * w as sum x * w - zp * row_sum, and the
 * VNNI path (u8 x s8 only) feed x + 128 and subtract 128 * row_sum.
 *
 * Every entry point validates its arguments and returns QP_ERR_INVALID_ARGUMENT
 * rather than reading out of bounds. The scalar path is the definition; every
 * SIMD path (AVX2, AVX-512, AVX-512 VNNI on x86-64; NEON, NEON dot product on
 * AArch64) must match it bit for bit, including the fp32 outputs of qd8.
 */
#ifndef QUANTPLUG_XNNPACK_KERNELS_H
#define QUANTPLUG_XNNPACK_KERNELS_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* QP_CDEF_BEGIN */
/* Largest K accepted: |x - zp| <= 255 and |w| <= 127, so an int32
 * accumulator holds 65536 * 255 * 127 < 2**31 exactly. */
size_t xnnpack_max_k(void);
/* Bytes of the packed qc8w buffer and int32 entries of row_sums for an
 * [n, k] weight (n padded to 16, k to 4). */
size_t xnnpack_qc8w_packed_size(size_t n, size_t k);
size_t xnnpack_qc8w_row_sums_size(size_t n);
/* Pack int8 weights [n, k] (row major). Fails on a value of -128. */
int xnnpack_pack_qc8w(const int8_t *w, size_t n, size_t k, int8_t *packed, size_t packed_size,
                      int32_t *row_sums, size_t row_sums_size);
/* Static int8 linear: out[m, n] = requantize(sum_k (x - x_zp) * w + bias[n]),
 * requantize = clamp(nearbyint((float)acc * multiplier[n]) + out_zp, qmin, qmax)
 * (qp_requantize). bias may be NULL; n_multipliers is 1 or n; a fused relu is
 * qmin = max(qmin, out_zp). */
int xnnpack_qs8_qc8w_linear(const int8_t *x, size_t m, size_t k, int32_t x_zp,
                            const int8_t *packed, const int32_t *row_sums, size_t n,
                            const int32_t *bias, const float *multipliers, size_t n_multipliers,
                            int32_t out_zp, int32_t qmin, int32_t qmax, int8_t *out);
/* Dynamic quantization of fp32 rows [m, k] to int8 asymmetric [-128, 127]:
 * one (scale, zero point) per row (per_row = 1) or for the whole tensor
 * (then every row gets the same pair). Fails on a non-finite input. */
int xnnpack_qd8_quantize(const float *x, size_t m, size_t k, int per_row, int8_t *xq,
                         float *scales, int32_t *zero_points);
/* Dynamic linear (qd8-f32-qc8w): x fp32 [m, k] quantized per call, then
 * out[m, n] = (float)acc * (x_scale[m] * w_scale[n]) + bias[n] with
 * acc = sum_k (xq - x_zp[m]) * w, the product and the sum rounded
 * separately (never an FMA), as quantplug's reference kernels do. bias
 * may be NULL; n_w_scales is 1 or n. */
int xnnpack_qd8_f32_qc8w_linear(const float *x, size_t m, size_t k, int per_row,
                                const int8_t *packed, const int32_t *row_sums, size_t n,
                                const float *w_scales, size_t n_w_scales, const float *bias,
                                float *out);
/* Convolution (qs8-qc8w igemm, NHWC). Weights OIHW [cout, cin/groups, kh, kw] are packed per
 * group in the gemm layout with k ordered (ky, kx, c), the order of an NHWC patch. */
size_t xnnpack_qc8w_conv2d_packed_size(size_t groups, size_t cout, size_t cin_per_group, size_t kh,
                                       size_t kw);
size_t xnnpack_qc8w_conv2d_row_sums_size(size_t groups, size_t cout);
int xnnpack_pack_qc8w_conv2d(const int8_t *w, size_t cout, size_t cin_per_group, size_t kh, size_t kw,
                             size_t groups, int8_t *packed, size_t packed_size, int32_t *row_sums,
                             size_t row_sums_size);
/* x NHWC [batch, h, w, cin] -> out NHWC [batch, oh, ow, cout]; padding contributes x_zp (0 after
 * the zero point is subtracted); requantization as xnnpack_qs8_qc8w_linear. */
int xnnpack_qs8_qc8w_conv2d_nhwc(const int8_t *x, size_t batch, size_t h, size_t w, size_t cin,
                                 int32_t x_zp, const int8_t *packed, const int32_t *row_sums,
                                 size_t groups, size_t cout, size_t kh, size_t kw, size_t stride_h,
                                 size_t stride_w, size_t pad_h, size_t pad_w, size_t dilation_h,
                                 size_t dilation_w, size_t oh, size_t ow, const int32_t *bias,
                                 const float *multipliers, size_t n_multipliers, int32_t out_zp,
                                 int32_t qmin, int32_t qmax, int8_t *out);
/* Quantized add (qs8-vadd): out = clamp(round_half_even(((float)(a - a_zp) * a_scale +
 * (float)(b - b_zp) * b_scale) * (1 / out_scale)) + out_zp, qmin, qmax), each product and
 * the sum rounded to fp32 separately (never an FMA), as quantplug's reference add. */
int xnnpack_qs8_vadd(const int8_t *a, const int8_t *b, size_t n, int32_t a_zp, float a_scale,
                     int32_t b_zp, float b_scale, float out_scale, int32_t out_zp, int32_t qmin,
                     int32_t qmax, int8_t *out);
/* int4 weight-only (f32-qb4w): weights [n, k] int8 storage in [-8, 7], fp32 scales
 * [n, k / group_size] (finite, >= 0), group_size 32, 64 or 128 dividing k. Packed as blocks of 16
 * output channels (n padded with zero weights and zero scales): packed_size bytes of weights
 * (one 64-byte row per 8 k of a block, one 32-bit word per channel, k = 8 kb + q in its bits
 * 4q .. 4q + 3) and packed_scales_size floats of scales, [ceil(n / 16)][groups][16]. */
size_t xnnpack_qb4w_packed_size(size_t n, size_t k);
size_t xnnpack_qb4w_packed_scales_size(size_t n, size_t k, size_t group_size);
int xnnpack_pack_qb4w(const int8_t *w, const float *scales, size_t n, size_t k, size_t group_size,
                      uint8_t *packed, size_t packed_size, float *packed_scales, size_t packed_scales_size);
/* out[m, n] = bias[n] + sum_g scale[n, g] * (sum_{k in g} x[m, k] * w[n, k]): per group a
 * fused multiply-add chain in k order, then tot = fma(group sum, scale, tot) over the groups in
 * order, then one rounding for the bias (every ISA path bit-identical). */
int xnnpack_f32_qb4w_linear(const float *x, size_t m, size_t k, const uint8_t *packed, size_t n,
                            const float *packed_scales, size_t group_size, const float *bias, float *out);
/* int8 weight-only linear (f32-qc8w): fp32 x [m, k] times the packed qc8w weights of
 * xnnpack_pack_qc8w, fp32 out [m, n]: out = (sum_k x * w) * w_scale[n] (+ bias[n]), the sum as
 * fused multiply-adds in k order, then one rounding for the scale and one for the bias (every
 * ISA path bit-identical). w_scales: n_w_scales = 1 or n entries, finite and > 0. */
int xnnpack_f32_qc8w_linear(const float *x, size_t m, size_t k, const int8_t *packed, size_t n,
                            const float *w_scales, size_t n_w_scales, const float *bias, float *out);
/* Prepared depthwise conv2d (groups == cin == cout; dwconv_plan.c): the static per-layer setup
 * of xnnpack_qs8_qc8w_conv2d_nhwc done once into a caller-owned, 64-byte aligned buffer of
 * xnnpack_dw_plan_size bytes (0: the active ISA has no prepared path, use the plain call), then
 * xnnpack_dw_run per call with the same results bit for bit. The plan copies everything it needs
 * (the packed weights, bias and multipliers may change afterwards: the caller re-prepares).
 * xnnpack_dw_run returns QP_ERR_UNSUPPORTED_ISA when the active ISA is no longer the plan's. */
size_t xnnpack_dw_plan_size(size_t c, size_t kh, size_t kw, size_t stride_h, size_t dilation_h);
int xnnpack_dw_prepare(uintptr_t plan, size_t plan_size, const int8_t *packed, size_t c, size_t kh, size_t kw,
                       size_t stride_h, size_t stride_w, size_t pad_h, size_t pad_w, size_t dilation_h,
                       size_t dilation_w, int32_t x_zp, const int32_t *bias, const float *multipliers,
                       size_t n_multipliers);
int xnnpack_dw_run(uintptr_t plan, uintptr_t x, size_t batch, size_t h, size_t w, size_t oh, size_t ow,
                   int32_t out_zp, int32_t qmin, int32_t qmax, uintptr_t out);
/* Prepared linears (linear_plan.c): the layer's constants (int32 bias minus x_zp * row sums,
 * multipliers; or the weight scales and fp32 bias) copied once into a caller-owned, 64-byte
 * aligned buffer of *_plan_size bytes; each run then takes only x, its rows m and out, with the
 * same results bit for bit as xnnpack_qs8_qc8w_linear / xnnpack_qd8_f32_qc8w_linear. The plan
 * points at (does not copy) packed and row_sums: keep them alive and unchanged while using it.
 * xnnpack_linear_run returns QP_ERR_UNSUPPORTED_ISA on the scalar path (use the plain call). */
size_t xnnpack_linear_plan_size(size_t n);
int xnnpack_linear_prepare(uintptr_t plan, size_t plan_size, size_t k, int32_t x_zp, const int8_t *packed,
                           const int32_t *row_sums, size_t n, const int32_t *bias, const float *multipliers,
                           size_t n_multipliers, int32_t out_zp, int32_t qmin, int32_t qmax);
int xnnpack_linear_run(uintptr_t plan, uintptr_t x, size_t m, uintptr_t out);
size_t xnnpack_dynamic_plan_size(size_t n);
int xnnpack_dynamic_prepare(uintptr_t plan, size_t plan_size, size_t k, const int8_t *packed,
                            const int32_t *row_sums, size_t n, const float *w_scales, size_t n_w_scales,
                            const float *bias);
int xnnpack_dynamic_run(uintptr_t plan, uintptr_t x, size_t m, int per_row, uintptr_t out);
/* QP_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* QUANTPLUG_XNNPACK_KERNELS_H */
