/*
 * quantplug-x86-onednn kernels: oneDNN / torch "x86" numerics.
 *
 *   activations  uint8, asymmetric, FULL range 0..255 (no reduce_range)
 *   weights      int8, symmetric (zero point 0), per output channel
 *   bias         fp32 in the API, quantized to int32 with scale x_scale*w_scale[c]
 *   requantize   out = clamp(nearbyint((float)acc * m[c]) + zp, qmin, qmax),
 *                m[c] = x_scale * w_scale[c] / out_scale (float32), exactly
 *                qp_requantize() of the shared runtime.
 *
 * Accumulation never saturates: u8*s8 products are summed in int32 either by
 * VNNI vpdpbusd (AVX-512 VNNI, AVX-VNNI) or by widening both operands to
 * int16 and using vpmaddwd (AVX2, AVX-512BW). vpmaddubsw, which saturates its
 * int16 pair sums, is never used. Sums are exact for K <= 65793; above that
 * they wrap modulo 2^32 exactly like torch's int32 arithmetic.
 *
 * Packed weight layout ("16x4 tiles", shared by every ISA path so one packed
 * buffer works whatever path runs): N is split into tiles of 16 output
 * channels, K is padded to a multiple of 4 (kp) with zeros; tile t holds
 * kp/4 groups of 64 bytes; group g byte (c*4 + j) = w[t*16 + c][g*4 + j]
 * (zero outside the matrix). Size: ceil(N/16) * kp * 16 bytes.
 *
 * Every entry point validates its arguments and returns QP_ERR_INVALID_ARGUMENT
 * (1) or QP_ERR_OUT_OF_MEMORY (3) instead of crashing.
 */
#ifndef QUANTPLUG_X86_ONEDNN_KERNELS_H
#define QUANTPLUG_X86_ONEDNN_KERNELS_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* QP_CDEF_BEGIN */
/* ---- linear: weight packing ---- */
/* Bytes of the packed buffer for an [n, k] weight. */
size_t x86_onednn_packed_linear_size(size_t n, size_t k);
/* Pack int8 w[n][k] (row-major) into the tile layout; col_sums[c] = sum_k w[c][k]. */
int x86_onednn_pack_linear_weight(const int8_t *w, size_t n, size_t k, int8_t *packed,
                                  int32_t *col_sums);
/* Inverse of the packing (tests, debugging). */
int x86_onednn_unpack_linear_weight(const int8_t *packed, size_t n, size_t k, int8_t *w);

/* ---- linear: static int8 ---- */
/* Requantization parameters of a static linear/conv, computed exactly like
 * quantplug.kernels.requant_params: acc_scale[c] = x_scale * w_scales[c],
 * multipliers[c] = acc_scale[c] / out_scale, bias_q[c] = round(bias[c] / acc_scale[c])
 * (saturated to int32; 0 without bias). */
int x86_onednn_requant_params(float x_scale, const float *w_scales, size_t n, float out_scale,
                              const float *bias, float *multipliers, int32_t *bias_q);
/* y[m][n] = requant(sum_k (x[m][k] - x_zp) * w[n][k] + bias_q[n]); uint8 x [m][k], uint8 y
 * [m][n]. Scales and the fp32 bias (may be NULL) are turned into multipliers and int32 bias
 * inside, like x86_onednn_requant_params. relu: pass qmin = max(0, out_zp). */
int x86_onednn_linear_u8(const uint8_t *x, size_t m, size_t k, float x_scale, int32_t x_zp,
                         const int8_t *packed, const int32_t *col_sums, const float *w_scales,
                         size_t n, const float *bias, float out_scale, int32_t out_zp,
                         int32_t qmin, int32_t qmax, uint8_t *out);
/* Same with precomputed int32 bias (may be NULL) and multipliers (1 or n of them). */
int x86_onednn_linear_u8_requant(const uint8_t *x, size_t m, size_t k, int32_t x_zp,
                                 const int8_t *packed, const int32_t *col_sums, size_t n,
                                 const int32_t *bias_q, const float *multipliers,
                                 size_t n_multipliers, int32_t out_zp, int32_t qmin,
                                 int32_t qmax, uint8_t *out);
