/*
 * quantplug-fbgemm kernels: FBGEMM numerics on x86.
 *
 *   activations  uint8, asymmetric, reduce_range: quantized to 0..127
 *   weights      int8 (-128..127), symmetric per output channel (per tensor allowed;
 *                the kernels also accept non-zero weight zero points)
 *   bias         float32 in the API, rounded to int32 with scale x_scale * w_scale[n]
 *   output       uint8, requantized in float32: q = clamp(nearbyint(acc * m[n]) + zp)
 *
 * Why 7-bit activations (reduce_range). Without VNNI, x86 multiplies uint8 by int8 with
 * vpmaddubsw, which adds each PAIR of adjacent products into a SIGNED 16-BIT lane with
 * saturation: a0*w0 + a1*w1 with a in 0..255 and w in -128..127 reaches 2*255*(-128) = -65280,
 * far outside int16, and the saturated sum is silently wrong. With a in 0..127 the pair sum
 * stays in [2*127*(-128), 2*127*127] = [-32512, 32258], inside int16, so the int16 pair path is
 * exact for any K (the pairs are then widened to int32 by vpmaddwd). FBGEMM therefore asks
 * PyTorch to quantize activations with reduce_range=True. VNNI's vpdpbusd adds four products
 * straight into int32 and never saturates.
 *
 * Every kernel here is exact: when a uint8 input holds values above 127 (a full-range tensor
 * handed to the kernel directly), the AVX2 / AVX-512 paths switch to a split form
 * (a = (a & 0x7f) + (a & 0x80), two exact vpmaddubsw) instead of saturating. The flag
 * FBGEMM_FLAG_RAW_MADDUBS turns that off to reproduce FBGEMM's raw saturating arithmetic
 * (tests use it to show what reduce_range prevents).
 *
 * Packed weight layout ("16x4 c4", shared by every ISA so a packed weight does not depend on
 * the CPU that packed it): columns in blocks of 16 (N padded to 16), K in groups of 4 (padded
 * to 4) ; block b, group g, column j, element t is at byte ((b * KG + g) * 16 + j) * 4 + t.
 * One 64-byte group is exactly one zmm: vpdpbusd / vpmaddubsw against a broadcast of 4
 * activation bytes gives 16 int32 column sums.
 */
#ifndef QUANTPLUG_FBGEMM_KERNELS_H
#define QUANTPLUG_FBGEMM_KERNELS_H
#include <stddef.h>
#include <stdint.h>

/* QP_CDEF_BEGIN */
/* Flags of fbgemm_linear_u8s8. */
enum fbgemm_flags {
  FBGEMM_FLAG_RAW_MADDUBS = 1 /* no split path: saturate like FBGEMM on 8-bit inputs */
};

/* ---- linear -------------------------------------------------------------- */
/* Bytes of the packed weight for an [n, k] int8 matrix (0 if n or k is 0 or too large). */
size_t fbgemm_packed_linear_size(size_t n, size_t k);
/* Pack w [n, k] (row major) into `packed` (fbgemm_packed_linear_size bytes) and write
 * row_sums[n] = sum_k w[n, k] (used to fold the activation zero point). */
int fbgemm_pack_linear_weight(const int8_t *w, size_t n, size_t k, int8_t *packed,
                              int32_t *row_sums);
/* Inverse of the packing: w [n, k]. */
int fbgemm_unpack_linear_weight(const int8_t *packed, size_t n, size_t k, int8_t *w);

/* Static linear: x [m, k] uint8 -> out [m, n] uint8.
 * acc[i, j] = sum_k (x[i,k] - x_zp) * (w[j,k] - w_zp[j]) + bias_q[j]   (int32, wraps like torch)
 * out[i, j] = clamp(nearbyint(acc * mult[j]) + out_zp, qmin, qmax)
 * with mult[j] = (x_scale * w_scale[j]) / out_scale and
 * bias_q[j] = round_half_even(bias[j] / (x_scale * w_scale[j])), all in float32
 * (exactly quantplug.kernels.requant_params). bias may be NULL. A fused relu is
 * qmin = max(qmin, out_zp). */
