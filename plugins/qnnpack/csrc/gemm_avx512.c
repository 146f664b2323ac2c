/*
 * AVX-512 paths (Skylake-X and later: F+BW+VL), 8 rows x 16 channels.
 *
 *  avx512     : vpmovzxbw + vpmaddwd, exact 16x16->32 products (as AVX2,
 *               one 16-channel block in two zmm accumulators per row;
 *               activations widened to uint16 once per call).
 *  avx512vnni : vpdpbusd, four uint8 x int8 products per int32 lane in one
 *               instruction. The packed weights are the uint8 operand as
 *               they are; activations become the int8 operand by flipping
 *               their sign bit (x - 128, once per call, so the kernel
 *               broadcasts them from memory), and 128 * sum_k w[n][k] is
 *               added back: the result is the same uint8 x uint8 dot product.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#include "qnnpack_internal.h"

#define QNNPACK_AVX512_MR 8

/* Rows: uint16 copies of the activations (QNNPACK_XPREP_WIDEN16), K padded to 4. */
QP_TARGET_AVX512 static void qnnpack_qu8_gemm_ukernel_8x16c4__avx512skx(
    size_t mr, size_t k, const uint8_t *const *a, const uint8_t *w, const int32_t *wsum,
    int32_t *acc) {
  (void)mr;
  (void)wsum;
  __m512i lo0 = _mm512_setzero_si512(), hi0 = lo0, lo1 = lo0, hi1 = lo0, lo2 = lo0, hi2 = lo0;
  __m512i lo3 = lo0, hi3 = lo0, lo4 = lo0, hi4 = lo0, lo5 = lo0, hi5 = lo0;
  __m512i lo6 = lo0, hi6 = lo0, lo7 = lo0, hi7 = lo0;
  const uint8_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
  const uint8_t *a4 = a[4], *a5 = a[5], *a6 = a[6], *a7 = a[7];
#define QNNPACK_SKX_ROW(P, LO, HI)                                \
  do {                                                            \
    int64_t xv;                                                   \
    memcpy(&xv, (P) + 2 * kk, 8);                                 \
    const __m512i x = _mm512_set1_epi64(xv);                      \
    LO = _mm512_add_epi32(LO, _mm512_madd_epi16(x, w0));          \
    HI = _mm512_add_epi32(HI, _mm512_madd_epi16(x, w1));          \
  } while (0)
  for (size_t kk = 0; kk < k; kk += QNNPACK_KR) {
    const __m512i w0 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)w));
    const __m512i w1 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(w + 32)));
    QNNPACK_SKX_ROW(a0, lo0, hi0);
    QNNPACK_SKX_ROW(a1, lo1, hi1);
    QNNPACK_SKX_ROW(a2, lo2, hi2);
    QNNPACK_SKX_ROW(a3, lo3, hi3);
    QNNPACK_SKX_ROW(a4, lo4, hi4);
    QNNPACK_SKX_ROW(a5, lo5, hi5);
    QNNPACK_SKX_ROW(a6, lo6, hi6);
    QNNPACK_SKX_ROW(a7, lo7, hi7);
    w += QNNPACK_NR * QNNPACK_KR;
  }
#undef QNNPACK_SKX_ROW
  /* lanes: ch0 k01, ch0 k23, ch1 k01, ... ch7 k23 (lo) and ch8..15 (hi). */
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
#define QNNPACK_SKX_REDUCE(LO, HI, ROW)                                                \
  do {                                                                                 \
    const __m512i s = _mm512_add_epi32(_mm512_permutex2var_epi32(LO, even, HI),        \
                                       _mm512_permutex2var_epi32(LO, odd, HI));        \
    int32_t *dst = acc + (ROW) * QNNPACK_NR;                                           \
    _mm512_storeu_si512(dst, _mm512_add_epi32(_mm512_loadu_si512(dst), s));           \
  } while (0)
  QNNPACK_SKX_REDUCE(lo0, hi0, 0);
  QNNPACK_SKX_REDUCE(lo1, hi1, 1);
  QNNPACK_SKX_REDUCE(lo2, hi2, 2);
  QNNPACK_SKX_REDUCE(lo3, hi3, 3);
  QNNPACK_SKX_REDUCE(lo4, hi4, 4);
  QNNPACK_SKX_REDUCE(lo5, hi5, 5);
  QNNPACK_SKX_REDUCE(lo6, hi6, 6);
  QNNPACK_SKX_REDUCE(lo7, hi7, 7);
#undef QNNPACK_SKX_REDUCE
}

/* Rows: activations with the sign bit flipped (QNNPACK_XPREP_FLIP, x - 128
 * as int8), K padded to 4, broadcast by vpdpbusd straight from memory. */
/* One row (M = 1, decode-like calls): four independent accumulators over consecutive groups
 * hide vpdpbusd's latency; the 8-row kernel would compute 8 rows to use one. */
QP_TARGET_AVX512VNNI static void qnnpack_qu8_gemm_ukernel_1x16c4__avx512vnni(
    size_t k, const uint8_t *a0, const uint8_t *w, __m512i corr, int32_t *acc) {
  __m512i c0 = _mm512_add_epi32(_mm512_loadu_si512(acc), corr);
  __m512i c1 = _mm512_setzero_si512(), c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
  const size_t step = QNNPACK_NR * QNNPACK_KR;
  size_t kk = 0;
#define QNNPACK_B1(P) _mm512_set1_epi32((int32_t)qnnpack_load_u32(P))
  for (; kk + 4 * QNNPACK_KR <= k; kk += 4 * QNNPACK_KR, w += 4 * step) {
    c0 = _mm512_dpbusd_epi32(c0, _mm512_loadu_si512(w), QNNPACK_B1(a0 + kk));
    c1 = _mm512_dpbusd_epi32(c1, _mm512_loadu_si512(w + step), QNNPACK_B1(a0 + kk + 4));
    c2 = _mm512_dpbusd_epi32(c2, _mm512_loadu_si512(w + 2 * step), QNNPACK_B1(a0 + kk + 8));
    c3 = _mm512_dpbusd_epi32(c3, _mm512_loadu_si512(w + 3 * step), QNNPACK_B1(a0 + kk + 12));
  }
  for (; kk < k; kk += QNNPACK_KR, w += step)
    c0 = _mm512_dpbusd_epi32(c0, _mm512_loadu_si512(w), QNNPACK_B1(a0 + kk));
#undef QNNPACK_B1
  /* int32 adds wrap, so the split sum equals the single-chain one bit for bit */
  _mm512_storeu_si512(acc, _mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)));
}

/* Keep c0..c7 in the registers vpdpbusd updates in place. Without it GCC 12 copies every
 * accumulator to a scratch register and back on each step of the requantizing kernel (16
 * vmovdqa per 8 vpdpbusd in objdump; none with it). The copies are cheap next to a stalled
 * weight load, so this is about instruction count, not a measured speedup. */
#define QNNPACK_PIN_ACC8() \
  __asm__("" : "+v"(c0), "+v"(c1), "+v"(c2), "+v"(c3), "+v"(c4), "+v"(c5), "+v"(c6), "+v"(c7))

/* Software prefetch distance (bytes) of the weight stream of the 8-row VNNI loop. With few row
 * tiles (M = 8 at K = N = 4096) every call streams 16 MB of weights that do not fit in L2, and
 * the hardware prefetcher alone kept the loop waiting on the weight load (perf annotate: half
 * the samples on the instruction after it): 8x4096x4096 took 1.8-2.0 ms without the prefetch,
 * 0.66-0.96 ms with it (same build otherwise; CPU time of the calling thread as
 * `python benchmarks/bench_linear_cpu_time.py qnnpack --m 8` measures it, on a loaded machine).
 * 2 KB as in the fbgemm plugin's wide kernel. Prefetches never fault, past the panel too. */
#define QNNPACK_PF_DIST 2048

/* The 8x16 VNNI main loop over c0..c7 (in scope): shared by the kernels below, which differ
 * only in how the accumulators start and end. */
