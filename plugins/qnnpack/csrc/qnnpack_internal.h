/*
 * Internal interfaces of the qnnpack plugin kernels: microkernel types and
 * the per-ISA tables (not visible from Python).
 *
 * Microkernel names follow XNNPACK/QNNPACK's convention:
 *   qnnpack_qu8_gemm_ukernel_<MR>x<NR>c<KR>__<isa>   int32 dot products
 *   qnnpack_qu8_requant_<isa>                        int32 -> uint8 epilogue
 *   qnnpack_qu8_dequant_<isa>                        int32 -> fp32 epilogue
 */
#ifndef QUANTPLUG_QNNPACK_INTERNAL_H
#define QUANTPLUG_QNNPACK_INTERNAL_H
#include <stddef.h>
#include <stdint.h>

#include "quantplug/qp_runtime.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define QNNPACK_NR 16 /* output channels per packed block */
#define QNNPACK_KR 4  /* reduction bytes per channel per group */
#define QNNPACK_MR_MAX 8

#if defined(__aarch64__)
/* The core defines QP_TARGET_* for x86 only; dot-product code needs this. */
#define QNNPACK_TARGET_NEONDOT __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

/*
 * GEMM microkernel. For i < mr (mr <= the kernel's MR) and j < 16:
 *   acc[i * 16 + j] += dot(a[i][0..k), channel j of the packed block w)
 * With xprep != NONE, `a` points at prepared rows (see qnnpack_xprep) and
 * `k` is a multiple of KR.
 * `a` always holds MR row pointers (rows >= mr repeat the last valid row,
 * as in QNNPACK) and `acc` MR * 16 entries, so a kernel may compute every
 * row and write all of acc; only rows < mr are used. `w` points at the
 * block (KG * 64 bytes);
 * `wsum` holds the block's 16 weight sums (kernels that offset the
 * activations by 128 use it to undo that). Wraps modulo 2**32.
 */
typedef void (*qnnpack_gemm_ukernel_fn)(size_t mr, size_t k, const uint8_t *const *a,
                                        const uint8_t *w, const int32_t *wsum, int32_t *acc);

/* acc [mr][16] -> out[i * out_stride + j] (j < nc), qp_requantize semantics.
 * mult: 16 per-channel multipliers. */
typedef void (*qnnpack_requant_fn)(size_t mr, size_t nc, const int32_t *acc, const float *mult,
                                   int32_t out_zp, int32_t qmin, int32_t qmax, uint8_t *out,
                                   size_t out_stride);

/* acc [mr][16] -> out[i * out_stride + j] = (float)acc * scale[j] + bias[j], two float32
 * roundings (a multiply, then an add: never fused, see QNNPACK_NO_CONTRACT). */
typedef void (*qnnpack_dequant_fn)(size_t mr, size_t nc, const int32_t *acc, const float *scale,
                                   const float *bias, float *out, size_t out_stride);

/* out[i] = qp_quantize(x[i], inv_scale, zp, 0, 255). */
typedef void (*qnnpack_quant_fn)(const float *x, size_t n, float inv_scale, int32_t zp,
                                 uint8_t *out);

/* Running min / max over x, NaNs ignored (updates *lo and *hi). */
typedef void (*qnnpack_minmax_fn)(const float *x, size_t n, float *lo, float *hi);

/*
 * How a path wants its activations (the driver prepares them once per call,
 * O(M*K), into a scratch buffer whose rows are zero padded to a multiple of
 * KR, so these microkernels never see a K tail):
 *   NONE     the caller's uint8 rows, any K (tails handled in the kernel);
 *   FLIP     uint8 ^ 0x80 (= x - 128 as int8): the signed operand of
 *            vpdpbusd, broadcast straight from memory;
 *   WIDEN16  zero-extended to uint16: 4 values = one 64-bit broadcast
 *            operand of vpmaddwd.
 */
