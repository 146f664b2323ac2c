/*
 * C-only internals of the xnnpack plugin: microkernel signatures, the
 * per-ISA kernel table, and helpers shared by the scalar and SIMD paths.
 *
 * Microkernel names follow XNNPACK: <datatypes>_<op>_ukernel_<MR>x<NR>c<KR>__<isa>.
 * A gemm microkernel computes raw[r][j] = sum_k x[r][k] * w[j][k] (exact int32)
 * for up to MR rows and the 16 channels of one packed block; an epilogue then
 * turns the tile into int8 (requantization) or fp32 (qd8 dequantization).
 */
#ifndef QUANTPLUG_XNNPACK_INTERNAL_H
#define QUANTPLUG_XNNPACK_INTERNAL_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "quantplug/qp_runtime.h"

#define XNN_NR 16 /* output channels per packed block */
#define XNN_KR 4  /* k values per channel per packed row */
#define XNN_MR_MAX 4
#define XNN_MR_WIDE_MAX 8 /* rows of the wide (two-block) microkernels */
#define XNN_MAX_K ((size_t)65536)
/* Weights of one panel of the linear and conv drivers: they stay in L2 while every row tile of a
 * task runs over them, and the few rows of a tile stay in L1 across the panel (reading the
 * activations from L2 once per 32 channels instead was ~10% slower at K = 384). */
#define XNN_PANEL_BYTES ((size_t)384 * 1024)

static inline size_t xnn_round_up(size_t v, size_t q) { return (v + q - 1) / q * q; }
static inline size_t xnn_min(size_t a, size_t b) { return a < b ? a : b; }

/* Four consecutive int8 activations as one 32-bit word (unaligned-safe); the
 * tail variant reads only `count` (< 4) bytes and zero-fills the rest, so no
 * path ever reads past the end of a row. */
static inline int32_t xnn_load_x4(const int8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}
static inline int32_t xnn_load_x4_tail(const int8_t *p, size_t count) {
  int32_t v = 0;
  memcpy(&v, p, count);
  return v;
}

/* Keep a float (or float vector) in a register between two operations, so the
 * compiler cannot contract a multiply and a following add into one FMA: the
 * scalar reference and every SIMD path must round the product and the sum
 * separately, as PyTorch's reference does. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define XNN_FP_BARRIER(v) __asm__("" : "+x"(v))
#define XNN_FP_BARRIER_ZMM(v) __asm__("" : "+v"(v))
#elif defined(__GNUC__) && defined(__aarch64__)
#define XNN_FP_BARRIER(v) __asm__("" : "+w"(v))
#else
#define XNN_FP_BARRIER(v) ((void)0)
#endif

/* In-place vpdpbusd (u8 activations x, s8 weights w): GCC copies the accumulator of
 * _mm512_dpbusd_epi32 to a fresh register and back on every step; the asm form ties it. */
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define XNN_DPBUSD(c, x, w) __asm__("vpdpbusd %2, %1, %0" : "+v"(c) : "v"(x), "v"(w))
#else
#define XNN_DPBUSD(c, x, w) ((c) = _mm512_dpbusd_epi32((c), (x), (w)))
#endif

/* The core's qp_runtime.h has no AArch64 target macros; dot product needs
 * ARMv8.2-A + dotprod, enabled per function so the extension still loads on
 * any ARMv8-A CPU (the dotprod path is chosen only when HWCAP_ASIMDDP says so). */
#if defined(__aarch64__)
#ifndef QP_TARGET_NEONDOT
#define QP_TARGET_NEONDOT __attribute__((target("arch=armv8.2-a+dotprod")))
#endif
#endif

/* raw[r * 16 + j] = sum_k a[r][k] * w[j][k] for r < mr (rows are a + r * a_stride). */
typedef void (*xnn_gemm_ukernel_fn)(size_t mr, size_t k, const int8_t *a, size_t a_stride,
                                    const int8_t *w, const int32_t *row_sums, int32_t *raw);

/* The wide microkernels: two adjacent packed 16-channel blocks at once (w and w + w_block_stride,
 * row sums of the 32 channels contiguous), more accumulators per loaded activation. raw holds
 * block 0 as [mr][16] at raw and block 1 as [mr][16] at raw + XNN_MR_WIDE_MAX * 16, so the
 * 16-channel epilogues run on each half unchanged. */
