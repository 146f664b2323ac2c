/*
 * EmbeddingBag / Embedding over an int8 (or 4-bit) table with separate per-row scale and zero
 * point: the storage of the core's QuantizedEmbedding(Bag), read in place (no fused copy).
 *
 *   value[r, j] = (float)(q[r, j] - zp[r]) * scale[r]     (q: int8, or a 4-bit code 0..15)
 *
 * which is the core's dequantization bit for bit (an exact int32 difference, one float32
 * rounding). Sum bags add the (weighted) values in index order; mean divides the sum by the
 * number of entries that were not padding_idx; max keeps the element-wise maximum. Every path
 * does the same float32 operations in the same order (no FMA), so the AVX-512 path equals
 * the scalar one bit for bit.
 */
#include <string.h>

#include "fbgemm_kernels.h"
#include "quantplug/qp_runtime.h"

enum { FB_BAG_SUM = 0, FB_BAG_MEAN = 1, FB_BAG_MAX = 2 };

/* Code j of a row: int8, or the 4-bit code of nibble j (even j: low nibble). */
static inline int32_t fb_emb8_code(const uint8_t *row, int bits, size_t j) {
  if (bits == 8) return (int32_t)(int8_t)row[j];
  return (j & 1) ? row[j / 2] >> 4 : row[j / 2] & 0x0f;
}

/* One row into acc[j0 .. dim): first != 0 stores instead of combining (max mode's start). */
static void fb_emb8_range(const uint8_t *row, int bits, size_t j0, size_t dim, int32_t zp,
                          float scale, float w, int has_w, int is_max, int first, float *acc) {
  for (size_t j = j0; j < dim; j++) {
    /* wrapping int32 difference, like torch's int32 subtraction (no UB for any zp) */
    float v = (float)(int32_t)((uint32_t)fb_emb8_code(row, bits, j) - (uint32_t)zp) * scale;
    if (has_w) {
      FB_OPAQUE_F32(v);
      v = v * w;
    }
    FB_OPAQUE_F32(v);
    if (first)
      acc[j] = v;
    else if (is_max)
      acc[j] = v > acc[j] ? v : acc[j];
    else
      acc[j] = acc[j] + v;
  }
}

typedef void (*fb_emb8_row_fn)(const uint8_t *row, int bits, size_t dim, int32_t zp, float scale,
                               float w, int has_w, int is_max, int first, float *acc);

static void fb_emb8_row__scalar(const uint8_t *row, int bits, size_t dim, int32_t zp, float scale,
                                float w, int has_w, int is_max, int first, float *acc) {
  fb_emb8_range(row, bits, 0, dim, zp, scale, w, has_w, is_max, first, acc);
}

#if defined(FB_HAVE_X86)
#include <immintrin.h>

QP_TARGET_AVX512 static void fb_emb8_row__avx512(const uint8_t *row, int bits, size_t dim,
                                                 int32_t zp, float scale, float w, int has_w,
                                                 int is_max, int first, float *acc) {
  const __m512i vz = _mm512_set1_epi32(zp);
  const __m512 vs = _mm512_set1_ps(scale), vw = _mm512_set1_ps(w);
  size_t j = 0;
  for (; j + 16 <= dim; j += 16) {
    __m512i q;
    if (bits == 8) {
      q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(row + j)));
    } else { /* 8 bytes -> 16 codes in element order (low nibble first) */
      const __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(row + j / 2)));
      q = _mm512_cvtepu8_epi32(_mm_or_si128(_mm_and_si128(b, _mm_set1_epi16(0x000f)),
                                            _mm_and_si128(_mm_slli_epi16(b, 4), _mm_set1_epi16(0x0f00))));
    }
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, vz)), vs);
    if (has_w) {
      __asm__("" : "+v"(v));
      v = _mm512_mul_ps(v, vw);
    }
    __asm__("" : "+v"(v)); /* no FMA with the accumulation */
    if (first) {
      _mm512_storeu_ps(acc + j, v);
    } else if (is_max) {
      /* v > acc ? v : acc, as the scalar path (vmaxps returns its second operand on ties) */
      const __m512 a = _mm512_loadu_ps(acc + j);
      _mm512_storeu_ps(acc + j, _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, a, _CMP_GT_OQ), a, v));
    } else {
      _mm512_storeu_ps(acc + j, _mm512_add_ps(_mm512_loadu_ps(acc + j), v));
    }
  }
  fb_emb8_range(row, bits, j, dim, zp, scale, w, has_w, is_max, first, acc);
}
#endif