enum qnnpack_xprep { QNNPACK_XPREP_NONE = 0, QNNPACK_XPREP_FLIP = 1, QNNPACK_XPREP_WIDEN16 = 2 };

/*
 * Depthwise convolution, one output pixel (QNNPACK's q8dwconv "up" kernels):
 *   acc[c] = bias[c] + sum_t (x[t][c] - x_zp) * w[t * cstride + c]   for c < channels
 * x holds `taps` pointers to input pixels (channels bytes each; padding taps
 * point at a row of x_zp), w the packed int16 weights (w - w_zp) with
 * cstride = channels rounded up to 16. Exact in int32.
 */
typedef void (*qnnpack_dwconv_fn)(size_t channels, size_t taps, const uint8_t *const *x,
                                  const int16_t *w, size_t cstride, int32_t x_zp,
                                  const int32_t *bias, int32_t *acc);

/*
 * Depthwise convolution over a run of npix output pixels with the requantization fused, all
 * channels (the row kernel of conv2d's interior; border pixels come one at a time, npix = 1):
 *   acc = bias[c] + sum_t x[t][p * x_step + c] * w[t * cstride + c]     (mod 2**32)
 *   out[p * out_step + c] = qp_requantize(acc, mult[c], out_zp, qmin, qmax)
 * for p < npix, c < channels. The input zero point is folded into bias by the caller
 * (bias[c] - x_zp * sum_t w[t][c]), so padding taps read bytes equal to x_zp like any other.
 * bias and mult hold cstride entries. Tap t of pixel p is x[t] + p * x_step.
 */
typedef struct {
  const int32_t *bias;
  const float *mult;
  int32_t out_zp, qmin, qmax;
} qnnpack_dw_params;
typedef void (*qnnpack_dwconv_run_fn)(size_t channels, size_t npix, size_t taps,
                                      const uint8_t *const *x, size_t x_step, const int16_t *w,
                                      size_t cstride, const qnnpack_dw_params *p, uint8_t *out,
                                      size_t out_step);

/*
 * Depthwise 3x3 (dilation 1) by rows, one 16-channel slice at a time (conv.c drives it):
 *   stage: one input row of the slice into 4-byte lanes dst[i * 16 + j] of raw uint8 inputs
 *          (x_zp outside the row; lanes j >= nc are 0), `row` at channel 0 of the slice in input
 *          column 0, input columns `pix_stride` bytes apart, columns counted with the padding:
 *          triples (quad = 0): entry i of output column i, bytes 0..2 = padded columns
 *                 i * sw + 0..2, byte 3 = 0 (n entries);
 *          quads (quad = 1, sw = 1): entry i serves output columns 2i and 2i + 1, bytes 0..3 =
 *                 padded columns 2i + 0..3 ((n + 1) / 2 entries).
 *   row:   n output pixels of one output row from the staged rows of its nv kernel rows that
 *          lie inside the image (rows[r]), requantization fused:
 *            acc = init[j] + sum_r sum_b byte_b(x) * byte_b(weight)       (mod 2**32)
 *            out[i * out_stride + j] = qp_requantize(acc, mult[j], out_zp, qmin, qmax), j < nc
 *          with x = rows[r][i * 16 + j] (triples) or rows[r][(i / 2) * 16 + j] (quads), whose
 *          weight lanes are phase i % 2: (w0, w1, w2, 0) for even i, (0, w0, w1, w2) for odd i
 *          (triples: always the first). The weights are d = w - w_zp in [-255, 255]: when every
 *          d of the slice fits int8 (split = 0) one int8 set; otherwise (split = 1) d = 2 * h + l
 *          with h = d >> 1 in [-128, 127], l = d & 1, and the h set then the l set. A set is
 *          [phase][r < nv][16] uint32 lanes (one phase for triples). init is the bias with the
 *          input zero point folded in for the taps that were read (padding rows are skipped).
 *          Staged rows hold 3 spare entries past the last one (zeros): a kernel may compute a
 *          group of up to 4 pixels past n; it never stores them.
 */
