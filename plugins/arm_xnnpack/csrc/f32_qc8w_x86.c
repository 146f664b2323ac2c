/*
 * x86-64 f32-qc8w microkernels (4 rows x 16 channels, k in steps of 4): one
 * lane per output channel, so the fused multiply-adds run in k order exactly
 * as the scalar path (f32_qc8w.c). A 64-byte packed row holds 4 k of each of
 * the 16 channels in one 32-bit word per channel; k = p + q is that word's
 * byte q, sign-extended by shifting it to the top and back (vpslld/vpsrad).
 */
#include "xnnpack_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* Byte q of every 32-bit lane, sign-extended, as floats (Q a constant after inlining). */
#define XNN_BYTE_Q_PS256(v, Q) _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32((v), 24 - 8 * (Q)), 24))
#define XNN_BYTE_Q_PS512(v, Q) _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32((v), 24 - 8 * (Q)), 24))

/* ------------------------------------------------------------------ AVX2 -- */

__attribute__((always_inline)) QP_TARGET_AVX2 static inline void xnn_f32_qc8w_avx2_body(
    const size_t MR, size_t k, const float *x, size_t x_stride, const int8_t *w, float *acc) {
  __m256 c[XNN_F32_QC8W_MR][2];
  for (size_t r = 0; r < MR; r++) c[r][0] = c[r][1] = _mm256_setzero_ps();
  for (size_t p = 0; p < k; p += 4, w += 64) {
    const __m256i v0 = _mm256_loadu_si256((const __m256i *)w), v1 = _mm256_loadu_si256((const __m256i *)(w + 32));
    const size_t steps = k - p < 4 ? k - p : 4; /* the padded k of the last row are skipped, not multiplied */
#define XNN_STEP(Q)                                                                 \
  if ((Q) < steps) {                                                                \
    const __m256 w0 = XNN_BYTE_Q_PS256(v0, Q), w1 = XNN_BYTE_Q_PS256(v1, Q);        \
    for (size_t r = 0; r < MR; r++) {                                               \
      const __m256 xv = _mm256_broadcast_ss(x + r * x_stride + p + (Q));           \
      c[r][0] = _mm256_fmadd_ps(xv, w0, c[r][0]);                                   \
      c[r][1] = _mm256_fmadd_ps(xv, w1, c[r][1]);                                   \
    }                                                                               \
  }
    XNN_STEP(0) XNN_STEP(1) XNN_STEP(2) XNN_STEP(3)
#undef XNN_STEP
  }
  for (size_t r = 0; r < MR; r++) {
    _mm256_storeu_ps(acc + r * 16, c[r][0]);
    _mm256_storeu_ps(acc + r * 16 + 8, c[r][1]);
  }
}

QP_TARGET_AVX2 void xnn_f32_qc8w_ukernel_4x16c4__avx2(size_t mr, size_t k, const float *x, size_t x_stride,
                                                      const int8_t *w, float *acc) {
  XNN_DISPATCH_MR4(mr, xnn_f32_qc8w_avx2_body, k, x, x_stride, w, acc);
}

/* --------------------------------------------------------------- AVX-512 -- */

__attribute__((always_inline)) QP_TARGET_AVX512 static inline void xnn_f32_qc8w_avx512_body(
    const size_t MR, size_t k, const float *x, size_t x_stride, const int8_t *w, float *acc) {
  __m512 c[XNN_F32_QC8W_MR];
  for (size_t r = 0; r < MR; r++) c[r] = _mm512_setzero_ps();
  for (size_t p = 0; p < k; p += 4, w += 64) {
    const __m512i v = _mm512_loadu_si512(w);
    const size_t steps = k - p < 4 ? k - p : 4;
#define XNN_STEP(Q)                                                                          \
  if ((Q) < steps) {                                                                         \
    const __m512 wq = XNN_BYTE_Q_PS512(v, Q);                                                \
    for (size_t r = 0; r < MR; r++) c[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[r * x_stride + p + (Q)]), wq, c[r]); \
  }
    XNN_STEP(0) XNN_STEP(1) XNN_STEP(2) XNN_STEP(3)
#undef XNN_STEP
  }
  for (size_t r = 0; r < MR; r++) _mm512_storeu_ps(acc + r * 16, c[r]);
}

QP_TARGET_AVX512 void xnn_f32_qc8w_ukernel_4x16c4__avx512(size_t mr, size_t k, const float *x, size_t x_stride,
                                                          const int8_t *w, float *acc) {
  XNN_DISPATCH_MR4(mr, xnn_f32_qc8w_avx512_body, k, x, x_stride, w, acc);
}

#else
typedef int xnn_f32_qc8w_x86_unused; /* ISO C forbids an empty translation unit */
#endif