#define QNNPACK_VNNI_8X16_LOOP(a, w, k)                                                        \
  do {                                                                                         \
    const uint8_t *a0 = (a)[0], *a1 = (a)[1], *a2 = (a)[2], *a3 = (a)[3];                      \
    const uint8_t *a4 = (a)[4], *a5 = (a)[5], *a6 = (a)[6], *a7 = (a)[7];                      \
    const uint8_t *wp = (w);                                                                   \
    for (size_t kk = 0; kk < (k); kk += QNNPACK_KR, wp += QNNPACK_NR * QNNPACK_KR) {           \
      const __m512i wv = _mm512_loadu_si512(wp);                                               \
      _mm_prefetch((const char *)wp + QNNPACK_PF_DIST, _MM_HINT_T0);                          \
      c0 = _mm512_dpbusd_epi32(c0, wv, _mm512_set1_epi32((int32_t)qnnpack_load_u32(a0 + kk))); \
      c1 = _mm512_dpbusd_epi32(c1, wv, _mm512_set1_epi32((int32_t)qnnpack_load_u32(a1 + kk))); \
      c2 = _mm512_dpbusd_epi32(c2, wv, _mm512_set1_epi32((int32_t)qnnpack_load_u32(a2 + kk))); \
      c3 = _mm512_dpbusd_epi32(c3, wv, _mm512_set1_epi32((int32_t)qnnpack_load_u32(a3 + kk))); \
      c4 = _mm512_dpbusd_epi32(c4, wv, _mm512_set1_epi32((int32_t)qnnpack_load_u32(a4 + kk))); \
      c5 = _mm512_dpbusd_epi32(c5, wv, _mm512_set1_epi32((int32_t)qnnpack_load_u32(a5 + kk))); \
      c6 = _mm512_dpbusd_epi32(c6, wv, _mm512_set1_epi32((int32_t)qnnpack_load_u32(a6 + kk))); \
      c7 = _mm512_dpbusd_epi32(c7, wv, _mm512_set1_epi32((int32_t)qnnpack_load_u32(a7 + kk))); \
      QNNPACK_PIN_ACC8();                                                                      \
    }                                                                                          \
  } while (0)

/* The same loop over the first 8 channels of each 16-channel group with 256-bit vpdpbusd, for a
 * block that holds at most 8 output channels (the last block of N = 24, the 144 -> 24 pointwise
 * conv of MobileNet): on this core a 512-bit vpdpbusd costs two 256-bit ones, so the 16-wide
 * loop spent half of such a block's time on channels that are never stored. Channel j's four
 * K bytes are bytes 4j..4j+3 of the group's 64, so channels 0..7 are its low 32 bytes. d0..d7
 * (__m256i) in scope. */
#define QNNPACK_VNNI_8X8_LOOP(a, w, k)                                                         \
  do {                                                                                         \
    const uint8_t *a0 = (a)[0], *a1 = (a)[1], *a2 = (a)[2], *a3 = (a)[3];                      \
    const uint8_t *a4 = (a)[4], *a5 = (a)[5], *a6 = (a)[6], *a7 = (a)[7];                      \
    const uint8_t *wp = (w);                                                                   \
    for (size_t kk = 0; kk < (k); kk += QNNPACK_KR, wp += QNNPACK_NR * QNNPACK_KR) {           \
      const __m256i wv = _mm256_loadu_si256((const __m256i *)wp);                              \
      d0 = _mm256_dpbusd_epi32(d0, wv, _mm256_set1_epi32((int32_t)qnnpack_load_u32(a0 + kk))); \
      d1 = _mm256_dpbusd_epi32(d1, wv, _mm256_set1_epi32((int32_t)qnnpack_load_u32(a1 + kk))); \
      d2 = _mm256_dpbusd_epi32(d2, wv, _mm256_set1_epi32((int32_t)qnnpack_load_u32(a2 + kk))); \
      d3 = _mm256_dpbusd_epi32(d3, wv, _mm256_set1_epi32((int32_t)qnnpack_load_u32(a3 + kk))); \
      d4 = _mm256_dpbusd_epi32(d4, wv, _mm256_set1_epi32((int32_t)qnnpack_load_u32(a4 + kk))); \
      d5 = _mm256_dpbusd_epi32(d5, wv, _mm256_set1_epi32((int32_t)qnnpack_load_u32(a5 + kk))); \
      d6 = _mm256_dpbusd_epi32(d6, wv, _mm256_set1_epi32((int32_t)qnnpack_load_u32(a6 + kk))); \
      d7 = _mm256_dpbusd_epi32(d7, wv, _mm256_set1_epi32((int32_t)qnnpack_load_u32(a7 + kk))); \
      __asm__("" : "+v"(d0), "+v"(d1), "+v"(d2), "+v"(d3), "+v"(d4), "+v"(d5), "+v"(d6), "+v"(d7)); \
    }                                                                                          \
  } while (0)

/* c0..c7 = the 8x16 loop from c0..c7, or, when nc <= 8, the 8x8 loop from their low halves
 * (upper lanes zero: never stored, see the masked stores of the callers). */
#define QNNPACK_VNNI_8XNC_LOOP(nc, a, w, k)                                                    \
  do {                                                                                         \
    if ((nc) > 8) {                                                                            \
      QNNPACK_VNNI_8X16_LOOP(a, w, k);                                                         \
      break;                                                                                   \
    }                                                                                          \
    __m256i d0 = _mm512_castsi512_si256(c0), d1 = _mm512_castsi512_si256(c1);                  \
    __m256i d2 = _mm512_castsi512_si256(c2), d3 = _mm512_castsi512_si256(c3);                  \
    __m256i d4 = _mm512_castsi512_si256(c4), d5 = _mm512_castsi512_si256(c5);                  \
    __m256i d6 = _mm512_castsi512_si256(c6), d7 = _mm512_castsi512_si256(c7);                  \
    QNNPACK_VNNI_8X8_LOOP(a, w, k);                                                            \
    c0 = _mm512_zextsi256_si512(d0), c1 = _mm512_zextsi256_si512(d1);                          \
    c2 = _mm512_zextsi256_si512(d2), c3 = _mm512_zextsi256_si512(d3);                          \
    c4 = _mm512_zextsi256_si512(d4), c5 = _mm512_zextsi256_si512(d5);                          \
    c6 = _mm512_zextsi256_si512(d6), c7 = _mm512_zextsi256_si512(d7);                          \
  } while (0)

QP_TARGET_AVX512VNNI static void qnnpack_qu8_gemm_ukernel_8x16c4__avx512vnni(
    size_t mr, size_t k, const uint8_t *const *a, const uint8_t *w, const int32_t *wsum,
    int32_t *acc) {
  /* dpbusd(w, x - 128) = dot(w, x) - 128 * wsum: start from acc + 128 * wsum. */
  const __m512i corr = _mm512_slli_epi32(_mm512_loadu_si512(wsum), 7);
  if (mr == 1) {
    qnnpack_qu8_gemm_ukernel_1x16c4__avx512vnni(k, a[0], w, corr, acc);
    return;
  }
  __m512i c0 = _mm512_add_epi32(_mm512_loadu_si512(acc + 0 * QNNPACK_NR), corr);
  __m512i c1 = _mm512_add_epi32(_mm512_loadu_si512(acc + 1 * QNNPACK_NR), corr);
  __m512i c2 = _mm512_add_epi32(_mm512_loadu_si512(acc + 2 * QNNPACK_NR), corr);
  __m512i c3 = _mm512_add_epi32(_mm512_loadu_si512(acc + 3 * QNNPACK_NR), corr);
  __m512i c4 = _mm512_add_epi32(_mm512_loadu_si512(acc + 4 * QNNPACK_NR), corr);
  __m512i c5 = _mm512_add_epi32(_mm512_loadu_si512(acc + 5 * QNNPACK_NR), corr);
  __m512i c6 = _mm512_add_epi32(_mm512_loadu_si512(acc + 6 * QNNPACK_NR), corr);
  __m512i c7 = _mm512_add_epi32(_mm512_loadu_si512(acc + 7 * QNNPACK_NR), corr);
  QNNPACK_VNNI_8X16_LOOP(a, w, k);
  _mm512_storeu_si512(acc + 0 * QNNPACK_NR, c0);
  _mm512_storeu_si512(acc + 1 * QNNPACK_NR, c1);
  _mm512_storeu_si512(acc + 2 * QNNPACK_NR, c2);
  _mm512_storeu_si512(acc + 3 * QNNPACK_NR, c3);
  _mm512_storeu_si512(acc + 4 * QNNPACK_NR, c4);
  _mm512_storeu_si512(acc + 5 * QNNPACK_NR, c5);
  _mm512_storeu_si512(acc + 6 * QNNPACK_NR, c6);
  _mm512_storeu_si512(acc + 7 * QNNPACK_NR, c7);
}

