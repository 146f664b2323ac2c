/*
 * x86 staging and row kernels of the depthwise 3x3 row path (layout: dwconv3x3.c).
 *
 * VNNI: one vpdpbusd per kernel row and pixel (u8 tap triple x s8 weight triple, byte 3 of
 * both is 0), summed straight into int32: exact for any uint8 input.
 * AVX2 / AVX-512 without VNNI: vpmaddubsw would saturate on full-range inputs, so each tap
 * triple is split into int16 pairs (b0, b2) and (b1, 0) with a mask and a shift, and the
 * weight triple likewise into sign-extended (w0, w2) and (w1, 0); two vpmaddwd then give
 * b0 w0 + b2 w2 and b1 w1 exactly (|products| <= 255 * 128).
 */
#include "fbgemm_kernels.h"
#include "quantplug/qp_runtime.h"

#if defined(FB_HAVE_X86)
#include <immintrin.h>
#include <string.h>

/* ---- staging ---- */

/* 16 channels of input pixel ix widened to int32 lanes (x_zp outside the row, 0 past nc). */
QP_TARGET_AVX512 static inline __m512i fb_dw3_px16(const uint8_t *row, ptrdiff_t ix, size_t w,
                                                   size_t cstride, __mmask16 m, __m512i vzp) {
  if (ix < 0 || ix >= (ptrdiff_t)w) return vzp;
  return _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, row + (size_t)ix * cstride));
}

QP_TARGET_AVX512 void fb_dw3_stage__avx512(const uint8_t *row, size_t w, size_t cstride,
                                           size_t pw, size_t sw, size_t n, size_t nc, uint8_t zp,
                                           uint32_t *dst) {
  const __mmask16 m = (__mmask16)((1u << nc) - 1u);
  const __m512i vzp = _mm512_maskz_set1_epi32(m, zp);
  const ptrdiff_t p0 = -(ptrdiff_t)pw;
  if (sw == 1) { /* sliding window: each input pixel is widened once */
    __m512i e0 = fb_dw3_px16(row, p0, w, cstride, m, vzp);
    __m512i e1 = fb_dw3_px16(row, p0 + 1, w, cstride, m, vzp);
    for (size_t i = 0; i < n; i++) {
      const __m512i e2 = fb_dw3_px16(row, p0 + (ptrdiff_t)i + 2, w, cstride, m, vzp);
      const __m512i v = _mm512_or_si512(_mm512_or_si512(e0, _mm512_slli_epi32(e1, 8)),
                                        _mm512_slli_epi32(e2, 16));
      _mm512_storeu_si512((void *)(dst + i * FB_NR), v);
      e0 = e1;
      e1 = e2;
    }
    return;
  }
  for (size_t i = 0; i < n; i++) {
    const ptrdiff_t ix = p0 + (ptrdiff_t)(i * sw);
    const __m512i v = _mm512_or_si512(
        _mm512_or_si512(fb_dw3_px16(row, ix, w, cstride, m, vzp),
                        _mm512_slli_epi32(fb_dw3_px16(row, ix + 1, w, cstride, m, vzp), 8)),
        _mm512_slli_epi32(fb_dw3_px16(row, ix + 2, w, cstride, m, vzp), 16));
    _mm512_storeu_si512((void *)(dst + i * FB_NR), v);
  }
}

/* 16 channels of input pixel ix as two 8-lane int32 halves (x_zp outside, 0 past nc). */
QP_TARGET_AVX2 static inline void fb_dw3_px8x2(const uint8_t *row, ptrdiff_t ix, size_t w,
                                               size_t cstride, size_t nc, uint8_t zp,
                                               __m256i *lo, __m256i *hi) {
  uint8_t buf[16] = {0};
  __m128i b;
  if (ix < 0 || ix >= (ptrdiff_t)w) {
    memset(buf, zp, nc);
    b = _mm_loadu_si128((const __m128i *)buf);
  } else if (nc == FB_NR) {
    b = _mm_loadu_si128((const __m128i *)(row + (size_t)ix * cstride));
  } else { /* channel tail: never read past the last channel */
    memcpy(buf, row + (size_t)ix * cstride, nc);
    b = _mm_loadu_si128((const __m128i *)buf);
  }
  *lo = _mm256_cvtepu8_epi32(b);
  *hi = _mm256_cvtepu8_epi32(_mm_srli_si128(b, 8));
}

QP_TARGET_AVX2 void fb_dw3_stage__avx2(const uint8_t *row, size_t w, size_t cstride, size_t pw,
                                       size_t sw, size_t n, size_t nc, uint8_t zp,
                                       uint32_t *dst) {
  for (size_t i = 0; i < n; i++) {
    const ptrdiff_t ix = (ptrdiff_t)(i * sw) - (ptrdiff_t)pw;
    __m256i l0, h0, l1, h1, l2, h2;
    fb_dw3_px8x2(row, ix, w, cstride, nc, zp, &l0, &h0);
    fb_dw3_px8x2(row, ix + 1, w, cstride, nc, zp, &l1, &h1);
    fb_dw3_px8x2(row, ix + 2, w, cstride, nc, zp, &l2, &h2);
    const __m256i lo = _mm256_or_si256(_mm256_or_si256(l0, _mm256_slli_epi32(l1, 8)),
                                       _mm256_slli_epi32(l2, 16));
    const __m256i hi = _mm256_or_si256(_mm256_or_si256(h0, _mm256_slli_epi32(h1, 8)),
                                       _mm256_slli_epi32(h2, 16));
    _mm256_storeu_si256((__m256i *)(dst + i * FB_NR), lo);
    _mm256_storeu_si256((__m256i *)(dst + i * FB_NR + 8), hi);
  }
}

