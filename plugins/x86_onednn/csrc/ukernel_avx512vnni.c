/*
 * AVX-512 VNNI path: vpdpbusd multiplies 4 uint8 activations by 4 int8
 * weights and adds the 4 products to an int32 lane in one instruction,
 * without intermediate saturation (the non-"s" form). Microkernel 8x16c4: one
 * zmm of weights per k-group (16 columns x 4 k), the row's 4 activation bytes
 * broadcast as one dword, 8 accumulator rows. Epilogue, min/max and quantize
 * are the AVX-512 ones.
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

const xo_gemm_impl xo_impl_avx512vnni = {
    "x86_onednn_qu8_gemm_minmax_ukernel_8x16c4__avx512vnni",
    8,
    x86_onednn_qu8_gemm_ukernel_8x16c4__avx512vnni,
    xo_epilogue_avx512,
    xo_minmax_avx512,
    xo_quantize_avx512,
};
#endif
