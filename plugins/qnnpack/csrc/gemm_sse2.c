/*
 * SSE2 path: the original QNNPACK x86 path. uint8 operands are widened to
 * 16 bits (punpcklbw with zero) and multiplied with pmaddwd, which sums
 * pairs of 16-bit products into int32 lanes (255 * 255 * 2 fits). x86-64
 * always has SSE2, so no target attribute is needed.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <emmintrin.h>
#include <string.h>

#include "qnnpack_internal.h"

/* 4 rows x 4 channels (one quarter of a packed block), c4 groups. */
static inline void qnnpack_qu8_gemm_ukernel_4x4c4__sse2(size_t k, const uint8_t *const *a,
                                                        const uint8_t *w, int32_t *acc) {
  const __m128i zero = _mm_setzero_si128();
  __m128i lo0 = zero, hi0 = zero, lo1 = zero, hi1 = zero;
  __m128i lo2 = zero, hi2 = zero, lo3 = zero, hi3 = zero;
  const uint8_t *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
  size_t kk = 0;
#define QNNPACK_SSE2_STEP(X0, X1, X2, X3)                                                  \
  do {                                                                                     \
    const __m128i vw = _mm_loadu_si128((const __m128i *)w);                                \
    const __m128i wlo = _mm_unpacklo_epi8(vw, zero); /* ch0 k0..3, ch1 k0..3 */            \
    const __m128i whi = _mm_unpackhi_epi8(vw, zero); /* ch2, ch3 */                        \
    __m128i x;                                                                             \
    x = _mm_unpacklo_epi8(_mm_cvtsi32_si128((int)(X0)), zero);                             \
    x = _mm_shuffle_epi32(x, _MM_SHUFFLE(1, 0, 1, 0));                                     \
    lo0 = _mm_add_epi32(lo0, _mm_madd_epi16(x, wlo));                                      \
    hi0 = _mm_add_epi32(hi0, _mm_madd_epi16(x, whi));                                      \
    x = _mm_unpacklo_epi8(_mm_cvtsi32_si128((int)(X1)), zero);                             \
    x = _mm_shuffle_epi32(x, _MM_SHUFFLE(1, 0, 1, 0));                                     \
    lo1 = _mm_add_epi32(lo1, _mm_madd_epi16(x, wlo));                                      \
    hi1 = _mm_add_epi32(hi1, _mm_madd_epi16(x, whi));                                      \
    x = _mm_unpacklo_epi8(_mm_cvtsi32_si128((int)(X2)), zero);                             \
    x = _mm_shuffle_epi32(x, _MM_SHUFFLE(1, 0, 1, 0));                                     \
    lo2 = _mm_add_epi32(lo2, _mm_madd_epi16(x, wlo));                                      \
    hi2 = _mm_add_epi32(hi2, _mm_madd_epi16(x, whi));                                      \
    x = _mm_unpacklo_epi8(_mm_cvtsi32_si128((int)(X3)), zero);                             \
    x = _mm_shuffle_epi32(x, _MM_SHUFFLE(1, 0, 1, 0));                                     \
    lo3 = _mm_add_epi32(lo3, _mm_madd_epi16(x, wlo));                                      \
    hi3 = _mm_add_epi32(hi3, _mm_madd_epi16(x, whi));                                      \
    w += QNNPACK_NR * QNNPACK_KR;                                                          \
  } while (0)
  for (; kk + QNNPACK_KR <= k; kk += QNNPACK_KR)
    QNNPACK_SSE2_STEP(qnnpack_load_u32(a0 + kk), qnnpack_load_u32(a1 + kk),
                      qnnpack_load_u32(a2 + kk), qnnpack_load_u32(a3 + kk));
  if (kk < k)
    QNNPACK_SSE2_STEP(qnnpack_load_tail4(a0 + kk, k - kk), qnnpack_load_tail4(a1 + kk, k - kk),
                      qnnpack_load_tail4(a2 + kk, k - kk), qnnpack_load_tail4(a3 + kk, k - kk));
#undef QNNPACK_SSE2_STEP
  /* lanes are (ch0 k01, ch0 k23, ch1 k01, ch1 k23): add the pairs. */
#define QNNPACK_SSE2_REDUCE(LO, HI, ROW)                                                       \
  do {                                                                                         \
    const __m128 l = _mm_castsi128_ps(LO), h = _mm_castsi128_ps(HI);                           \
    const __m128i even = _mm_castps_si128(_mm_shuffle_ps(l, h, _MM_SHUFFLE(2, 0, 2, 0)));      \
    const __m128i odd = _mm_castps_si128(_mm_shuffle_ps(l, h, _MM_SHUFFLE(3, 1, 3, 1)));       \
    __m128i *dst = (__m128i *)(acc + (ROW) * QNNPACK_NR);                                      \
    _mm_storeu_si128(dst, _mm_add_epi32(_mm_loadu_si128(dst), _mm_add_epi32(even, odd)));      \
  } while (0)
  QNNPACK_SSE2_REDUCE(lo0, hi0, 0);
  QNNPACK_SSE2_REDUCE(lo1, hi1, 1);
  QNNPACK_SSE2_REDUCE(lo2, hi2, 2);
  QNNPACK_SSE2_REDUCE(lo3, hi3, 3);
#undef QNNPACK_SSE2_REDUCE
}