typedef void (*xnn_gemm_wide_ukernel_fn)(size_t mr, size_t k, const int8_t *a, size_t a_stride,
                                         const int8_t *w, size_t w_block_stride, const int32_t *row_sums,
                                         int32_t *raw);

/* int8 output: q = qp_requantize(raw + bias_eff[j], mult[per_channel ? j : 0], zp, qmin, qmax),
 * for nc <= 16 channels; bias_eff = bias - x_zp * row_sum (wrapping int32). */
typedef struct {
  const int32_t *bias_eff; /* nc entries for this block */
  const float *mult;       /* nc entries (per channel) or 1 */
  int per_channel;
  int32_t zp, qmin, qmax;
} xnn_requant_params;
/* Every ISA's epilogue takes any nc <= 16 (a partial last block too) and reads and writes only
 * nc channels of the caller's arrays: masked on AVX-512, the scalar epilogue inside otherwise. */
typedef void (*xnn_requant_fn)(size_t mr, size_t nc, const int32_t *raw,
                               const xnn_requant_params *p, int8_t *out, size_t out_stride);

/* fp32 output: y = (float)(raw - x_zp[r] * row_sum[j]) * (x_scale[r] * w_scale[j]) + bias[j]. */
typedef struct {
  const int32_t *row_sums; /* nc entries */
  const int32_t *x_zp;     /* mr entries */
  const float *x_scale;    /* mr entries */
  const float *w_scale;    /* nc entries (per channel) or 1 */
  int per_channel;
  const float *bias;       /* nc entries, or NULL */
} xnn_dequant_params;
/* Any nc <= 16, as xnn_requant_fn. */
typedef void (*xnn_dequant_fn)(size_t mr, size_t nc, const int32_t *raw,
                               const xnn_dequant_params *p, float *out, size_t out_stride);

/* Elementwise add of n int8 values (see xnnpack_qs8_vadd); a, b, out may be any length. */
typedef struct {
  int32_t a_zp, b_zp, out_zp, qmin, qmax;
  float a_scale, b_scale, inv_out_scale;
} xnn_vadd_params;
typedef void (*xnn_vadd_fn)(size_t n, const int8_t *a, const int8_t *b, const xnn_vadd_params *p,
                            int8_t *out);

typedef struct {
  size_t mr;
  xnn_gemm_ukernel_fn gemm;
  xnn_requant_fn requant;
  xnn_dequant_fn dequant;
  xnn_vadd_fn vadd;
  size_t mr_wide;                     /* 0 when there is no wide microkernel */
  xnn_gemm_wide_ukernel_fn gemm_wide; /* optional; linear only (conv uses gemm) */
  /* Optional twins of gemm / gemm_wide for rows stored as x + 128 (x ^ 0x80, as uint8), same raw
   * results: the qd8 conversion writes its rows that way for them (xnn_qd8_config.convert with
   * flip 0x80), which saves the VNNI kernels one xor per activation broadcast. Either both or
   * neither are set. */
  xnn_gemm_ukernel_fn gemm_u8;
  xnn_gemm_wide_ukernel_fn gemm_wide_u8;
} xnn_gemm_config;

/* The kernel table for `isa` (never the scalar path, which has its own
 * reference loops), or NULL when the isa is not compiled in. */
const xnn_gemm_config *xnn_gemm_config_for(int isa);

/* Per-ISA tables (defined in gemm_x86.c / gemm_arm.c). */
#if defined(__x86_64__) || defined(__i386__)
extern const xnn_gemm_config xnn_config_avx2, xnn_config_avx512, xnn_config_avx512vnni;
#endif
#if defined(__aarch64__)
extern const xnn_gemm_config xnn_config_neon, xnn_config_neondot;
#endif

/* Scalar epilogues, shared by the SIMD paths for partial tiles. */
void xnn_qs8_requant__scalar(size_t mr, size_t nc, const int32_t *raw, const xnn_requant_params *p,
                             int8_t *out, size_t out_stride);
