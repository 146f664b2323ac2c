/*
 * Internal interface between the x86_onednn drivers (linear.c, conv.c,
 * depthwise.c) and the per-ISA microkernels (ukernel_*.c). Not visible from Python.
 *
 * A GEMM runs as: for each block of up to `mr` activation rows and each
 * 16-column weight tile, ukernel() writes the raw dot products
 * acc[r][c] = sum_k a[r][k] * w[c][k] (uint8 x int8, int32, wrapping) to a
 * 16-wide int32 block, then epilogue() turns the block into outputs. An ISA may
 * add ukernel_nt(), which does the same for up to 3 adjacent tiles at once, and
 * ukernel_ind() (up to XO_NT_MAX tiles), which reads each row through a table of
 * segment pointers (convolutions without im2col); same sums, so same results. The
 * driver walks L2-sized panels of tiles with the row blocks inside (see xo_gemm_run
 * in linear.c).
 * Epilogues of every ISA compute the same IEEE single-precision operations in
 * the same order (no FMA contraction), so every path is bit-exact with the
 * scalar reference.
 */
#ifndef QUANTPLUG_X86_ONEDNN_INTERNAL_H
#define QUANTPLUG_X86_ONEDNN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "quantplug/qp_runtime.h"

/* AVX-VNNI intrinsics need GCC >= 11 or clang >= 12. */
#if (defined(__x86_64__) || defined(__i386__)) && \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define XO_HAVE_AVXVNNI 1
#endif

#define XO_NR 16     /* output channels per packed tile */
#define XO_KC 4      /* k values per packed group */
#define XO_MR_MAX 8  /* largest row block of any microkernel */
#define XO_NT_MAX 4  /* most 16-column tiles one multi-tile microkernel call covers */

/* Stop GCC from fusing a multiply and a following add into an FMA (which
 * rounds once instead of twice): the reference computes them separately. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define XO_FP_BARRIER(v) __asm__("" : "+x"(v))
#define XO_FP_BARRIER_ZMM(v) __asm__("" : "+v"(v))
#else
#define XO_FP_BARRIER(v) ((void)0)
#define XO_FP_BARRIER_ZMM(v) ((void)0)
#endif

static inline size_t xo_round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }
static inline size_t xo_ntiles(size_t n) { return (n + XO_NR - 1) / XO_NR; }

/* Load the 4 activation bytes of k-group g; the last group of a K that is not a
 * multiple of 4 is zero-filled (its weights are zero too). Never reads past K. */
static inline int32_t xo_load_a4(const uint8_t *row, size_t g, size_t k) {
  uint32_t v = 0;
  size_t k0 = g * XO_KC;
  size_t n = k - k0 < XO_KC ? k - k0 : XO_KC;
  memcpy(&v, row + k0, n);
  return (int32_t)v;
}

