/*
 * Quantized elementwise add with float32 requantization: the numerics of
 * quantplug.reference_kernels.ReferenceKernels.add (dequantize both inputs,
 * add, multiply by the reciprocal output scale, clamp, round half to even).
 * Scalar, AVX2 and AVX-512 paths, bit-exact with each other; products are kept
 * out of FMA contraction so that every path rounds exactly like PyTorch.
 */
#include <math.h>
#include <stdatomic.h>

#include "onednn_kernels.h"
#include "quantplug/qp_requant.h"
#include "xo_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

typedef struct {
  const uint8_t *a, *b;
  uint8_t *out;
  float as, bs, inv;
  int32_t az, bz, zp, qmin, qmax;
  int isa;
} xo_add_ctx;

static void xo_add_scalar(const xo_add_ctx *c, size_t i0, size_t i1) {
  for (size_t i = i0; i < i1; i++) {
    float fa = (float)((int32_t)c->a[i] - c->az) * c->as;
    float fb = (float)((int32_t)c->b[i] - c->bz) * c->bs;
    XO_FP_BARRIER(fa);
    XO_FP_BARRIER(fb);
    float v = (fa + fb) * c->inv;
    c->out[i] = (uint8_t)(qp_round_clamp(v, c->qmin - c->zp, c->qmax - c->zp) + c->zp);
  }
}

#if defined(__x86_64__) || defined(__i386__)
static QP_TARGET_AVX2 void xo_add_avx2(const xo_add_ctx *c, size_t i0, size_t i1) {
  const __m256 as = _mm256_set1_ps(c->as), bs = _mm256_set1_ps(c->bs), inv = _mm256_set1_ps(c->inv);
  const __m256i az = _mm256_set1_epi32(c->az), bz = _mm256_set1_epi32(c->bz), zp = _mm256_set1_epi32(c->zp);
  const __m256 lo = _mm256_set1_ps((float)(c->qmin - c->zp)), hi = _mm256_set1_ps((float)(c->qmax - c->zp));
  size_t i = i0;
  for (; i + 8 <= i1; i += 8) {
    __m256i va = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(c->a + i)));
    __m256i vb = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(c->b + i)));
    __m256 fa = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(va, az)), as);
    __m256 fb = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(vb, bz)), bs);
    XO_FP_BARRIER(fa);
    XO_FP_BARRIER(fb);
    __m256 v = _mm256_mul_ps(_mm256_add_ps(fa, fb), inv);
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(v), zp);
    __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64((__m128i *)(c->out + i), _mm_packus_epi16(p16, p16));
  }
  if (i < i1) xo_add_scalar(c, i, i1);
}

static QP_TARGET_AVX512 void xo_add_avx512(const xo_add_ctx *c, size_t i0, size_t i1) {
  const __m512 as = _mm512_set1_ps(c->as), bs = _mm512_set1_ps(c->bs), inv = _mm512_set1_ps(c->inv);
  const __m512i az = _mm512_set1_epi32(c->az), bz = _mm512_set1_epi32(c->bz), zp = _mm512_set1_epi32(c->zp);
  const __m512 lo = _mm512_set1_ps((float)(c->qmin - c->zp)), hi = _mm512_set1_ps((float)(c->qmax - c->zp));
  for (size_t i = i0; i < i1; i += 16) {
    const __mmask16 m = (__mmask16)(i1 - i >= 16 ? 0xFFFFu : ((1u << (i1 - i)) - 1u));
    __m512i va = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, c->a + i));
    __m512i vb = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, c->b + i));
    __m512 fa = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(va, az)), as);
    __m512 fb = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(vb, bz)), bs);
    XO_FP_BARRIER_ZMM(fa);
    XO_FP_BARRIER_ZMM(fb);
    __m512 v = _mm512_mul_ps(_mm512_add_ps(fa, fb), inv);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    xo_store_u8x16(c->out + i, m, _mm512_add_epi32(_mm512_cvtps_epi32(v), zp));
  }
}
#endif

typedef struct {
  xo_add_ctx c;
  size_t n;
} xo_add_job;

static void xo_add_job_task(void *vjob, size_t begin, size_t end) {
  const xo_add_job *j = (const xo_add_job *)vjob;
  const size_t block = 4096;
  size_t i0 = begin * block, i1 = end * block;
  if (i1 > j->n) i1 = j->n;
  xo_add_ctx c = j->c;
  switch (c.isa) {
#if defined(__x86_64__) || defined(__i386__)
    case QP_ISA_AVX512VNNI:
    case QP_ISA_AVX512:
      xo_add_avx512(&c, i0, i1);
      break;
    case QP_ISA_AVXVNNI:
    case QP_ISA_AVX2:
      xo_add_avx2(&c, i0, i1);
      break;
#endif
    default:
      xo_add_scalar(&c, i0, i1);
      break;
  }
}

int x86_onednn_add_u8(const uint8_t *a, float a_scale, int32_t a_zp, const uint8_t *b,
                      float b_scale, int32_t b_zp, size_t n, float out_scale, int32_t out_zp,
                      int32_t qmin, int32_t qmax, uint8_t *out) {
  if (n > 0 && (a == NULL || b == NULL || out == NULL)) return QP_ERR_INVALID_ARGUMENT;
  if (!xo_check_scale(a_scale) || !xo_check_scale(b_scale) || !xo_check_scale(out_scale))
    return QP_ERR_INVALID_ARGUMENT;
  if (a_zp < 0 || a_zp > 255 || b_zp < 0 || b_zp > 255 || out_zp < 0 || out_zp > 255 ||
      qmin < 0 || qmax > 255 || qmin > qmax)
    return QP_ERR_INVALID_ARGUMENT;
  const float inv = 1.0f / out_scale;
  if (!isfinite(inv)) return QP_ERR_INVALID_ARGUMENT;
  xo_add_job j = {{a, b, out, a_scale, b_scale, inv, a_zp, b_zp, out_zp, qmin, qmax, qp_active_isa()}, n};
  const size_t blocks = (n + 4095) / 4096;
  qp_parallel_for(blocks, 16, xo_add_job_task, &j);
  return QP_OK;
}
