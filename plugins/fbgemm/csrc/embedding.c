/*
 * Row-wise quantized Embedding / EmbeddingBag (FBGEMM's fused row formats, as produced by
 * torch.ops.quantized.embedding_bag_{byte,4bit}_prepack, so tables can be shared with torch):
 *
 *   8 bit: row = dim uint8 values, then float32 scale, float32 bias      (dim + 8 bytes)
 *   4 bit: row = dim/2 bytes (element 2i in the low nibble of byte i, 2i+1 in the high one),
 *          then float16 scale, float16 bias                               (dim/2 + 4 bytes)
 *   value = q * scale + bias
 *
 * Bag b sums rows indices[offsets[b] .. offsets[b+1]) (times per_sample_weights when given);
 * mode mean divides by the bag length; an empty bag gives zeros. Per element, every path does
 * the same float32 operations in the same order (v = q*scale; v += bias; v *= w; acc += v;
 * never fused into an FMA), so the AVX-512 path equals the scalar one bit for bit.
 */
#include <math.h>
#include <string.h>

#include "fbgemm_kernels.h"
#include "quantplug/qp_runtime.h"

size_t fbgemm_embedding_row_bytes(size_t dim, int bits) {
  if (dim == 0 || dim > ((size_t)1 << 24)) return 0;
  if (bits == 8) return dim + 2 * sizeof(float);
  if (bits == 4 && dim % 2 == 0) return dim / 2 + 2 * sizeof(uint16_t);
  return 0;
}

/* IEEE binary16 -> binary32 (exact; subnormals, inf and NaN included). */
static float fb_half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else { /* subnormal: normalise */
    exp = 113;
    while (!(man & 0x400u)) {
      man <<= 1;
      exp--;
    }
    bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static void fb_row_qparams(const uint8_t *row, size_t dim, int bits, float *scale, float *bias) {
  if (bits == 8) {
    memcpy(scale, row + dim, 4);
    memcpy(bias, row + dim + 4, 4);
  } else {
    uint16_t s, b;
    memcpy(&s, row + dim / 2, 2);
    memcpy(&b, row + dim / 2 + 2, 2);
    *scale = fb_half_to_float(s);
    *bias = fb_half_to_float(b);
  }
}

static inline float fb_emb_q(const uint8_t *row, int bits, size_t j) {
  if (bits == 8) return (float)row[j];
  const uint8_t byte = row[j / 2];
  return (float)((j & 1) ? byte >> 4 : byte & 0x0f);
}

/* Columns [j0, dim) of one row added into acc[j0 ..]: the scalar path and the SIMD tails. */
static void fb_emb_row_range(const uint8_t *row, size_t j0, size_t dim, int bits, float scale,
                             float bias, float w, int has_w, float *acc) {
  for (size_t j = j0; j < dim; j++) {
    float v = fb_emb_q(row, bits, j) * scale;
    FB_OPAQUE_F32(v);
    v = v + bias;
    if (has_w) {
      v = v * w;
      FB_OPAQUE_F32(v);
    }
    acc[j] = acc[j] + v;
  }
}

static void fb_emb_row_acc__scalar(const uint8_t *row, size_t dim, int bits, float scale, float bias,
                            float w, int has_w, float *acc) {
  fb_emb_row_range(row, 0, dim, bits, scale, bias, w, has_w, acc);
}

#if defined(FB_HAVE_X86)
#include <immintrin.h>

QP_TARGET_AVX512 static void fb_emb_row_acc__avx512(const uint8_t *row, size_t dim, int bits,
                                             float scale, float bias, float w, int has_w,
                                             float *acc) {
  const __m512 vs = _mm512_set1_ps(scale), vb = _mm512_set1_ps(bias), vw = _mm512_set1_ps(w);
  size_t j = 0;
  for (; j + 16 <= dim; j += 16) {
    __m128i q8;
    if (bits == 8) {
      q8 = _mm_loadu_si128((const __m128i *)(row + j));
    } else {
      /* 8 bytes -> 16 nibbles in element order: lane i of w16 holds byte i; put its low
       * nibble in the low byte and its high nibble in the high byte of the 16-bit lane. */
      const __m128i w16 = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(row + j / 2)));
      q8 = _mm_or_si128(_mm_and_si128(w16, _mm_set1_epi16(0x000f)),
                        _mm_and_si128(_mm_slli_epi16(w16, 4), _mm_set1_epi16(0x0f00)));
    }
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q8)), vs);
    __asm__("" : "+v"(v)); /* GCC would contract mul + add into an FMA (one rounding less) */
    v = _mm512_add_ps(v, vb);
    if (has_w) {
      v = _mm512_mul_ps(v, vw);
      __asm__("" : "+v"(v));
    }
    _mm512_storeu_ps(acc + j, _mm512_add_ps(_mm512_loadu_ps(acc + j), v));
  }
  fb_emb_row_range(row, j, dim, bits, scale, bias, w, has_w, acc);
}
#endif

typedef void (*fb_emb_row_fn)(const uint8_t *, size_t, int, float, float, float, int, float *);

typedef struct {
  const uint8_t *w;
  size_t rows, dim, row_bytes;
  int bits;
  const void *idx;
  int idx64;
  const void *off;
  int off64;
  size_t nidx;
  const float *psw;
  int mean;
  float *out;
  fb_emb_row_fn row_fn;
} fb_emb_ctx;


