/*
 * Shared quantize / dequantize / requantize kernels: scalar reference code
 * written once as type-generic macros instantiated for uint8 and int8.
 * Validation returns QP_ERR_INVALID_ARGUMENT rather than trusting Python.
 */
#include "quantplug/qp_quantize.h"

#include <math.h>

#include "quantplug/qp_requant.h"
#include "quantplug/qp_runtime.h"

static int qp_bad_range(int32_t qmin, int32_t qmax, int32_t lo, int32_t hi) {
  return qmin > qmax || qmin < lo || qmax > hi;
}

/* ---- SIMD per-tensor quantize -------------------------------------------------------------
 * Activations are quantized on every eager call (200k floats for a 64x56x56 feature map), so
 * the loop matters: the scalar one costs 2-4 ns per element (nearbyintf is a library call on
 * a baseline x86-64 build), the AVX-512 one about 0.1 ns. Each SIMD path computes exactly the
 * scalar formula: v = x * inv (one IEEE multiply), NaN -> 0 (so the result is the clamped zero
 * point, as qp_quantize gives), clamp into [qmin - zp, qmax - zp] in float, convert with the
 * default rounding mode (ties to even, as nearbyintf), add zp, narrow (values already in
 * range, so truncating narrowing is exact). Paths follow the plugin's active ISA
 * (qp_active_isa), so forcing an ISA in tests also forces this loop; the tail is scalar. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QP_QUANT_X86 1

QP_TARGET_AVX512 static size_t qp_quantize_avx512(
    const float *x, size_t n, float inv, int32_t zp, int32_t qmin, int32_t qmax, void *out) {
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512 lo = _mm512_set1_ps((float)(qmin - zp)), hi = _mm512_set1_ps((float)(qmax - zp));
  const __m512i vzp = _mm512_set1_epi32(zp);
  uint8_t *o = (uint8_t *)out;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 xv = _mm512_loadu_ps(x + i);
    __m512 v = _mm512_mul_ps(xv, vinv);
    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(xv, xv, _CMP_ORD_Q), v); /* NaN -> 0 */
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), vzp);
    _mm_storeu_si128((__m128i *)(o + i), _mm512_cvtepi32_epi8(q));
  }
  return i;
}

QP_TARGET_AVX2 static size_t qp_quantize_avx2(
    const float *x, size_t n, float inv, int32_t zp, int32_t qmin, int32_t qmax, int is_signed,
    void *out) {
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256 lo = _mm256_set1_ps((float)(qmin - zp)), hi = _mm256_set1_ps((float)(qmax - zp));
  const __m256i vzp = _mm256_set1_epi32(zp);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7); /* undo the per-lane packs */
  uint8_t *o = (uint8_t *)out;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i q[4];
    for (int j = 0; j < 4; j++) {
      __m256 xv = _mm256_loadu_ps(x + i + 8 * j);
      __m256 v = _mm256_and_ps(_mm256_mul_ps(xv, vinv), _mm256_cmp_ps(xv, xv, _CMP_ORD_Q));
      v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
      q[j] = _mm256_add_epi32(_mm256_cvtps_epi32(v), vzp);
    }
    /* int32 in [-128, 255] -> int16 (exact) -> 8 bits (exact: already in the target range) */
    __m256i w0 = _mm256_packs_epi32(q[0], q[1]), w1 = _mm256_packs_epi32(q[2], q[3]);
    __m256i b = is_signed ? _mm256_packs_epi16(w0, w1) : _mm256_packus_epi16(w0, w1);
    _mm256_storeu_si256((__m256i *)(o + i), _mm256_permutevar8x32_epi32(b, order));
  }
  return i;
}

/* ---- SIMD per-tensor dequantize -----------------------------------------------------------
 * The eager flow dequantizes every quantized module's output (131k values for a 64x32x8x8
 * conv output); the scalar loop, vectorised by the compiler for baseline SSE2 only, ran at
 * about half the speed of torch's own uint8 -> float conversion. Each path computes exactly
 * the scalar formula, (float)(q - zp) * scale: the int32 difference converts to float exactly
 * (|q - zp| < 2^24 for the zero points these paths accept) and one IEEE multiply follows. */
QP_TARGET_AVX512 static size_t qp_dequantize_avx512(const void *q, size_t n, int is_signed, float scale,
                                                    int32_t zp, float *out) {
  const __m512 vs = _mm512_set1_ps(scale);
  const __m512i vzp = _mm512_set1_epi32(zp);
  const uint8_t *b = (const uint8_t *)q;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m128i bytes = _mm_loadu_si128((const __m128i *)(b + i));
    __m512i v = is_signed ? _mm512_cvtepi8_epi32(bytes) : _mm512_cvtepu8_epi32(bytes);
    _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(v, vzp)), vs));
  }
  return i;
}