int fbgemm_linear_u8s8(const uint8_t *x, size_t m, size_t k, float x_scale, int32_t x_zp,
                       const int8_t *packed, const int32_t *row_sums, const float *w_scales,
                       const int32_t *w_zps, size_t n, const float *bias, float out_scale,
                       int32_t out_zp, int32_t qmin, int32_t qmax, uint32_t flags, uint8_t *out);

/* Dynamic linear: x [m, k] float32 quantized per call to uint8 [act_qmin, act_qmax] (per tensor,
 * asymmetric, qparams as quantplug.affine.choose_qparams), then
 * out[i, j] = (float)acc[i, j] * (x_scale * w_scale[j]) + bias[j]   (float32, no FMA).
 * x_scale_out / x_zp_out (may be NULL) receive the chosen activation qparams. */
int fbgemm_linear_dynamic_f32(const float *x, size_t m, size_t k, const int8_t *packed,
                              const int32_t *row_sums, const float *w_scales,
                              const int32_t *w_zps, size_t n, const float *bias,
                              int32_t act_qmin, int32_t act_qmax, float *out,
                              float *x_scale_out, int32_t *x_zp_out);

/* The requantization parameters the static linear uses (for tests and inspection). */
int fbgemm_requant_params(float x_scale, const float *w_scales, size_t n, float out_scale,
                          const float *bias, float *multipliers, int32_t *bias_q);
/* Per-tensor affine qparams from a min/max, as the dynamic linear chooses them. */
int fbgemm_choose_qparams(float min_val, float max_val, int32_t qmin, int32_t qmax,
                          float *scale, int32_t *zero_point);

/* ---- conv2d (NHWC uint8 in and out) --------------------------------------- */
/* Packed size of an OIHW int8 weight [cout, cin_g, kh, kw] with `groups` groups. */
size_t fbgemm_packed_conv2d_size(size_t cout, size_t cin_g, size_t kh, size_t kw, size_t groups);
int fbgemm_pack_conv2d_weight(const int8_t *w, size_t cout, size_t cin_g, size_t kh, size_t kw,
                              size_t groups, int8_t *packed, int32_t *row_sums);
int fbgemm_conv2d_out_size(size_t h, size_t w, size_t kh, size_t kw, size_t sh, size_t sw,
                           size_t ph, size_t pw, size_t dh, size_t dw, size_t *oh, size_t *ow);
/* Same numerics as fbgemm_linear_u8s8, per output pixel; padding is the zero point. */
int fbgemm_conv2d_u8s8(const uint8_t *x, size_t batch, size_t h, size_t w, size_t cin,
                       float x_scale, int32_t x_zp, const int8_t *packed,
                       const int32_t *row_sums, const float *w_scales, const int32_t *w_zps,
                       size_t cout, size_t kh, size_t kw, size_t sh, size_t sw, size_t ph,
                       size_t pw, size_t dh, size_t dw, size_t groups, const float *bias,
                       float out_scale, int32_t out_zp, int32_t qmin, int32_t qmax,
                       uint8_t *out);

/* ---- elementwise (same shapes, dense) -------------------------------------- */
/* add: clamp(nearbyint(((a - za) * sa + (b - zb) * sb) * (1 / so)) + zo)      (float32)
 * mul: clamp(nearbyint((float)((a - za) * (b - zb)) * (sa * sb / so)) + zo)    (int32 product) */
int fbgemm_add_u8(const uint8_t *a, float a_scale, int32_t a_zp, const uint8_t *b, float b_scale,
                  int32_t b_zp, size_t n, float out_scale, int32_t out_zp, int32_t qmin,
                  int32_t qmax, uint8_t *out);
int fbgemm_mul_u8(const uint8_t *a, float a_scale, int32_t a_zp, const uint8_t *b, float b_scale,
                  int32_t b_zp, size_t n, float out_scale, int32_t out_zp, int32_t qmin,
                  int32_t qmax, uint8_t *out);

