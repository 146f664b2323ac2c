/*
 * AVX-512 VNNI GEMV microkernel: 1-2 activation rows x 1-2 weight tiles (16 columns each).
 *
 * A decode-style call (M = 1 or 2) streams the whole packed weight once, from L2 for a
 * 768x768 layer (0.6 MB), with one vpdpbusd per 64 weight bytes: the floor is the L2->L1
 * bandwidth, not arithmetic. The kernel only has to keep the loads flowing, which a single
 * accumulator per output block does not (each vpdpbusd waits ~4-5 cycles for the previous
 * one). So it keeps 8 independent chains: one row runs 2 tiles x 4 interleaved k-groups, two
 * rows run 2 tiles x 2 rows x 2 k-groups (each weight load feeds both rows), and the two
 * tiles are two sequential weight streams read side by side, which the hardware prefetcher
 * follows without software prefetches (measured: 512 B to 2 KB ahead gave no gain with the
 * weights in L2).
 * The chains are added at the end with wrapping int32 adds; addition modulo 2^32 is
 * associative, so the sums equal the scalar reference's bit for bit.
 */
#include "xo_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* Accumulator chains cRTJ: row R, tile T, k-group phase J. Unused ones are dead code once
 * MR / NT / KI are constants (named registers, not an array: see the 8x48 kernel). */
#define XO_GV_DECL(R, T)                                                                       \
  __m512i c##R##T##0 = _mm512_setzero_si512(), c##R##T##1 = c##R##T##0, c##R##T##2 = c##R##T##0, \
          c##R##T##3 = c##R##T##0;

/* k-group g + J (phase J) for every row and tile; LOAD(p, G) gives row p's 4 bytes of group G. */
#define XO_GV_GROUP(J, LOAD)                                                                   \
  if (KI > (J)) {                                                                              \
    const size_t off = (g + (J)) * (XO_NR * XO_KC);                                            \
    const __m512i v0 = _mm512_loadu_si512(w0 + off);                                           \
    const __m512i v1 = NT > 1 ? _mm512_loadu_si512(w1 + off) : v0;                             \
    const __m512i b0 = _mm512_set1_epi32(LOAD(a0, g + (J)));                                   \
    XO_DPBUSD(c00##J, b0, v0);                                                                 \
    if (NT > 1) XO_DPBUSD(c01##J, b0, v1);                                                     \
    if (MR > 1) {                                                                              \
      const __m512i b1 = _mm512_set1_epi32(LOAD(a1, g + (J)));                                 \
      XO_DPBUSD(c10##J, b1, v0);                                                               \
      if (NT > 1) XO_DPBUSD(c11##J, b1, v1);                                                   \
    }                                                                                          \
  }

#define XO_GV_SUM(R, T)                                                                        \
  _mm512_add_epi32(_mm512_add_epi32(c##R##T##0, c##R##T##1), _mm512_add_epi32(c##R##T##2, c##R##T##3))

static inline __attribute__((always_inline)) QP_TARGET_AVX512VNNI void xo_gemv_body(
    const size_t MR, const size_t NT, size_t k, const uint8_t *a, size_t lda, const int8_t *w,
    size_t ws, int32_t *acc) {
  /* k-groups in flight: 8 chains whatever the row count */
  const size_t KI = MR == 1 ? 4 : 2;
  XO_GV_DECL(0, 0) XO_GV_DECL(0, 1) XO_GV_DECL(1, 0) XO_GV_DECL(1, 1)
  const uint8_t *a0 = a, *a1 = MR > 1 ? a + lda : a;
  const int8_t *w0 = w, *w1 = NT > 1 ? w + ws : w;
  const size_t full = k / XO_KC, groups = (k + XO_KC - 1) / XO_KC;
  size_t g = 0;
#define XO_GV_FULL(p, G) xo_load_a4_full((p) + (G) * XO_KC)
  for (; g + KI <= full; g += KI) {
    XO_GV_GROUP(0, XO_GV_FULL) XO_GV_GROUP(1, XO_GV_FULL) XO_GV_GROUP(2, XO_GV_FULL)
    XO_GV_GROUP(3, XO_GV_FULL)
  }
#undef XO_GV_FULL
  /* the last < KI whole groups and the zero-filled partial group, on the phase-0 chains */
#define XO_GV_ANY(p, G) xo_load_a4((p), (G), k)
  for (; g < groups; g++) XO_GV_GROUP(0, XO_GV_ANY)
#undef XO_GV_ANY
  _mm512_storeu_si512(acc, XO_GV_SUM(0, 0));
  if (NT > 1) _mm512_storeu_si512(acc + XO_MR_MAX * XO_NR, XO_GV_SUM(0, 1));
  if (MR > 1) {
    _mm512_storeu_si512(acc + XO_NR, XO_GV_SUM(1, 0));
    if (NT > 1) _mm512_storeu_si512(acc + (XO_MR_MAX + 1) * XO_NR, XO_GV_SUM(1, 1));
  }
}

#define XO_GEMV(MR, NT)                                                                        \
  static QP_TARGET_AVX512VNNI void xo_gemv_mr##MR##_nt##NT(                                    \
      size_t k, const uint8_t *a, size_t lda, const int8_t *w, size_t ws, int32_t *acc) {      \
    xo_gemv_body(MR, NT, k, a, lda, w, ws, acc);                                               \
  }
XO_GEMV(1, 1)
XO_GEMV(1, 2)
XO_GEMV(2, 1)
XO_GEMV(2, 2)

/* acc layout as ukernel_nt: acc[t * XO_MR_MAX * XO_NR + r * XO_NR + c]. mr 1..2, nt 1..2. */
void x86_onednn_qu8_gemv_ukernel_2x32c4__avx512vnni(size_t mr, size_t nt, size_t k,
                                                    const uint8_t *a, size_t lda, const int8_t *w,
                                                    size_t w_stride, int32_t *acc) {
  if (mr == 1) {
    if (nt == 1) xo_gemv_mr1_nt1(k, a, lda, w, w_stride, acc);
    else xo_gemv_mr1_nt2(k, a, lda, w, w_stride, acc);
  } else {
    if (nt == 1) xo_gemv_mr2_nt1(k, a, lda, w, w_stride, acc);
    else xo_gemv_mr2_nt2(k, a, lda, w, w_stride, acc);
  }
}
#endif