QP_TARGET_AVX2 static size_t qp_dequantize_avx2(const void *q, size_t n, int is_signed, float scale,
                                                int32_t zp, float *out) {
  const __m256 vs = _mm256_set1_ps(scale);
  const __m256i vzp = _mm256_set1_epi32(zp);
  const uint8_t *b = (const uint8_t *)q;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i bytes = _mm_loadl_epi64((const __m128i *)(b + i));
    __m256i v = is_signed ? _mm256_cvtepi8_epi32(bytes) : _mm256_cvtepu8_epi32(bytes);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(v, vzp)), vs));
  }
  return i;
}
#endif

#if defined(__aarch64__)
#include <arm_neon.h>
static size_t qp_quantize_neon(const float *x, size_t n, float inv, int32_t zp, int32_t qmin,
                               int32_t qmax, int is_signed, void *out) {
  const float32x4_t vinv = vdupq_n_f32(inv);
  const float32x4_t lo = vdupq_n_f32((float)(qmin - zp)), hi = vdupq_n_f32((float)(qmax - zp));
  const int32x4_t vzp = vdupq_n_s32(zp);
  uint8_t *o = (uint8_t *)out;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    int32x4_t q[2];
    for (int j = 0; j < 2; j++) {
      float32x4_t xv = vld1q_f32(x + i + 4 * j);
      uint32x4_t ordered = vceqq_f32(xv, xv);
      float32x4_t v = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(vmulq_f32(xv, vinv)), ordered));
      v = vminq_f32(vmaxq_f32(v, lo), hi);
      q[j] = vaddq_s32(vcvtnq_s32_f32(v), vzp); /* round to nearest, ties to even */
    }
    int16x8_t w = vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1]));
    if (is_signed)
      vst1_s8((int8_t *)(o + i), vmovn_s16(w));
    else
      vst1_u8(o + i, vreinterpret_u8_s8(vmovn_s16(w)));
  }
  return i;
}

static size_t qp_dequantize_neon(const void *q, size_t n, int is_signed, float scale, int32_t zp,
                                 float *out) {
  const float32x4_t vs = vdupq_n_f32(scale);
  const int32x4_t vzp = vdupq_n_s32(zp);
  const uint8_t *b = (const uint8_t *)q;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    /* widen 8 bytes to int16 (exact either way), then to int32 in two halves */
    int16x8_t w = is_signed ? vmovl_s8(vld1_s8((const int8_t *)(b + i)))
                            : vreinterpretq_s16_u16(vmovl_u8(vld1_u8(b + i)));
    int32x4_t lo = vsubq_s32(vmovl_s16(vget_low_s16(w)), vzp);
    int32x4_t hi = vsubq_s32(vmovl_s16(vget_high_s16(w)), vzp);
    vst1q_f32(out + i, vmulq_f32(vcvtq_f32_s32(lo), vs));
    vst1q_f32(out + i + 4, vmulq_f32(vcvtq_f32_s32(hi), vs));
  }
  return i;
}
#endif

/* Elements [0, returned) quantized by the fastest path the active ISA allows. */
static size_t qp_quantize_simd(const float *x, size_t n, float inv, int32_t zp, int32_t qmin,
                               int32_t qmax, int is_signed, void *out) {
#if defined(QP_QUANT_X86)
  switch (qp_active_isa()) {
    case QP_ISA_AVX512:
    case QP_ISA_AVX512VNNI:
      return qp_quantize_avx512(x, n, inv, zp, qmin, qmax, out);
    case QP_ISA_AVX2:
    case QP_ISA_AVXVNNI:
      return qp_quantize_avx2(x, n, inv, zp, qmin, qmax, is_signed, out);
    default:
      return 0;
  }
#elif defined(__aarch64__)
  int isa = qp_active_isa();
  return (isa == QP_ISA_NEON || isa == QP_ISA_NEONDOT)
             ? qp_quantize_neon(x, n, inv, zp, qmin, qmax, is_signed, out)
             : 0;
#else
  (void)x, (void)n, (void)inv, (void)zp, (void)qmin, (void)qmax, (void)is_signed, (void)out;
  return 0;
#endif
}