/* Per-row dynamic full tile (qnnpack_gemm_rows_fn): the 8x16 VNNI loop between the
 * acc_init_rows and dequant_rows arithmetic, with the accumulators kept in registers. */
QP_TARGET_AVX512VNNI static void qnnpack_qu8_gemm_rows_8x16c4__avx512vnni(
    size_t nc, size_t k, const uint8_t *const *a, const uint8_t *w, const qnnpack_rows_tile *t,
    float *out, size_t out_stride) {
  const __m512i vw = _mm512_loadu_si512(t->wsum), vz = _mm512_loadu_si512(t->wzp);
  /* 128 * wsum undoes the sign flip of the activations (see the 8x16 kernel) */
  const __m512i corr = _mm512_slli_epi32(vw, 7);
#define QNNPACK_RI(I)                                                                          \
  _mm512_sub_epi32(corr, _mm512_add_epi32(_mm512_mullo_epi32(vw, _mm512_set1_epi32(t->rzp[I])), \
                                          _mm512_mullo_epi32(vz, _mm512_set1_epi32((int32_t)t->xsum[I]))))
  __m512i c0 = QNNPACK_RI(0), c1 = QNNPACK_RI(1), c2 = QNNPACK_RI(2), c3 = QNNPACK_RI(3);
  __m512i c4 = QNNPACK_RI(4), c5 = QNNPACK_RI(5), c6 = QNNPACK_RI(6), c7 = QNNPACK_RI(7);
#undef QNNPACK_RI
  QNNPACK_VNNI_8XNC_LOOP(nc, a, w, k);
  const __m512 vs = _mm512_loadu_ps(t->wscale), vb = _mm512_loadu_ps(t->bias);
  const __mmask16 mask = (__mmask16)((1u << nc) - 1u);
#define QNNPACK_RO(I, C)                                                                     \
  do {                                                                                       \
    const __m512 s = _mm512_mul_ps(_mm512_set1_ps(t->rscale[I]), vs);                        \
    __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(C), s);                                      \
    QNNPACK_NO_CONTRACT(p);                                                                  \
    _mm512_mask_storeu_ps(out + (I) * out_stride, mask, _mm512_add_ps(p, vb));               \
  } while (0)
  QNNPACK_RO(0, c0);
  QNNPACK_RO(1, c1);
  QNNPACK_RO(2, c2);
  QNNPACK_RO(3, c3);
  QNNPACK_RO(4, c4);
  QNNPACK_RO(5, c5);
  QNNPACK_RO(6, c6);
  QNNPACK_RO(7, c7);
#undef QNNPACK_RO
}

/* Static full tile (qnnpack_gemm_requant_fn): acc_init, the 8x16 VNNI loop and the
 * requantization of qnnpack_qu8_requant_avx512, the accumulators kept in registers (at small
 * K, e.g. a 1x1 conv over 144 channels, the separate init / requant passes over a tile's
 * accumulators in memory cost a quarter of the time). */
QP_TARGET_AVX512VNNI static void qnnpack_qu8_gemm_requant_8x16c4__avx512vnni(
    size_t nc, size_t k, const uint8_t *const *a, const uint8_t *w, const qnnpack_requant_tile *t,
    uint8_t *out, size_t out_stride) {
  const __m512i vz = _mm512_loadu_si512(t->wzp);
  /* + 128 * wsum undoes the sign flip of the activations (see the 8x16 kernel) */
  const __m512i base = _mm512_add_epi32(_mm512_loadu_si512(t->cbias),
                                        _mm512_slli_epi32(_mm512_loadu_si512(t->wsum), 7));
#define QNNPACK_SI(I) _mm512_sub_epi32(base, _mm512_mullo_epi32(vz, _mm512_set1_epi32((int32_t)t->xsum[I])))
  __m512i c0 = QNNPACK_SI(0), c1 = QNNPACK_SI(1), c2 = QNNPACK_SI(2), c3 = QNNPACK_SI(3);
  __m512i c4 = QNNPACK_SI(4), c5 = QNNPACK_SI(5), c6 = QNNPACK_SI(6), c7 = QNNPACK_SI(7);
#undef QNNPACK_SI
  QNNPACK_VNNI_8XNC_LOOP(nc, a, w, k);
  const __m512 flo = _mm512_set1_ps((float)(t->qmin - t->out_zp));
  const __m512 fhi = _mm512_set1_ps((float)(t->qmax - t->out_zp));
  const __m512i vzp = _mm512_set1_epi32(t->out_zp);
  const __m512 vm = _mm512_loadu_ps(t->mult);
  const __mmask16 mask = (__mmask16)((1u << nc) - 1u);
#define QNNPACK_RQ(I, C)                                                                      \
  do {                                                                                        \
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(C), vm);                                      \
    v = _mm512_min_ps(_mm512_max_ps(v, flo), fhi);                                            \
    const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), vzp);                           \
    _mm_mask_storeu_epi8(out + (I) * out_stride, mask, _mm512_cvtusepi32_epi8(q));            \
  } while (0)
  QNNPACK_RQ(0, c0);
  QNNPACK_RQ(1, c1);
  QNNPACK_RQ(2, c2);
  QNNPACK_RQ(3, c3);
  QNNPACK_RQ(4, c4);
  QNNPACK_RQ(5, c5);
  QNNPACK_RQ(6, c6);
  QNNPACK_RQ(7, c7);
#undef QNNPACK_RQ
}

/* A tile's starting accumulators: one vector op per row instead of 16 scalar ones. */
QP_TARGET_AVX512 static void qnnpack_qu8_acc_init_avx512(size_t mr, const int32_t *cbias,
                                                         const int32_t *wzp, const uint32_t *xsum,
                                                         int32_t *acc) {
  const __m512i vb = _mm512_loadu_si512(cbias), vz = _mm512_loadu_si512(wzp);
  for (size_t i = 0; i < mr; i++)
    _mm512_storeu_si512(acc + i * QNNPACK_NR,
                        _mm512_sub_epi32(vb, _mm512_mullo_epi32(vz, _mm512_set1_epi32((int32_t)xsum[i]))));
}

QP_TARGET_AVX512 static void qnnpack_qu8_acc_init_rows_avx512(size_t mr, const int32_t *wsum,
                                                              const int32_t *wzp,
                                                              const int32_t *rzp,
                                                              const uint32_t *xsum, int32_t *acc) {
  const __m512i vw = _mm512_loadu_si512(wsum), vz = _mm512_loadu_si512(wzp);
  for (size_t i = 0; i < mr; i++) {
    const __m512i t = _mm512_add_epi32(_mm512_mullo_epi32(vw, _mm512_set1_epi32(rzp[i])),
                                       _mm512_mullo_epi32(vz, _mm512_set1_epi32((int32_t)xsum[i])));
    _mm512_storeu_si512(acc + i * QNNPACK_NR, _mm512_sub_epi32(_mm512_setzero_si512(), t));
  }
}

QP_TARGET_AVX512 static void qnnpack_qu8_dequant_rows_avx512(size_t mr, size_t nc,
                                                             const int32_t *acc,
                                                             const float *rscale,
                                                             const float *wscale,
                                                             const float *bias, float *out,
                                                             size_t out_stride) {
  const __m512 vw = _mm512_loadu_ps(wscale), vb = _mm512_loadu_ps(bias);
  const __mmask16 mask = (__mmask16)((1u << nc) - 1u);
  for (size_t i = 0; i < mr; i++) {
    const __m512 s = _mm512_mul_ps(_mm512_set1_ps(rscale[i]), vw);
    __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(acc + i * QNNPACK_NR)), s);
    QNNPACK_NO_CONTRACT(p);
    _mm512_mask_storeu_ps(out + i * out_stride, mask, _mm512_add_ps(p, vb));
  }
}