void xnn_qs8_vadd_minmax_ukernel__scalar(size_t n, const int8_t *a, const int8_t *b,
                                         const xnn_vadd_params *p, int8_t *out);
void xnn_qd8_f32_dequant__scalar(size_t mr, size_t nc, const int32_t *raw,
                                 const xnn_dequant_params *p, float *out, size_t out_stride);

/* Depthwise convolution (dwconv.c), one output pixel, 16 channels c0 .. c0 + 16:
 * acc[c] = sum over the taps t with rows[t] != NULL of (rows[t][c] - x_zp) * w[t * w_stride + c]
 * (exact int32; a NULL row is padding, which contributes 0). */
typedef void (*xnn_dwconv_acc_fn)(size_t taps, const int8_t *const *rows, const int32_t *w, size_t w_stride,
                                  int32_t x_zp, int32_t *acc);
#define XNN_DW_MAX_TAPS 121 /* up to 11x11 kernels; larger ones take the gemm path */
/* The SIMD accumulation for `isa` (16 full channels), NULL for the scalar path. */
xnn_dwconv_acc_fn xnn_dwconv_acc_for(int isa);
/* A whole depthwise convolution, for ISAs with a faster row-wise kernel than the per-pixel
 * accumulation above (same results bit for bit). The weights stay in the packed gemm layout: tap
 * k = ky * kw + kx of channel ch is xnn_packed_w(packed + ch * group_packed, kp, 0, k) (the kernel
 * re-lays them once per call, straight from there); bias [c] int32 or NULL (no bias), mult c
 * entries or 1 (per_channel). */
typedef struct {
  const int8_t *x;
  size_t batch, h, w, c, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow;
  int32_t x_zp, out_zp, qmin, qmax;
  const int8_t *packed;
  size_t group_packed, kp;
  const int32_t *bias;
  const float *mult;
  int per_channel;
  int8_t *out;
} xnn_dwconv_problem;
typedef int (*xnn_dwconv_rows_fn)(const xnn_dwconv_problem *p);
/* The row-wise depthwise kernel for `isa` (dwconv_x86.c: AVX-512 VNNI), NULL when there is none. */
xnn_dwconv_rows_fn xnn_dwconv_rows_for(int isa);
/* The linears after their argument checks (gemm.c), shared by the plain entry points and the
 * prepared plans (linear_plan.c). bias_eff: xnn_round_up(n, XNN_NR) entries of bias - x_zp *
 * row_sums (xnn_qs8_bias_eff); xnn_qs8_linear_run returns QP_ERR_UNSUPPORTED_ISA on the scalar
 * path, which needs the plain bias. */
void xnn_qs8_bias_eff(const int32_t *bias, int32_t x_zp, const int32_t *row_sums, size_t n, int32_t *bias_eff);
int xnn_qs8_linear_run(const int8_t *x, size_t m, size_t k, const int8_t *packed, const int32_t *row_sums, size_t n,
                       const int32_t *bias_eff, const float *mult, int mult_per_channel, int32_t out_zp,
                       int32_t qmin, int32_t qmax, int8_t *out);
int xnn_qd8_linear_run(const float *x, size_t m, size_t k, int per_row, const int8_t *packed,
                       const int32_t *row_sums, size_t n, const float *w_scales, int w_per_channel, const float *bias,
                       float *out);
/* The row kernel's setup and run apart (dwconv_x86.c, x86-64 only; see dwconv_plan.c): bytes of
 * the constants for a geometry, fill them (returns the nomin flag the run needs; reads packed,
 * group_packed, kp, bias, mult, per_channel, x_zp and the geometry of p), run with them. */
size_t xnn_dwv_plan_bytes(size_t c, size_t kh, size_t kw, size_t sh, size_t dh);
int xnn_dwv_plan_prepare(const xnn_dwconv_problem *p, void *buf);
int xnn_dwv_plan_run(const xnn_dwconv_problem *p, const void *buf, int nomin);
/* The depthwise path of xnnpack_qs8_qc8w_conv2d_nhwc (groups == cin == cout), for a SIMD `cfg`
 * whose xnn_dwconv_acc_for is not NULL and kh * kw <= XNN_DW_MAX_TAPS (arguments already checked). */
