/*
 * x86-64 f32-qb4w microkernels, in the canonical order of qb4w.c (one lane
 * per output channel, fused multiply-adds in k order within a group):
 *   AVX-512  up to 8 rows x 32 channels (2 blocks; 4 blocks with one row),
 *            and a panel kernel for 9..64 rows x 32 channels;
 *   AVX2     up to 4 rows x 16 channels (1 block; 2 blocks with one row).
 * Each 64-byte packed row holds 8 k of a 16-channel block; the weights of one
 * k are unpacked once into a vector and used by every row of the tile (the
 * M-blocking: unpack cost / MR per FMA). The panel kernel goes further: it
 * unpacks a whole group of 32 channels to fp32 in an L1 buffer once and runs
 * every 8-row tile of the panel over it (at M = 32, -7% time vs the register
 * kernel alone). The group sums of a tile stay in registers; the running
 * totals live in `res` (L1), touched once per group.
 * Row and block counts are compile-time constants in each instantiation, so
 * a one-row call does one row of work.
 */
#include "xnnpack_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* ------------------------------------------------------------------ AVX2 -- */

/* k = 8 kb + Q of 8 channels: shift nibble Q to the top of each 32-bit word, then arithmetic
 * shift back (sign extension from 4 bits), then convert; exact, so any unpack gives the same
 * floats. Q is a literal (shift counts must be immediates at -O0). */
#define XNN_QB4W_AVX2_W(v, Q) _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32((v), 28 - 4 * (Q)), 28))

__attribute__((always_inline)) QP_TARGET_AVX2 static inline void xnn_qb4w_avx2_body(
    const size_t MR, const size_t NB, size_t k, size_t group_size, const float *x, size_t x_stride,
    const uint8_t *w, size_t w_block_stride, const float *scales, size_t s_block_stride, float *res) {
  XNN_UNROLL
  for (size_t r = 0; r < MR; r++)
    XNN_UNROLL
    for (size_t j = 0; j < NB * 16; j += 8) _mm256_storeu_ps(res + r * XNN_QB4W_NR_MAX + j, _mm256_setzero_ps());
  for (size_t g0 = 0; g0 < k; g0 += group_size) {
    __m256 acc[XNN_QB4W_MR_MAX][XNN_QB4W_NB_MAX][2];
    XNN_UNROLL
    for (size_t r = 0; r < MR; r++)
      XNN_UNROLL
      for (size_t b = 0; b < NB; b++) acc[r][b][0] = acc[r][b][1] = _mm256_setzero_ps();
    for (size_t p = g0; p < g0 + group_size; p += 8) {
      __m256i v[XNN_QB4W_NB_MAX][2];
      XNN_UNROLL
      for (size_t b = 0; b < NB; b++) {
        v[b][0] = _mm256_loadu_si256((const __m256i *)(w + b * w_block_stride + p * 8));
        v[b][1] = _mm256_loadu_si256((const __m256i *)(w + b * w_block_stride + p * 8 + 32));
      }
#define XNN_STEP(Q)                                                                       \
  XNN_UNROLL                                                                              \
  for (size_t b = 0; b < NB; b++) {                                                       \
    const __m256 w0 = XNN_QB4W_AVX2_W(v[b][0], Q), w1 = XNN_QB4W_AVX2_W(v[b][1], Q);      \
    XNN_UNROLL                                                                            \
    for (size_t r = 0; r < MR; r++) {                                                     \
      const __m256 xv = _mm256_broadcast_ss(x + r * x_stride + p + (Q));                  \
      acc[r][b][0] = _mm256_fmadd_ps(xv, w0, acc[r][b][0]);                               \
      acc[r][b][1] = _mm256_fmadd_ps(xv, w1, acc[r][b][1]);                               \
    }                                                                                     \
  }
      XNN_STEP(0) XNN_STEP(1) XNN_STEP(2) XNN_STEP(3) XNN_STEP(4) XNN_STEP(5) XNN_STEP(6) XNN_STEP(7)
#undef XNN_STEP
    }
    const float *sg = scales + (g0 / group_size) * 16;
    XNN_UNROLL
    for (size_t b = 0; b < NB; b++)
      XNN_UNROLL
      for (size_t h = 0; h < 2; h++) {
        const __m256 s = _mm256_loadu_ps(sg + b * s_block_stride + h * 8);
        XNN_UNROLL
        for (size_t r = 0; r < MR; r++) {
          float *t = res + r * XNN_QB4W_NR_MAX + b * 16 + h * 8;
          _mm256_storeu_ps(t, _mm256_fmadd_ps(acc[r][b][h], s, _mm256_loadu_ps(t)));
        }
      }
  }
}

