/*
 * AVX-512 VNNI wide microkernels (the fast path on Ice Lake+ / Zen 4).
 *
 * vpdpbusd adds four u8 x s8 products straight into each int32 lane, so there is no int16
 * intermediate and no saturation for any uint8 input (reduce_range is not needed here, it is
 * kept only so every ISA sees the same quantized model).
 *
 * Why wider than the 4x16 kernels: vpdpbusd has a latency of about 4-5 cycles and a throughput
 * of about one zmm per cycle, so at least ~5 independent accumulator chains are needed to keep
 * the unit busy. The 4x16 kernel has 4 (and only 1 for M = 1, which made GEMV latency bound).
 *   8x32c4: 8 rows x 2 packed 16-column blocks = 16 chains; per k group 2 weight loads and
 *           8 activation broadcasts feed 16 vpdpbusd.
 *   8x48c4: 8 rows x 3 consecutive blocks = 24 chains (+ 3 weights + 1 broadcast = 28 of the
 *           32 zmm); per k group 3 weight loads and 8 broadcasts feed 24 vpdpbusd, so the
 *           broadcasts (one load port uop each) are shared by half as much work again. It
 *           reads the same packed layout (three blocks w_bstride apart): no repacking.
 *   2x64c4: GEMV (M = 1 or 2), block pairs x 4 (one row) or 2 (two rows) interleaved k groups
 *           = 8 chains, streaming two weight panels side by side.
 * Output: acc[blk * FB_WMR * 16 + r * 16 + j] (the per-block layout the epilogues read).
 * The 8x32 / 8x48 entry points run a body specialized for mr rows (2..8: tail rows are not
 * computed; one row takes the GEMV's body); in the 8x32 kernel a block past nb aliases the
 * last valid one: computed, never stored (the 8x48 one hands nb < 3 to the 8x32 body).
 */
#include "fbgemm_kernels.h"
#include "quantplug/qp_runtime.h"

#if defined(FB_HAVE_X86)
#include <immintrin.h>
#include <string.h>

/* vpdpbusd through inline asm: with the intrinsic, GCC copies every accumulator through a
 * temporary register (and spills some) on each iteration, which tripled the instruction count
 * of the inner loop. The asm ties the accumulator in place. Operands: acc (int32), u8, s8. */
#define FB_DPBUSD(c, u, s) __asm__("vpdpbusd %2, %1, %0" : "+v"(c) : "v"(u), "v"(s))

/* Software prefetch distance (bytes) of the two weight streams of the direct wide kernel.
 * With few rows (M = 8 at K = N = 4096) the kernel streams 16 MB of cold weights and the
 * hardware prefetcher alone left it ~10% behind torch; 2 KB ahead (32 k groups) measured
 * best of 1 / 2 / 4 KB. Prefetches never fault, past the end of the panel included. */
#define FB_PF_DIST 2048
#define FB_ROWS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define FB_ZERO_ROW(R) \
  __m512i c##R##0 = _mm512_setzero_si512(), c##R##1 = c##R##0, c##R##2 = c##R##0;
/* Rows at or past ROWS, and the third block when NB == 2, are dead code once the body is
 * inlined with constant ROWS and NB (the unused accumulators then vanish). */