static void fb_emb_task(void *vctx, size_t begin, size_t end) {
  const fb_emb_ctx *c = (const fb_emb_ctx *)vctx;
  for (size_t b = begin; b < end; b++) {
    float *acc = c->out + b * c->dim;
    memset(acc, 0, c->dim * sizeof(float));
    const size_t s = (size_t)fb_get_index(c->off, c->off64, b);
    const size_t e = (size_t)fb_get_index(c->off, c->off64, b + 1);
    for (size_t i = s; i < e; i++) {
      if (i + FB_EMB_PREFETCH < c->nidx) /* indices were validated: the row exists */
        fb_prefetch_bytes(c->w + (size_t)fb_get_index(c->idx, c->idx64, i + FB_EMB_PREFETCH) * c->row_bytes,
                          c->row_bytes);
      const uint8_t *row = c->w + (size_t)fb_get_index(c->idx, c->idx64, i) * c->row_bytes;
      float scale, bias;
      fb_row_qparams(row, c->dim, c->bits, &scale, &bias);
      c->row_fn(row, c->dim, c->bits, scale, bias, c->psw ? c->psw[i] : 1.0f, c->psw != NULL,
                acc);
    }
    if (c->mean && e > s) {
      const float len = (float)(e - s);
      for (size_t j = 0; j < c->dim; j++) acc[j] = acc[j] / len;
    }
  }
}

int fb_emb_check_offsets(const void *offsets, int off64, size_t num_indices, size_t num_bags,
                         int open_end) {
  if (offsets == NULL && (num_bags > 0 || !open_end)) return QP_ERR_INVALID_ARGUMENT;
  /* offsets: start at 0, never decrease, end at num_indices (offsets has num_bags + 1 entries;
   * open_end: num_bags entries, the last bag ends at num_indices) */
  if (num_bags == 0 && open_end) return QP_OK;
  const size_t last = open_end ? num_bags - 1 : num_bags; /* the entry compared with num_indices */
  if (fb_get_index(offsets, off64, 0) != 0 ||
      (open_end ? fb_get_index(offsets, off64, last) > (int64_t)num_indices
                : fb_get_index(offsets, off64, last) != (int64_t)num_indices))
    return QP_ERR_INVALID_ARGUMENT;
  /* Branch-free loops (no early exit, one element type each) so that the compiler vectorizes
   * them: with an early return per index this check took ~15% of a 10240-index call. */
  uint64_t bad = 0;
  if (off64) {
    const int64_t *o = (const int64_t *)offsets;
    for (size_t b = 0; b < last; b++) bad |= (uint64_t)(o[b + 1] < o[b]);
  } else {
    const int32_t *o = (const int32_t *)offsets;
    for (size_t b = 0; b < last; b++) bad |= (uint64_t)(o[b + 1] < o[b]);
  }
  return bad ? QP_ERR_INVALID_ARGUMENT : QP_OK;
}

int fb_emb_check_bags(const void *indices, int idx64, size_t num_indices, const void *offsets,
                      int off64, size_t num_bags, int open_end, size_t rows) {
  if ((num_indices > 0 && indices == NULL) ||
      fb_emb_check_offsets(offsets, off64, num_indices, num_bags, open_end) != QP_OK)
    return QP_ERR_INVALID_ARGUMENT;
  /* branch-free as above; a negative index wraps to a huge unsigned value, so one compare
   * checks both bounds */
  uint64_t bad = 0;
  if (idx64) {
    const int64_t *p = (const int64_t *)indices;
    for (size_t i = 0; i < num_indices; i++) bad |= (uint64_t)((uint64_t)p[i] >= rows);
  } else {
    const int32_t *p = (const int32_t *)indices;
    for (size_t i = 0; i < num_indices; i++) bad |= (uint64_t)((uint64_t)(int64_t)p[i] >= rows);
  }
  return bad ? QP_ERR_INVALID_ARGUMENT : QP_OK;
}

int fbgemm_embedding_bag_rowwise(const uint8_t *weight, size_t rows, size_t dim, int bits,
                                 const void *indices, int indices_are_int64, size_t num_indices,
                                 const void *offsets, int offsets_are_int64, size_t num_bags,
                                 const float *per_sample_weights, int mode_mean, float *out) {
  const size_t row_bytes = fbgemm_embedding_row_bytes(dim, bits);
  if (row_bytes == 0 || weight == NULL || rows == 0 || offsets == NULL || out == NULL ||
      (num_indices > 0 && indices == NULL))
    return QP_ERR_INVALID_ARGUMENT;
  if (fb_emb_check_bags(indices, indices_are_int64, num_indices, offsets, offsets_are_int64,
                        num_bags, 0, rows) != QP_OK)
    return QP_ERR_INVALID_ARGUMENT;
  fb_emb_ctx c = {weight, rows, dim, row_bytes, bits, indices, indices_are_int64, offsets,
                  offsets_are_int64, num_indices, per_sample_weights, mode_mean, out,
                  fb_emb_row_acc__scalar};
#if defined(FB_HAVE_X86)
  if (fb_emb_use_avx512()) c.row_fn = fb_emb_row_acc__avx512;
#endif
  fb_emb_run(num_bags, num_indices * dim, fb_emb_task, &c);
  return QP_OK;
}

int fb_emb_use_avx512(void) {
#if defined(FB_HAVE_X86)
  const int isa = qp_active_isa();
  return isa == QP_ISA_AVX512 || isa == QP_ISA_AVX512VNNI;
#else
  return 0;
#endif
}

void fb_emb_run(size_t num_bags, size_t work, void (*task)(void *, size_t, size_t), void *ctx) {
  if (num_bags == 0) return;
  if (work < ((size_t)1 << 16))
    task(ctx, 0, num_bags);
  else
    qp_parallel_for(num_bags, 8, task, ctx);
}