QP_TARGET_AVX2 void xnn_f32_qb4w_ukernel_4x16__avx2(size_t mr, size_t nb, size_t k, size_t group_size,
                                                    const float *x, size_t x_stride, const uint8_t *w,
                                                    size_t w_block_stride, const float *scales, size_t s_block_stride,
                                                    float *res) {
  XNN_QB4W_DISPATCH_4X16(xnn_qb4w_avx2_body)
}

/* --------------------------------------------------------------- AVX-512 -- */

/* k = 8 kb + Q of 16 channels: vpermps reads only the low 4 bits of each index, so one shift
 * (none for Q = 0) and a 16-entry table lookup (nibble -> its signed value as a float) replace
 * the shift / sign-extend / convert of AVX2, which does not have a 16-entry float permute. */
#define XNN_QB4W_AVX512_W(v, Q, lut) \
  _mm512_permutexvar_ps((Q) == 0 ? (v) : _mm512_srli_epi32((v), 4 * (Q)), (lut))

__attribute__((always_inline)) QP_TARGET_AVX512 static inline void xnn_qb4w_avx512_body(
    const size_t MR, const size_t NB, size_t k, size_t group_size, const float *x, size_t x_stride,
    const uint8_t *w, size_t w_block_stride, const float *scales, size_t s_block_stride, float *res) {
  const __m512 lut = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1);
  XNN_UNROLL
  for (size_t r = 0; r < MR; r++)
    XNN_UNROLL
    for (size_t b = 0; b < NB; b++) _mm512_storeu_ps(res + r * XNN_QB4W_NR_MAX + b * 16, _mm512_setzero_ps());
  for (size_t g0 = 0; g0 < k; g0 += group_size) {
    __m512 acc[XNN_QB4W_MR_MAX][XNN_QB4W_NB_MAX];
    XNN_UNROLL
    for (size_t r = 0; r < MR; r++)
      XNN_UNROLL
      for (size_t b = 0; b < NB; b++) acc[r][b] = _mm512_setzero_ps();
    for (size_t p = g0; p < g0 + group_size; p += 8) {
      __m512i v[XNN_QB4W_NB_MAX];
      XNN_UNROLL
      for (size_t b = 0; b < NB; b++) v[b] = _mm512_loadu_si512(w + b * w_block_stride + p * 8);
#define XNN_STEP(Q)                                                                            \
  {                                                                                            \
    __m512 wq[XNN_QB4W_NB_MAX];                                                                \
    XNN_UNROLL                                                                                 \
    for (size_t b = 0; b < NB; b++) wq[b] = XNN_QB4W_AVX512_W(v[b], Q, lut);                   \
    XNN_UNROLL                                                                                 \
    for (size_t r = 0; r < MR; r++) {                                                          \
      const __m512 xv = _mm512_set1_ps(x[r * x_stride + p + (Q)]);                             \
      XNN_UNROLL                                                                               \
      for (size_t b = 0; b < NB; b++) acc[r][b] = _mm512_fmadd_ps(xv, wq[b], acc[r][b]);       \
    }                                                                                          \
  }
      XNN_STEP(0) XNN_STEP(1) XNN_STEP(2) XNN_STEP(3) XNN_STEP(4) XNN_STEP(5) XNN_STEP(6) XNN_STEP(7)
#undef XNN_STEP
    }
    const float *sg = scales + (g0 / group_size) * 16;
    XNN_UNROLL
    for (size_t b = 0; b < NB; b++) {
      const __m512 s = _mm512_loadu_ps(sg + b * s_block_stride);
      XNN_UNROLL
      for (size_t r = 0; r < MR; r++) {
        float *t = res + r * XNN_QB4W_NR_MAX + b * 16;
        _mm512_storeu_ps(t, _mm512_fmadd_ps(acc[r][b], s, _mm512_loadu_ps(t)));
      }
    }
  }
}

QP_TARGET_AVX512 void xnn_f32_qb4w_ukernel_8x32__avx512(size_t mr, size_t nb, size_t k, size_t group_size,
                                                        const float *x, size_t x_stride, const uint8_t *w,
                                                        size_t w_block_stride, const float *scales,
                                                        size_t s_block_stride, float *res) {
  if (mr > 1 && nb == 2) {
    XNN_DISPATCH_MR8(mr, xnn_qb4w_avx512_body, 2, k, group_size, x, x_stride, w, w_block_stride, scales,
                     s_block_stride, res)
    return;
  }
  /* One row at a time: the one-row tile (decode, nb <= 4), or a lone last block of an odd block
   * count (a sliver of the work: not worth seven more instantiations with nb = 1). */
  for (size_t r = 0; r < mr; r++) {
    const float *xr = x + r * x_stride;
    float *rr = res + r * XNN_QB4W_NR_MAX;
#define XNN_ROW(NB) \
  xnn_qb4w_avx512_body(1, NB, k, group_size, xr, x_stride, w, w_block_stride, scales, s_block_stride, rr)
    switch (nb) {
      case 1: XNN_ROW(1); break;
      case 2: XNN_ROW(2); break;
      case 3: XNN_ROW(3); break;
      default: XNN_ROW(4); break;
    }
#undef XNN_ROW
  }
}