QP_TARGET_AVX512 static void qnnpack_qu8_requant_avx512(size_t mr, size_t nc, const int32_t *acc,
                                                        const float *mult, int32_t out_zp,
                                                        int32_t qmin, int32_t qmax, uint8_t *out,
                                                        size_t out_stride) {
  const __m512 flo = _mm512_set1_ps((float)(qmin - out_zp));
  const __m512 fhi = _mm512_set1_ps((float)(qmax - out_zp));
  const __m512i vzp = _mm512_set1_epi32(out_zp);
  const __m512 vm = _mm512_loadu_ps(mult);
  const __mmask16 mask = (__mmask16)((1u << nc) - 1u);
  for (size_t i = 0; i < mr; i++) {
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(acc + i * QNNPACK_NR)), vm);
    v = _mm512_min_ps(_mm512_max_ps(v, flo), fhi);
    const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), vzp);
    _mm_mask_storeu_epi8(out + i * out_stride, mask, _mm512_cvtusepi32_epi8(q));
  }
}

QP_TARGET_AVX512 static void qnnpack_qu8_dequant_avx512(size_t mr, size_t nc, const int32_t *acc,
                                                        const float *scale, const float *bias,
                                                        float *out, size_t out_stride) {
  const __m512 vs = _mm512_loadu_ps(scale), vb = _mm512_loadu_ps(bias);
  const __mmask16 mask = (__mmask16)((1u << nc) - 1u);
  for (size_t i = 0; i < mr; i++) {
    __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(acc + i * QNNPACK_NR)), vs);
    QNNPACK_NO_CONTRACT(p);
    const __m512 v = _mm512_add_ps(p, vb);
    _mm512_mask_storeu_ps(out + i * out_stride, mask, v);
  }
}

QP_TARGET_AVX512 static void qnnpack_qu8_quant_avx512(const float *x, size_t n, float inv_scale,
                                                      int32_t zp, uint8_t *out) {
  const __m512 vinv = _mm512_set1_ps(inv_scale);
  const __m512 flo = _mm512_set1_ps((float)(0 - zp)), fhi = _mm512_set1_ps((float)(255 - zp));
  const __m512i vzp = _mm512_set1_epi32(zp);
  for (size_t i = 0; i < n; i += 16) {
    const size_t len = n - i < 16 ? n - i : 16;
    const __mmask16 mask = (__mmask16)((1u << len) - 1u);
    __m512 v = _mm512_maskz_loadu_ps(mask, x + i);
    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v); /* NaN -> 0 -> zp */
    v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, vinv), flo), fhi);
    const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), vzp);
    _mm_mask_storeu_epi8(out + i, mask, _mm512_cvtusepi32_epi8(q));
  }
}

QP_TARGET_AVX512 static void qnnpack_f32_minmax_avx512(const float *x, size_t n, float *lo,
                                                       float *hi) {
  __m512 vmin = _mm512_set1_ps(*lo), vmax = _mm512_set1_ps(*hi);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    vmin = _mm512_min_ps(v, vmin); /* 2nd operand wins when one is NaN */
    vmax = _mm512_max_ps(v, vmax);
  }
  float mn[16], mx[16];
  _mm512_storeu_ps(mn, vmin);
  _mm512_storeu_ps(mx, vmax);
  float l = *lo, h = *hi;
  qnnpack_f32_minmax_scalar(mn, 16, &l, &h);
  qnnpack_f32_minmax_scalar(mx, 16, &l, &h);
  qnnpack_f32_minmax_scalar(x + i, n - i, &l, &h);
  *lo = l;
  *hi = h;
}

/* 32 channels per step (two zmm of int32), masked loads for the channel tail. */
/*
 * Two taps per vpmaddwd: the int16 values (x - x_zp) of taps t and t + 1 are interleaved with
 * their weights, so each int32 lane gets (x_t - zp) * w_t + (x_t1 - zp) * w_t1 in one
 * instruction (|each product| <= 255 * 255: the pair sum cannot saturate). unpacklo/hi work
 * inside 128-bit lanes, so `lo` holds channels 8L..8L+3 and `hi` 8L+4..8L+7 of lane L; one
 * two-source permute per 16 channels puts them back in order.
 */
/*
 * Depthwise run kernel: 32 channels at a time (masked for the last block), every pixel of the
 * run for that block before the next, so the block's interleaved weight pairs, bias and
 * multipliers stay in registers across the row. The bias (with the input zero point folded in
 * by the caller) starts the accumulators, the taps go in pairs through vpmaddwd (uint8 input
 * zero-extended to int16 times int16 weights in [-255, 255]: a pair sum fits int32), and the
 * requantization is the same float32 sequence as qnnpack_qu8_requant_avx512.
 * vpunpck{l,h}wd work within 128-bit lanes, so `lo` holds channels 8L..8L+3 of lane L and `hi`
 * channels 8L+4..8L+7: bias and multipliers are permuted to that order once per block, and
 * vpackssdw(lo, hi) puts the results back in channel order.
 */
#define QNNPACK_DW_PAIRS_MAX 13 /* taps whose weight pairs a block keeps (up to 5x5); more: the scalar kernel */

/* acc + madd(a, b): one vpdpwssd with VNNI (the same exact int32 sum), two instructions without */
#define QNNPACK_DW_MADD_SKX(acc, a, b) _mm512_add_epi32(acc, _mm512_madd_epi16(a, b))
#define QNNPACK_DW_MADD_VNNI(acc, a, b) _mm512_dpwssd_epi32(acc, a, b)

/* 32 uint8 channels widened to int16: a full block loads unmasked (the load folds into
 * vpmovzxbw), the last block masked so no byte past `channels` is read. */
#define QNNPACK_DW_LOAD_X(full, m, ptr) \
  _mm512_cvtepu8_epi16((full) ? _mm256_loadu_si256((const __m256i *)(ptr)) : _mm256_maskz_loadu_epi8(m, ptr))

/* One block of up to 32 channels (mask m; full: all 32) over the npix pixels of the run.
 * Inlined with constant taps / full, so the 3x3 case loses its branches. */
