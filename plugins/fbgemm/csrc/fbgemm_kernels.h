/*
 * quantplug-fbgemm kernels: FBGEMM numerics on x86.
 *
 *   activations  uint8, asymmetric, reduce_range: quantized to 0..127 (the per-row dynamic
 *                linear uses 0..255 per row: the split form below keeps it exact everywhere)
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
#include <string.h>

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

/* The static linear in two steps: fbgemm_linear_prepare computes, once per weight and set
 * of static qparams, what fbgemm_linear_u8s8 recomputes on every call (per-column
 * multipliers, int32 bias and zero-point folds) into `prepared`
 * (fbgemm_linear_prepared_size(n) bytes); fbgemm_linear_u8s8_prepared then runs the GEMM with
 * the same results, bit for bit. The prepared buffer records k, n and x_zp. */
size_t fbgemm_linear_prepared_size(size_t n);
int fbgemm_linear_prepare(size_t k, float x_scale, int32_t x_zp, const int8_t *packed,
                          const int32_t *row_sums, const float *w_scales, const int32_t *w_zps,
                          size_t n, const float *bias, float out_scale, void *prepared);
int fbgemm_linear_u8s8_prepared(const uint8_t *x, size_t m, size_t k, const int8_t *packed,
                                const void *prepared, size_t n, int32_t out_zp, int32_t qmin,
                                int32_t qmax, uint32_t flags, uint8_t *out);

/* Dynamic linear: x [m, k] float32 quantized per call to uint8 [act_qmin, act_qmax] (per tensor,
 * asymmetric, qparams as quantplug.affine.choose_qparams), then
 * out[i, j] = (float)acc[i, j] * (x_scale * w_scale[j]) + bias[j]   (float32, no FMA).
 * x_scale_out / x_zp_out (may be NULL) receive the chosen activation qparams. */
int fbgemm_linear_dynamic_f32(const float *x, size_t m, size_t k, const int8_t *packed,
                              const int32_t *row_sums, const float *w_scales,
                              const int32_t *w_zps, size_t n, const float *bias,
                              int32_t act_qmin, int32_t act_qmax, float *out,
                              float *x_scale_out, int32_t *x_zp_out);

/* Dynamic linear with per-row activation qparams: row i of x gets its own asymmetric
 * scale / zero point from its own min / max (quantplug.affine.choose_qparams per row, range
 * [act_qmin, act_qmax]); one pass per row finds min / max and quantizes (the row is still in
 * L1 for the second read), then the GEMM epilogue applies the row's terms:
 *   acc[i, j] = sum_k q[i,k] * w[j,k] - zp[i] * row_sums[j]  (+ w_zp terms)
 *   out[i, j] = (float)acc[i, j] * (x_scale[i] * w_scale[j]) + bias[j]   (float32, no FMA).
 * Every ISA path is exact for the whole uint8 range (VNNI: int32 sums; AVX2 / AVX-512:
 * the split form when act_qmax > 127), so the row range may use all 8 bits.
 * x_scales_out / x_zps_out ([m], may be NULL) receive the chosen qparams. */
int fbgemm_linear_dynamic_per_row_f32(const float *x, size_t m, size_t k, const int8_t *packed,
                                      const int32_t *row_sums, const float *w_scales,
                                      const int32_t *w_zps, size_t n, const float *bias,
                                      int32_t act_qmin, int32_t act_qmax, float *out,
                                      float *x_scales_out, int32_t *x_zps_out);

/* Plans (csrc/linear_plan.c): a linear call prepared once per weight and qparams, run with raw
 * addresses (no per-call pointer casts). _new returns NULL when an argument is invalid (the
 * unplanned entry point then reports it) or on out of memory; outputs are bit-identical to
 * fbgemm_linear_u8s8 / fbgemm_linear_dynamic_f32 / fbgemm_linear_dynamic_per_row_f32. A plan
 * points at `packed`, which must outlive it and stay where it is. */