/* The 32 channels (2 blocks) x group_size k of one group as fp32, wbuf[p][32] (p from the group
 * start): the k loop of the panel then loads two ready vectors per k. */
QP_TARGET_AVX512 static void xnn_qb4w_unpack_group_avx512(const uint8_t *w, size_t w_block_stride, size_t g0,
                                                          size_t group_size, float *wbuf) {
  const __m512 lut = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1);
  for (size_t p = 0; p < group_size; p += 8)
    for (size_t b = 0; b < XNN_QB4W_PANEL_NB; b++) {
      const __m512i v = _mm512_loadu_si512(w + b * w_block_stride + (g0 + p) * 8);
      float *dst = wbuf + p * 32 + b * 16;
#define XNN_STEP(Q) _mm512_store_ps(dst + (Q) * 32, XNN_QB4W_AVX512_W(v, Q, lut));
      XNN_STEP(0) XNN_STEP(1) XNN_STEP(2) XNN_STEP(3) XNN_STEP(4) XNN_STEP(5) XNN_STEP(6) XNN_STEP(7)
#undef XNN_STEP
    }
}

/* MR rows x 32 channels over one unpacked group: res[r] = fma(group sum, scale, res[r]). */
__attribute__((always_inline)) QP_TARGET_AVX512 static inline void xnn_qb4w_avx512_group_rows(
    const size_t MR, size_t group_size, const float *x, size_t x_stride, const float *wbuf, const float *sg,
    size_t s_block_stride, float *res) {
  __m512 acc[XNN_QB4W_MR_MAX][2];
  XNN_UNROLL
  for (size_t r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (size_t p = 0; p < group_size; p++) {
    const __m512 w0 = _mm512_load_ps(wbuf + p * 32), w1 = _mm512_load_ps(wbuf + p * 32 + 16);
    XNN_UNROLL
    for (size_t r = 0; r < MR; r++) {
      const __m512 xv = _mm512_set1_ps(x[r * x_stride + p]);
      acc[r][0] = _mm512_fmadd_ps(xv, w0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(xv, w1, acc[r][1]);
    }
  }
  XNN_UNROLL
  for (size_t b = 0; b < 2; b++) {
    const __m512 s = _mm512_loadu_ps(sg + b * s_block_stride);
    XNN_UNROLL
    for (size_t r = 0; r < MR; r++) {
      float *t = res + r * XNN_QB4W_NR_MAX + b * 16;
      _mm512_storeu_ps(t, _mm512_fmadd_ps(acc[r][b], s, _mm512_loadu_ps(t)));
    }
  }
}

QP_TARGET_AVX512 void xnn_f32_qb4w_panel_8x32__avx512(size_t m, size_t k, size_t group_size, const float *x,
                                                      size_t x_stride, const uint8_t *w, size_t w_block_stride,
                                                      const float *scales, size_t s_block_stride, float *res) {
  /* 16 KB at group 128: stays in L1 next to the few rows of x being read */
  float wbuf[128 * 32] __attribute__((aligned(64)));
  for (size_t r = 0; r < m; r++) memset(res + r * XNN_QB4W_NR_MAX, 0, 32 * sizeof(float));
  const size_t tiles = (m + XNN_QB4W_MR_MAX - 1) / XNN_QB4W_MR_MAX, rows = (m + tiles - 1) / tiles;
  for (size_t g0 = 0; g0 < k; g0 += group_size) {
    xnn_qb4w_unpack_group_avx512(w, w_block_stride, g0, group_size, wbuf);
    const float *sg = scales + (g0 / group_size) * 16;
    for (size_t m0 = 0; m0 < m; m0 += rows) {
      const size_t mr = xnn_min(rows, m - m0);
      XNN_DISPATCH_MR8(mr, xnn_qb4w_avx512_group_rows, group_size, x + m0 * x_stride + g0, x_stride, wbuf, sg,
                       s_block_stride, res + m0 * XNN_QB4W_NR_MAX)
    }
  }
}

#else
typedef int xnn_qb4w_x86_unused; /* ISO C forbids an empty translation unit */
#endif