#define QNNPACK_DW_BLOCK_AVX512(NAME, TARGET, MADD)                                                         \
  static inline __attribute__((always_inline)) TARGET void NAME(                                          \
      size_t npix, size_t taps, int full, const uint8_t *const *x, size_t x_step, size_t c, __mmask32 m,  \
      const int16_t *w, size_t cstride, const qnnpack_dw_params *p, uint8_t *out, size_t out_step) {      \
    const __m512i zero = _mm512_setzero_si512();                                                          \
    const size_t pairs = (taps + 1) / 2;                                                                  \
    __m512i wl[QNNPACK_DW_PAIRS_MAX], wh[QNNPACK_DW_PAIRS_MAX];                                           \
    for (size_t j = 0; j < pairs; j++) {                                       \
      const __m512i w0 = _mm512_maskz_loadu_epi16(m, w + 2 * j * cstride + c);                            \
      const __m512i w1 =                                                                                  \
          2 * j + 1 < taps ? _mm512_maskz_loadu_epi16(m, w + (2 * j + 1) * cstride + c) : zero;           \
      wl[j] = _mm512_unpacklo_epi16(w0, w1);                                                              \
      wh[j] = _mm512_unpackhi_epi16(w0, w1);                                                              \
    }                                                                                                     \
    const __m512i idx_lo = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);   \
    const __m512i idx_hi = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31); \
    const __mmask16 m0 = (__mmask16)m, m1 = (__mmask16)(m >> 16);                                         \
    const __m512i b0 = _mm512_maskz_loadu_epi32(m0, p->bias + c);                                         \
    const __m512i b1 = _mm512_maskz_loadu_epi32(m1, p->bias + c + 16);                                    \
    const __m512 f0 = _mm512_maskz_loadu_ps(m0, p->mult + c), f1 = _mm512_maskz_loadu_ps(m1, p->mult + c + 16); \
    const __m512i blo = _mm512_permutex2var_epi32(b0, idx_lo, b1);                                        \
    const __m512i bhi = _mm512_permutex2var_epi32(b0, idx_hi, b1);                                        \
    const __m512 mlo = _mm512_permutex2var_ps(f0, idx_lo, f1), mhi = _mm512_permutex2var_ps(f0, idx_hi, f1); \
    const __m512 flo = _mm512_set1_ps((float)(p->qmin - p->out_zp));                                      \
    const __m512 fhi = _mm512_set1_ps((float)(p->qmax - p->out_zp));                                      \
    const __m512i vzp = _mm512_set1_epi32(p->out_zp);                                                     \
    for (size_t px = 0; px < npix; px++) {                                                                \
      const size_t off = px * x_step + c;                                                                 \
      __m512i lo = blo, hi = bhi;                                                                         \
      for (size_t j = 0; j < pairs; j++) {                                     \
        const __m512i x0 = QNNPACK_DW_LOAD_X(full, m, x[2 * j] + off);                                    \
        const __m512i x1 = 2 * j + 1 < taps ? QNNPACK_DW_LOAD_X(full, m, x[2 * j + 1] + off) : zero;      \
        lo = MADD(lo, _mm512_unpacklo_epi16(x0, x1), wl[j]);                                              \
        hi = MADD(hi, _mm512_unpackhi_epi16(x0, x1), wh[j]);                                              \
      }                                                                                                   \
      __m512 vlo = _mm512_mul_ps(_mm512_cvtepi32_ps(lo), mlo);                                            \
      __m512 vhi = _mm512_mul_ps(_mm512_cvtepi32_ps(hi), mhi);                                            \
      vlo = _mm512_min_ps(_mm512_max_ps(vlo, flo), fhi);                                                  \
      vhi = _mm512_min_ps(_mm512_max_ps(vhi, flo), fhi);                                                  \
      const __m512i qlo = _mm512_add_epi32(_mm512_cvtps_epi32(vlo), vzp);                                 \
      const __m512i qhi = _mm512_add_epi32(_mm512_cvtps_epi32(vhi), vzp);                                 \
      const __m256i q8 = _mm512_cvtepi16_epi8(_mm512_packs_epi32(qlo, qhi));                              \
      if (full)                                                                                           \
        _mm256_storeu_si256((__m256i *)(out + px * out_step + c), q8);                                    \
      else                                                                                                \
        _mm256_mask_storeu_epi8(out + px * out_step + c, m, q8);                                          \
    }                                                                                                     \
  }

/* The last 1..16 channels on 256 bits (half the work of a masked 512-bit block): the same
 * pairing, lanes of 8 channels (lo: 0-3 and 8-11, hi: 4-7 and 12-15). */
#define QNNPACK_DW_TAIL16_AVX512(NAME, TARGET, MADD)                                                        \
  static TARGET void NAME(size_t npix, size_t taps, const uint8_t *const *x, size_t x_step, size_t c,     \
                          __mmask16 m, const int16_t *w, size_t cstride, const qnnpack_dw_params *p,      \
                          uint8_t *out, size_t out_step) {                                                \
    const __m256i zero = _mm256_setzero_si256();                                                          \
    const size_t pairs = (taps + 1) / 2;                                                                  \
    __m256i wl[QNNPACK_DW_PAIRS_MAX], wh[QNNPACK_DW_PAIRS_MAX];                                           \
    for (size_t j = 0; j < pairs; j++) {                                                                  \
      const __m256i w0 = _mm256_maskz_loadu_epi16(m, w + 2 * j * cstride + c);                            \
      const __m256i w1 =                                                                                  \
          2 * j + 1 < taps ? _mm256_maskz_loadu_epi16(m, w + (2 * j + 1) * cstride + c) : zero;           \
      wl[j] = _mm256_unpacklo_epi16(w0, w1);                                                              \
      wh[j] = _mm256_unpackhi_epi16(w0, w1);                                                              \
    }                                                                                                     \
    const __m256i idx_lo = _mm256_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11);                                   \
    const __m256i idx_hi = _mm256_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15);                                 \
    const __mmask8 m0 = (__mmask8)m, m1 = (__mmask8)(m >> 8);                                             \
    const __m256i b0 = _mm256_maskz_loadu_epi32(m0, p->bias + c);                                         \
    const __m256i b1 = _mm256_maskz_loadu_epi32(m1, p->bias + c + 8);                                     \
    const __m256 f0 = _mm256_maskz_loadu_ps(m0, p->mult + c), f1 = _mm256_maskz_loadu_ps(m1, p->mult + c + 8); \
    const __m256i blo = _mm256_permutex2var_epi32(b0, idx_lo, b1);                                        \
    const __m256i bhi = _mm256_permutex2var_epi32(b0, idx_hi, b1);                                        \
    const __m256 mlo = _mm256_permutex2var_ps(f0, idx_lo, f1), mhi = _mm256_permutex2var_ps(f0, idx_hi, f1); \
    const __m256 flo = _mm256_set1_ps((float)(p->qmin - p->out_zp));                                      \
    const __m256 fhi = _mm256_set1_ps((float)(p->qmax - p->out_zp));                                      \
    const __m256i vzp = _mm256_set1_epi32(p->out_zp);                                                     \
    for (size_t px = 0; px < npix; px++) {                                                                \
      const size_t off = px * x_step + c;                                                                 \
      __m256i lo = blo, hi = bhi;                                                                         \
      for (size_t j = 0; j < pairs; j++) {                                                                \
        const __m256i x0 = _mm256_cvtepu8_epi16(_mm_maskz_loadu_epi8(m, x[2 * j] + off));                 \
        const __m256i x1 =                                                                                \
            2 * j + 1 < taps ? _mm256_cvtepu8_epi16(_mm_maskz_loadu_epi8(m, x[2 * j + 1] + off)) : zero;  \
        lo = MADD(lo, _mm256_unpacklo_epi16(x0, x1), wl[j]);                                              \
        hi = MADD(hi, _mm256_unpackhi_epi16(x0, x1), wh[j]);                                              \
      }                                                                                                   \
      __m256 vlo = _mm256_mul_ps(_mm256_cvtepi32_ps(lo), mlo);                                            \
      __m256 vhi = _mm256_mul_ps(_mm256_cvtepi32_ps(hi), mhi);                                            \
      vlo = _mm256_min_ps(_mm256_max_ps(vlo, flo), fhi);                                                  \
      vhi = _mm256_min_ps(_mm256_max_ps(vhi, flo), fhi);                                                  \
      const __m256i qlo = _mm256_add_epi32(_mm256_cvtps_epi32(vlo), vzp);                                 \
      const __m256i qhi = _mm256_add_epi32(_mm256_cvtps_epi32(vhi), vzp);                                 \
      _mm_mask_storeu_epi8(out + px * out_step + c, m, _mm256_cvtepi16_epi8(_mm256_packs_epi32(qlo, qhi))); \
    }                                                                                                     \
  }
#define QNNPACK_DW_MADD256_SKX(acc, a, b) _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
#define QNNPACK_DW_MADD256_VNNI(acc, a, b) _mm256_dpwssd_epi32(acc, a, b)

#define QNNPACK_DW_RUN_AVX512(NAME, BLOCK, TAIL16, TARGET)                                                          \
  TARGET static void NAME(size_t channels, size_t npix, size_t taps, const uint8_t *const *x,             \
                          size_t x_step, const int16_t *w, size_t cstride, const qnnpack_dw_params *p,    \
                          uint8_t *out, size_t out_step) {                                                \
    if (taps > 2 * QNNPACK_DW_PAIRS_MAX) {                                                                \
      qnnpack_qu8_dwconv_run__scalar(channels, npix, taps, x, x_step, w, cstride, p, out, out_step);      \
      return;                                                                                             \
    }                                                                                                     \
    size_t c = 0;                                                                                         \
    for (; c + 32 <= channels; c += 32) {                                                                 \
      if (taps == 9) /* 3x3 */                                                                            \
        BLOCK(npix, 9, 1, x, x_step, c, (__mmask32)0xFFFFFFFFu, w, cstride, p, out, out_step);            \
      else                                                                                                \
        BLOCK(npix, taps, 1, x, x_step, c, (__mmask32)0xFFFFFFFFu, w, cstride, p, out, out_step);         \
    }                                                                                                     \
    if (channels - c > 16) {                                                                              \
      const __mmask32 m = (__mmask32)((1u << (channels - c)) - 1u);                                       \
      if (taps == 9)                                                                                      \
        BLOCK(npix, 9, 0, x, x_step, c, m, w, cstride, p, out, out_step);                                 \
      else                                                                                                \
        BLOCK(npix, taps, 0, x, x_step, c, m, w, cstride, p, out, out_step);                              \
    } else if (c < channels) {                                                                            \
      TAIL16(npix, taps, x, x_step, c, (__mmask16)((1u << (channels - c)) - 1u), w, cstride, p, out, out_step); \
    }                                                                                                     \
  }

