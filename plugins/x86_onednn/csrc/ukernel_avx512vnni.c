/*
 * AVX-512 VNNI path: vpdpbusd multiplies 4 uint8 activations by 4 int8
 * weights and adds the 4 products to an int32 lane in one instruction,
 * without intermediate saturation (the non-"s" form). Microkernel 8x16c4: one
 * zmm of weights per k-group (16 columns x 4 k), the row's 4 activation bytes
 * broadcast as one dword, 8 accumulator rows; with 1-2 rows (GEMV) 4 chains over
 * interleaved k-groups. Large M: microkernel 8x48c4 (3 tiles share each
 * broadcast, 24 zmm accumulators). Epilogue, min/max and quantize are the
 * AVX-512 ones.
 */
#include "xo_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

static inline __attribute__((always_inline)) QP_TARGET_AVX512VNNI void xo_vnni512_body(
    const size_t MR, size_t k, const uint8_t *a, size_t lda, const int8_t *w, int32_t *acc) {
  __m512i c[8];
  for (size_t r = 0; r < MR; r++) c[r] = _mm512_setzero_si512();
  const size_t groups = (k + XO_KC - 1) / XO_KC, full = k / XO_KC;
  size_t g = 0;
  if (MR <= 2) {
    /* GEMV-like calls: one accumulator per row would serialize on the vpdpbusd latency;
     * 4 independent sets over interleaved k-groups, summed at the end (int32 wrapping
     * addition is associative, so the result is bit-identical). */
    __m512i d1[2], d2[2], d3[2];
    for (size_t r = 0; r < MR; r++) d1[r] = d2[r] = d3[r] = _mm512_setzero_si512();
    for (; g + 4 <= full; g += 4) {
      const int8_t *wg = w + g * (XO_NR * XO_KC);
      const __m512i w0 = _mm512_loadu_si512(wg), w1 = _mm512_loadu_si512(wg + 64);
      const __m512i w2 = _mm512_loadu_si512(wg + 128), w3 = _mm512_loadu_si512(wg + 192);
      for (size_t r = 0; r < MR; r++) {
        int32_t a4[4];
        memcpy(a4, a + r * lda + g * XO_KC, 16);
        c[r] = _mm512_dpbusd_epi32(c[r], _mm512_set1_epi32(a4[0]), w0);
        d1[r] = _mm512_dpbusd_epi32(d1[r], _mm512_set1_epi32(a4[1]), w1);
        d2[r] = _mm512_dpbusd_epi32(d2[r], _mm512_set1_epi32(a4[2]), w2);
        d3[r] = _mm512_dpbusd_epi32(d3[r], _mm512_set1_epi32(a4[3]), w3);
      }
    }
    for (size_t r = 0; r < MR; r++)
      c[r] = _mm512_add_epi32(_mm512_add_epi32(c[r], d1[r]), _mm512_add_epi32(d2[r], d3[r]));
  }
  for (; g < full; g++) {
    const __m512i wv = _mm512_loadu_si512(w + g * (XO_NR * XO_KC));
    for (size_t r = 0; r < MR; r++) {
      int32_t a4;
      memcpy(&a4, a + r * lda + g * XO_KC, 4);
      c[r] = _mm512_dpbusd_epi32(c[r], _mm512_set1_epi32(a4), wv);
    }
  }
  if (g < groups) {
    const __m512i wv = _mm512_loadu_si512(w + g * (XO_NR * XO_KC));
    for (size_t r = 0; r < MR; r++)
      c[r] = _mm512_dpbusd_epi32(c[r], _mm512_set1_epi32(xo_load_a4(a + r * lda, g, k)), wv);
  }
  for (size_t r = 0; r < MR; r++) _mm512_storeu_si512(acc + r * XO_NR, c[r]);
}

#define XO_VNNI512_MR(MR)                                                                     \
  static QP_TARGET_AVX512VNNI void xo_vnni512_mr##MR(size_t k, const uint8_t *a, size_t lda,  \
                                                     const int8_t *w, int32_t *acc) {         \
    xo_vnni512_body(MR, k, a, lda, w, acc);                                                   \
  }
XO_VNNI512_MR(1)
XO_VNNI512_MR(2)
XO_VNNI512_MR(3)
XO_VNNI512_MR(4)
XO_VNNI512_MR(5)
XO_VNNI512_MR(6)
XO_VNNI512_MR(7)
XO_VNNI512_MR(8)