#define FB_STEP_ROW(R)                                  \
  if (ROWS > (R)) {                                     \
    const __m512i b = _mm512_set1_epi32(LOADA(R));      \
    FB_DPBUSD(c##R##0, b, wv0);                         \
    FB_DPBUSD(c##R##1, b, wv1);                         \
    if (NB > 2) FB_DPBUSD(c##R##2, b, wv2);             \
  }
#define FB_STORE_ROW(R)                                                         \
  if (ROWS > (R)) {                                                             \
    _mm512_storeu_si512((void *)(acc + (R) * FB_NR), c##R##0);                  \
    _mm512_storeu_si512((void *)(acc + (FB_WMR + (R)) * FB_NR), c##R##1);       \
    if (NB > 2)                                                                 \
      _mm512_storeu_si512((void *)(acc + (2 * FB_WMR + (R)) * FB_NR), c##R##2); \
  }
/* The weight vectors of one k group: NB (2 or 3) blocks at w0, w0 + bs, w0 + 2 * bs (one
 * pointer and a stride: with a pointer per block the 24-chain loop ran out of general
 * registers, spilled and copied accumulators; bs = 0 aliases a missing second block). */
#define FB_LOAD_W()                                                                   \
  const __m512i wv0 = _mm512_loadu_si512((const void *)w0);                           \
  const __m512i wv1 = _mm512_loadu_si512((const void *)(w0 + bs));                    \
  const __m512i wv2 = NB > 2 ? _mm512_loadu_si512((const void *)(w0 + 2 * bs)) : wv1; \
  (void)wv2;

/* ROWS x (16 * NB) body, ROWS (1..FB_WMR) and NB (2 or 3) compile-time constants after
 * inlining: a call for the last few rows of a tile (M = 49, the 7x7 conv layers: 6 x 8 + 1)
 * then costs in proportion to its rows instead of a full 8-row pass over the weight panel
 * (one 8-row pass per block pair was 1/7 of that layer's time for one useful row). */
QP_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void fb_wide_body(
    const size_t ROWS, const size_t NB, size_t k, const uint8_t *a, size_t a_stride,
    const int8_t *w0, ptrdiff_t bs, int32_t *acc) {
  const uint8_t *a0 = a, *a1 = a0 + a_stride, *a2 = a1 + a_stride, *a3 = a2 + a_stride;
  const uint8_t *a4 = a3 + a_stride, *a5 = a4 + a_stride, *a6 = a5 + a_stride;
  const uint8_t *a7 = a6 + a_stride; /* only rows < ROWS are ever read */
  FB_ROWS8(FB_ZERO_ROW)
  const size_t kfull = k / FB_KR, tail = k % FB_KR;
  size_t off = 0;
  /* two k groups per iteration: fewer loop instructions per vpdpbusd, and it let GCC keep
   * all 24 accumulators in place (rolled, it copied two of them through spare registers) */
#pragma GCC unroll 2
  for (size_t g = 0; g < kfull; g++, off += 4) {
    FB_LOAD_W()
    _mm_prefetch((const char *)w0 + FB_PF_DIST, _MM_HINT_T0);
    _mm_prefetch((const char *)w0 + bs + FB_PF_DIST, _MM_HINT_T0);
    if (NB > 2) _mm_prefetch((const char *)w0 + 2 * bs + FB_PF_DIST, _MM_HINT_T0);
    w0 += 64;
#define LOADA(R) (int)fb_load_u32(a##R + off)
    FB_ROWS8(FB_STEP_ROW)
#undef LOADA
  }
  if (tail) {
    FB_LOAD_W()
#define LOADA(R) (int)fb_load_tail(a##R + off, tail)
    FB_ROWS8(FB_STEP_ROW)
#undef LOADA
  }
  /* nb == 1 (bs = 0): the second block's sums are the first block's again; storing them is
   * harmless (acc has room for FB_VNB blocks) and keeps the store loop branch-free. */
  FB_ROWS8(FB_STORE_ROW)
}

/* GEMV body: ROWS (1 or 2, a constant after inlining) rows x 2 blocks with 8 independent
 * accumulator chains, so that neither row count is bound by vpdpbusd latency: one row runs
 * 2 blocks x 4 interleaved k groups, two rows 2 blocks x 2 rows x 2 k groups (each weight load
 * feeds both rows; before, two rows took the 8-row kernel's body with 4 chains). One row
 * reads two weight streams side by side instead of the former 4-block body's four: the same
 * speed at 1x768x768 (6.15 us per planned C call, L2 bandwidth bound: ~89% of it is this
 * loop, perf), and 2 KB / 1 KB / 512 B software prefetch measured no better or worse. The
 * chains are summed with wrapping int32 adds, equal to the scalar reference's sums bit for bit. */
#define FB_GV_STEP(J, LOAD)                                           \
  if (KI > (J)) {                                                     \
    const size_t o = (g + (J)) * 64;                                  \
    const __m512i v0 = _mm512_loadu_si512((const void *)(w0 + o));    \
    const __m512i v1 = _mm512_loadu_si512((const void *)(w1 + o));    \
    const __m512i b0 = _mm512_set1_epi32(LOAD(a0, g + (J)));          \
    FB_DPBUSD(c0##J, b0, v0);                                         \
    FB_DPBUSD(d0##J, b0, v1);                                         \
    if (ROWS > 1) {                                                   \
      const __m512i b1 = _mm512_set1_epi32(LOAD(a1, g + (J)));        \
      FB_DPBUSD(c1##J, b1, v0);                                       \
      FB_DPBUSD(d1##J, b1, v1);                                       \
    }                                                                 \
  }
#define FB_GV_FULL(p, G) (int)fb_load_u32((p) + (G) * 4)
#define FB_GV_ANY(p, G) \
  ((G) < kfull ? (int)fb_load_u32((p) + (G) * 4) : (int)fb_load_tail((p) + (G) * 4, tail))

QP_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void fb_gemv_body(
    const size_t ROWS, size_t k, const uint8_t *a, size_t a_stride, const int8_t *w0,
    const int8_t *w1, int32_t *acc) {
  const size_t KI = ROWS == 1 ? 4 : 2; /* k groups in flight: 8 chains either way */
  const __m512i z = _mm512_setzero_si512();
  __m512i c00 = z, c01 = z, c02 = z, c03 = z, d00 = z, d01 = z, d02 = z, d03 = z;
  /* row 1's phases 2-3 are named for the macro only: dead code (two rows run 2 phases) */
  __m512i c10 = z, c11 = z, c12 = z, c13 = z, d10 = z, d11 = z, d12 = z, d13 = z;
  const uint8_t *a0 = a, *a1 = a + (ROWS > 1 ? a_stride : 0);
  const size_t kfull = k / FB_KR, tail = k % FB_KR, groups = kfull + (tail != 0);
  size_t g = 0;
  for (; g + KI <= kfull; g += KI) {
    FB_GV_STEP(0, FB_GV_FULL) FB_GV_STEP(1, FB_GV_FULL) FB_GV_STEP(2, FB_GV_FULL)
    FB_GV_STEP(3, FB_GV_FULL)
  }
  /* the last < KI whole groups and the zero-filled partial one, on the phase-0 chains */
  for (; g < groups; g++) FB_GV_STEP(0, FB_GV_ANY)
  /* unused chains stay zero (ROWS == 2 has no phases 2-3): adding them changes nothing */
  const __m512i s0 = _mm512_add_epi32(_mm512_add_epi32(c00, c01), _mm512_add_epi32(c02, c03));
  const __m512i t0 = _mm512_add_epi32(_mm512_add_epi32(d00, d01), _mm512_add_epi32(d02, d03));
  _mm512_storeu_si512((void *)acc, s0);
  _mm512_storeu_si512((void *)(acc + FB_WMR * FB_NR), t0);
  if (ROWS > 1) {
    _mm512_storeu_si512((void *)(acc + FB_NR), _mm512_add_epi32(c10, c11));
    _mm512_storeu_si512((void *)(acc + (FB_WMR + 1) * FB_NR), _mm512_add_epi32(d10, d11));
  }
}
#undef FB_GV_FULL
#undef FB_GV_ANY
#undef FB_GV_STEP

/* A switch on the row count that runs BODY(R) with a constant R (its specialized body) for
 * 2..8 rows and ONE for a single row. */
#define FB_SWITCH_ROWS(mr, ONE, BODY) \
  switch (mr) {                       \
    case 1: ONE; break;               \
    case 2: BODY(2); break;           \
    case 3: BODY(3); break;           \
    case 4: BODY(4); break;           \
    case 5: BODY(5); break;           \
    case 6: BODY(6); break;           \
    case 7: BODY(7); break;           \
    default: BODY(8); break;          \
  }

QP_TARGET_AVX512VNNI void fbgemm_qu8_gemm_ukernel_8x32c4__avx512vnni(
    size_t mr, size_t nb, size_t k, const uint8_t *a, size_t a_stride, const int8_t *w,
    size_t w_bstride, int32_t *acc) {
  const ptrdiff_t bs = nb > 1 ? (ptrdiff_t)w_bstride : 0;
#define FB_BODY(R) fb_wide_body(R, 2, k, a, a_stride, w, bs, acc)
  FB_SWITCH_ROWS(mr, fb_gemv_body(1, k, a, a_stride, w, w + bs, acc), FB_BODY)
#undef FB_BODY
}

/* Three blocks take the 24-chain body; fewer, the 8x32 kernel. One row runs the GEMV body
 * on blocks 0-1 and on block 2 (paired with itself: its second half lands in acc block 3,
 * which acc has room for and nobody reads): 8 chains each, not 3 latency-bound ones. */
QP_TARGET_AVX512VNNI void fbgemm_qu8_gemm_ukernel_8x48c4__avx512vnni(
    size_t mr, size_t nb, size_t k, const uint8_t *a, size_t a_stride, const int8_t *w,
    size_t w_bstride, int32_t *acc) {
  if (nb < 3) {
    fbgemm_qu8_gemm_ukernel_8x32c4__avx512vnni(mr, nb, k, a, a_stride, w, w_bstride, acc);
    return;
  }
  const int8_t *w2 = w + 2 * w_bstride;
  if (mr == 1) {
    fb_gemv_body(1, k, a, a_stride, w, w + w_bstride, acc);
    fb_gemv_body(1, k, a, a_stride, w2, w2, acc + 2 * FB_WMR * FB_NR);
    return;
  }
#define FB_BODY(R) fb_wide_body(R, 3, k, a, a_stride, w, (ptrdiff_t)w_bstride, acc)
  FB_SWITCH_ROWS(mr, (void)0, FB_BODY)
#undef FB_BODY
}

/* Indirect ROWS x (16 * NB) body for convolutions: row r's K bytes are nseg runs of seg
 * bytes (seg a multiple of FB_KR), run s starting at ptrs[r * nseg + s]: for a conv with one
 * group and no dilation a run is one kernel row's kw * cin contiguous NHWC bytes, so interior
 * output pixels read the input in place and no im2col copy is made (the copy was ~12% of a
 * 64-channel 3x3 layer). The packed weight is read exactly as by fb_wide_body. */
QP_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void fb_wide_body_ind(
    const size_t ROWS, const size_t NB, size_t nseg, size_t seg, const uint8_t *const *ptrs,
    const int8_t *w0, ptrdiff_t bs, int32_t *acc) {
  FB_ROWS8(FB_ZERO_ROW)
  const size_t groups = seg / FB_KR;
  for (size_t sg = 0; sg < nseg; sg++) {
#define FB_SEG_PTR(R) const uint8_t *a##R = ptrs[(ROWS > (R) ? (R) : 0) * nseg + sg];
    FB_ROWS8(FB_SEG_PTR)
#undef FB_SEG_PTR
    size_t off = 0;
#pragma GCC unroll 2 /* as in fb_wide_body (rolled: accumulator copies) */
    for (size_t g = 0; g < groups; g++, off += 4) {
      FB_LOAD_W()
      w0 += 64;
#define LOADA(R) (int)fb_load_u32(a##R + off)
      FB_ROWS8(FB_STEP_ROW)
#undef LOADA
    }
  }
  FB_ROWS8(FB_STORE_ROW)
}

/* nb (1..3) blocks: three take the 24-chain body (one row included: 3 chains, a conv tail
 * row), fewer the 16-chain one (a missing second block aliases the first, bs = 0). */
QP_TARGET_AVX512VNNI void fbgemm_qu8_gemm_ukernel_8x48c4_ind__avx512vnni(
    size_t mr, size_t nb, size_t nseg, size_t seg, const uint8_t *const *ptrs, const int8_t *w,
    size_t w_bstride, int32_t *acc) {
  const ptrdiff_t bs = nb > 1 ? (ptrdiff_t)w_bstride : 0;
  if (nb > 2) {
#define FB_BODY(R) fb_wide_body_ind(R, 3, nseg, seg, ptrs, w, bs, acc)
    FB_SWITCH_ROWS(mr, FB_BODY(1), FB_BODY)
#undef FB_BODY
    return;
  }
#define FB_BODY(R) fb_wide_body_ind(R, 2, nseg, seg, ptrs, w, bs, acc)
  FB_SWITCH_ROWS(mr, FB_BODY(1), FB_BODY)
#undef FB_BODY
}

QP_TARGET_AVX512VNNI void fbgemm_qu8_gemv_ukernel_2x64c4__avx512vnni(
    size_t mr, size_t nb, size_t k, const uint8_t *a, size_t a_stride, const int8_t *w,
    size_t w_bstride, int32_t *acc) {
  /* block pairs; a lone last block aliases itself as the pair's second (computed, unused) */
  for (size_t b = 0; b < nb; b += 2) {
    const int8_t *w0 = w + b * w_bstride, *w1 = b + 1 < nb ? w0 + w_bstride : w0;
    int32_t *pacc = acc + b * FB_WMR * FB_NR;
    if (mr == 1)
      fb_gemv_body(1, k, a, a_stride, w0, w1, pacc);
    else
      fb_gemv_body(2, k, a, a_stride, w0, w1, pacc);
  }
}

/* Dynamic linear helpers: min / max / finiteness of x, then x -> uint8 with the same
 * arithmetic as qp_quantize (multiply by the reciprocal, clamp, round half to even). */
QP_TARGET_AVX512 int fb_minmax_f32__avx512(const float *x, size_t n, float *mn_out, float *mx_out) {
  __m512 mn = _mm512_set1_ps(x[0]), mx = mn, bad = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    mn = _mm512_min_ps(mn, v);
    mx = _mm512_max_ps(mx, v);
    bad = _mm512_add_ps(bad, _mm512_sub_ps(v, v)); /* NaN exactly when v is inf or NaN */
  }
  if (i < n) {
    const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
    const __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(x[0]), m, x + i);
    mn = _mm512_min_ps(mn, v);
    mx = _mm512_max_ps(mx, v);
    bad = _mm512_add_ps(bad, _mm512_sub_ps(v, v));
  }
  *mn_out = _mm512_reduce_min_ps(mn);
  *mx_out = _mm512_reduce_max_ps(mx);
  return _mm512_reduce_add_ps(bad) != 0.0f || *mn_out != *mn_out || *mx_out != *mx_out;
}

QP_TARGET_AVX512 size_t fb_quantize_row_u8__avx512(const float *x, size_t n, float inv_scale,
                                                   int32_t zp, int32_t qmin, int32_t qmax,
                                                   uint8_t *out) {
  const __m512 s = _mm512_set1_ps(inv_scale);
  const __m512 lo = _mm512_set1_ps((float)(qmin - zp)), hi = _mm512_set1_ps((float)(qmax - zp));
  const __m512i vzp = _mm512_set1_epi32(zp);
  size_t i = 0;
  for (; i < n; i += 16) {
    const size_t left = n - i;
    const __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), s);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), vzp);
    _mm_mask_storeu_epi8(out + i, m, _mm512_cvtepi32_epi8(q));
  }
  return n;
}

#endif /* FB_HAVE_X86 */