typedef void (*qnnpack_dw3_stage_fn)(const uint8_t *row, size_t in_w, size_t pix_stride,
                                     size_t pw, size_t sw, int quad, size_t n, size_t nc,
                                     uint8_t x_zp, uint32_t *dst);
typedef struct {
  const uint32_t *w;
  const int32_t *init; /* 16 entries */
  const float *mult;   /* 16 entries */
  size_t nv;
  int split, quad;
  int small; /* a hint: |(float)acc * mult| < 2**30 for every input (no float clamp needed) */
  int32_t out_zp, qmin, qmax;
} qnnpack_dw3_row_params;
typedef void (*qnnpack_dw3_row_fn)(const uint32_t *const *rows, size_t n,
                                   const qnnpack_dw3_row_params *p, size_t nc, uint8_t *out,
                                   size_t out_stride);

/* Elementwise add over n elements (see qnnpack_add_u8); params already checked. */
typedef struct {
  float a_scale, b_scale, inv_out;
  int32_t a_zp, b_zp, out_zp, qmin, qmax;
} qnnpack_add_params;
typedef void (*qnnpack_add_fn)(size_t n, const uint8_t *a, const uint8_t *b,
                               const qnnpack_add_params *p, uint8_t *out);

/* Elementwise multiply over n elements (see qnnpack_mul_u8); params already checked:
 *   out = clamp(nearbyint((float)((a - a_zp) * (b - b_zp)) * mult) + out_zp, qmin, qmax)
 * The int32 product is exact (|.| <= 65025), so it converts to float32 exactly. */
typedef struct {
  float mult;
  int32_t a_zp, b_zp, out_zp, qmin, qmax;
} qnnpack_mul_params;
typedef void (*qnnpack_mul_fn)(size_t n, const uint8_t *a, const uint8_t *b,
                               const qnnpack_mul_params *p, uint8_t *out);

/* acc[i * 16 + j] = cbias[j] - wzp[j] * xsum[i] (mod 2**32) for i < mr: a tile's starting
 * accumulators (bias and zero-point folding, see qnnpack_kernels.h). */
typedef void (*qnnpack_acc_init_fn)(size_t mr, const int32_t *cbias, const int32_t *wzp,
                                    const uint32_t *xsum, int32_t *acc);

/* Per-row dynamic activations (row i: zero point rzp[i], scale rscale[i]); no int32 bias:
 *   acc_init_rows: acc[i * 16 + j] = - rzp[i] * wsum[j] - wzp[j] * xsum[i]   (mod 2**32)
 *                  with xsum[i] = sum_k x[i][k] - K * rzp[i], for i < mr;
 *   dequant_rows:  out[i * out_stride + j] = (float)acc * (rscale[i] * wscale[j]) + bias[j]
 *                  (the scale product rounded to float32 first; multiply, then add, never fused). */
typedef void (*qnnpack_acc_init_rows_fn)(size_t mr, const int32_t *wsum, const int32_t *wzp,
                                         const int32_t *rzp, const uint32_t *xsum, int32_t *acc);
typedef void (*qnnpack_dequant_rows_fn)(size_t mr, size_t nc, const int32_t *acc,
                                        const float *rscale, const float *wscale,
                                        const float *bias, float *out, size_t out_stride);

/*
 * A full tile (MR rows) of the per-row dynamic linear in one call: acc_init_rows, gemm and
 * dequant_rows fused (accumulators stay in registers). Optional (NULL: the three calls).
 * wsum, wzp, wscale and bias point at the block's 16 channels, rzp, xsum and rscale at the
 * tile's MR rows; out at row 0, channel n0.
 */