static void x86_onednn_qu8_gemm_ukernel_8x16c4__avx512vnni(size_t mr, size_t k,
                                                          const uint8_t *a, size_t lda,
                                                          const int8_t *w, int32_t *acc) {
  switch (mr) {
    case 1: xo_vnni512_mr1(k, a, lda, w, acc); break;
    case 2: xo_vnni512_mr2(k, a, lda, w, acc); break;
    case 3: xo_vnni512_mr3(k, a, lda, w, acc); break;
    case 4: xo_vnni512_mr4(k, a, lda, w, acc); break;
    case 5: xo_vnni512_mr5(k, a, lda, w, acc); break;
    case 6: xo_vnni512_mr6(k, a, lda, w, acc); break;
    case 7: xo_vnni512_mr7(k, a, lda, w, acc); break;
    default: xo_vnni512_mr8(k, a, lda, w, acc); break;
  }
}

/* Large-M microkernel MRx(16*NT): NT adjacent packed tiles (w_stride bytes apart) share each
 * broadcast activation dword, so one k-group costs NT weight loads + MR broadcasts for MR*NT
 * vpdpbusd (8x48: 11 loads for 24 dpbusd instead of 9 for 8 with 8x16); 24 accumulators + 3
 * weights + 1 broadcast fit the 32 zmm registers. */

/* Named accumulators (cR_T) rather than an array: GCC keeps a 2-D accumulator array on the
 * stack and reloads/stores it every k-group. Unused rows/tiles are dead code for constant
 * MR/NT and vanish. */
#define XO_NT_DECL(R)                                                                          \
  __m512i c##R##_0 = _mm512_setzero_si512(), c##R##_1 = c##R##_0, c##R##_2 = c##R##_0;