/* The block body lives in macros so the VNNI copy can use vpdpwssd (an intrinsic that only
 * compiles inside a VNNI target function). */
QNNPACK_DW_BLOCK_AVX512(qnnpack_dw_block_avx512skx, QP_TARGET_AVX512, QNNPACK_DW_MADD_SKX)
QNNPACK_DW_BLOCK_AVX512(qnnpack_dw_block_avx512vnni, QP_TARGET_AVX512VNNI, QNNPACK_DW_MADD_VNNI)
QNNPACK_DW_TAIL16_AVX512(qnnpack_dw_tail16_avx512skx, QP_TARGET_AVX512, QNNPACK_DW_MADD256_SKX)
QNNPACK_DW_TAIL16_AVX512(qnnpack_dw_tail16_avx512vnni, QP_TARGET_AVX512VNNI, QNNPACK_DW_MADD256_VNNI)
QNNPACK_DW_RUN_AVX512(qnnpack_qu8_dwconv_run__avx512skx, qnnpack_dw_block_avx512skx, qnnpack_dw_tail16_avx512skx,
                      QP_TARGET_AVX512)
QNNPACK_DW_RUN_AVX512(qnnpack_qu8_dwconv_run__avx512vnni, qnnpack_dw_block_avx512vnni,
                      qnnpack_dw_tail16_avx512vnni, QP_TARGET_AVX512VNNI)

/* ---- depthwise 3x3 by rows (driver and layout: conv.c, qnnpack_internal.h) ---- */

/* 16 channels of input column ix (counted from the left padding) as int32 lanes: x_zp in the
 * padding, 0 in lanes >= nc (masked load: no byte past the slice's channels is read). */
QP_TARGET_AVX512 static inline __m512i qnnpack_dw3_px(const uint8_t *row, size_t ix, size_t pw,
                                                      size_t in_w, size_t pix_stride, int full,
                                                      __mmask16 m, __m512i vzp) {
  if (ix < pw || ix - pw >= in_w) return vzp;
  const uint8_t *p = row + (ix - pw) * pix_stride;
  return _mm512_cvtepu8_epi32(full ? _mm_loadu_si128((const __m128i *)p) : _mm_maskz_loadu_epi8(m, p));
}

/* e0 | e1 << 8 | e2 << 16 (one vpternlogd for the two ors) */
#define QNNPACK_DW3_TRIPLE(e0, e1, e2) \
  _mm512_ternarylogic_epi32(e0, _mm512_slli_epi32(e1, 8), _mm512_slli_epi32(e2, 16), 0xFE)

QP_TARGET_AVX512 static void qnnpack_dw3_stage__avx512(const uint8_t *row, size_t in_w,
                                                       size_t pix_stride, size_t pw, size_t sw,
                                                       int quad, size_t n, size_t nc,
                                                       uint8_t x_zp, uint32_t *dst) {
  const __mmask16 m = (__mmask16)((1u << nc) - 1u);
  const int full = nc == 16;
  const __m512i vzp = _mm512_maskz_set1_epi32(m, x_zp);
  if (quad) { /* entry j = lo(j) | lo(j + 1) << 16 with lo(j) = column 2j | column 2j+1 << 8 */
    __m512i lo = _mm512_or_si512(qnnpack_dw3_px(row, 0, pw, in_w, pix_stride, full, m, vzp),
                                 _mm512_slli_epi32(qnnpack_dw3_px(row, 1, pw, in_w, pix_stride, full, m, vzp), 8));
    for (size_t j = 0; j < (n + 1) / 2; j++) {
      const __m512i e0 = qnnpack_dw3_px(row, 2 * j + 2, pw, in_w, pix_stride, full, m, vzp);
      const __m512i e1 = qnnpack_dw3_px(row, 2 * j + 3, pw, in_w, pix_stride, full, m, vzp);
      const __m512i next = _mm512_or_si512(e0, _mm512_slli_epi32(e1, 8));
      _mm512_storeu_si512((void *)(dst + j * 16), _mm512_or_si512(lo, _mm512_slli_epi32(next, 16)));
      lo = next;
    }
    return;
  }
  if (sw == 1) { /* sliding window: each input column is widened once */
    __m512i e0 = qnnpack_dw3_px(row, 0, pw, in_w, pix_stride, full, m, vzp);
    __m512i e1 = qnnpack_dw3_px(row, 1, pw, in_w, pix_stride, full, m, vzp);
    for (size_t i = 0; i < n; i++) {
      const __m512i e2 = qnnpack_dw3_px(row, i + 2, pw, in_w, pix_stride, full, m, vzp);
      _mm512_storeu_si512((void *)(dst + i * 16), QNNPACK_DW3_TRIPLE(e0, e1, e2));
      e0 = e1;
      e1 = e2;
    }
    return;
  }
  for (size_t i = 0; i < n; i++) {
    const size_t ix = i * sw;
    const __m512i e0 = qnnpack_dw3_px(row, ix, pw, in_w, pix_stride, full, m, vzp);
    const __m512i e1 = qnnpack_dw3_px(row, ix + 1, pw, in_w, pix_stride, full, m, vzp);
    const __m512i e2 = qnnpack_dw3_px(row, ix + 2, pw, in_w, pix_stride, full, m, vzp);
    _mm512_storeu_si512((void *)(dst + i * 16), QNNPACK_DW3_TRIPLE(e0, e1, e2));
  }
}

/* The accumulator of the pixel whose staged entries are at word xoff, weight phase ph: vpdpbusd
 * of the raw uint8 lanes (unsigned operand) with the int8 weights; split slices run the h and l
 * weights into two sums, 2 * h + l. Weight set st, phase ph, row r is w[(st * P + ph) * nv + r]. */
#define QNNPACK_DW3_ACC(xoff, ph)                                                                 \
  ({                                                                                              \
    __m512i acc_ = vinit;                                                                         \
    if (three) {                                                                                  \
      acc_ = _mm512_dpbusd_epi32(acc_, _mm512_loadu_si512((const void *)(r0 + (xoff))), w[3 * (ph)]);     \
      acc_ = _mm512_dpbusd_epi32(acc_, _mm512_loadu_si512((const void *)(r1 + (xoff))), w[3 * (ph) + 1]); \
      acc_ = _mm512_dpbusd_epi32(acc_, _mm512_loadu_si512((const void *)(r2 + (xoff))), w[3 * (ph) + 2]); \
    } else {                                                                                      \
      __m512i h_ = _mm512_setzero_si512();                                                        \
      for (size_t r_ = 0; r_ < nv; r_++) {                                                        \
        const __m512i x_ = _mm512_loadu_si512((const void *)(rows[r_] + (xoff)));                 \
        if (split) {                                                                              \
          h_ = _mm512_dpbusd_epi32(h_, x_, w[(ph) * nv + r_]);                                    \
          acc_ = _mm512_dpbusd_epi32(acc_, x_, w[(P + (ph)) * nv + r_]);                          \
        } else {                                                                                  \
          acc_ = _mm512_dpbusd_epi32(acc_, x_, w[(ph) * nv + r_]);                                \
        }                                                                                         \
      }                                                                                           \
      if (split) acc_ = _mm512_add_epi32(acc_, _mm512_slli_epi32(h_, 1));                         \
    }                                                                                             \
    acc_;                                                                                         \
  })
/* pixel i + k of a group (i a multiple of 4): its staged word offset and weight phase */
#define QNNPACK_DW3_XOFF(i, k) (quad ? ((i) / 2 + (k) / 2) * 16 : ((i) + (k)) * 16)
#define QNNPACK_DW3_PH(k) (quad ? (k) & 1 : 0)