int xnn_dwconv_nhwc(const xnn_gemm_config *cfg, const int8_t *x, size_t batch, size_t h, size_t w, size_t c,
                    int32_t x_zp, const int8_t *packed, size_t group_packed, size_t kp, size_t kh, size_t kw,
                    size_t sh, size_t sw, size_t ph, size_t pw, size_t dh, size_t dw, size_t oh, size_t ow,
                    const int32_t *bias, const float *mult, int per_channel, int32_t out_zp, int32_t qmin,
                    int32_t qmax, int8_t *out);

/* qd8 activation conversion (the dynamic linear's per-call quantization), SIMD paths of the
 * scalar code in gemm.c (xnn_minmax, the core's qp_quantize_per_tensor_s8), equal bit for bit:
 * minmax folds x[0 .. n) into *lo / *hi and sets *nan on a NaN (min / max are exact, so the
 * order does not matter; the qparams treat -0 and +0 alike); convert writes
 * (clamp(round_half_even(x * inv), -128 - zp, 127 - zp) + zp) ^ flip for finite x, flip 0 (int8)
 * or 0x80 (the same value + 128 as uint8, for xnn_gemm_config.gemm_u8). */
typedef struct {
  void (*minmax)(const float *x, size_t n, float *lo, float *hi, int *nan);
  void (*convert)(const float *x, size_t n, float inv_scale, int32_t zp, uint8_t flip, int8_t *out);
} xnn_qd8_config;
/* The SIMD conversion for `isa` (qd8_x86.c / qd8_arm.c), NULL for the scalar path. */
const xnn_qd8_config *xnn_qd8_config_for(int isa);

/* Calls BODY(R, ...) with R = mr as a compile-time constant 1..4: the always_inline microkernel
 * bodies are specialised per row count, so a one-row call does one row of work. */
#define XNN_DISPATCH_MR4(mr, BODY, ...)   \
  switch (mr) {                           \
    case 1: BODY(1, __VA_ARGS__); break;  \
    case 2: BODY(2, __VA_ARGS__); break;  \
    case 3: BODY(3, __VA_ARGS__); break;  \
    default: BODY(4, __VA_ARGS__); break; \
  }

/* f32-qb4w microkernels (int4 weight-only, qb4w.c). The packed weights are blocks of 16 output
 * channels; in a block, each 64-byte row holds 8 k of the 16 channels, one little-endian 32-bit
 * word per channel with k = 8 kb + q in bits 4q .. 4q + 3 (two's complement nibble). A SIMD lane
 * is then one output channel, and unpacking k = 8 kb + q for 16 channels is one shift of one
 * 64-byte row (plus a sign extension or a table lookup), shared by every row of x in the tile.
 * The scales are packed per block too, [ceil(n / 16)][groups][16]: the 16 scales of a block and
 * group are one vector, and a tile reads its scales sequentially (with [groups][n], 16 KB apart
 * at n = 4096, a one-row-tile call at group 32 spent more time on scale cache misses than on
 * its FMAs).
 *
 * A microkernel computes, for r < mr rows and the nb * 16 channels of nb <= XNN_QB4W_NB_MAX
 * adjacent blocks (block b at w + b * w_block_stride, its scales at scales + b * s_block_stride,
 * group g's 16 at + 16 g), the canonical sums of qb4w.c without the bias, into
 * res[r * XNN_QB4W_NR_MAX + j]. */
#define XNN_QB4W_MR_MAX 8 /* rows per microkernel call, at most */
#define XNN_QB4W_NB_MAX 4 /* 16-channel blocks per microkernel call, at most */
#define XNN_QB4W_NR_MAX (16 * XNN_QB4W_NB_MAX)
typedef void (*xnn_qb4w_ukernel_fn)(size_t mr, size_t nb, size_t k, size_t group_size, const float *x,
                                    size_t x_stride, const uint8_t *w, size_t w_block_stride, const float *scales,
                                    size_t s_block_stride, float *res);
/* A panel kernel: the same sums for m <= XNN_QB4W_PANEL_ROWS rows and exactly
 * XNN_QB4W_PANEL_NB blocks (arguments as the microkernel). It unpacks the weights of one group
 * to fp32 in an L1 buffer once and runs every row tile of the panel over them, so the unpack
 * cost is shared by up to 64 rows instead of one row tile. */