/* Elements [0, returned) dequantized by the fastest path the active ISA allows. */
static size_t qp_dequantize_simd(const void *q, size_t n, int is_signed, float scale, int32_t zp,
                                 float *out) {
  if (zp < -65536 || zp > 65536) return 0; /* keeps q - zp exact in float: the scalar loop */
#if defined(QP_QUANT_X86)
  switch (qp_active_isa()) {
    case QP_ISA_AVX512:
    case QP_ISA_AVX512VNNI:
      return qp_dequantize_avx512(q, n, is_signed, scale, zp, out);
    case QP_ISA_AVX2:
    case QP_ISA_AVXVNNI:
      return qp_dequantize_avx2(q, n, is_signed, scale, zp, out);
    default:
      return 0;
  }
#elif defined(__aarch64__)
  int isa = qp_active_isa();
  return (isa == QP_ISA_NEON || isa == QP_ISA_NEONDOT) ? qp_dequantize_neon(q, n, is_signed, scale, zp, out)
                                                       : 0;
#else
  (void)q, (void)n, (void)is_signed, (void)scale, (void)zp, (void)out;
  return 0;
#endif
}

#define QP_DEFINE_QUANT(SUFFIX, T, LO, HI)                                                       \
  int qp_quantize_per_tensor_##SUFFIX(const float *x, size_t n, float scale, int32_t zp,          \
                                      int32_t qmin, int32_t qmax, T *out) {                       \
    if (!(scale > 0.0f) || !isfinite(scale) || qp_bad_range(qmin, qmax, LO, HI))                 \
      return QP_ERR_INVALID_ARGUMENT;                                                             \
    const float inv = 1.0f / scale;                                                               \
    /* zp is free (the clamp handles any value) but the SIMD paths add it in int32 */             \
    size_t i = (zp >= -65536 && zp <= 65536)                                                      \
                   ? qp_quantize_simd(x, n, inv, zp, qmin, qmax, (LO) < 0, out)                   \
                   : 0;                                                                           \
    for (; i < n; i++) out[i] = (T)qp_quantize(x[i], inv, zp, qmin, qmax);                        \
    return QP_OK;                                                                                 \
  }                                                                                               \
  int qp_dequantize_per_tensor_##SUFFIX(const T *q, size_t n, float scale, int32_t zp,            \
                                        float *out) {                                             \
    size_t i = qp_dequantize_simd(q, n, (LO) < 0, scale, zp, out);                                \
    for (; i < n; i++) out[i] = (float)((int64_t)q[i] - zp) * scale; /* int64: no overflow */     \
    return QP_OK;                                                                                 \
  }                                                                                               \
  int qp_quantize_per_channel_##SUFFIX(const float *x, size_t outer, size_t channels,             \
                                       size_t inner, const float *scales, const int32_t *zps,     \
                                       int32_t qmin, int32_t qmax, T *out) {                      \
    if (qp_bad_range(qmin, qmax, LO, HI)) return QP_ERR_INVALID_ARGUMENT;                         \
    for (size_t c = 0; c < channels; c++)                                                         \
      if (!(scales[c] > 0.0f) || !isfinite(scales[c])) return QP_ERR_INVALID_ARGUMENT;            \
    for (size_t o = 0; o < outer; o++)                                                            \
      for (size_t c = 0; c < channels; c++) {                                                     \
        const float inv = 1.0f / scales[c];                                                       \
        const size_t base = (o * channels + c) * inner;                                           \
        for (size_t i = 0; i < inner; i++)                                                        \
          out[base + i] = (T)qp_quantize(x[base + i], inv, zps[c], qmin, qmax);                   \
      }                                                                                           \
    return QP_OK;                                                                                 \
  }                                                                                               \
  int qp_dequantize_per_channel_##SUFFIX(const T *q, size_t outer, size_t channels, size_t inner, \
                                         const float *scales, const int32_t *zps, float *out) {   \
    for (size_t o = 0; o < outer; o++)                                                            \
      for (size_t c = 0; c < channels; c++) {                                                     \
        const size_t base = (o * channels + c) * inner;                                           \
        for (size_t i = 0; i < inner; i++)                                                        \
          out[base + i] = (float)((int32_t)q[base + i] - zps[c]) * scales[c];                     \
      }                                                                                           \
    return QP_OK;                                                                                 \
  }                                                                                               \
  int qp_requantize_##SUFFIX(const int32_t *acc, size_t rows, size_t channels, const float *m,    \
                             size_t n_m, int32_t zp, int32_t qmin, int32_t qmax, T *out) {        \
    if (qp_bad_range(qmin, qmax, LO, HI) || (n_m != 1 && n_m != channels))                        \
      return QP_ERR_INVALID_ARGUMENT;                                                             \
    for (size_t r = 0; r < rows; r++)                                                             \
      for (size_t c = 0; c < channels; c++)                                                       \
        out[r * channels + c] =                                                                   \
            (T)qp_requantize(acc[r * channels + c], m[n_m == 1 ? 0 : c], zp, qmin, qmax);         \
    return QP_OK;                                                                                 \
  }

QP_DEFINE_QUANT(u8, uint8_t, 0, 255)
QP_DEFINE_QUANT(s8, int8_t, -128, 127)