typedef struct {
  const int32_t *wsum, *wzp, *rzp;
  const uint32_t *xsum;
  const float *rscale, *wscale, *bias;
} qnnpack_rows_tile;
typedef void (*qnnpack_gemm_rows_fn)(size_t nc, size_t k, const uint8_t *const *a,
                                     const uint8_t *w, const qnnpack_rows_tile *t, float *out,
                                     size_t out_stride);

/*
 * A full static tile (MR rows) in one call: the acc_init arithmetic (cbias[j] - wzp[j] *
 * xsum[i]), gemm and requant fused, the accumulators kept in registers. Optional (NULL: the
 * separate calls). Pointers at the block's 16 channels / the tile's MR rows; out at row 0,
 * channel n0.
 */
typedef struct {
  const int32_t *cbias, *wzp, *wsum;
  const uint32_t *xsum;
  const float *mult;
  int32_t out_zp, qmin, qmax;
} qnnpack_requant_tile;
typedef void (*qnnpack_gemm_requant_fn)(size_t nc, size_t k, const uint8_t *const *a,
                                        const uint8_t *w, const qnnpack_requant_tile *t,
                                        uint8_t *out, size_t out_stride);

typedef struct {
  size_t mr;
  int xprep; /* enum qnnpack_xprep */
  qnnpack_acc_init_fn acc_init; /* NULL: the driver's portable loop */
  qnnpack_add_fn add;
  qnnpack_mul_fn mul;
  qnnpack_dwconv_fn dwconv;
  qnnpack_dwconv_run_fn dwconv_run; /* NULL: conv2d loops over dwconv + requant per pixel */
  qnnpack_dw3_stage_fn dw3_stage;   /* with dw3_row; NULL: 3x3 depthwise uses dwconv_run */
  qnnpack_dw3_row_fn dw3_row;
  qnnpack_gemm_ukernel_fn gemm;
  qnnpack_requant_fn requant;
  qnnpack_dequant_fn dequant;
  qnnpack_acc_init_rows_fn acc_init_rows;
  qnnpack_dequant_rows_fn dequant_rows;
  qnnpack_gemm_rows_fn gemm_rows; /* NULL: acc_init_rows + gemm + dequant_rows */
  qnnpack_gemm_requant_fn gemm_requant; /* NULL: acc_init + gemm + requant */
  qnnpack_quant_fn quant;
  qnnpack_minmax_fn minmax;
} qnnpack_isa_kernels;

/* Per-ISA tables; the NULL-free table for each compiled ISA. */
extern const qnnpack_isa_kernels qnnpack_kernels_scalar;
#if defined(__x86_64__) || defined(__i386__)
extern const qnnpack_isa_kernels qnnpack_kernels_sse2;
extern const qnnpack_isa_kernels qnnpack_kernels_avx2;
extern const qnnpack_isa_kernels qnnpack_kernels_avx512;
extern const qnnpack_isa_kernels qnnpack_kernels_avx512vnni;
#endif
#if defined(__aarch64__)
extern const qnnpack_isa_kernels qnnpack_kernels_neon;
extern const qnnpack_isa_kernels qnnpack_kernels_neondot;
#endif

/* The table of the active ISA (qp_active_isa()). */
const qnnpack_isa_kernels *qnnpack_active_kernels(void);

/*
 * Static uint8 GEMM with QNNPACK numerics on the given path (arguments
 * already validated): out[i * out_stride + j] for i < m, j < n from rows
 * x[i * k ..], packed weights of n channels, per-channel multipliers padded
 * to qnnpack_packed_sums_size(n) entries. Used by linear and conv2d.
 */
int qnnpack_gemm_u8(const qnnpack_isa_kernels *kern, const uint8_t *x, size_t m, size_t k,
                    int32_t x_zp, const uint8_t *packed, const int32_t *wsums,
                    const int32_t *w_zps, size_t n, const int32_t *bias, const float *mult,
                    int32_t out_zp, int32_t qmin, int32_t qmax, uint8_t *out, size_t out_stride);