/* cvt and multiply in float32 (as qnnpack_qu8_requant_avx512 does), the upper clamp in float32
 * unless the slice's |acc * mult| stays below 2**30 (FMIN = 0: then the clamp happens on the
 * bytes alone), then round to int32. With the float clamp every value is <= qmax - out_zp and
 * one far below the grid becomes INT32_MIN, which every later step keeps below qmin. */
#define QNNPACK_DW3_Q(a, FMIN)                                                       \
  _mm512_cvtps_epi32((FMIN) ? _mm512_min_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), vm), fhi) \
                            : _mm512_mul_ps(_mm512_cvtepi32_ps(a), vm))

/*
 * Four pixels' int32 results -> one vector of bytes, pixel k in 128-bit lane k: two vpackssdw
 * (saturating to int16 keeps every value's side of [0, 255]), the zero point added with int16
 * saturation, vpackuswb to [0, 255], one vpermd (the packs interleave 4-channel groups of the
 * pixels by 128-bit lane); the caller clamps to [qmin, qmax] on the bytes. Rounding commutes
 * with clamping to integer bounds, so this is qp_requantize bit for bit.
 */
#define QNNPACK_DW3_NARROW4(q0, q1, q2, q3)                                                      \
  _mm512_permutexvar_epi32(perm, _mm512_packus_epi16(_mm512_adds_epi16(_mm512_packs_epi32(q0, q1), vzp16), \
                                                     _mm512_adds_epi16(_mm512_packs_epi32(q2, q3), vzp16)))

/* Four pixels from pixel i on: accumulate, requantize, narrow; STORE(b) writes them. */
#define QNNPACK_DW3_GROUP4(i, CLAMP, STORE)                                                     \
  do {                                                                                          \
    const __m512i q0_ = QNNPACK_DW3_Q(QNNPACK_DW3_ACC(QNNPACK_DW3_XOFF(i, 0), QNNPACK_DW3_PH(0)), fmin); \
    const __m512i q1_ = QNNPACK_DW3_Q(QNNPACK_DW3_ACC(QNNPACK_DW3_XOFF(i, 1), QNNPACK_DW3_PH(1)), fmin); \
    const __m512i q2_ = QNNPACK_DW3_Q(QNNPACK_DW3_ACC(QNNPACK_DW3_XOFF(i, 2), QNNPACK_DW3_PH(2)), fmin); \
    const __m512i q3_ = QNNPACK_DW3_Q(QNNPACK_DW3_ACC(QNNPACK_DW3_XOFF(i, 3), QNNPACK_DW3_PH(3)), fmin); \
    __m512i b_ = QNNPACK_DW3_NARROW4(q0_, q1_, q2_, q3_);                                       \
    if (CLAMP) b_ = _mm512_min_epu8(_mm512_max_epu8(b_, vqmin), vqmax);                         \
    STORE(b_);                                                                                  \
  } while (0)
#define QNNPACK_DW3_STORE4_FULL(b)                                                              \
  do {                                                                                          \
    _mm_storeu_si128((__m128i *)o, _mm512_castsi512_si128(b));                                  \
    _mm_storeu_si128((__m128i *)(o + out_stride), _mm512_extracti32x4_epi32(b, 1));             \
    _mm_storeu_si128((__m128i *)(o + 2 * out_stride), _mm512_extracti32x4_epi32(b, 2));         \
    _mm_storeu_si128((__m128i *)(o + 3 * out_stride), _mm512_extracti32x4_epi32(b, 3));         \
  } while (0)
#define QNNPACK_DW3_STORE4_MASK(b)                                                              \
  do {                                                                                          \
    _mm_mask_storeu_epi8(o, m, _mm512_castsi512_si128(b));                                      \
    _mm_mask_storeu_epi8(o + out_stride, m, _mm512_extracti32x4_epi32(b, 1));                   \
    _mm_mask_storeu_epi8(o + 2 * out_stride, m, _mm512_extracti32x4_epi32(b, 2));               \
    _mm_mask_storeu_epi8(o + 3 * out_stride, m, _mm512_extracti32x4_epi32(b, 3));               \
  } while (0)

/* The body for one (layout, nv, split, clamp) case: constant folding leaves one straight loop. */
static inline __attribute__((always_inline)) QP_TARGET_AVX512VNNI void qnnpack_dw3_row_body(
    const uint32_t *const *rows, size_t n, const qnnpack_dw3_row_params *p, size_t nc,
    uint8_t *out, size_t out_stride, int quad, size_t nv, int split, int clamp, int fmin) {
  const int three = nv == 3 && !split;
  const size_t P = quad ? 2 : 1; /* weight phases */
  __m512i w[12];
  for (size_t r = 0; r < (split ? 2 : 1) * P * nv; r++)
    w[r] = _mm512_loadu_si512((const void *)(p->w + r * 16));
  const uint32_t *r0 = rows[0], *r1 = rows[nv > 1 ? 1 : 0], *r2 = rows[nv > 2 ? 2 : 0];
  const __m512i vinit = _mm512_loadu_si512((const void *)p->init);
  const __m512 vm = _mm512_loadu_ps(p->mult);
  const __m512 fhi = _mm512_set1_ps((float)(p->qmax - p->out_zp));
  const __m512i vzp16 = _mm512_set1_epi16((int16_t)p->out_zp);
  const __m512i vqmin = _mm512_set1_epi8((char)p->qmin), vqmax = _mm512_set1_epi8((char)p->qmax);
  const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __mmask16 m = (__mmask16)((1u << nc) - 1u);
  size_t i = 0;
  uint8_t *o = out;
  if (nc == 16) {
    for (; i + 4 <= n; i += 4, o += 4 * out_stride) QNNPACK_DW3_GROUP4(i, clamp, QNNPACK_DW3_STORE4_FULL);
  } else {
    for (; i + 4 <= n; i += 4, o += 4 * out_stride) QNNPACK_DW3_GROUP4(i, clamp, QNNPACK_DW3_STORE4_MASK);
  }
  if (i < n) { /* 1..3 pixels: the rows hold spare entries (zeros); extra results are not stored */
    __m512i b;
#define QNNPACK_DW3_KEEP(v) b = (v)
    QNNPACK_DW3_GROUP4(i, 1, QNNPACK_DW3_KEEP);
#undef QNNPACK_DW3_KEEP
    const __m128i lanes[4] = {_mm512_castsi512_si128(b), _mm512_extracti32x4_epi32(b, 1),
                              _mm512_extracti32x4_epi32(b, 2), _mm512_extracti32x4_epi32(b, 3)};
    for (size_t k = 0; i + k < n; k++) _mm_mask_storeu_epi8(o + k * out_stride, m, lanes[k]);
  }
}

QP_TARGET_AVX512VNNI static void qnnpack_dw3_row__avx512vnni(const uint32_t *const *rows,
                                                             size_t n,
                                                             const qnnpack_dw3_row_params *p,
                                                             size_t nc, uint8_t *out,
                                                             size_t out_stride) {
  const int clamp = p->qmin != 0 || p->qmax != 255; /* else vpackuswb's [0, 255] is the clamp */
#define QNNPACK_DW3_CASE(Q)                                                                 \
  do {                                                                                      \
    if (p->nv == 3 && !p->split) {                                                          \
      if (p->small && clamp)                                                                \
        qnnpack_dw3_row_body(rows, n, p, nc, out, out_stride, Q, 3, 0, 1, 0);               \
      else if (p->small)                                                                    \
        qnnpack_dw3_row_body(rows, n, p, nc, out, out_stride, Q, 3, 0, 0, 0);               \
      else                                                                                  \
        qnnpack_dw3_row_body(rows, n, p, nc, out, out_stride, Q, 3, 0, 1, 1);               \
    } else {                                                                                \
      qnnpack_dw3_row_body(rows, n, p, nc, out, out_stride, Q, p->nv, p->split, 1, 1);      \
    }                                                                                       \
  } while (0)
  if (p->quad)
    QNNPACK_DW3_CASE(1);
  else
    QNNPACK_DW3_CASE(0);
#undef QNNPACK_DW3_CASE
}
#undef QNNPACK_DW3_ACC
#undef QNNPACK_DW3_XOFF
#undef QNNPACK_DW3_PH
#undef QNNPACK_DW3_Q
#undef QNNPACK_DW3_NARROW4
#undef QNNPACK_DW3_GROUP4
#undef QNNPACK_DW3_STORE4_FULL
#undef QNNPACK_DW3_STORE4_MASK