typedef struct fbgemm_linear_plan fbgemm_linear_plan;
fbgemm_linear_plan *fbgemm_linear_plan_new(const int8_t *packed, const int32_t *row_sums,
                                           const float *w_scales, const int32_t *w_zps,
                                           size_t n, size_t k, float x_scale, int32_t x_zp,
                                           const float *bias, float out_scale, int32_t out_zp,
                                           int32_t qmin, int32_t qmax, uint32_t flags);
/* threads: torch.get_num_threads() (the pool is resized to it first, as sync_threads does) */
int fbgemm_linear_plan_run(const fbgemm_linear_plan *plan, uintptr_t x, size_t m, uintptr_t out,
                           int threads);
void fbgemm_linear_plan_free(fbgemm_linear_plan *plan);
typedef struct fbgemm_dynamic_plan fbgemm_dynamic_plan;
/* [qmin, qmax]: the activation range per tensor, [row_qmin, row_qmax] per row. */
fbgemm_dynamic_plan *fbgemm_dynamic_plan_new(const int8_t *packed, const int32_t *row_sums,
                                             const float *w_scales, const int32_t *w_zps,
                                             size_t n, size_t k, const float *bias,
                                             int32_t qmin, int32_t qmax, int32_t row_qmin,
                                             int32_t row_qmax);
/* per_row 0: one scale / zero point for all of x (fbgemm_linear_dynamic_f32), else per row. */
int fbgemm_dynamic_plan_run(const fbgemm_dynamic_plan *plan, uintptr_t x, size_t m, int per_row,
                            uintptr_t out, int threads);
void fbgemm_dynamic_plan_free(fbgemm_dynamic_plan *plan);

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

/* Depthwise 3x3 in two steps, as the static linear: fbgemm_dw3_prepare computes, once per
 * weight and set of static qparams, what fbgemm_conv2d_u8s8 recomputes on every call of this
 * case (per-channel multipliers, int32 bias, weight triples, zero-point folds; about 2 us of a
 * 65 us 144-channel 56x56 layer, with the per-call checks of scales, zero points and bias)
 * into `prepared` (fbgemm_dw3_prepared_size(c) bytes, 0 if c is invalid); then
 * fbgemm_dw3_u8s8_prepared runs the conv with the same results, bit for bit. Only for
 * weights of the row path: depthwise (groups == c > 1, one channel per group), 3x3, dilation
 * 1, zero weight zero points; prepare returns QP_ERR_INVALID_ARGUMENT for any other. The
 * prepared buffer records c and x_zp (the padding value). */
size_t fbgemm_dw3_prepared_size(size_t c);
int fbgemm_dw3_prepare(const int8_t *packed, const int32_t *row_sums, const float *w_scales,
                       const int32_t *w_zps, size_t c, size_t groups, size_t kh, size_t kw,
                       size_t dh, size_t dw, float x_scale, int32_t x_zp, const float *bias,
                       float out_scale, void *prepared);
int fbgemm_dw3_u8s8_prepared(const uint8_t *x, size_t batch, size_t h, size_t w, size_t c,
                             size_t sh, size_t sw, size_t ph, size_t pw, const void *prepared,
                             int32_t out_zp, int32_t qmin, int32_t qmax, uint8_t *out);

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

/* ---- row-wise quantized EmbeddingBag (csrc/embedding.c for the row formats) -- */
/* Bytes of one fused row of `dim` values at `bits` (8 or 4; 4 needs an even dim); 0 if invalid. */
size_t fbgemm_embedding_row_bytes(size_t dim, int bits);
/* out[num_bags, dim] (float32): bag b reduces rows indices[offsets[b] .. offsets[b + 1]) of
 * weight [rows, row_bytes], optionally times per_sample_weights[i]; mode_mean divides by the bag
 * length. indices / offsets are int32 or int64 (flags); offsets has num_bags + 1 entries,
 * starts at 0, never decreases and ends at num_indices; every index must be in [0, rows). */
