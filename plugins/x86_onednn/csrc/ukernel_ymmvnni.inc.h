/*
 * 256-bit VNNI microkernel 4x16c4, included twice:
 *   ukernel_avxvnni.c       VEX-encoded AVX-VNNI (Alder Lake+, Zen 5): the real path
 *   ukernel_avx512vnni_ymm.c EVEX-encoded AVX512-VL VNNI: the same source, runnable
 *                           on AVX-512 VNNI CPUs so the AVX-VNNI logic is tested there
 * The includer defines XO_YMM_TARGET, XO_YMM_DPBUSD, XO_YMM_PREFIX(name) and
 * XO_YMM_NAME.
 */
static inline __attribute__((always_inline)) XO_YMM_TARGET void XO_YMM_PREFIX(body)(
    const size_t MR, size_t k, const uint8_t *a, size_t lda, const int8_t *w, int32_t *acc) {
  __m256i c0[4], c1[4];
  for (size_t r = 0; r < MR; r++) c0[r] = c1[r] = _mm256_setzero_si256();
  const size_t groups = (k + XO_KC - 1) / XO_KC, full = k / XO_KC;
  size_t g = 0;
  for (; g < groups; g++) {
    const int8_t *wg = w + g * (XO_NR * XO_KC);
    const __m256i w0 = _mm256_loadu_si256((const __m256i *)wg);
    const __m256i w1 = _mm256_loadu_si256((const __m256i *)(wg + 32));
    for (size_t r = 0; r < MR; r++) {
      int32_t a4;
      if (QP_LIKELY(g < full))
        memcpy(&a4, a + r * lda + g * XO_KC, 4);
      else
        a4 = xo_load_a4(a + r * lda, g, k);
      const __m256i av = _mm256_set1_epi32(a4);
      c0[r] = XO_YMM_DPBUSD(c0[r], av, w0);
      c1[r] = XO_YMM_DPBUSD(c1[r], av, w1);
    }
  }
  for (size_t r = 0; r < MR; r++) {
    _mm256_storeu_si256((__m256i *)(acc + r * XO_NR), c0[r]);
    _mm256_storeu_si256((__m256i *)(acc + r * XO_NR + 8), c1[r]);
  }
}

static XO_YMM_TARGET void XO_YMM_PREFIX(mr1)(size_t k, const uint8_t *a, size_t lda, const int8_t *w, int32_t *acc) {
  XO_YMM_PREFIX(body)(1, k, a, lda, w, acc);
}
static XO_YMM_TARGET void XO_YMM_PREFIX(mr2)(size_t k, const uint8_t *a, size_t lda, const int8_t *w, int32_t *acc) {
  XO_YMM_PREFIX(body)(2, k, a, lda, w, acc);
}
static XO_YMM_TARGET void XO_YMM_PREFIX(mr3)(size_t k, const uint8_t *a, size_t lda, const int8_t *w, int32_t *acc) {
  XO_YMM_PREFIX(body)(3, k, a, lda, w, acc);
}
static XO_YMM_TARGET void XO_YMM_PREFIX(mr4)(size_t k, const uint8_t *a, size_t lda, const int8_t *w, int32_t *acc) {
  XO_YMM_PREFIX(body)(4, k, a, lda, w, acc);
}

static void XO_YMM_PREFIX(ukernel)(size_t mr, size_t k, const uint8_t *a, size_t lda,
                                   const int8_t *w, int32_t *acc) {
  switch (mr) {
    case 1: XO_YMM_PREFIX(mr1)(k, a, lda, w, acc); break;
    case 2: XO_YMM_PREFIX(mr2)(k, a, lda, w, acc); break;
    case 3: XO_YMM_PREFIX(mr3)(k, a, lda, w, acc); break;
    default: XO_YMM_PREFIX(mr4)(k, a, lda, w, acc); break;
  }
}