/* A prepared static linear (opaque): the weight pointers, n, k and every per-column constant
 * of x86_onednn_linear_u8 for one set of qparams (multipliers, bias_q - x_zp * col_sums),
 * computed once, so a call does no per-column work and no allocation. The plan keeps the
 * packed pointer: the caller keeps that buffer alive and unchanged in place while the plan
 * lives. Results are bit-identical to x86_onednn_linear_u8 with the same arguments. */
typedef struct x86_onednn_linear_plan x86_onednn_linear_plan;
/* NULL when an argument is invalid (same rules as x86_onednn_linear_u8) or on OOM. */
x86_onednn_linear_plan *x86_onednn_linear_plan_new(const int8_t *packed, const int32_t *col_sums,
                                                   size_t n, size_t k, float x_scale,
                                                   int32_t x_zp, const float *w_scales,
                                                   const float *bias, float out_scale,
                                                   int32_t out_zp, int32_t qmin, int32_t qmax);
void x86_onednn_linear_plan_free(x86_onednn_linear_plan *plan);
/* uint8 x [m][k] -> uint8 out [m][n], both given as addresses (integers: a Python caller
 * passes tensor.data_ptr() with no pointer cast, the cheapest cffi argument). */
int x86_onednn_linear_plan_run(const x86_onednn_linear_plan *plan, uintptr_t x, size_t m,
                               uintptr_t out);
/* Raw int32 accumulators acc[m][n] = sum_k (x - x_zp) * w (tests of the GEMM core). */
int x86_onednn_linear_u8_acc(const uint8_t *x, size_t m, size_t k, int32_t x_zp,
                             const int8_t *packed, const int32_t *col_sums, size_t n,
                             int32_t *acc);

/* ---- linear: dynamic (fp32 in, fp32 out) ---- */
/* uint8 full-range asymmetric qparams of x (one per tensor, or one per row when per_row),
 * torch observer arithmetic: scale = max((max(mx,0) - min(mn,0)) / 255, FLT_EPSILON),
 * zp = clamp(-nearbyint(min(mn,0) / scale), 0, 255). Fails on NaN/inf input. */
int x86_onednn_choose_qparams_u8(const float *x, size_t rows, size_t cols, int per_row,
                                 float *scales, int32_t *zero_points);
/* out[m][n] = (float)sum_k (q(x)[m][k] - zp) * w[n][k] * (x_scale * w_scales[n]) + bias[n]
 * with x quantized per call (per tensor, or per row); bias may be NULL. x_scales / x_zps
 * (may be NULL) receive the activation qparams used (1 entry, or m when per_row). */
int x86_onednn_linear_dynamic_f32(const float *x, size_t m, size_t k, const int8_t *packed,
                                  const int32_t *col_sums, const float *w_scales, size_t n,
                                  const float *bias, int per_row, float *out, float *x_scales,
                                  int32_t *x_zps);

/* A prepared dynamic linear (opaque): the packed pointer, n, k and copies of col_sums,
 * w_scales and bias (may be NULL) padded to whole tiles, so a call copies and allocates
 * nothing (small calls keep their scratch on the stack). Same lifetime rule as the static
 * plan; results bit-identical to x86_onednn_linear_dynamic_f32. NULL on invalid arguments
 * (same rules) or OOM. */
typedef struct x86_onednn_dynamic_plan x86_onednn_dynamic_plan;
x86_onednn_dynamic_plan *x86_onednn_dynamic_plan_new(const int8_t *packed, const int32_t *col_sums,
                                                     const float *w_scales, size_t n, size_t k,
                                                     const float *bias);
void x86_onednn_dynamic_plan_free(x86_onednn_dynamic_plan *plan);
/* fp32 x [m][k] -> fp32 out [m][n] (addresses as integers); fails (1) on NaN / inf in x. */
int x86_onednn_dynamic_plan_run(const x86_onednn_dynamic_plan *plan, uintptr_t x, size_t m,
                                int per_row, uintptr_t out);

/* ---- conv2d (NHWC activations, uint8) ---- */
/* Packed conv weight: per group, the [oc_per_group, kh*kw*ic_per_group] matrix packed like
 * a linear weight (K order kh, kw, ic). w is [oc][kh][kw][ic_per_group] (OHWI). */