int fbgemm_embedding_bag_rowwise(const uint8_t *weight, size_t rows, size_t dim, int bits,
                                 const void *indices, int indices_are_int64, size_t num_indices,
                                 const void *offsets, int offsets_are_int64, size_t num_bags,
                                 const float *per_sample_weights, int mode_mean, float *out);

/* The same over an int8 table with separate per-row qparams (the core's QuantizedEmbedding /
 * QuantizedEmbeddingBag storage, so no second copy of the table is needed):
 *   value[r, j] = (float)(weight[r, j] - zero_points[r]) * scales[r]   (exactly the core's rows)
 * mode 0 sum (optionally times per_sample_weights[i]), 1 mean, 2 max; entries equal to
 * padding_idx (>= 0; -1 for none) are skipped and do not count in a mean; a bag with no
 * entries left gives zeros. Same offsets / indices rules as fbgemm_embedding_bag_rowwise (an
 * index outside the table is found while bagging: out is then unspecified). */
int fbgemm_embedding_bag_int8(const int8_t *weight, const float *scales, const int32_t *zero_points,
                              size_t rows, size_t dim, const void *indices, int indices_are_int64,
                              size_t num_indices, const void *offsets, int offsets_are_int64,
                              size_t num_bags, const float *per_sample_weights, int mode,
                              int64_t padding_idx, float *out);

/* The same with 4-bit codes: weight [rows, dim / 2] uint8 (dim even; element 2i in the low
 * nibble of byte i, 2i+1 in the high one), codes 0..15:
 *   value[r, j] = (float)(code[r, j] - zero_points[r]) * scales[r] */
int fbgemm_embedding_bag_int4(const uint8_t *weight, const float *scales,
                              const int32_t *zero_points, size_t rows, size_t dim,
                              const void *indices, int indices_are_int64, size_t num_indices,
                              const void *offsets, int offsets_are_int64, size_t num_bags,
                              const float *per_sample_weights, int mode, int64_t padding_idx,
                              float *out);

/* Either of the two over the table with its per-row qparams interleaved: qparams[2 r] is row
 * r's scale (float32 bits), qparams[2 r + 1] its zero point (fbgemm_embedding_qparams_interleave
 * builds them from the two arrays, checking that every scale is finite). One row then reads
 * its codes and one line of qparams, not a line of scales and another of zero points (a row of
 * the benchmark's 100000 x 128 table: 3 cache lines, not 4).
 * bits 8 (int8 codes) or 4 (uint8, two codes per byte). Flags: FBGEMM_BAG_OFFSETS_INT64;
 * FBGEMM_BAG_OPEN_END: offsets holds num_bags entries (the start of each bag) and the last bag
 * ends at num_indices, torch's include_last_offset=False (no appended copy of offsets). */
enum fbgemm_bag_flags { FBGEMM_BAG_OFFSETS_INT64 = 1, FBGEMM_BAG_OPEN_END = 2 };
int fbgemm_embedding_bag_codes(const uint8_t *weight, int bits, const int32_t *qparams,
                               size_t rows, size_t dim, const void *indices,
                               int indices_are_int64, size_t num_indices, const void *offsets,
                               uint32_t flags, size_t num_bags,
                               const float *per_sample_weights, int mode, int64_t padding_idx,
                               float *out);
int fbgemm_embedding_qparams_interleave(const float *scales, const int32_t *zero_points,
                                        size_t rows, int32_t *qparams);

/* ---- diagnostics ----------------------------------------------------------- */
/* The depthwise 3x3 VNNI row path stages with AVX512-VBMI's vpermt2b when the CPU has it.
 * mode 0 / 1: forbid / allow that variant (tests run both; allowed by default); -1: query.
 * Returns 1 if the VBMI variant is in use after the call. */
int fbgemm_dw3_vbmi(int mode);
/* Name of the GEMM microkernel the current ISA dispatches to. */
const char *fbgemm_gemm_ukernel_name(void);
/* QP_CDEF_END */