QP_TARGET_AVX512 static void qnnpack_qu8_dwconv_ukernel_up32__avx512skx(
    size_t channels, size_t taps, const uint8_t *const *x, const int16_t *w, size_t cstride,
    int32_t x_zp, const int32_t *bias, int32_t *acc) {
  const __m512i vzp16 = _mm512_set1_epi16((int16_t)x_zp);
  const __m512i idx0 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i idx1 = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  const __m512i zero = _mm512_setzero_si512();
  size_t c = 0;
  for (; c + 32 <= channels; c += 32) {
    __m512i lo = zero, hi = zero;
    for (size_t t = 0; t < taps; t += 2) {
      const int pair = t + 1 < taps; /* an odd last tap pairs with zeros */
      const __m512i x0 = _mm512_sub_epi16(_mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(x[t] + c))), vzp16);
      const __m512i w0 = _mm512_loadu_si512(w + t * cstride + c);
      const __m512i x1 = pair ? _mm512_sub_epi16(_mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(x[t + 1] + c))), vzp16) : zero;
      const __m512i w1 = pair ? _mm512_loadu_si512(w + (t + 1) * cstride + c) : zero;
      lo = _mm512_add_epi32(lo, _mm512_madd_epi16(_mm512_unpacklo_epi16(x0, x1), _mm512_unpacklo_epi16(w0, w1)));
      hi = _mm512_add_epi32(hi, _mm512_madd_epi16(_mm512_unpackhi_epi16(x0, x1), _mm512_unpackhi_epi16(w0, w1)));
    }
    _mm512_storeu_si512(acc + c, _mm512_add_epi32(_mm512_loadu_si512(bias + c), _mm512_permutex2var_epi32(lo, idx0, hi)));
    _mm512_storeu_si512(acc + c + 16, _mm512_add_epi32(_mm512_loadu_si512(bias + c + 16), _mm512_permutex2var_epi32(lo, idx1, hi)));
  }
  /* the last 1..31 channels, 16 at a time with masked loads: the same pairing on 256 bits */
  const __m256i vzp16y = _mm256_set1_epi16((int16_t)x_zp), zeroy = _mm256_setzero_si256();
  const __m256i idxy = _mm256_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11);
  const __m256i idxy_hi = _mm256_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15);
  for (; c < channels; c += 16) {
    const size_t len = channels - c < 16 ? channels - c : 16;
    const __mmask16 mask = (__mmask16)((1u << len) - 1u);
    __m256i lo = zeroy, hi = zeroy;
    for (size_t t = 0; t < taps; t += 2) {
      const int pair = t + 1 < taps;
      const __m256i x0 = _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_maskz_loadu_epi8(mask, x[t] + c)), vzp16y);
      const __m256i w0 = _mm256_maskz_loadu_epi16(mask, w + t * cstride + c);
      const __m256i x1 = pair ? _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_maskz_loadu_epi8(mask, x[t + 1] + c)), vzp16y) : zeroy;
      const __m256i w1 = pair ? _mm256_maskz_loadu_epi16(mask, w + (t + 1) * cstride + c) : zeroy;
      lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), _mm256_unpacklo_epi16(w0, w1)));
      hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), _mm256_unpackhi_epi16(w0, w1)));
    }
    /* lo: channels 0-3 and 8-11, hi: 4-7 and 12-15 */
    const __m256i s0 = _mm256_permutex2var_epi32(lo, idxy, hi);    /* channels 0..7 */
    const __m256i s1 = _mm256_permutex2var_epi32(lo, idxy_hi, hi); /* channels 8..15 */
    const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(s0), s1, 1);
    _mm512_mask_storeu_epi32(acc + c, mask, _mm512_add_epi32(_mm512_maskz_loadu_epi32(mask, bias + c), v));
  }
}

QP_TARGET_AVX512 static void qnnpack_qu8_vadd_ukernel__avx512skx(size_t n, const uint8_t *a,
                                                                 const uint8_t *b,
                                                                 const qnnpack_add_params *p,
                                                                 uint8_t *out) {
  const __m512i azp = _mm512_set1_epi32(p->a_zp), bzp = _mm512_set1_epi32(p->b_zp);
  const __m512 as = _mm512_set1_ps(p->a_scale), bs = _mm512_set1_ps(p->b_scale);
  const __m512 inv = _mm512_set1_ps(p->inv_out);
  const __m512 flo = _mm512_set1_ps((float)(p->qmin - p->out_zp));
  const __m512 fhi = _mm512_set1_ps((float)(p->qmax - p->out_zp));
  const __m512i ozp = _mm512_set1_epi32(p->out_zp);
  for (size_t i = 0; i < n; i += 16) {
    const size_t len = n - i < 16 ? n - i : 16;
    const __mmask16 mask = (__mmask16)((1u << len) - 1u);
    const __m512i a32 = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, a + i)), azp);
    const __m512i b32 = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, b + i)), bzp);
    __m512 fa = _mm512_mul_ps(_mm512_cvtepi32_ps(a32), as), fb = _mm512_mul_ps(_mm512_cvtepi32_ps(b32), bs);
    QNNPACK_NO_CONTRACT(fa);
    QNNPACK_NO_CONTRACT(fb);
    const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_add_ps(fa, fb), inv), flo), fhi);
    _mm_mask_storeu_epi8(out + i, mask, _mm512_cvtusepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(v), ozp)));
  }
}

const qnnpack_isa_kernels qnnpack_kernels_avx512 = {
    .mr = QNNPACK_AVX512_MR,
    .add = qnnpack_qu8_vadd_ukernel__avx512skx,
    .mul = qnnpack_qu8_vmul_ukernel__avx2,
    .dwconv = qnnpack_qu8_dwconv_ukernel_up32__avx512skx,
    .dwconv_run = qnnpack_qu8_dwconv_run__avx512skx,
    .acc_init = qnnpack_qu8_acc_init_avx512,
    .xprep = QNNPACK_XPREP_WIDEN16,
    .gemm = qnnpack_qu8_gemm_ukernel_8x16c4__avx512skx,
    .requant = qnnpack_qu8_requant_avx512,
    .dequant = qnnpack_qu8_dequant_avx512,
    .acc_init_rows = qnnpack_qu8_acc_init_rows_avx512,
    .dequant_rows = qnnpack_qu8_dequant_rows_avx512,
    .quant = qnnpack_qu8_quant_avx512,
    .minmax = qnnpack_f32_minmax_avx512,
};

const qnnpack_isa_kernels qnnpack_kernels_avx512vnni = {
    .mr = QNNPACK_AVX512_MR,
    .add = qnnpack_qu8_vadd_ukernel__avx512skx,
    .mul = qnnpack_qu8_vmul_ukernel__avx2,
    .dwconv = qnnpack_qu8_dwconv_ukernel_up32__avx512skx,
    .dwconv_run = qnnpack_qu8_dwconv_run__avx512vnni,
    .dw3_stage = qnnpack_dw3_stage__avx512,
    .dw3_row = qnnpack_dw3_row__avx512vnni,
    .acc_init = qnnpack_qu8_acc_init_avx512,
    .xprep = QNNPACK_XPREP_FLIP,
    .gemm = qnnpack_qu8_gemm_ukernel_8x16c4__avx512vnni,
    .requant = qnnpack_qu8_requant_avx512,
    .dequant = qnnpack_qu8_dequant_avx512,
    .acc_init_rows = qnnpack_qu8_acc_init_rows_avx512,
    .dequant_rows = qnnpack_qu8_dequant_rows_avx512,
    .gemm_rows = qnnpack_qu8_gemm_rows_8x16c4__avx512vnni,
    .gemm_requant = qnnpack_qu8_gemm_requant_8x16c4__avx512vnni,
    .quant = qnnpack_qu8_quant_avx512,
    .minmax = qnnpack_f32_minmax_avx512,
};
#else
typedef int qnnpack_gemm_avx512_unused; /* ISO C forbids an empty translation unit */
#endif