/* ---- row kernels ---- */

/* The VNNI row kernel with the requantization fused (the same operations, in the same order,
 * as fb_epilogue_u8__avx512): no int32 row buffer round trip, no second pass. The epilogue's
 * column term p->col is folded into the initial accumulator (integer adds commute).
 * The narrowing vpmovdb is kept register to register: GCC otherwise merges it with the masked
 * store into vpmovdb m128{k}, which on Zen 4 took half of this kernel's time (perf annotate). */
QP_TARGET_AVX512VNNI void fb_dw3_row_u8__avx512vnni(const uint32_t *const *rows,
                                                    const uint32_t *wrow, size_t nv, size_t n,
                                                    const int32_t *init,
                                                    const fb_block_params *p, int32_t zp,
                                                    int32_t qmin, int32_t qmax, size_t nc,
                                                    uint8_t *out, size_t out_stride) {
  const __m512i vi = _mm512_add_epi32(_mm512_loadu_si512((const void *)init),
                                      _mm512_loadu_si512((const void *)p->col));
  const __m512 lo = _mm512_set1_ps((float)(qmin - zp)), hi = _mm512_set1_ps((float)(qmax - zp));
  const __m512i vzp = _mm512_set1_epi32(zp);
  const __m512 m = _mm512_loadu_ps(p->mult);
  const __mmask16 mask = (__mmask16)((1u << nc) - 1u);
  const int full = nc == FB_NR; /* plain stores: masked byte stores are slow on Zen 4 */
  __m512i w[3];
  for (size_t r = 0; r < nv; r++) w[r] = _mm512_loadu_si512((const void *)(wrow + r * FB_NR));
#define FB_DW3_REQUANT_STORE(a)                                                    \
  do {                                                                             \
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(a), m);                            \
    f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);                                   \
    const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(f), vzp);                \
    __m128i b = _mm512_cvtepi32_epi8(q);                                           \
    __asm__("" : "+x"(b)); /* keep vpmovdb on registers (see above) */             \
    if (full)                                                                      \
      _mm_storeu_si128((__m128i *)(out + i * out_stride), b);                      \
    else                                                                           \
      _mm_mask_storeu_epi8(out + i * out_stride, mask, b);                         \
  } while (0)
  if (nv == 3) { /* interior rows: the three weight triples stay in registers */
    const uint32_t *r0 = rows[0], *r1 = rows[1], *r2 = rows[2];
    for (size_t i = 0; i < n; i++) {
      __m512i a = _mm512_dpbusd_epi32(vi, _mm512_loadu_si512((const void *)(r0 + i * FB_NR)), w[0]);
      a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512((const void *)(r1 + i * FB_NR)), w[1]);
      a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512((const void *)(r2 + i * FB_NR)), w[2]);
      FB_DW3_REQUANT_STORE(a);
    }
    return;
  }
  for (size_t i = 0; i < n; i++) {
    __m512i a = vi;
    for (size_t r = 0; r < nv; r++)
      a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512((const void *)(rows[r] + i * FB_NR)), w[r]);
    FB_DW3_REQUANT_STORE(a);
  }
#undef FB_DW3_REQUANT_STORE
}

/* ---- the register-staged VNNI rows kernels (fb_dw3_rows_u8__avx512vnni / __avx512vbmi) ----
 * Each of the nr + 2 input rows under nr output rows keeps its current tap-triple vector
 * S = (x[i-1], x[i], x[i+1], 0) per channel in a register; moving one column right is one
 * vpermt2b (bytes 1, 2 of S and the 16 new input bytes, byte 3 masked to 0) where the CPU
 * has AVX512-VBMI, else vpsrld 8 + a masked vpshufb of the broadcast input. No staged row
 * is stored or reloaded (on Zen 4 a 64-byte store costs two store cycles), the input rows are
 * read (nr + 2) / nr times (nr = 8 output rows per pass), and every S serves up to 3 output
 * rows. The loop is bound by vector ALU throughput (each zmm op per 4 output blocks costs about
 * 1.5 us on the 144-channel 56x56 layer), so every op counts: see the variants below.
 * Requantization: the float part as fb_epilogue_u8__avx512 (cvtdq2ps, mul, clamp to
 * qmax - zp, cvtps2dq) for 4 output rows at once, then vpackssdw / vpaddsw zp / vpackuswb /
 * vpmaxub qmin / vpermd. Same results as max(qmin - zp) -> min(qmax - zp) -> + zp in int32:
 * the float min keeps every value <= qmax - zp <= 255 (so no upper saturation), vmin(hi, f)
 * passes NaN through and cvtps2dq maps NaN and values below -2^31 to INT32_MIN, which like
 * every value below qmin - zp saturates to a byte <= qmin and is lifted to qmin by vpmaxub
 * (not needed when qmin = 0: vpackuswb clamps at 0); with 0 <= zp <= 255 the saturating
 * int16 add never saturates a value that survives. */