/* K as the path's microkernel sees prepared rows (padded to KR unless xprep is NONE). */
static inline size_t qnnpack_xprep_k(const qnnpack_isa_kernels *kern, size_t k) {
  return kern->xprep == QNNPACK_XPREP_NONE ? k : (k + QNNPACK_KR - 1) / QNNPACK_KR * QNNPACK_KR;
}

/*
 * qnnpack_gemm_u8 over rows the caller already prepared in the path's xprep
 * format (conv2d's im2col writes them directly): row i at xp + i * x_stride
 * holds qnnpack_xprep_k(kern, k) elements (bytes, flipped bytes or uint16,
 * zero-point neutral padding), and xsum[i] is the sum of the row's original
 * uint8 values.
 */
int qnnpack_gemm_prepared_u8(const qnnpack_isa_kernels *kern, const uint8_t *xp, size_t x_stride,
                             const uint32_t *xsum, size_t m, size_t k, int32_t x_zp,
                             const uint8_t *packed, const int32_t *wsums, const int32_t *w_zps,
                             size_t n, const int32_t *bias, const float *mult, int32_t out_zp,
                             int32_t qmin, int32_t qmax, uint8_t *out, size_t out_stride);

/* Scalar pieces reused by SIMD tables for what they do not vectorize. */
void qnnpack_qu8_requant_scalar(size_t mr, size_t nc, const int32_t *acc, const float *mult,
                                int32_t out_zp, int32_t qmin, int32_t qmax, uint8_t *out,
                                size_t out_stride);
void qnnpack_qu8_dequant_scalar(size_t mr, size_t nc, const int32_t *acc, const float *scale,
                                const float *bias, float *out, size_t out_stride);
void qnnpack_qu8_acc_init_rows_scalar(size_t mr, const int32_t *wsum, const int32_t *wzp,
                                      const int32_t *rzp, const uint32_t *xsum, int32_t *acc);
void qnnpack_qu8_dequant_rows_scalar(size_t mr, size_t nc, const int32_t *acc, const float *rscale,
                                     const float *wscale, const float *bias, float *out,
                                     size_t out_stride);
void qnnpack_qu8_quant_scalar(const float *x, size_t n, float inv_scale, int32_t zp,
                              uint8_t *out);
void qnnpack_f32_minmax_scalar(const float *x, size_t n, float *lo, float *hi);
void qnnpack_qu8_vadd_ukernel__scalar(size_t n, const uint8_t *a, const uint8_t *b,
                                      const qnnpack_add_params *p, uint8_t *out);
void qnnpack_qu8_vmul_ukernel__scalar(size_t n, const uint8_t *a, const uint8_t *b,
                                      const qnnpack_mul_params *p, uint8_t *out);
#if defined(__x86_64__) || defined(__i386__)
/* The AVX-512 tables reuse it: a multiply is memory bound long before 16 lanes run out. */
void qnnpack_qu8_vmul_ukernel__avx2(size_t n, const uint8_t *a, const uint8_t *b,
                                    const qnnpack_mul_params *p, uint8_t *out);
#endif
void qnnpack_x8_lut_ukernel__scalar(size_t n, const uint8_t *x, const uint8_t *table, uint8_t *out);
/* Scalar depthwise tail: channels [c0, channels). */
void qnnpack_qu8_dwconv_scalar_from(size_t c0, size_t channels, size_t taps,
                                    const uint8_t *const *x, const int16_t *w, size_t cstride,
                                    int32_t x_zp, const int32_t *bias, int32_t *acc);
/* The reference of qnnpack_dwconv_run_fn (any taps). */
void qnnpack_qu8_dwconv_run__scalar(size_t channels, size_t npix, size_t taps,
                                    const uint8_t *const *x, size_t x_step, const int16_t *w,
                                    size_t cstride, const qnnpack_dw_params *p, uint8_t *out,
                                    size_t out_step);