/* ---- C-only internals ----------------------------------------------------- */
/* Embedding bags: entry i of an int32 / int64 index array, and the shared validation of
 * offsets (num_bags + 1 entries, from 0, non-decreasing, ending at num_indices; open_end:
 * num_bags entries, the last at most num_indices) and indices (in [0, rows)); QP_OK or
 * QP_ERR_INVALID_ARGUMENT. */
static inline int64_t fb_get_index(const void *p, int is64, size_t i) {
  return is64 ? ((const int64_t *)p)[i] : (int64_t)((const int32_t *)p)[i];
}
int fb_emb_check_bags(const void *indices, int idx64, size_t num_indices, const void *offsets,
                      int off64, size_t num_bags, int open_end, size_t rows);
/* The offsets half of fb_emb_check_bags (the int8 kernels check indices as they hint them). */
int fb_emb_check_offsets(const void *offsets, int off64, size_t num_indices, size_t num_bags,
                         int open_end);
/* Rows looked up ahead of use: rows of a large table sit in DRAM or L3 in random order, and a
 * row's few vector ops finish long before its cache miss would, so the bag loops issue the
 * loads of the row FB_EMB_PREFETCH indices ahead (the fused-row kernel, embedding.c; the kernels
 * on the core's storage hint whole bags at once instead, see embedding_int8.c). */
#define FB_EMB_PREFETCH 12
/* Hint the lines of bytes [p, p + n) into the cache (a hint: never faults, any ISA). */
static inline void fb_prefetch_bytes(const void *p, size_t n) {
  const char *c = (const char *)p;
  for (size_t o = 0; o < n; o += 64) __builtin_prefetch(c + o, 0, 3);
  __builtin_prefetch(c + n - 1, 0, 3); /* a row that starts mid-line ends on one line more */
}
/* Whether the AVX-512 row functions are active; then run task over the bags (on the thread
 * pool when num_indices * dim is large: bags are independent, results do not depend on it). */
int fb_emb_use_avx512(void);
void fb_emb_run(size_t num_bags, size_t work, void (*task)(void *, size_t, size_t), void *ctx);
#define FB_NR 16 /* columns per packed block */
#define FB_KR 4  /* k per group */
#define FB_MR 4  /* rows per microkernel call */
#define FB_MAX_K ((size_t)1 << 24)
#define FB_WMR 8 /* rows of the wide VNNI kernel */
#define FB_WNB 3 /* packed blocks per wide GEMM call (8x48) */
#define FB_VNB 4 /* packed blocks per GEMV call (M = 1 or 2) */
typedef void (*fb_gemm_wide_fn)(size_t mr, size_t nb, size_t k, const uint8_t *a,
                                size_t a_stride, const int8_t *w, size_t w_bstride,
                                int32_t *acc);
typedef void (*fb_gemv_fn)(size_t mr, size_t nb, size_t k, const uint8_t *a, size_t a_stride,
                           const int8_t *w, size_t w_bstride, int32_t *acc);
/* Indirect wide kernel: row r's K = nseg * seg bytes are runs of seg bytes (seg % FB_KR == 0)
 * at ptrs[r * nseg + s]; same sums and acc layout as fb_gemm_wide_fn. */
typedef void (*fb_gemm_wide_ind_fn)(size_t mr, size_t nb, size_t nseg, size_t seg,
                                    const uint8_t *const *ptrs, const int8_t *w,
                                    size_t w_bstride, int32_t *acc);

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

/* Per-row dynamic epilogue: p->mult[j] = w_scale[j], p->col[j] = weight row sum[j];
 * v = acc - rzp[r] * col[j] (+ wz[j] * (k * rzp[r] - xsum[r]) when xsum != NULL),
 * out = (float)v * (rscale[r] * mult[j]) (+ bias[j]). */