#define FB_DW3_TARGET QP_TARGET_AVX512VNNI
#define FB_DW3_NAME(n) n##__avx512vnni
#define FB_DW3_VBMI 0
#include "dwconv3x3_rows.h"
#undef FB_DW3_TARGET
#undef FB_DW3_NAME
#undef FB_DW3_VBMI

#define FB_DW3_TARGET \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx2,fma")))
#define FB_DW3_NAME(n) n##__avx512vbmi
#define FB_DW3_VBMI 1
#include "dwconv3x3_rows.h"
#undef FB_DW3_TARGET
#undef FB_DW3_NAME
#undef FB_DW3_VBMI

int fb_dw3_cpu_has_vbmi(void) {
  __builtin_cpu_init(); /* idempotent; makes the check safe however early it runs */
  return __builtin_cpu_supports("avx512vbmi");
}

/* Weight triple (bytes w0 w1 w2 0) -> sign-extended int16 pairs (w0, w2) and (w1, 0). */
QP_TARGET_AVX512 static inline void fb_dw3_wsplit16(__m512i t, __m512i *wlo, __m512i *whi) {
  const __m512i lo16 = _mm512_set1_epi32(0xFFFF);
  const __m512i a = _mm512_and_si512(_mm512_srai_epi32(_mm512_slli_epi32(t, 24), 24), lo16);
  const __m512i c = _mm512_slli_epi32(_mm512_srai_epi32(_mm512_slli_epi32(t, 8), 24), 16);
  *wlo = _mm512_or_si512(a, c);
  *whi = _mm512_and_si512(_mm512_srai_epi32(_mm512_slli_epi32(t, 16), 24), lo16);
}

QP_TARGET_AVX512 void fb_dw3_row__avx512(const uint32_t *const *rows, const uint32_t *wrow,
                                         size_t nv, size_t n, const int32_t *init, int32_t *acc) {
  const __m512i mb = _mm512_set1_epi32(0x00FF00FF);
  __m512i wlo[3], whi[3];
  for (size_t r = 0; r < nv; r++)
    fb_dw3_wsplit16(_mm512_loadu_si512((const void *)(wrow + r * FB_NR)), &wlo[r], &whi[r]);
  const __m512i vi = _mm512_loadu_si512((const void *)init);
  for (size_t i = 0; i < n; i++) {
    __m512i a = vi;
    for (size_t r = 0; r < nv; r++) {
      const __m512i x = _mm512_loadu_si512((const void *)(rows[r] + i * FB_NR));
      a = _mm512_add_epi32(a, _mm512_madd_epi16(_mm512_and_si512(x, mb), wlo[r]));
      a = _mm512_add_epi32(a, _mm512_madd_epi16(_mm512_and_si512(_mm512_srli_epi32(x, 8), mb), whi[r]));
    }
    _mm512_storeu_si512((void *)(acc + i * FB_NR), a);
  }
}

QP_TARGET_AVX2 static inline void fb_dw3_wsplit8(__m256i t, __m256i *wlo, __m256i *whi) {
  const __m256i lo16 = _mm256_set1_epi32(0xFFFF);
  const __m256i a = _mm256_and_si256(_mm256_srai_epi32(_mm256_slli_epi32(t, 24), 24), lo16);
  const __m256i c = _mm256_slli_epi32(_mm256_srai_epi32(_mm256_slli_epi32(t, 8), 24), 16);
  *wlo = _mm256_or_si256(a, c);
  *whi = _mm256_and_si256(_mm256_srai_epi32(_mm256_slli_epi32(t, 16), 24), lo16);
}

QP_TARGET_AVX2 void fb_dw3_row__avx2(const uint32_t *const *rows, const uint32_t *wrow, size_t nv,
                                     size_t n, const int32_t *init, int32_t *acc) {
  const __m256i mb = _mm256_set1_epi32(0x00FF00FF);
  for (size_t h = 0; h < FB_NR; h += 8) { /* two 8-channel halves */
    __m256i wlo[3], whi[3];
    for (size_t r = 0; r < nv; r++)
      fb_dw3_wsplit8(_mm256_loadu_si256((const __m256i *)(wrow + r * FB_NR + h)), &wlo[r], &whi[r]);
    const __m256i vi = _mm256_loadu_si256((const __m256i *)(init + h));
    for (size_t i = 0; i < n; i++) {
      __m256i a = vi;
      for (size_t r = 0; r < nv; r++) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(rows[r] + i * FB_NR + h));
        a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_and_si256(x, mb), wlo[r]));
        a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi32(x, 8), mb), whi[r]));
      }
      _mm256_storeu_si256((__m256i *)(acc + i * FB_NR + h), a);
    }
  }
}

#endif /* FB_HAVE_X86 */