/* ---- average pools (NHWC, output keeps the input's qparams; max pool: core) - */
/* out = zp + nearbyint(sum(x - zp over valid taps) / divisor), divisor as torch's avg_pool2d */
int fbgemm_avg_pool2d_u8(const uint8_t *x, size_t batch, size_t h, size_t w, size_t c, size_t kh,
                         size_t kw, size_t sh, size_t sw, size_t ph, size_t pw, size_t oh,
                         size_t ow, int count_include_pad, int32_t divisor_override, int32_t zp,
                         int32_t qmin, int32_t qmax, uint8_t *out);
int fbgemm_adaptive_avg_pool2d_u8(const uint8_t *x, size_t batch, size_t h, size_t w, size_t c,
                                  size_t oh, size_t ow, int32_t zp, int32_t qmin, int32_t qmax,
                                  uint8_t *out);

/* ---- diagnostics ----------------------------------------------------------- */
/* Name of the GEMM microkernel the current ISA dispatches to. */
const char *fbgemm_gemm_ukernel_name(void);
/* QP_CDEF_END */

/* ---- C-only internals ----------------------------------------------------- */
#define FB_NR 16 /* columns per packed block */
#define FB_KR 4  /* k per group */
#define FB_MR 4  /* rows per microkernel call */
#define FB_MAX_K ((size_t)1 << 24)

/* Raw int32 dot products of mr (<= FB_MR) rows of a against one packed 16-column block.
 * acc[r * 16 + j] = sum_k a[r, k] * w[j, k] (mod 2^32). `split` selects the exact split
 * form on the maddubs paths (inputs may exceed 127). */
typedef void (*fb_gemm_ukernel_fn)(size_t mr, size_t k, const uint8_t *a, size_t a_stride,
                                   const int8_t *w, int32_t *acc, int split);

/* Per-block epilogue parameters. col[j] folds bias and the zero-point terms that do not
 * depend on the row; wz[j] multiplies the activation row sum. */
typedef struct {
  float mult[FB_NR];  /* static: requant multiplier; dynamic: x_scale * w_scale */
  int32_t col[FB_NR];
  int32_t wz[FB_NR];
  float bias[FB_NR];  /* dynamic only */
} fb_block_params;

typedef void (*fb_epilogue_u8_fn)(size_t mr, size_t nc, const int32_t *acc,
                                  const int32_t *row_sums, const fb_block_params *p,
                                  int32_t zp, int32_t qmin, int32_t qmax, uint8_t *out,
                                  size_t out_stride);
typedef void (*fb_epilogue_f32_fn)(size_t mr, size_t nc, const int32_t *acc,
                                   const int32_t *row_sums, const fb_block_params *p,
                                   int has_bias, float *out, size_t out_stride);

void fbgemm_qu8_gemm_ukernel_4x16c4__scalar(size_t mr, size_t k, const uint8_t *a,
                                            size_t a_stride, const int8_t *w, int32_t *acc,
                                            int split);
void fb_epilogue_u8__scalar(size_t mr, size_t nc, const int32_t *acc, const int32_t *row_sums,
                            const fb_block_params *p, int32_t zp, int32_t qmin, int32_t qmax,
                            uint8_t *out, size_t out_stride);
void fb_epilogue_f32__scalar(size_t mr, size_t nc, const int32_t *acc, const int32_t *row_sums,
                             const fb_block_params *p, int has_bias, float *out,
                             size_t out_stride);
size_t fb_quantize_row_u8__scalar(const float *x, size_t n, float inv_scale, int32_t zp,
                                  int32_t qmin, int32_t qmax, uint8_t *out);

#if defined(__x86_64__) || defined(__i386__)
#define FB_HAVE_X86 1
void fbgemm_qu8_gemm_ukernel_4x16c4__avx2(size_t mr, size_t k, const uint8_t *a,
                                          size_t a_stride, const int8_t *w, int32_t *acc,
                                          int split);
void fbgemm_qu8_gemm_ukernel_4x16c4__avx512(size_t mr, size_t k, const uint8_t *a,
                                            size_t a_stride, const int8_t *w, int32_t *acc,
                                            int split);
void fbgemm_qu8_gemm_ukernel_4x16c4__avx512vnni(size_t mr, size_t k, const uint8_t *a,
                                                size_t a_stride, const int8_t *w, int32_t *acc,
                                                int split);