/* A whole 16-channel block: four 4x4c4 passes over the quarter blocks. */
static void qnnpack_qu8_gemm_ukernel_4x16c4__sse2(size_t mr, size_t k, const uint8_t *const *a,
                                                  const uint8_t *w, const int32_t *wsum,
                                                  int32_t *acc) {
  (void)mr;
  (void)wsum;
  for (size_t s = 0; s < QNNPACK_NR / 4; s++)
    qnnpack_qu8_gemm_ukernel_4x4c4__sse2(k, a, w + 16 * s, acc + 4 * s);
}

/* Note the pointer walk above: w advances by 64 per group, and the quarter
 * offset 16 * s selects channels 4s..4s+3 inside each group. */

static void qnnpack_qu8_requant_sse2(size_t mr, size_t nc, const int32_t *acc, const float *mult,
                                     int32_t out_zp, int32_t qmin, int32_t qmax, uint8_t *out,
                                     size_t out_stride) {
  const __m128 flo = _mm_set1_ps((float)(qmin - out_zp));
  const __m128 fhi = _mm_set1_ps((float)(qmax - out_zp));
  const __m128i vzp = _mm_set1_epi32(out_zp);
  for (size_t i = 0; i < mr; i++) {
    __m128i q[4];
    for (int s = 0; s < 4; s++) {
      __m128 v = _mm_cvtepi32_ps(_mm_loadu_si128((const __m128i *)(acc + i * QNNPACK_NR + 4 * s)));
      v = _mm_mul_ps(v, _mm_loadu_ps(mult + 4 * s));
      v = _mm_min_ps(_mm_max_ps(v, flo), fhi);
      q[s] = _mm_add_epi32(_mm_cvtps_epi32(v), vzp);
    }
    const __m128i bytes = _mm_packus_epi16(_mm_packs_epi32(q[0], q[1]), _mm_packs_epi32(q[2], q[3]));
    if (nc == QNNPACK_NR) {
      _mm_storeu_si128((__m128i *)(out + i * out_stride), bytes);
    } else {
      uint8_t tmp[16];
      _mm_storeu_si128((__m128i *)tmp, bytes);
      memcpy(out + i * out_stride, tmp, nc);
    }
  }
}

static void qnnpack_qu8_dequant_sse2(size_t mr, size_t nc, const int32_t *acc, const float *scale,
                                     const float *bias, float *out, size_t out_stride) {
  for (size_t i = 0; i < mr; i++) {
    float tmp[16];
    for (int s = 0; s < 4; s++) {
      __m128 p = _mm_mul_ps(_mm_cvtepi32_ps(_mm_loadu_si128((const __m128i *)(acc + i * QNNPACK_NR + 4 * s))),
                            _mm_loadu_ps(scale + 4 * s));
      QNNPACK_NO_CONTRACT(p);
      _mm_storeu_ps(tmp + 4 * s, _mm_add_ps(p, _mm_loadu_ps(bias + 4 * s)));
    }
    memcpy(out + i * out_stride, tmp, nc * sizeof(float));
  }
}