#define XO_NT_ROW(R, LOAD)                                                                     \
  if (MR > R) {                                                                                \
    const __m512i b = _mm512_set1_epi32(LOAD(R));                                              \
    XO_DPBUSD(c##R##_0, b, v0);                                                                \
    if (NT > 1) XO_DPBUSD(c##R##_1, b, v1);                                                    \
    if (NT > 2) XO_DPBUSD(c##R##_2, b, v2);                                                    \
  }
#define XO_NT_ROWS(LOAD)                                                                       \
  XO_NT_ROW(0, LOAD) XO_NT_ROW(1, LOAD) XO_NT_ROW(2, LOAD) XO_NT_ROW(3, LOAD)                  \
  XO_NT_ROW(4, LOAD) XO_NT_ROW(5, LOAD) XO_NT_ROW(6, LOAD) XO_NT_ROW(7, LOAD)
#define XO_NT_STORE(R)                                                                         \
  if (MR > R) {                                                                                \
    _mm512_storeu_si512(acc + R * XO_NR, c##R##_0);                                            \
    if (NT > 1) _mm512_storeu_si512(acc + (XO_MR_MAX + R) * XO_NR, c##R##_1);                 \
    if (NT > 2) _mm512_storeu_si512(acc + (2 * XO_MR_MAX + R) * XO_NR, c##R##_2);             \
  }

static inline __attribute__((always_inline)) QP_TARGET_AVX512VNNI void xo_vnni512_nt_body(
    const size_t MR, const size_t NT, size_t k, const uint8_t *a, size_t lda, const int8_t *w,
    size_t ws, int32_t *acc) {
  XO_NT_DECL(0) XO_NT_DECL(1) XO_NT_DECL(2) XO_NT_DECL(3)
  XO_NT_DECL(4) XO_NT_DECL(5) XO_NT_DECL(6) XO_NT_DECL(7)
  const size_t groups = (k + XO_KC - 1) / XO_KC, full = k / XO_KC;
  const int8_t *w1 = w + ws, *w2 = w + 2 * ws;
  size_t g = 0;
#pragma GCC unroll 2
  for (; g < full; g++) {
    const size_t off = g * (XO_NR * XO_KC);
    const __m512i v0 = _mm512_loadu_si512(w + off);
    const __m512i v1 = NT > 1 ? _mm512_loadu_si512(w1 + off) : v0;
    const __m512i v2 = NT > 2 ? _mm512_loadu_si512(w2 + off) : v0;
    const uint8_t *ag = a + g * XO_KC;
#define XO_LOAD_FULL(R) xo_load_a4_full(ag + R * lda)
    XO_NT_ROWS(XO_LOAD_FULL)
#undef XO_LOAD_FULL
  }
  if (g < groups) {
    const size_t off = g * (XO_NR * XO_KC);
    const __m512i v0 = _mm512_loadu_si512(w + off);
    const __m512i v1 = NT > 1 ? _mm512_loadu_si512(w1 + off) : v0;
    const __m512i v2 = NT > 2 ? _mm512_loadu_si512(w2 + off) : v0;
#define XO_LOAD_TAIL(R) xo_load_a4(a + R * lda, g, k)
    XO_NT_ROWS(XO_LOAD_TAIL)
#undef XO_LOAD_TAIL
  }
  XO_NT_STORE(0) XO_NT_STORE(1) XO_NT_STORE(2) XO_NT_STORE(3)
  XO_NT_STORE(4) XO_NT_STORE(5) XO_NT_STORE(6) XO_NT_STORE(7)
}

typedef void (*xo_vnni512_nt_fn)(size_t k, const uint8_t *a, size_t lda, const int8_t *w,
                                 size_t ws, int32_t *acc);

#define XO_VNNI512_NT(MR, NT)                                                                  \
  static QP_TARGET_AVX512VNNI void xo_vnni512_nt##NT##_mr##MR(                                 \
      size_t k, const uint8_t *a, size_t lda, const int8_t *w, size_t ws, int32_t *acc) {      \
    xo_vnni512_nt_body(MR, NT, k, a, lda, w, ws, acc);                                         \
  }
#define XO_VNNI512_NT_ROWS(NT)                                                                 \
  XO_VNNI512_NT(1, NT) XO_VNNI512_NT(2, NT) XO_VNNI512_NT(3, NT) XO_VNNI512_NT(4, NT)          \
  XO_VNNI512_NT(5, NT) XO_VNNI512_NT(6, NT) XO_VNNI512_NT(7, NT) XO_VNNI512_NT(8, NT)
XO_VNNI512_NT_ROWS(1)
XO_VNNI512_NT_ROWS(2)
XO_VNNI512_NT_ROWS(3)

#define XO_NT_FNS(NT)                                                                          \
  {xo_vnni512_nt##NT##_mr1, xo_vnni512_nt##NT##_mr2, xo_vnni512_nt##NT##_mr3,                  \
   xo_vnni512_nt##NT##_mr4, xo_vnni512_nt##NT##_mr5, xo_vnni512_nt##NT##_mr6,                  \
   xo_vnni512_nt##NT##_mr7, xo_vnni512_nt##NT##_mr8}
static const xo_vnni512_nt_fn xo_vnni512_nt_table[3][8] = {XO_NT_FNS(1), XO_NT_FNS(2),
                                                                    XO_NT_FNS(3)};

static void x86_onednn_qu8_gemm_ukernel_8x48c4__avx512vnni(size_t mr, size_t nt, size_t k,
                                                          const uint8_t *a, size_t lda,
                                                          const int8_t *w, size_t w_stride,
                                                          int32_t *acc) {
  xo_vnni512_nt_table[nt - 1][mr - 1](k, a, lda, w, w_stride, acc);
}

/* Indirect (igemm) form of the MRx(16*NT) kernel for convolutions: each row's K is `segs`
 * segments (one kernel row of kw*C contiguous NHWC bytes, padded to a multiple of 4) read
 * through a per-row pointer, so no im2col copy is made. The k-group loop inside a segment is
 * the one of xo_vnni512_nt_body. */
/* 4-tile accumulators of the indirect kernel (6 rows x 4 tiles = 24 zmm + 4 weights + 1
 * broadcast: each broadcast feeds 4 vpdpbusd, each weight load 6). */
#define XO_IND_DECL(R)                                                                         \
  __m512i c##R##_0 = _mm512_setzero_si512(), c##R##_1 = c##R##_0, c##R##_2 = c##R##_0,          \
          c##R##_3 = c##R##_0;
#define XO_IND_ROW(R)                                                                          \
  if (MR > R) {                                                                                \
    const __m512i b = _mm512_set1_epi32(xo_load_a4_full(a##R + o));                                 \
    XO_DPBUSD(c##R##_0, b, v0);                                                                \
    if (NT > 1) XO_DPBUSD(c##R##_1, b, v1);                                                    \
    if (NT > 2) XO_DPBUSD(c##R##_2, b, v2);                                                    \
    if (NT > 3) XO_DPBUSD(c##R##_3, b, v3);                                                    \
  }
#define XO_IND_STORE(R)                                                                        \
  if (MR > R) {                                                                                \
    _mm512_storeu_si512(acc + R * XO_NR, c##R##_0);                                            \
    if (NT > 1) _mm512_storeu_si512(acc + (XO_MR_MAX + R) * XO_NR, c##R##_1);                 \
    if (NT > 2) _mm512_storeu_si512(acc + (2 * XO_MR_MAX + R) * XO_NR, c##R##_2);             \
    if (NT > 3) _mm512_storeu_si512(acc + (3 * XO_MR_MAX + R) * XO_NR, c##R##_3);             \
  }

/* Indirect (igemm) kernel for convolutions, MR (<= 6) rows x NT (<= 4) tiles: each row's K
 * is `segs` segments (one kernel row of kw*C contiguous NHWC bytes, padded to a multiple of
 * 4) read through a per-row pointer, so no im2col copy is made. */
static inline __attribute__((always_inline)) QP_TARGET_AVX512VNNI void xo_vnni512_ind_body(
    const size_t MR, const size_t NT, size_t segs, size_t seg, const uint8_t *const *ptrs,
    const int8_t *w, size_t ws, int32_t *acc) {
  XO_IND_DECL(0) XO_IND_DECL(1) XO_IND_DECL(2) XO_IND_DECL(3) XO_IND_DECL(4) XO_IND_DECL(5)
  const size_t gps = seg / XO_KC;
  const int8_t *w1 = w + ws, *w2 = w + 2 * ws, *w3 = w + 3 * ws;
  size_t off = 0;
  for (size_t s = 0; s < segs; s++) {
    const uint8_t *const *ps = ptrs + s * XO_MR_MAX;
    /* unused rows repeat row 0 (never dereferenced for constant MR) */
    const uint8_t *a0 = ps[0], *a1 = MR > 1 ? ps[1] : a0, *a2 = MR > 2 ? ps[2] : a0;
    const uint8_t *a3 = MR > 3 ? ps[3] : a0, *a4 = MR > 4 ? ps[4] : a0, *a5 = MR > 5 ? ps[5] : a0;
#pragma GCC unroll 2
    for (size_t g = 0; g < gps; g++, off += XO_NR * XO_KC) {
      const __m512i v0 = _mm512_loadu_si512(w + off);
      const __m512i v1 = NT > 1 ? _mm512_loadu_si512(w1 + off) : v0;
      const __m512i v2 = NT > 2 ? _mm512_loadu_si512(w2 + off) : v0;
      const __m512i v3 = NT > 3 ? _mm512_loadu_si512(w3 + off) : v0;
      const size_t o = g * XO_KC;
      XO_IND_ROW(0) XO_IND_ROW(1) XO_IND_ROW(2) XO_IND_ROW(3) XO_IND_ROW(4) XO_IND_ROW(5)
    }
  }
  XO_IND_STORE(0) XO_IND_STORE(1) XO_IND_STORE(2) XO_IND_STORE(3) XO_IND_STORE(4)
  XO_IND_STORE(5)
}

typedef void (*xo_vnni512_ind_fn)(size_t segs, size_t seg, const uint8_t *const *ptrs,
                                  const int8_t *w, size_t ws, int32_t *acc);

#define XO_VNNI512_IND(MR, NT)                                                                 \
  static QP_TARGET_AVX512VNNI void xo_vnni512_ind##NT##_mr##MR(                                \
      size_t segs, size_t seg, const uint8_t *const *ptrs, const int8_t *w, size_t ws,         \
      int32_t *acc) {                                                                          \
    xo_vnni512_ind_body(MR, NT, segs, seg, ptrs, w, ws, acc);                                  \
  }
#define XO_VNNI512_IND_ROWS(NT)                                                                \
  XO_VNNI512_IND(1, NT) XO_VNNI512_IND(2, NT) XO_VNNI512_IND(3, NT) XO_VNNI512_IND(4, NT)      \
  XO_VNNI512_IND(5, NT) XO_VNNI512_IND(6, NT)
XO_VNNI512_IND_ROWS(1)
XO_VNNI512_IND_ROWS(2)
XO_VNNI512_IND_ROWS(3)
XO_VNNI512_IND_ROWS(4)

#define XO_IND_FNS(NT)                                                                         \
  {xo_vnni512_ind##NT##_mr1, xo_vnni512_ind##NT##_mr2, xo_vnni512_ind##NT##_mr3,               \
   xo_vnni512_ind##NT##_mr4, xo_vnni512_ind##NT##_mr5, xo_vnni512_ind##NT##_mr6}
static const xo_vnni512_ind_fn xo_vnni512_ind_table[4][6] = {XO_IND_FNS(1), XO_IND_FNS(2),
                                                              XO_IND_FNS(3), XO_IND_FNS(4)};

static void x86_onednn_qu8_igemm_ukernel_6x64c4__avx512vnni(size_t mr, size_t nt, size_t segs,
                                                           size_t seg, const uint8_t *const *ptrs,
                                                           const int8_t *w, size_t w_stride,
                                                           int32_t *acc) {
  xo_vnni512_ind_table[nt - 1][mr - 1](segs, seg, ptrs, w, w_stride, acc);
}

const xo_gemm_impl xo_impl_avx512vnni = {
    "x86_onednn_qu8_gemm_minmax_ukernel_8x16c4__avx512vnni",
    8,
    x86_onednn_qu8_gemm_ukernel_8x16c4__avx512vnni,
    xo_epilogue_avx512,
    xo_minmax_avx512,
    xo_quantize_avx512,
    x86_onednn_qu8_gemm_ukernel_8x48c4__avx512vnni,
    3,
    x86_onednn_qu8_igemm_ukernel_6x64c4__avx512vnni,
    6,
    4,
    x86_onednn_qu8_gemv_ukernel_2x32c4__avx512vnni,
    2,
    2,
};
#endif