void fb_epilogue_u8__avx2(size_t mr, size_t nc, const int32_t *acc, const int32_t *row_sums,
                          const fb_block_params *p, int32_t zp, int32_t qmin, int32_t qmax,
                          uint8_t *out, size_t out_stride);
void fb_epilogue_f32__avx2(size_t mr, size_t nc, const int32_t *acc, const int32_t *row_sums,
                           const fb_block_params *p, int has_bias, float *out, size_t out_stride);
void fb_epilogue_u8__avx512(size_t mr, size_t nc, const int32_t *acc, const int32_t *row_sums,
                            const fb_block_params *p, int32_t zp, int32_t qmin, int32_t qmax,
                            uint8_t *out, size_t out_stride);
void fb_epilogue_f32__avx512(size_t mr, size_t nc, const int32_t *acc, const int32_t *row_sums,
                             const fb_block_params *p, int has_bias, float *out,
                             size_t out_stride);
#endif

/* ---- shared driver pieces (linear.c) ---- */
#define FB_MC 32 /* rows per tile (multiple of FB_MR) */
#define FB_NCB 4 /* packed 16-column blocks per tile */
#define FB_PARALLEL_MIN_MACS ((size_t)1 << 18)

typedef struct {
  const char *name;
  fb_gemm_ukernel_fn ukernel;
  fb_epilogue_u8_fn epi_u8;
  fb_epilogue_f32_fn epi_f32;
  int uses_maddubs; /* int16 pair sums: needs 7-bit inputs or the split form */
} fb_gemm_impl;

/* One GEMM problem: weights (already offset to a conv group), qparams, epilogue kind. */
typedef struct {
  fb_gemm_impl impl;
  size_t k, n;
  const int8_t *w;
  const int32_t *rs, *wz;
  const float *ws, *bias;
  float x_scale, out_scale;
  int32_t x_zp, out_zp, qmin, qmax;
  int has_wz, split, dynamic;
} fb_gemm_params;

fb_gemm_impl fb_select(void);
/* mc (<= FB_MC) rows of `a` (row stride a_stride) times packed blocks [b0, b1): writes
 * out[i * out_stride + column] (uint8, or float for dynamic). */
void fb_gemm_rows(const fb_gemm_params *c, const uint8_t *a, size_t a_stride, size_t mc,
                  size_t b0, size_t b1, void *out, size_t out_stride);
int fb_any_above_127(const uint8_t *x, size_t n);
int fb_valid_scale(float s);
int fb_check_weights(const int8_t *packed, const int32_t *row_sums, const float *w_scales,
                     const int32_t *w_zps, size_t n, size_t k, int *has_wz);
int fb_check_requant(float x_scale, int32_t x_zp, float out_scale, int32_t out_zp, int32_t qmin,
                     int32_t qmax);
int fb_check_bias(const float *bias, size_t n);
/* A per-thread buffer of at least n bytes, reused across calls (NULL when out of memory). */
uint8_t *fb_scratch(size_t n);

/* Keep the compiler from fusing a multiply and the following add into an FMA (GCC contracts
 * by default in GNU C mode, and the FMA's single rounding would differ from PyTorch's
 * separate mul and add). */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FB_OPAQUE_F32(v) __asm__("" : "+x"(v))
#elif defined(__GNUC__) && defined(__aarch64__)
#define FB_OPAQUE_F32(v) __asm__("" : "+w"(v))
#elif defined(__GNUC__)
#define FB_OPAQUE_F32(v) __asm__("" : "+m"(v))
#else
#define FB_OPAQUE_F32(v) ((void)0)
#endif

/* float32 -> int32 as PyTorch's .to(torch.int32) computes a rounded, in-range value;
 * out-of-range values saturate. */
static inline int32_t fb_f32_to_i32_sat(float v) {
  if (v >= 2147483648.0f) return INT32_MAX;
  if (v < -2147483648.0f) return INT32_MIN;
  return (int32_t)v;
}

#endif /* QUANTPLUG_FBGEMM_KERNELS_H */