static void qnnpack_qu8_quant_sse2(const float *x, size_t n, float inv_scale, int32_t zp,
                                   uint8_t *out) {
  const __m128 vinv = _mm_set1_ps(inv_scale);
  const __m128 flo = _mm_set1_ps((float)(0 - zp)), fhi = _mm_set1_ps((float)(255 - zp));
  const __m128i vzp = _mm_set1_epi32(zp);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m128i q[4];
    for (int s = 0; s < 4; s++) {
      __m128 v = _mm_loadu_ps(x + i + 4 * s);
      v = _mm_and_ps(v, _mm_cmpord_ps(v, v)); /* NaN -> 0, which quantizes to zp */
      v = _mm_min_ps(_mm_max_ps(_mm_mul_ps(v, vinv), flo), fhi);
      q[s] = _mm_add_epi32(_mm_cvtps_epi32(v), vzp);
    }
    _mm_storeu_si128((__m128i *)(out + i),
                     _mm_packus_epi16(_mm_packs_epi32(q[0], q[1]), _mm_packs_epi32(q[2], q[3])));
  }
  qnnpack_qu8_quant_scalar(x + i, n - i, inv_scale, zp, out + i);
}

static void qnnpack_f32_minmax_sse2(const float *x, size_t n, float *lo, float *hi) {
  __m128 vmin = _mm_set1_ps(*lo), vmax = _mm_set1_ps(*hi);
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m128 v = _mm_loadu_ps(x + i);
    vmin = _mm_min_ps(v, vmin); /* minps returns the 2nd operand when one is NaN */
    vmax = _mm_max_ps(v, vmax);
  }
  float mn[4], mx[4];
  _mm_storeu_ps(mn, vmin);
  _mm_storeu_ps(mx, vmax);
  float l = *lo, h = *hi;
  qnnpack_f32_minmax_scalar(mn, 4, &l, &h);
  qnnpack_f32_minmax_scalar(mx, 4, &l, &h);
  qnnpack_f32_minmax_scalar(x + i, n - i, &l, &h);
  *lo = l;
  *hi = h;
}

/* QNNPACK's SSE2 dwconv: (x - zp) and w as int16, 32-bit products assembled
 * from pmullw / pmulhw halves. 8 channels per step. */
static void qnnpack_qu8_dwconv_ukernel_up8__sse2(size_t channels, size_t taps,
                                                 const uint8_t *const *x, const int16_t *w,
                                                 size_t cstride, int32_t x_zp, const int32_t *bias,
                                                 int32_t *acc) {
  const __m128i zero = _mm_setzero_si128();
  const __m128i vzp = _mm_set1_epi16((int16_t)x_zp);
  size_t c = 0;
  for (; c + 8 <= channels; c += 8) {
    __m128i lo = _mm_loadu_si128((const __m128i *)(bias + c));
    __m128i hi = _mm_loadu_si128((const __m128i *)(bias + c + 4));
    for (size_t t = 0; t < taps; t++) {
      const __m128i xv =
          _mm_sub_epi16(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(x[t] + c)), zero), vzp);
      const __m128i wv = _mm_loadu_si128((const __m128i *)(w + t * cstride + c));
      const __m128i plo = _mm_mullo_epi16(xv, wv), phi = _mm_mulhi_epi16(xv, wv);
      lo = _mm_add_epi32(lo, _mm_unpacklo_epi16(plo, phi));
      hi = _mm_add_epi32(hi, _mm_unpackhi_epi16(plo, phi));
    }
    _mm_storeu_si128((__m128i *)(acc + c), lo);
    _mm_storeu_si128((__m128i *)(acc + c + 4), hi);
  }
  qnnpack_qu8_dwconv_scalar_from(c, channels, taps, x, w, cstride, x_zp, bias, acc);
}

/* Clamp two float32 vectors of 4 to [qmin - zp, qmax - zp], round (MXCSR: to nearest even), add the
 * zero point and store the 8 bytes: the epilogue of the elementwise kernels. */
static inline void qnnpack_sse2_store8(uint8_t *out, __m128 v0, __m128 v1, __m128 flo, __m128 fhi, __m128i ozp) {
  const __m128i q0 = _mm_add_epi32(_mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(v0, flo), fhi)), ozp);
  const __m128i q1 = _mm_add_epi32(_mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(v1, flo), fhi)), ozp);
  _mm_storel_epi64((__m128i *)out, _mm_packus_epi16(_mm_packs_epi32(q0, q1), _mm_setzero_si128()));
}