typedef struct {
  const uint8_t *w;
  int bits;
  size_t row_bytes;
  const float *scales;
  const int32_t *zps;
  size_t dim;
  const void *idx, *off;
  int idx64, off64, mode;
  const float *psw;
  int64_t pad;
  float *out;
  fb_emb8_row_fn row_fn;
} fb_emb8_ctx;

static void fb_emb8_task(void *vctx, size_t begin, size_t end) {
  const fb_emb8_ctx *c = (const fb_emb8_ctx *)vctx;
  for (size_t b = begin; b < end; b++) {
    float *acc = c->out + b * c->dim;
    const size_t s = (size_t)fb_get_index(c->off, c->off64, b);
    const size_t e = (size_t)fb_get_index(c->off, c->off64, b + 1);
    size_t used = 0;
    for (size_t i = s; i < e; i++) {
      const int64_t r = fb_get_index(c->idx, c->idx64, i);
      if (r == c->pad) continue;
      c->row_fn(c->w + (size_t)r * c->row_bytes, c->bits, c->dim, c->zps[r], c->scales[r],
                c->psw != NULL ? c->psw[i] : 1.0f, c->psw != NULL, c->mode == FB_BAG_MAX,
                used == 0, acc);
      used++;
    }
    if (used == 0) {
      memset(acc, 0, c->dim * sizeof(float));
    } else if (c->mode == FB_BAG_MEAN) {
      const float len = (float)used;
      for (size_t j = 0; j < c->dim; j++) acc[j] = acc[j] / len;
    }
  }
}

static int fb_emb_bag_codes(const uint8_t *weight, int bits, const float *scales,
                            const int32_t *zero_points, size_t rows, size_t dim,
                            const void *indices, int indices_are_int64, size_t num_indices,
                            const void *offsets, int offsets_are_int64, size_t num_bags,
                            const float *per_sample_weights, int mode, int64_t padding_idx,
                            float *out) {
  if ((bits == 4 && dim % 2 != 0) || weight == NULL || scales == NULL || zero_points == NULL || (out == NULL && num_bags > 0) ||
      rows == 0 ||
      dim == 0 || dim > ((size_t)1 << 24) || mode < FB_BAG_SUM || mode > FB_BAG_MAX ||
      (per_sample_weights != NULL && mode != FB_BAG_SUM) || padding_idx < -1 ||
      padding_idx >= (int64_t)rows ||
      fb_emb_check_bags(indices, indices_are_int64, num_indices, offsets, offsets_are_int64,
                        num_bags, rows) != QP_OK)
    return QP_ERR_INVALID_ARGUMENT;
  fb_emb8_ctx c = {weight, bits, bits == 8 ? dim : dim / 2, scales, zero_points, dim, indices,
                   offsets, indices_are_int64,
                   offsets_are_int64, mode, per_sample_weights, padding_idx, out,
                   fb_emb8_row__scalar};
#if defined(FB_HAVE_X86)
  if (fb_emb_use_avx512()) c.row_fn = fb_emb8_row__avx512;
#endif
  fb_emb_run(num_bags, num_indices * dim, fb_emb8_task, &c);
  return QP_OK;
}

int fbgemm_embedding_bag_int8(const int8_t *weight, const float *scales, const int32_t *zero_points,
                              size_t rows, size_t dim, const void *indices, int indices_are_int64,
                              size_t num_indices, const void *offsets, int offsets_are_int64,
                              size_t num_bags, const float *per_sample_weights, int mode,
                              int64_t padding_idx, float *out) {
  return fb_emb_bag_codes((const uint8_t *)weight, 8, scales, zero_points, rows, dim, indices,
                          indices_are_int64, num_indices, offsets, offsets_are_int64, num_bags,
                          per_sample_weights, mode, padding_idx, out);
}

int fbgemm_embedding_bag_int4(const uint8_t *weight, const float *scales,
                              const int32_t *zero_points, size_t rows, size_t dim,
                              const void *indices, int indices_are_int64, size_t num_indices,
                              const void *offsets, int offsets_are_int64, size_t num_bags,
                              const float *per_sample_weights, int mode, int64_t padding_idx,
                              float *out) {
  return fb_emb_bag_codes(weight, 4, scales, zero_points, rows, dim, indices, indices_are_int64,
                          num_indices, offsets, offsets_are_int64, num_bags, per_sample_weights,
                          mode, padding_idx, out);
}
