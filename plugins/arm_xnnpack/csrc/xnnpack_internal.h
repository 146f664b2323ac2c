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
#define XNN_MAX_K ((size_t)65536)

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

/* int8 output: q = qp_requantize(raw + bias_eff[j], mult[per_channel ? j : 0], zp, qmin, qmax),
 * for nc <= 16 channels; bias_eff = bias - x_zp * row_sum (wrapping int32). */
typedef struct {
  const int32_t *bias_eff; /* 16 entries for this block */
  const float *mult;       /* 16 entries (per channel) or 1 */
  int per_channel;
  int32_t zp, qmin, qmax;
} xnn_requant_params;
typedef void (*xnn_requant_fn)(size_t mr, size_t nc, const int32_t *raw,
                               const xnn_requant_params *p, int8_t *out, size_t out_stride);

/* fp32 output: y = (float)(raw - x_zp[r] * row_sum[j]) * (x_scale[r] * w_scale[j]) + bias[j]. */
typedef struct {
  const int32_t *row_sums; /* 16 entries */
  const int32_t *x_zp;     /* mr entries */
  const float *x_scale;    /* mr entries */
  const float *w_scale;    /* 16 entries (per channel) or 1 */
  int per_channel;
  const float *bias;       /* 16 entries, or NULL */
} xnn_dequant_params;
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

/* Element w[j][k] of a packed qc8w buffer. */
static inline int32_t xnn_packed_w(const int8_t *packed, size_t kp, size_t j, size_t k) {
  return packed[(j / XNN_NR) * XNN_NR * kp + (k / XNN_KR) * (XNN_NR * XNN_KR) + (j % XNN_NR) * XNN_KR +
                k % XNN_KR];
}

#endif /* QUANTPLUG_XNNPACK_INTERNAL_H */