#define XNN_QB4W_PANEL_ROWS 64
#define XNN_QB4W_PANEL_NB 2
typedef void (*xnn_qb4w_panel_fn)(size_t m, size_t k, size_t group_size, const float *x, size_t x_stride,
                                  const uint8_t *w, size_t w_block_stride, const float *scales,
                                  size_t s_block_stride, float *res);
/* A microkernel with its tile: up to mr rows and nb blocks per call, or nb_row1 blocks when a
 * call has one row (one row has one FMA chain per block: more blocks hide the FMA latency);
 * panel (optional, NULL when none) for calls with more than mr rows. */
typedef struct {
  xnn_qb4w_ukernel_fn ukernel;
  size_t mr, nb, nb_row1;
  xnn_qb4w_panel_fn panel;
} xnn_qb4w_config;
/* The SIMD microkernels for `isa` (qb4w_x86.c / qb4w_arm.c), NULL for the scalar path. */
const xnn_qb4w_config *xnn_qb4w_config_for(int isa);
#if defined(__x86_64__) || defined(__i386__)
void xnn_f32_qb4w_ukernel_4x16__avx2(size_t mr, size_t nb, size_t k, size_t group_size, const float *x,
                                     size_t x_stride, const uint8_t *w, size_t w_block_stride, const float *scales,
                                     size_t s_block_stride, float *res);
void xnn_f32_qb4w_panel_8x32__avx512(size_t m, size_t k, size_t group_size, const float *x, size_t x_stride,
                                     const uint8_t *w, size_t w_block_stride, const float *scales,
                                     size_t s_block_stride, float *res);
void xnn_f32_qb4w_ukernel_8x32__avx512(size_t mr, size_t nb, size_t k, size_t group_size, const float *x,
                                       size_t x_stride, const uint8_t *w, size_t w_block_stride, const float *scales,
                                       size_t s_block_stride, float *res);
#endif
#if defined(__aarch64__)
void xnn_f32_qb4w_ukernel_4x16__neon(size_t mr, size_t nb, size_t k, size_t group_size, const float *x,
                                     size_t x_stride, const uint8_t *w, size_t w_block_stride, const float *scales,
                                     size_t s_block_stride, float *res);
#endif

/* Calls BODY(R, ...) with R = mr as a compile-time constant 1..8 (see XNN_DISPATCH_MR4). */
#define XNN_DISPATCH_MR8(mr, BODY, ...)   \
  switch (mr) {                           \
    case 1: BODY(1, __VA_ARGS__); break;  \
    case 2: BODY(2, __VA_ARGS__); break;  \
    case 3: BODY(3, __VA_ARGS__); break;  \
    case 4: BODY(4, __VA_ARGS__); break;  \
    case 5: BODY(5, __VA_ARGS__); break;  \
    case 6: BODY(6, __VA_ARGS__); break;  \
    case 7: BODY(7, __VA_ARGS__); break;  \
    default: BODY(8, __VA_ARGS__); break; \
  }

/* Fully unroll a loop over the rows / blocks of a microkernel tile: GCC's own heuristics leave
 * the larger tiles as loops, so the accumulator arrays stay in memory instead of registers. */
#define XNN_UNROLL _Pragma("GCC unroll 16")

/* The body of the 4x16 qb4w microkernels (AVX2, NEON), whose parameters it names: BODY(R, 1, ...)
 * for 2..4 rows of one block (R a constant), else rows one at a time with nb 1 or 2 blocks (the
 * one-row tile of their configs): few instantiations of the always_inline BODY. */
#define XNN_QB4W_DISPATCH_4X16(BODY)                                                                   \
  if (mr > 1 && nb == 1) {                                                                             \
    XNN_DISPATCH_MR4(mr, BODY, 1, k, group_size, x, x_stride, w, w_block_stride, scales, s_block_stride, \
                     res)                                                                              \
    return;                                                                                            \
  }                                                                                                    \
  for (size_t r = 0; r < mr; r++) {                                                                    \
    if (nb == 1)                                                                                       \
      BODY(1, 1, k, group_size, x + r * x_stride, x_stride, w, w_block_stride, scales, s_block_stride,   \
           res + r * XNN_QB4W_NR_MAX);                                                                 \
    else                                                                                               \
      BODY(1, 2, k, group_size, x + r * x_stride, x_stride, w, w_block_stride, scales, s_block_stride,   \
           res + r * XNN_QB4W_NR_MAX);                                                                 \
  }