static void qnnpack_qu8_vadd_ukernel__sse2(size_t n, const uint8_t *a, const uint8_t *b,
                                           const qnnpack_add_params *p, uint8_t *out) {
  const __m128i zero = _mm_setzero_si128();
  const __m128i azp = _mm_set1_epi16((int16_t)p->a_zp), bzp = _mm_set1_epi16((int16_t)p->b_zp);
  const __m128 as = _mm_set1_ps(p->a_scale), bs = _mm_set1_ps(p->b_scale), inv = _mm_set1_ps(p->inv_out);
  const __m128 flo = _mm_set1_ps((float)(p->qmin - p->out_zp)), fhi = _mm_set1_ps((float)(p->qmax - p->out_zp));
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i va = _mm_sub_epi16(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(a + i)), zero), azp);
    const __m128i vb = _mm_sub_epi16(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(b + i)), zero), bzp);
    __m128 v[2];
    for (int h = 0; h < 2; h++) {
      const __m128i a32 = _mm_srai_epi32(h ? _mm_unpackhi_epi16(va, va) : _mm_unpacklo_epi16(va, va), 16);
      const __m128i b32 = _mm_srai_epi32(h ? _mm_unpackhi_epi16(vb, vb) : _mm_unpacklo_epi16(vb, vb), 16);
      __m128 fa = _mm_mul_ps(_mm_cvtepi32_ps(a32), as), fb = _mm_mul_ps(_mm_cvtepi32_ps(b32), bs);
      QNNPACK_NO_CONTRACT(fa);
      QNNPACK_NO_CONTRACT(fb);
      v[h] = _mm_mul_ps(_mm_add_ps(fa, fb), inv);
    }
    qnnpack_sse2_store8(out + i, v[0], v[1], flo, fhi, _mm_set1_epi32(p->out_zp));
  }
  qnnpack_qu8_vadd_ukernel__scalar(n - i, a + i, b + i, p, out + i);
}

/* 16-bit differences; exact 32-bit products from the mullo/mulhi halves (SSE2 has no pmulld). */
static void qnnpack_qu8_vmul_ukernel__sse2(size_t n, const uint8_t *a, const uint8_t *b,
                                           const qnnpack_mul_params *p, uint8_t *out) {
  const __m128i zero = _mm_setzero_si128();
  const __m128i azp = _mm_set1_epi16((int16_t)p->a_zp), bzp = _mm_set1_epi16((int16_t)p->b_zp);
  const __m128 mult = _mm_set1_ps(p->mult);
  const __m128 flo = _mm_set1_ps((float)(p->qmin - p->out_zp)), fhi = _mm_set1_ps((float)(p->qmax - p->out_zp));
  for (; n >= 8; n -= 8, a += 8, b += 8, out += 8) {
    const __m128i va = _mm_sub_epi16(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)a), zero), azp);
    const __m128i vb = _mm_sub_epi16(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)b), zero), bzp);
    const __m128i lo = _mm_mullo_epi16(va, vb), hi = _mm_mulhi_epi16(va, vb);
    qnnpack_sse2_store8(out, _mm_mul_ps(_mm_cvtepi32_ps(_mm_unpacklo_epi16(lo, hi)), mult),
                        _mm_mul_ps(_mm_cvtepi32_ps(_mm_unpackhi_epi16(lo, hi)), mult), flo, fhi,
                        _mm_set1_epi32(p->out_zp));
  }
  qnnpack_qu8_vmul_ukernel__scalar(n, a, b, p, out);
}

const qnnpack_isa_kernels qnnpack_kernels_sse2 = {
    .mr = 4,
    .add = qnnpack_qu8_vadd_ukernel__sse2,
    .mul = qnnpack_qu8_vmul_ukernel__sse2,
    .dwconv = qnnpack_qu8_dwconv_ukernel_up8__sse2,
    .gemm = qnnpack_qu8_gemm_ukernel_4x16c4__sse2,
    .requant = qnnpack_qu8_requant_sse2,
    .dequant = qnnpack_qu8_dequant_sse2,
    /* per-row dynamic epilogues: SSE2 has no 32-bit mullo; the scalar ones (O(M * N), not K) */
    .acc_init_rows = qnnpack_qu8_acc_init_rows_scalar,
    .dequant_rows = qnnpack_qu8_dequant_rows_scalar,
    .quant = qnnpack_qu8_quant_sse2,
    .minmax = qnnpack_f32_minmax_sse2,
};
#else
typedef int qnnpack_gemm_sse2_unused; /* ISO C forbids an empty translation unit */
#endif