typedef void (*fb_epilogue_rows_fn)(size_t mr, size_t nc, const int32_t *acc,
                                    const int32_t *xsum, const fb_block_params *p,
                                    const float *rscale, const int32_t *rzp, int32_t k,
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
void fb_epilogue_rows__scalar(size_t mr, size_t nc, const int32_t *acc, const int32_t *xsum,
                              const fb_block_params *p, const float *rscale, const int32_t *rzp,
                              int32_t k, int has_bias, float *out, size_t out_stride);
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
/* Wide VNNI kernels (gemm_avx512vnni.c): mr <= FB_WMR rows x nb blocks (8x32: <= 2, 8x48:
 * <= FB_WNB, GEMV: <= FB_VNB) whose packed blocks are w_bstride bytes apart;
 * acc[blk][FB_WMR][16] (room for FB_VNB blocks). */
void fbgemm_qu8_gemm_ukernel_8x32c4__avx512vnni(size_t mr, size_t nb, size_t k, const uint8_t *a,
                                                size_t a_stride, const int8_t *w,
                                                size_t w_bstride, int32_t *acc);
void fbgemm_qu8_gemm_ukernel_8x48c4__avx512vnni(size_t mr, size_t nb, size_t k, const uint8_t *a,
                                                size_t a_stride, const int8_t *w,
                                                size_t w_bstride, int32_t *acc);
void fbgemm_qu8_gemv_ukernel_2x64c4__avx512vnni(size_t mr, size_t nb, size_t k, const uint8_t *a,
                                                size_t a_stride, const int8_t *w,
                                                size_t w_bstride, int32_t *acc);
void fbgemm_qu8_gemm_ukernel_8x48c4_ind__avx512vnni(size_t mr, size_t nb, size_t nseg, size_t seg,
                                                    const uint8_t *const *ptrs, const int8_t *w,
                                                    size_t w_bstride, int32_t *acc);
int fb_minmax_f32__avx512(const float *x, size_t n, float *mn, float *mx);
size_t fb_quantize_row_u8__avx512(const float *x, size_t n, float inv_scale, int32_t zp,
                                  int32_t qmin, int32_t qmax, uint8_t *out);
void fb_epilogue_u8__avx2(size_t mr, size_t nc, const int32_t *acc, const int32_t *row_sums,
                          const fb_block_params *p, int32_t zp, int32_t qmin, int32_t qmax,
                          uint8_t *out, size_t out_stride);
void fb_epilogue_rows__avx2(size_t mr, size_t nc, const int32_t *acc, const int32_t *xsum,
                            const fb_block_params *p, const float *rscale, const int32_t *rzp,
                            int32_t k, int has_bias, float *out, size_t out_stride);
void fb_epilogue_rows__avx512(size_t mr, size_t nc, const int32_t *acc, const int32_t *xsum,
                              const fb_block_params *p, const float *rscale, const int32_t *rzp,
                              int32_t k, int has_bias, float *out, size_t out_stride);
void fb_epilogue_f32__avx2(size_t mr, size_t nc, const int32_t *acc, const int32_t *row_sums,
                           const fb_block_params *p, int has_bias, float *out, size_t out_stride);
void fb_epilogue_u8__avx512(size_t mr, size_t nc, const int32_t *acc, const int32_t *row_sums,
                            const fb_block_params *p, int32_t zp, int32_t qmin, int32_t qmax,
                            uint8_t *out, size_t out_stride);
void fb_epilogue_f32__avx512(size_t mr, size_t nc, const int32_t *acc, const int32_t *row_sums,
                             const fb_block_params *p, int has_bias, float *out,
                             size_t out_stride);
#endif

/* Depthwise: acc[j] = sum_t (x[t][c0 + j] - x_zp) * (w[t][c0 + j] - wz[j]) for j < nc
 * (<= 16; lanes past nc are 0), over the nt gathered taps (exact int32, wrapping like the
 * scalar loop). */
#define FB_DW_MAX_TAPS 64
typedef void (*fb_dw_taps_fn)(const uint8_t *const *x, const int8_t *const *w, size_t nt,
                              size_t c0, size_t nc, int32_t x_zp, const int32_t *wz,
                              int32_t *acc);
#if defined(FB_HAVE_X86)
void fb_dw_taps16__avx512(const uint8_t *const *x, const int8_t *const *w, size_t nt, size_t c0,
                          size_t nc, int32_t x_zp, const int32_t *wz, int32_t *acc);
#endif

/* ---- depthwise 3x3 row kernels (dwconv3x3.c, dwconv3x3_x86.c) ----
 * Per band of output rows and 16-channel slice, each valid input row of the slice is staged
 * once (and reused by up to 3 output rows) as one uint32 per (output column,
 * channel) whose bytes 0..2 are the three horizontal taps' raw uint8 inputs (padding = x_zp,
 * byte 3 = 0); weights are staged the same way, one uint32 (3 int8 taps) per (kernel row,
 * channel). A row kernel then needs one 4-byte dot product per kernel row and pixel:
 * vpdpbusd on VNNI, two vpmaddwd on the (b0, b2) / (b1, 0) int16 halves otherwise (exact:
 * |255 * 128 * 2| < 2^31). The zero-point term -x_zp * sum(w) enters through `init`. */
#define FB_DW3_MAXR 8 /* output rows per call of the register-staged rows kernel */
/* Per-16-channel-block constants of the row path, computed once per call. */
typedef struct {
  uint32_t w[3][FB_NR];  /* weight triples of kernel rows 0..2 (bytes w0 w1 w2 0) */
  uint32_t zs[3][FB_NR]; /* x_zp * (sum of kernel row ky's weights), mod 2^32 */
  int32_t init3[FB_NR];  /* params.col - zs[0] - zs[1] - zs[2] (mod 2^32) */
  int small;             /* every params.mult[j] <= 0.5 (then |acc * mult| <= 2^30) */
  fb_block_params params;
} fb_dw3_block;
/* The register-staged rows kernel (x86: fb_dw3_rows_u8__avx512vnni, documented there). */
typedef void (*fb_dw3_rows_fn)(const uint8_t *const *xrows, size_t nr, size_t w, size_t cstride,
                               size_t pw, size_t ox0, size_t ox1, const fb_dw3_block *blk,
                               uint8_t x_zp, int32_t zp, int32_t qmin, int32_t qmax, size_t nc,
                               uint8_t *out, size_t out_row_stride, size_t out_stride);
typedef void (*fb_dw3_stage_fn)(const uint8_t *row, size_t w, size_t cstride, size_t pw, size_t sw,
                                size_t n, size_t nc, uint8_t zp, uint32_t *dst);
/* acc[i * 16 + j] = init[j] + sum_{r < nv} dot4(rows[r][i * 16 + j], wrow[r * 16 + j]), i < n */
typedef void (*fb_dw3_row_fn)(const uint32_t *const *rows, const uint32_t *wrow, size_t nv,
                              size_t n, const int32_t *init, int32_t *acc);
void fb_dw3_stage__scalar(const uint8_t *row, size_t w, size_t cstride, size_t pw, size_t sw,
                          size_t n, size_t nc, uint8_t zp, uint32_t *dst);
void fb_dw3_row__scalar(const uint32_t *const *rows, const uint32_t *wrow, size_t nv, size_t n,
                        const int32_t *init, int32_t *acc);
#if defined(FB_HAVE_X86)
void fb_dw3_stage__avx2(const uint8_t *row, size_t w, size_t cstride, size_t pw, size_t sw,
                        size_t n, size_t nc, uint8_t zp, uint32_t *dst);
void fb_dw3_row__avx2(const uint32_t *const *rows, const uint32_t *wrow, size_t nv, size_t n,
                      const int32_t *init, int32_t *acc);
void fb_dw3_stage__avx512(const uint8_t *row, size_t w, size_t cstride, size_t pw, size_t sw,
                          size_t n, size_t nc, uint8_t zp, uint32_t *dst);
void fb_dw3_row__avx512(const uint32_t *const *rows, const uint32_t *wrow, size_t nv, size_t n,
                        const int32_t *init, int32_t *acc);
/* nr (1..4 or 8) output rows of one 16-channel block, stride 1, fused requantization, staging in
 * registers: xrows[0 .. nr + 1] are the input rows under them at channel c0 (rows in the
 * vertical padding point into a row of x_zp bytes: exact, since init3 subtracts
 * x_zp * sum(w) for all three kernel rows).
 * Output pixel (r, i), ox0 <= i < ox1, goes to out[r * out_row_stride + i * out_stride + j],
 * j < nc. */
void fb_dw3_rows_u8__avx512vnni(const uint8_t *const *xrows, size_t nr, size_t w, size_t cstride,
                                size_t pw, size_t ox0, size_t ox1, const fb_dw3_block *blk,
                                uint8_t x_zp,
                                int32_t zp, int32_t qmin, int32_t qmax, size_t nc, uint8_t *out,
                                size_t out_row_stride, size_t out_stride);
/* The same staging with one vpermt2b per row and column (CPUs with AVX512-VBMI). */
void fb_dw3_rows_u8__avx512vbmi(const uint8_t *const *xrows, size_t nr, size_t w, size_t cstride,
                                size_t pw, size_t ox0, size_t ox1, const fb_dw3_block *blk,
                                uint8_t x_zp, int32_t zp, int32_t qmin, int32_t qmax, size_t nc,
                                uint8_t *out, size_t out_row_stride, size_t out_stride);
int fb_dw3_cpu_has_vbmi(void); /* run-time cpuid check */
/* Row kernel + epilogue in one pass: out[i * out_stride + j] for i < n, j < nc. */
void fb_dw3_row_u8__avx512vnni(const uint32_t *const *rows, const uint32_t *wrow, size_t nv,
                               size_t n, const int32_t *init, const fb_block_params *p,
                               int32_t zp, int32_t qmin, int32_t qmax, size_t nc, uint8_t *out,
                               size_t out_stride);
#endif

/* A 3x3, dilation 1, multiplier 1 depthwise conv with zero weight zero points (the row path). */
typedef struct {
  const uint8_t *x;
  size_t batch, h, w, c, oh, ow, sh, sw, ph, pw;
  const int8_t *wt; /* packed depthwise weight [9][c] */
  const float *ws, *bias;
  float x_scale, out_scale;
  int32_t x_zp, out_zp, qmin, qmax;
  fb_epilogue_u8_fn epi;
  uint8_t *out;
} fb_dw3_problem;
int fb_dw3_run(const fb_dw3_problem *p, int isa);
/* Whether a weight can take the row path (shared by fbgemm_conv2d_u8s8 and fbgemm_dw3_prepare). */
int fb_dw3_weights_eligible(size_t cin, size_t cout, size_t groups, size_t kh, size_t kw,
                            size_t dh, size_t dw, const int32_t *w_zps);
/* Requant parameters of depthwise channels c0 .. c0 + nc (shared by both depthwise paths). */
void fb_dw_block_params(const float *ws, const float *bias, float x_scale, float out_scale,
                        size_t c0, size_t nc, fb_block_params *params);

/* ---- shared driver pieces (linear.c) ---- */
#define FB_MC 64 /* rows per tile (multiple of FB_MR and FB_WMR) */
#define FB_NCB 4 /* packed 16-column blocks per tile */
#define FB_NCB_WIDE 6 /* the same with the 8x48 kernel (M > 2): two 3-block calls */
#define FB_PARALLEL_MIN_MACS ((size_t)1 << 18)

typedef struct {
  const char *name;
  fb_gemm_ukernel_fn ukernel;
  fb_epilogue_u8_fn epi_u8;
  fb_epilogue_f32_fn epi_f32;
  int uses_maddubs; /* int16 pair sums: needs 7-bit inputs or the split form */
  fb_gemm_wide_fn wide; /* optional: many-chain kernels (NULL: the 4x16 ukernel is used) */
  fb_gemv_fn gemv;
  const char *wide_name;
  fb_epilogue_rows_fn epi_rows; /* per-row dynamic epilogue */
  fb_gemm_wide_ind_fn wide_ind; /* optional: indirect rows (conv without im2col) */
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
  const fb_block_params *pre; /* prepared per-block parameters (static linear), or NULL */
  /* per-row dynamic: qparams of the rows this call's `a` starts at (else NULL) */
  const float *row_scales;
  const int32_t *row_zps;
} fb_gemm_params;

fb_gemm_impl fb_select(void);
/* The epilogue parameters of columns n0 .. n0 + nc of problem c (what `pre` holds per block). */
void fb_block_setup(const fb_gemm_params *c, size_t n0, size_t nc, fb_block_params *p);
/* fb_block_setup of every block of an n-column weight into blocks[ceil(n / 16)]: the static
 * epilogue's parameters, or with per_row the per-row dynamic epilogue's constant columns. */
void fb_blocks_setup(size_t k, size_t n, const int32_t *row_sums, const int32_t *w_zps,
                     const float *w_scales, const float *bias, float x_scale, int32_t x_zp,
                     float out_scale, int per_row, fb_block_params *blocks);
/* mc (<= FB_MC) rows of `a` (row stride a_stride) times packed blocks [b0, b1): writes
 * out[i * out_stride + column] (uint8, or float for dynamic). */
void fb_gemm_rows(const fb_gemm_params *c, const uint8_t *a, size_t a_stride, size_t mc,
                  size_t b0, size_t b1, void *out, size_t out_stride);
/* The same through impl.wide_ind (non-NULL) on rows given as nseg runs each (ptrs[i * nseg + s],
 * K = nseg * seg); static uint8 output, weights without zero points (has_wz == 0), prepared
 * block parameters (c->pre != NULL). */
void fb_gemm_rows_indirect(const fb_gemm_params *c, const uint8_t *const *ptrs, size_t nseg,
                           size_t mc, size_t b0, size_t b1, uint8_t *out, size_t out_stride);
int fb_any_above_127(const uint8_t *x, size_t n);
int fb_valid_scale(float s);
int fb_check_weights(const int8_t *packed, const int32_t *row_sums, const float *w_scales,
                     const int32_t *w_zps, size_t n, size_t k, int *has_wz);
int fb_check_requant(float x_scale, int32_t x_zp, float out_scale, int32_t out_zp, int32_t qmin,
                     int32_t qmax);
int fb_check_bias(const float *bias, size_t n);
/* A dynamic linear's weight side with its per-row epilogue blocks prepared (a dynamic plan). */
typedef struct {
  const int8_t *packed;
  size_t n, k;
  int has_wz, has_bias;
  const fb_block_params *blocks;
} fb_dynamic_weights;
/* Quantize x [m, k] (per row, or per tensor) and run the dynamic GEMM on prepared blocks. */
int fb_dynamic_rows(const float *x, size_t m, const fb_dynamic_weights *w, int per_row,
                    int32_t act_qmin, int32_t act_qmax, float *out);
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

/* 4 activation bytes (one k group) as a 32-bit word for a broadcast; the tail variant reads
 * only the n < 4 bytes that exist (zero-filled): no over-read past a row. */
static inline uint32_t fb_load_u32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

static inline uint32_t fb_load_tail(const uint8_t *p, size_t n) {
  uint32_t v = 0;
  memcpy(&v, p, n);
  return v;
}

/* float32 -> int32 as PyTorch's .to(torch.int32) computes a rounded, in-range value;
 * out-of-range values saturate. */
static inline int32_t fb_f32_to_i32_sat(float v) {
  if (v >= 2147483648.0f) return INT32_MAX;
  if (v < -2147483648.0f) return INT32_MIN;
  return (int32_t)v;
}

#endif /* QUANTPLUG_FBGEMM_KERNELS_H */