/* The references of qnnpack_dw3_stage_fn / qnnpack_dw3_row_fn. */
void qnnpack_dw3_stage__scalar(const uint8_t *row, size_t in_w, size_t pix_stride, size_t pw,
                               size_t sw, int quad, size_t n, size_t nc, uint8_t x_zp,
                               uint32_t *dst);
void qnnpack_dw3_row__scalar(const uint32_t *const *rows, size_t n,
                             const qnnpack_dw3_row_params *p, size_t nc, uint8_t *out,
                             size_t out_stride);
void qnnpack_qu8_dwconv_ukernel_up16__scalar(size_t channels, size_t taps, const uint8_t *const *x,
                                             const int16_t *w, size_t cstride, int32_t x_zp,
                                             const int32_t *bias, int32_t *acc);

/*
 * The dynamic linear's epilogue is a float32 multiply followed by a float32
 * add, as in quantplug's PyTorch reference. Compilers may fuse the two into
 * an FMA (GCC does with -ffp-contract=fast, its default in GNU C mode, on
 * AArch64 and inside AVX2 target functions), which would round once instead
 * of twice and break bit-exactness between paths. An empty asm statement
 * that "modifies" the product forbids the fusion at no run-time cost.
 */
#if defined(__x86_64__) || defined(__i386__)
#define QNNPACK_NO_CONTRACT(v) __asm__("" : "+x"(v))
#elif defined(__aarch64__)
#define QNNPACK_NO_CONTRACT(v) __asm__("" : "+w"(v))
#else
#define QNNPACK_NO_CONTRACT(v) \
  do {                         \
    volatile __typeof__(v) qnnpack_tmp_ = (v); \
    (v) = qnnpack_tmp_;        \
  } while (0)
#endif

/*
 * Sum of the n bytes at s, and (flip != 0) d[i] = s[i] ^ 0x80 in the same pass (d == s: in
 * place): the row sums and the FLIP preparation of GEMM rows, also straight from im2col's
 * source. SSE2 is part of every x86-64 target, so psadbw is used without run-time dispatch;
 * other targets rely on the compiler's vectorizer.
 */
static inline uint32_t qnnpack_sum_flip_to(uint8_t *d, const uint8_t *s, size_t n, int flip) {
  size_t p = 0;
  uint32_t sum = 0;
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128(), sign = _mm_set1_epi8((char)0x80);
  __m128i acc = zero;
  for (; p + 16 <= n; p += 16) {
    const __m128i v = _mm_loadu_si128((const __m128i *)(s + p));
    acc = _mm_add_epi64(acc, _mm_sad_epu8(v, zero));
    if (flip) _mm_storeu_si128((__m128i *)(d + p), _mm_xor_si128(v, sign));
  }
  sum = (uint32_t)_mm_cvtsi128_si32(acc) + (uint32_t)_mm_cvtsi128_si32(_mm_srli_si128(acc, 8));
#endif
  for (; p < n; p++) {
    const uint8_t v = s[p];
    sum += v;
    if (flip) d[p] = (uint8_t)(v ^ 0x80);
  }
  return sum;
}

/* qnnpack_sum_flip_to in place. */
static inline uint32_t qnnpack_sum_flip_bytes(uint8_t *d, size_t n, int flip) {
  return qnnpack_sum_flip_to(d, d, n, flip);
}

/* Load up to 4 bytes (k tail) into the low bytes of a uint32, zero filled. */
static inline uint32_t qnnpack_load_tail4(const uint8_t *p, size_t n) {
  uint32_t v = 0;
  for (size_t i = 0; i < n; i++) v |= (uint32_t)p[i] << (8 * i);
  return v;
}

static inline uint32_t qnnpack_load_u32(const uint8_t *p) {
  uint32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}

#endif /* QUANTPLUG_QNNPACK_INTERNAL_H */