/* The 4 activation bytes of a whole k-group at p (unaligned). */
static inline int32_t xo_load_a4_full(const uint8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

enum xo_epilogue_kind {
  XO_EPI_REQUANT = 0,     /* uint8 out = requant(acc + bias_eff[c], mult[c]) */
  XO_EPI_DEQUANT = 1,     /* fp32 out = (float)(acc - zp_r*colsum[c]) * (s_r*ws[c]) (+ bias[c]) */
  XO_EPI_REQUANT_ADD = 2, /* uint8 out = requant of (float)(acc+bias_eff)*mult + (other-ozp)*omult */
  XO_EPI_ACC = 3          /* int32 out = acc + bias_eff[c] (tests) */
};

/* Everything an epilogue needs. Per-column arrays are padded to a multiple of
 * 16 so SIMD loads of a whole tile stay in bounds. */
typedef struct {
  int kind;
  const int32_t *bias_eff; /* REQUANT, REQUANT_ADD, ACC: bias_q[c] - x_zp * colsum[c] */
  const float *mult;       /* REQUANT, REQUANT_ADD */
  const int32_t *colsum;   /* DEQUANT */
  const float *wscale;     /* DEQUANT */
  const float *fbias;      /* DEQUANT; NULL when there is no bias */
  const float *row_scale;  /* DEQUANT: per row (per_row) or one */
  const int32_t *row_zp;   /* DEQUANT */
  int per_row;
  int32_t out_zp;
  int32_t qmin, qmax;      /* output range */
  float lo, hi;            /* (float)(qmin - out_zp), (float)(qmax - out_zp) */
  uint8_t *out_u8;
  float *out_f32;
  int32_t *out_i32;
  size_t ldo;              /* elements between output rows */
  const uint8_t *other;    /* REQUANT_ADD */
  size_t ld_other;
  int32_t other_zp;
  float other_mult;
} xo_epilogue;

/* acc block: rows [0, mr), 16 int32 per row. w: one packed tile (kp*16 bytes). */
typedef void (*xo_ukernel_fn)(size_t mr, size_t k, const uint8_t *a, size_t lda,
                              const int8_t *w, int32_t *acc);
/* Outputs for rows [row0, row0+mr) and columns [col0, col0+nc), nc <= 16. */
typedef void (*xo_epilogue_fn)(const xo_epilogue *e, const int32_t *acc, size_t row0,
                               size_t mr, size_t col0, size_t nc);
/* min/max of n floats; returns 1 if a NaN was seen. */
typedef int (*xo_minmax_fn)(const float *x, size_t n, float *mn, float *mx);
/* q[i] = clamp(nearbyint(x[i] * inv) + zp, 0, 255)  (qp_quantize semantics, no NaN). */
typedef void (*xo_quantize_fn)(const float *x, size_t n, float inv, int32_t zp, uint8_t *q);

/* Multi-tile microkernel: nt (1..3) adjacent packed tiles, w_stride bytes apart,
 * against the same rows, so each activation broadcast feeds nt vpdpbusd. acc layout:
 * acc[t * XO_MR_MAX * XO_NR + r * XO_NR + c] (each tile's block as ukernel writes it). */
typedef void (*xo_ukernel_nt_fn)(size_t mr, size_t nt, size_t k, const uint8_t *a, size_t lda,
                                 const int8_t *w, size_t w_stride, int32_t *acc);

/* Indirect multi-tile microkernel (convolutions without an im2col copy): like ukernel_nt, but
 * row r's K is `segs` segments of `seg` bytes (seg a multiple of 4), segment s of row r read
 * from ptrs[s * XO_MR_MAX + r] (a pointer into the input, or to a built border segment). The
 * packed weights are the plain tiles over K = segs * seg, so the sums are the GEMM's sums. */
typedef void (*xo_ukernel_ind_fn)(size_t mr, size_t nt, size_t segs, size_t seg,
                                  const uint8_t *const *ptrs, const int8_t *w, size_t w_stride,
                                  int32_t *acc);

typedef struct {
  const char *name; /* microkernel name, XNNPACK style */
  size_t mr;
  xo_ukernel_fn ukernel;
  xo_epilogue_fn epilogue;
  xo_minmax_fn minmax;
  xo_quantize_fn quantize;
  xo_ukernel_nt_fn ukernel_nt; /* NULL: the driver calls ukernel once per tile */
  size_t nt;                   /* tiles per ukernel_nt call (ignored without ukernel_nt) */
  xo_ukernel_ind_fn ukernel_ind; /* NULL: convolutions build im2col rows (make_a) instead */
  size_t mr_ind, nt_ind;         /* row block and tiles per call of ukernel_ind */
  /* GEMV kernel for row blocks of at most mr_gemv rows (decode-style calls), up to nt_gemv
   * tiles per call, same interface and results as ukernel_nt; NULL: ukernel / ukernel_nt. */
  xo_ukernel_nt_fn ukernel_gemv;
  size_t mr_gemv, nt_gemv;
} xo_gemm_impl;

extern const xo_gemm_impl xo_impl_scalar;
#if defined(__x86_64__) || defined(__i386__)
extern const xo_gemm_impl xo_impl_avx2;
extern const xo_gemm_impl xo_impl_avx512;
extern const xo_gemm_impl xo_impl_avx512vnni;
extern const xo_gemm_impl xo_impl_avx512vnni_ymm; /* AVX-VNNI source, EVEX encoded */
#endif
#if defined(XO_HAVE_AVXVNNI)
extern const xo_gemm_impl xo_impl_avxvnni;
#endif
#if defined(__x86_64__) || defined(__i386__)
/* 1-2 rows x 1-2 tiles, 8 accumulator chains (ukernel_gemv_avx512vnni.c). */
void x86_onednn_qu8_gemv_ukernel_2x32c4__avx512vnni(size_t mr, size_t nt, size_t k,
                                                    const uint8_t *a, size_t lda, const int8_t *w,
                                                    size_t w_stride, int32_t *acc);
#endif

#if defined(__x86_64__) || defined(__i386__)
/* AVX2 / AVX-512 epilogues and helpers, shared with the VNNI microkernels. */
void xo_epilogue_avx2(const xo_epilogue *e, const int32_t *acc, size_t row0, size_t mr,
                      size_t col0, size_t nc);
int xo_minmax_avx2(const float *x, size_t n, float *mn, float *mx);
void xo_quantize_avx2(const float *x, size_t n, float inv, int32_t zp, uint8_t *q);
void xo_epilogue_avx512(const xo_epilogue *e, const int32_t *acc, size_t row0, size_t mr,
                        size_t col0, size_t nc);
int xo_minmax_avx512(const float *x, size_t n, float *mn, float *mx);
void xo_quantize_avx512(const float *x, size_t n, float inv, int32_t zp, uint8_t *q);
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* In-place vpdpbusd (AVX-512 VNNI kernels). GCC (12) copies the accumulator of
 * _mm512_dpbusd_epi32 to a fresh register and back, and with 24 live accumulators that turns
 * into stack spills on every k-group; the asm form ties the accumulator operand. Same
 * instruction, same result. */
#if defined(__GNUC__) && !defined(__clang__)
#define XO_DPBUSD(c, b, v) __asm__("vpdpbusd %2, %1, %0" : "+v"(c) : "v"(b), "v"(v))
#else
#define XO_DPBUSD(c, b, v) ((c) = _mm512_dpbusd_epi32((c), (b), (v)))
#endif

/* Narrow 16 int32 (already in 0..255) to bytes and store nc <= 16 of them. The memory form
 * of vpmovusdb (masked store) is slow on Zen 4; narrowing in a register and a plain 16-byte
 * store (masked byte store only for a partial tile) is not. */
static inline QP_TARGET_AVX512 void xo_store_u8x16(uint8_t *dst, __mmask16 mask, __m512i v) {
  const __m128i b = _mm512_cvtusepi32_epi8(v);
  if (mask == 0xFFFFu)
    _mm_storeu_si128((__m128i *)dst, b);
  else
    _mm_mask_storeu_epi8(dst, mask, b);
}
#endif

/* The implementation of the active ISA (qp_active_isa()). */
const xo_gemm_impl *xo_gemm_select(void);

/* Scalar epilogue (also the definition of the numerics). */
void xo_epilogue_scalar(const xo_epilogue *e, const int32_t *acc, size_t row0, size_t mr,
                        size_t col0, size_t nc);

/* ---- the parallel GEMM driver (gemm.c) ---- */

/* Produces activation rows [row0, row0+mr) into buf (mr x k, row stride ldb), for
 * GEMMs whose A is not a plain matrix (conv im2col). */
typedef void (*xo_make_a_fn)(void *ctx, size_t row0, size_t mr, uint8_t *buf, size_t ldb);
/* Indirect A: fills ptrs[s * XO_MR_MAX + r] for rows [row0, row0+mr) and segments s < segs;
 * segments it cannot point at in the input (borders) it builds in scratch (XO_MR_MAX * segs *
 * seg bytes, owned by the calling task). */
typedef void (*xo_make_ptrs_fn)(void *ctx, size_t row0, size_t mr, const uint8_t **ptrs,
                                uint8_t *scratch);

typedef struct {
  size_t m, k, n;
  const uint8_t *a; /* plain A (row stride lda), or NULL with make_a */
  size_t lda;
  xo_make_a_fn make_a;
  void *make_a_ctx;
  xo_make_ptrs_fn make_ptrs; /* used instead of make_a when the ISA has ukernel_ind */
  size_t segs, seg;          /* k == segs * seg with make_ptrs */
  const int8_t *w;  /* packed tiles */
  xo_epilogue epi;
} xo_gemm_problem;

/* Runs one GEMM on the thread pool; returns a qp_status. */
int xo_gemm_run(const xo_gemm_problem *p);

/* ---- depthwise conv driver (depthwise.c) ---- */
typedef struct {
  const uint8_t *x; /* NHWC [batch][h][w][c] */
  size_t batch, h, w, c, oh, ow, kh, kw;
  int64_t sh, sw, ph, pw, dh, dw;
  uint8_t pad;      /* the input zero point */
  const int8_t *wt; /* [ceil(c/16)][kh*kw][16], zero beyond c */
  xo_epilogue epi;  /* rows = output pixels, columns = channels, ldo = c */
} xo_depthwise_problem;

int xo_depthwise_run(const xo_depthwise_problem *p);
/* AVX-512 VNNI 3x3 stride-1-column schedule with the requantization fused
 * (depthwise3x3_vnni.c); returns -1 when it does not apply. */
int xo_dw3_vnni_run(const xo_depthwise_problem *p);

/* ---- linear helpers (linear.c), shared with the prepared calls (linear_plan.c) ---- */
/* A plain-A GEMM x [m][k] times the packed weight into the epilogue's output. */
int xo_linear_run(const uint8_t *x, size_t m, size_t k, const int8_t *packed, size_t n,
                  const xo_epilogue *epi);
/* A REQUANT epilogue with this output range (other fields zero). */
void xo_epi_requant(xo_epilogue *e, int32_t out_zp, int32_t qmin, int32_t qmax);

/* dynamic linear core */
/* Largest K whose int32 sums of (x-zp)*w (|.| <= 255*128 each) cannot overflow. */
#define XO_DYNAMIC_MAX_K ((size_t)65793)
/* Per-call scratch: scale, inv, zp [one per row with per_row, else 1]; q [m * k]. */
typedef struct {
  float *scale, *inv;
  int32_t *zp;
  uint8_t *q;
} xo_dynamic_scratch;
/* Chooses the activation qparams, quantizes x and runs the GEMM with the dequantizing
 * epilogue. cs / ws / fb (fb may be NULL): column sums, weight scales, bias, each padded with
 * zeros to whole tiles. Arguments already validated; fails only on NaN / inf in x. */
int xo_dynamic_core(const float *x, size_t m, size_t k, const int8_t *packed, const int32_t *cs,
                    const float *ws, const float *fb, size_t n, int per_row, float *out,
                    xo_dynamic_scratch *s);

/* Per-call helpers shared by the drivers. */
int xo_requant_params(float x_scale, const float *w_scales, size_t n, float out_scale,
                      const float *bias, float *mult, int32_t *bias_q);
int xo_check_scale(float s);

#endif /* QUANTPLUG_X86_ONEDNN_INTERNAL_H */