size_t x86_onednn_packed_conv2d_size(size_t oc, size_t ic_per_group, size_t kh, size_t kw,
                                     size_t groups);
int x86_onednn_pack_conv2d_weight(const int8_t *w_ohwi, size_t oc, size_t ic_per_group,
                                  size_t kh, size_t kw, size_t groups, int8_t *packed,
                                  int32_t *col_sums);
/* x: [batch][h][w][c] uint8 (NHWC), out: [batch][oh][ow][oc] uint8. other (may be NULL):
 * an NHWC uint8 tensor shaped like out, added before the optional relu (the x86 conv+add
 * fusion): out = clamp(nearbyint((float)acc*m[c] + (float)(other - other_zp)*m_o) + zp),
 * m_o = other_scale / out_scale. geometry = {stride_h, stride_w, pad_h, pad_w,
 * dilation_h, dilation_w}. */
/* NCHW -> NHWC copy of a uint8 tensor (a first layer's few-channel input: torch's strided
 * channels_last copy of a 3-channel image costs ~6x more). */
int x86_onednn_nchw_to_nhwc_u8(const uint8_t *x, size_t n, size_t c, size_t hw, uint8_t *out);
int x86_onednn_conv2d_u8(const uint8_t *x, size_t batch, size_t h, size_t w, size_t c,
                         float x_scale, int32_t x_zp, const int8_t *packed,
                         const int32_t *col_sums, const float *w_scales, size_t oc, size_t kh,
                         size_t kw, size_t groups, const int64_t *geometry, const float *bias,
                         const uint8_t *other, float other_scale, int32_t other_zp,
                         float out_scale, int32_t out_zp, int32_t qmin, int32_t qmax,
                         uint8_t *out, size_t oh, size_t ow);

/* ---- elementwise ---- */
/* Quantized add of two uint8 tensors of n elements (same layout):
 * out = clamp(nearbyint(((float)(a - a_zp) * a_scale + (float)(b - b_zp) * b_scale)
 *                       * (1 / out_scale)) + out_zp, qmin, qmax), float32, no FMA. */
int x86_onednn_add_u8(const uint8_t *a, float a_scale, int32_t a_zp, const uint8_t *b,
                      float b_scale, int32_t b_zp, size_t n, float out_scale, int32_t out_zp,
                      int32_t qmin, int32_t qmax, uint8_t *out);

/* ---- weight-only linear (fp32 activations) ---- */
/* out[m][n] = x[m] . dequant(w[n]) (+ bias[n]); see weight_only.c for the packed layouts and
 * the exact operation order. group == 0: int8 weights [tile][k][16] with per-channel scales
 * [np]; group > 0 (even, divides k): int4 weights [tile][k/2][16] (two per byte, low nibble
 * first) with scales [k/group][np], np = n rounded up to 16. bias may be NULL. */
int x86_onednn_linear_weight_only_f32(const float *x, size_t m, size_t k, const uint8_t *packed,
                                      const float *scales, size_t n, size_t group,
                                      const float *bias, float *out);

/* ---- test hooks ---- */
/* 1: while AVX-512 VNNI is active, run the 256-bit VNNI microkernel compiled with EVEX
 * encoding (same source as the AVX-VNNI path), so that code is tested on CPUs without
 * AVX-VNNI. 0 restores the normal kernels. Returns the previous value. */
int x86_onednn_set_ymm_vnni_probe(int on);
/* 1: convolutions build im2col rows even where the ISA has the indirect (igemm) microkernel,
 * so both conv schedules of one ISA are tested (and timed) against each other. Returns the
 * previous value. */
int x86_onednn_set_conv_im2col_probe(int on);
/* 1: depthwise 3x3 layers skip the fused AVX-512 VNNI row schedule (depthwise3x3_vnni.c)
 * and run the general VNNI depthwise one, so both are tested against each other. Returns the
 * previous value. */
int x86_onednn_set_dw3x3_probe(int off);
/* Name of the GEMM microkernel the active ISA runs. */
const char *x86_onednn_gemm_ukernel_name(void);
/* QP_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* QUANTPLUG_X86_ONEDNN_KERNELS_H */