/* f32-qc8w microkernels (int8 weight-only, f32_qc8w.c), on the packed qc8w layout of gemm.c
 * unchanged: blocks of 16 channels, each 64-byte row holding 4 k of the 16 channels as 4
 * consecutive bytes per channel. 16 consecutive bytes are then 4 channels x 4 k (a "group"),
 * which one sign extension (vpmovsxbd / vmovl) turns into a vector with one lane per (channel,
 * k mod 4) pair: the microkernels keep four phase sums per output, a[q] over k = q mod 4 (see
 * f32_qc8w.c), and never shift bytes into place one k at a time.
 *
 * A microkernel computes, for r < mr rows and the nb * 16 channels of nb <= XNN_F32_QC8W_NB_MAX
 * adjacent blocks (block b at w + b * w_block_stride), the phase sums of f32_qc8w.c into
 * acc[r * XNN_F32_QC8W_ACC_STRIDE + 4 * j + q]. */
#define XNN_F32_QC8W_MR_MAX 8
#define XNN_F32_QC8W_NB_MAX 4
#define XNN_F32_QC8W_ACC_STRIDE (4 * 16 * XNN_F32_QC8W_NB_MAX)
typedef void (*xnn_f32_qc8w_ukernel_fn)(size_t mr, size_t nb, size_t k, const float *x, size_t x_stride,
                                        const int8_t *w, size_t w_block_stride, float *acc);
/* A microkernel with its tile: up to mr rows and nb blocks per call, or nb_row1 blocks when a
 * call has one row (one row has one FMA chain per accumulator: more blocks, more independent
 * chains to hide the FMA latency). */
typedef struct {
  xnn_f32_qc8w_ukernel_fn ukernel;
  size_t mr, nb, nb_row1;
} xnn_f32_qc8w_config;
/* The SIMD microkernels for `isa` (f32_qc8w_x86.c / f32_qc8w_arm.c), NULL for the scalar path. */
const xnn_f32_qc8w_config *xnn_f32_qc8w_config_for(int isa);
#if defined(__x86_64__) || defined(__i386__)
void xnn_f32_qc8w_ukernel_4x16c4__avx2(size_t mr, size_t nb, size_t k, const float *x, size_t x_stride,
                                       const int8_t *w, size_t w_block_stride, float *acc);
void xnn_f32_qc8w_ukernel_8x16c4__avx512(size_t mr, size_t nb, size_t k, const float *x, size_t x_stride,
                                         const int8_t *w, size_t w_block_stride, float *acc);
#endif
#if defined(__aarch64__)
void xnn_f32_qc8w_ukernel_4x16c4__neon(size_t mr, size_t nb, size_t k, const float *x, size_t x_stride,
                                       const int8_t *w, size_t w_block_stride, float *acc);
#endif
/* Four floats of row x from p, zero past k (p < k): the last, partial packed row of a k loop
 * (its padded weights are zero, so the zero activations add +0, which leaves a sum unchanged:
 * a phase sum starts at +0 and can never be -0), and no read past the row. */
static inline void xnn_f32_qc8w_x_tail(const float *x, size_t p, size_t k, float xt[4]) {
  xt[0] = xt[1] = xt[2] = xt[3] = 0.0f;
  memcpy(xt, x + p, (k - p) * sizeof(float));
}

/* Element w[j][k] of a packed qc8w buffer. */
static inline int32_t xnn_packed_w(const int8_t *packed, size_t kp, size_t j, size_t k) {
  return packed[(j / XNN_NR) * XNN_NR * kp + (k / XNN_KR) * (XNN_NR * XNN_KR) + (j % XNN_NR) * XNN_KR +
                k % XNN_KR];
}

#endif /* QUANTPLUG_XNNPACK_INTERNAL_H */
