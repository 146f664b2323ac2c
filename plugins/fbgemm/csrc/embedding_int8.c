/*
 * EmbeddingBag / Embedding over an int8 (or 4-bit) table with separate per-row scale and zero
 * point: the storage of the core's QuantizedEmbedding(Bag), read in place (no fused copy).
 *
 *   value[r, j] = (float)(q[r, j] - zp[r]) * scale[r]     (q: int8, or a 4-bit code 0..15)
 *
 * which is the core's dequantization bit for bit (an exact int32 difference, one float32
 * rounding). Sum bags accumulate in index order with fused multiply-adds starting from -0.0
 * (the additive identity), in one of the forms fb_emb8_kind picks: a one-index bag (every
 * lookup) is fma((float)(q - zp), scale, -0.0), exactly the value; a weighted bag adds
 * fma(value, w, acc); a longer unweighted bag uses the bias form of torch's fused tables,
 * sum fma((float)q, scale, acc) + sum -zp * scale, one integer op fewer per element. Bags of
 * several rows therefore differ from "dequantize, then add" by rounding only. Mean divides the
 * sum by the number of entries that were not padding_idx; max keeps the element-wise maximum of
 * the values. Every path does the same float32 operations in the same order (scalar: fmaf,
 * correctly rounded like vfmadd), so the AVX-512 path equals the scalar one bit for bit.
 */
#include <math.h>
#include <string.h>

#include "fbgemm_kernels.h"
#include "quantplug/qp_runtime.h"

enum { FB_BAG_SUM = 0, FB_BAG_MEAN = 1, FB_BAG_MAX = 2 };

/* Code j of a row: int8, or the 4-bit code of nibble j (even j: low nibble). */
static inline int32_t fb_emb8_code(const uint8_t *row, int bits, size_t j) {
  if (bits == 8) return (int32_t)(int8_t)row[j];
  return (j & 1) ? row[j / 2] >> 4 : row[j / 2] & 0x0f;
}

/* Kinds of bag (fb_emb8_kind): exact sum, weighted sum, max, sum in the bias form. */
enum { FB_EMB8_SUM = 0, FB_EMB8_WSUM = 1, FB_EMB8_MAX = 2, FB_EMB8_BSUM = 3 };

/* One row into acc[0 .. dim) (see fb_emb8_kind); max stores the first row's values (first != 0),
 * then keeps the larger. The bias form's -zp * scale term is added by the caller. */
static void fb_emb8_row__scalar(const uint8_t *row, int bits, size_t dim, int32_t zp, float scale,
                                float w, int kind, int first, float *acc) {
  for (size_t j = 0; j < dim; j++) {
    const int32_t code = fb_emb8_code(row, bits, j);
    if (kind == FB_EMB8_BSUM) {
      acc[j] = fmaf((float)code, scale, acc[j]);
      continue;
    }
    /* wrapping int32 difference, like torch's int32 subtraction (no UB for any zp) */
    const float x = (float)(int32_t)((uint32_t)code - (uint32_t)zp);
    if (kind == FB_EMB8_MAX) {
      float v = x * scale;
      FB_OPAQUE_F32(v);
      acc[j] = first || v > acc[j] ? v : acc[j];
    } else if (kind == FB_EMB8_WSUM) {
      float v = x * scale;
      FB_OPAQUE_F32(v); /* the value is rounded before the weight multiplies it */
      acc[j] = fmaf(v, w, acc[j]);
    } else {
      acc[j] = fmaf(x, scale, acc[j]);
    }
  }
}

#if defined(FB_HAVE_X86)
#include <immintrin.h>
#endif

typedef struct {
  const uint8_t *w;
  int bits;
  size_t row_bytes;
  const float *scales; /* row r's scale is scales[r * qstride], its zero point zps[r * qstride] */
  const int32_t *zps;
  size_t qstride; /* 1: separate arrays; 2: interleaved (scale, zero point) pairs */
  size_t dim;
  const void *idx, *off;
  size_t nidx;
  int idx64, off64, mode;
  size_t nbags;
  int open_end; /* offsets holds nbags entries, the last bag ends at nidx */
  size_t rows;
  int *status; /* set to QP_ERR_INVALID_ARGUMENT by a task that meets an index outside the table */
  const float *psw;
  int64_t pad;
  float *out;
  int avx512; /* run whole bags with fb_emb8_bag__avx512 */
} fb_emb8_ctx;

/* Rows are hinted into the cache FB_EMB8_AHEAD indices before their use, one row per row
 * accumulated (fb_emb8_hint). The previous form, a burst of the next 20 rows' hints at the start
 * of each bag, was ~37% of the kernel's samples on the benchmark's 100000 x 128 table, 70% of
 * them stalled on the hint instructions themselves (miss buffers full), time the FMAs could not
 * use; an in-loop hint only 12 rows ahead (tried before the burst) came too late. Raw kernel on
 * the benchmark's 10240 lookups, called through cffi in a loop: burst 94-99 us, in-loop 32 ahead
 * 79-95 us (torch's fused op in the same processes 73-91 us: the machine is shared and noisy);
 * an in-cache 1000-row table 68 -> 57 us (the burst's per-index bounds branch went too). 20 / 24
 * / 28 / 40 / 48 ahead, a hint per 64-byte line, and L2 or non-temporal hints were all within
 * that noise. Override with -DFB_EMB8_AHEAD=n. */
#ifndef FB_EMB8_AHEAD
#define FB_EMB8_AHEAD 32
#endif
/* Hints the row of index i (if any) into the cache. Index i is not checked yet (bags are checked
 * as they start), so an index outside the table hints row 0 instead: no address is formed
 * outside the table. */
static inline __attribute__((always_inline)) void fb_emb8_hint(const fb_emb8_ctx *c, size_t i) {
  if (i >= c->nidx) return;
  size_t r = (size_t)fb_get_index(c->idx, c->idx64, i);
  r = r < c->rows ? r : 0;
  /* one hint per 128 bytes of codes, not one per line: with the burst form, on the benchmark's
   * 128-byte rows (which may start mid-pair: torch aligns tables to 64 bytes), hinting the first
   * line only took 93-104 us, both lines 105-112; in-loop, both were within the noise */
  for (size_t o = 0; o < c->row_bytes; o += 128)
    __builtin_prefetch(c->w + r * c->row_bytes + o, 0, 3);
  __builtin_prefetch(c->scales + r * c->qstride, 0, 3);
  if (c->qstride == 1) __builtin_prefetch(c->zps + r, 0, 3); /* interleaved: the same line */
}

/* Nonzero if an index of [s, e) is outside the table; branch-free (a negative index wraps to a
 * huge unsigned value, so one compare checks both bounds). */
static inline uint64_t fb_emb8_bad(const fb_emb8_ctx *c, size_t s, size_t e) {
  uint64_t bad = 0;
  for (size_t i = s; i < e; i++)
    bad |= (uint64_t)((uint64_t)fb_get_index(c->idx, c->idx64, i) >= c->rows);
  return bad;
}

/* End of bag b (the start of bag b + 1, or num_indices for the last bag of open-ended offsets). */
static inline size_t fb_emb8_bag_end(const fb_emb8_ctx *c, size_t b) {
  if (c->open_end && b + 1 == c->nbags) return c->nidx;
  return (size_t)fb_get_index(c->off, c->off64, b + 1);
}

/* How bag [s, e) accumulates: max; weighted sum; a one-index sum (every lookup) as
 * fma((float)(q - zp), scale, -0.0), i.e. exactly the dequantized value; a longer sum as
 * sum_r fma((float)q, scale_r, acc) + sum_r -zp_r * scale_r (the bias form of torch's fused
 * tables: one integer subtraction fewer per element, ~25% of the unweighted bag's vector work;
 * it differs from "dequantize, then add" by rounding only). */
static int fb_emb8_kind(const fb_emb8_ctx *c, size_t s, size_t e) {
  if (c->mode == FB_BAG_MAX) return FB_EMB8_MAX;
  if (c->psw != NULL) return FB_EMB8_WSUM;
  return e - s >= 2 ? FB_EMB8_BSUM : FB_EMB8_SUM;
}

#if defined(FB_HAVE_X86)
/* Codes [j, j + 16) of a row as int32 lanes: all 16 (FULL), or under lane mask m (byte mask mb
 * for 4-bit rows: ceil(lanes / 2) bytes), never reading past them (0 outside m). */
QP_TARGET_AVX512 static inline __attribute__((always_inline)) __m512i fb_emb8_load16(
    const uint8_t *row, const int BITS, const int FULL, size_t j, __mmask16 m, __mmask16 mb) {
  __m128i b;
  if (BITS == 8)
    return _mm512_cvtepi8_epi32(FULL ? _mm_loadu_si128((const __m128i *)(row + j))
                                     : _mm_maskz_loadu_epi8(m, row + j));
  b = _mm_cvtepu8_epi16(FULL ? _mm_loadl_epi64((const __m128i *)(row + j / 2)) /* j is even */
                             : _mm_maskz_loadu_epi8(mb, row + j / 2));
  b = _mm_or_si128(_mm_and_si128(b, _mm_set1_epi16(0x000f)),
                   _mm_and_si128(_mm_slli_epi16(b, 4), _mm_set1_epi16(0x0f00)));
  return FULL ? _mm512_cvtepu8_epi32(b) : _mm512_maskz_cvtepu8_epi32(m, b);
}

QP_TARGET_AVX512 static inline __attribute__((always_inline)) __mmask16 fb_emb8_lanes(
    const fb_emb8_ctx *c, size_t j, int bytes) {
  const size_t lanes = j >= c->dim ? 0 : (c->dim - j < 16 ? c->dim - j : 16);
  return (__mmask16)((1u << (bytes ? (lanes + 1) / 2 : lanes)) - 1u);
}

/* Columns [j0, j0 + 16 NV) of one bag [s, e) into out, the NV accumulators in registers over the
 * bag's rows. KIND, BITS, NV and FULL (every lane of the block inside the row) are constants in
 * each instantiation, so the row loop has no per-element branches. Per element the float32
 * operations of the scalar path in its order; sums start from -0.0 and max from -inf, which
 * equals the scalar "first row is stored" because values are never NaN (codes and scales are
 * finite). Returns the rows used. */
QP_TARGET_AVX512 static inline __attribute__((always_inline)) size_t fb_emb8_bag_block(
    const fb_emb8_ctx *c, size_t s, size_t e, size_t j0, float *out, const int BITS,
    const int KIND, const int NV, const int FULL) {
  /* named registers, not arrays: GCC kept __m512 arrays on the stack (a store and a reload per
   * row and vector: 135 -> 87 us on the benchmark's 1000 x 128 table when they became names) */
#define FB_EMB8_DECL(v)                                                                   \
  const __mmask16 m##v = fb_emb8_lanes(c, j0 + 16 * v, 0), mb##v = fb_emb8_lanes(c, j0 + 16 * v, 1); \
  __m512 acc##v = KIND == FB_EMB8_MAX ? _mm512_set1_ps(-__builtin_inff()) : _mm512_set1_ps(-0.0f);
  FB_EMB8_DECL(0) FB_EMB8_DECL(1) FB_EMB8_DECL(2) FB_EMB8_DECL(3)
  FB_EMB8_DECL(4) FB_EMB8_DECL(5) FB_EMB8_DECL(6) FB_EMB8_DECL(7)
#undef FB_EMB8_DECL
  float bias = -0.0f; /* FB_EMB8_BSUM: sum of -zp * scale over the rows */
  size_t used = 0;
  /* the block's first code byte of row 0: each vector's load is then a constant displacement
   * from one row pointer (with j0 + 16 v in registers GCC spilled the offsets and reloaded
   * them every row: 99 -> 94 us on the benchmark's raw kernel loop) */
  const uint8_t *base = c->w + (BITS == 8 ? j0 : j0 / 2);
  const size_t row_bytes = c->row_bytes, qstride = c->qstride;
  const int64_t pad = c->pad;
  for (size_t i = s; i < e; i++) {
    if (j0 == 0) fb_emb8_hint(c, i + FB_EMB8_AHEAD); /* later blocks find the rows in L1 */
    const int64_t r = fb_get_index(c->idx, c->idx64, i);
    if (r == pad) continue;
    const uint8_t *row = base + (size_t)r * row_bytes;
    const int32_t zp = c->zps[(size_t)r * qstride];
    const __m512i vz = _mm512_set1_epi32(zp);
    const float scale = c->scales[(size_t)r * qstride];
    const __m512 vs = _mm512_set1_ps(scale);
    const __m512 vw = _mm512_set1_ps(KIND == FB_EMB8_WSUM ? c->psw[i] : 1.0f);
    if (KIND == FB_EMB8_BSUM) bias = fmaf(-(float)zp, scale, bias);
#define FB_EMB8_STEP(v)                                                                      \
    if (v < NV) {                                                                            \
      const __m512i q = fb_emb8_load16(row, BITS, FULL, 16 * v, m##v, mb##v);                \
      if (KIND == FB_EMB8_BSUM) {                                                            \
        acc##v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), vs, acc##v);                         \
      } else {                                                                               \
        const __m512 x = _mm512_cvtepi32_ps(_mm512_sub_epi32(q, vz));                        \
        if (KIND == FB_EMB8_MAX) { /* y > acc ? y : acc, as the scalar path */               \
          const __m512 y = _mm512_mul_ps(x, vs);                                             \
          acc##v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(y, acc##v, _CMP_GT_OQ), acc##v, y); \
        } else if (KIND == FB_EMB8_WSUM) {                                                   \
          __m512 y = _mm512_mul_ps(x, vs);                                                   \
          __asm__("" : "+v"(y)); /* rounded before the weight, as the scalar path */         \
          acc##v = _mm512_fmadd_ps(y, vw, acc##v);                                           \
        } else {                                                                             \
          acc##v = _mm512_fmadd_ps(x, vs, acc##v);                                           \
        }                                                                                    \
      }                                                                                      \
    }
    FB_EMB8_STEP(0) FB_EMB8_STEP(1) FB_EMB8_STEP(2) FB_EMB8_STEP(3)
    FB_EMB8_STEP(4) FB_EMB8_STEP(5) FB_EMB8_STEP(6) FB_EMB8_STEP(7)
#undef FB_EMB8_STEP
    used++;
  }
  const __m512 vb = _mm512_set1_ps(bias);
#define FB_EMB8_STORE(v)                                                                   \
  if (v < NV)                                                                              \
    _mm512_mask_storeu_ps(out + j0 + 16 * v, m##v,                                         \
                          KIND == FB_EMB8_BSUM ? _mm512_add_ps(acc##v, vb) : acc##v);
  FB_EMB8_STORE(0) FB_EMB8_STORE(1) FB_EMB8_STORE(2) FB_EMB8_STORE(3)
  FB_EMB8_STORE(4) FB_EMB8_STORE(5) FB_EMB8_STORE(6) FB_EMB8_STORE(7)
#undef FB_EMB8_STORE
  return used;
}

typedef size_t (*fb_emb8_bag_fn)(const fb_emb8_ctx *, size_t, size_t, size_t, float *);

/* One instantiation per (bits, kind, block width, full block). */
#define FB_EMB8_BAG_FN(BITS, KIND, NV, FULL)                                                   \
  QP_TARGET_AVX512 static size_t fb_emb8_bag_##BITS##_##KIND##_##NV##_##FULL(                  \
      const fb_emb8_ctx *c, size_t s, size_t e, size_t j0, float *out) {                       \
    return fb_emb8_bag_block(c, s, e, j0, out, BITS, KIND, NV, FULL);                          \
  }
#define FB_EMB8_BAG_FNS(BITS, KIND) \
  FB_EMB8_BAG_FN(BITS, KIND, 2, 0)  \
  FB_EMB8_BAG_FN(BITS, KIND, 2, 1)  \
  FB_EMB8_BAG_FN(BITS, KIND, 8, 0)  \
  FB_EMB8_BAG_FN(BITS, KIND, 8, 1)
FB_EMB8_BAG_FNS(8, 0)
FB_EMB8_BAG_FNS(8, 1)
FB_EMB8_BAG_FNS(8, 2)
FB_EMB8_BAG_FNS(8, 3)
FB_EMB8_BAG_FNS(4, 0)
FB_EMB8_BAG_FNS(4, 1)
FB_EMB8_BAG_FNS(4, 2)
FB_EMB8_BAG_FNS(4, 3)
#define FB_EMB8_ROW(BITS, KIND)                                                  \
  {fb_emb8_bag_##BITS##_##KIND##_2_0, fb_emb8_bag_##BITS##_##KIND##_2_1,         \
   fb_emb8_bag_##BITS##_##KIND##_8_0, fb_emb8_bag_##BITS##_##KIND##_8_1}
/* [bits == 4][kind][2 * (block of 8 vectors) + full] */
static const fb_emb8_bag_fn fb_emb8_bag_fns[2][4][4] = {
    {FB_EMB8_ROW(8, 0), FB_EMB8_ROW(8, 1), FB_EMB8_ROW(8, 2), FB_EMB8_ROW(8, 3)},
    {FB_EMB8_ROW(4, 0), FB_EMB8_ROW(4, 1), FB_EMB8_ROW(4, 2), FB_EMB8_ROW(4, 3)}};
#undef FB_EMB8_ROW
#undef FB_EMB8_BAG_FNS
#undef FB_EMB8_BAG_FN

/* The whole bag [s, e): 32-column blocks for narrow tables, 128-column blocks otherwise (a
 * wide row takes several passes over the bag; the later ones find its rows in L1). */
static size_t fb_emb8_bag__avx512(const fb_emb8_ctx *c, size_t s, size_t e, float *out) {
  const int kind = fb_emb8_kind(c, s, e);
  const size_t width = c->dim > 32 ? 128 : 32;
  const fb_emb8_bag_fn *fns = fb_emb8_bag_fns[c->bits == 4][kind] + (width == 128 ? 2 : 0);
  size_t used = 0;
  for (size_t j0 = 0; j0 < c->dim; j0 += width)
    used = fns[j0 + width <= c->dim](c, s, e, j0, out);
  return used;
}
#endif

static void fb_emb8_task(void *vctx, size_t begin, size_t end) {
  const fb_emb8_ctx *c = (const fb_emb8_ctx *)vctx;
  if (begin < end) { /* the rows before the first in-loop hint's */
    const size_t s0 = (size_t)fb_get_index(c->off, c->off64, begin);
    for (size_t i = s0; i < s0 + FB_EMB8_AHEAD; i++) fb_emb8_hint(c, i);
  }
  for (size_t b = begin; b < end; b++) {
    float *acc = c->out + b * c->dim;
    size_t s = (size_t)fb_get_index(c->off, c->off64, b);
    const size_t e = fb_emb8_bag_end(c, b);
    if (fb_emb8_bad(c, s, e)) {
      *c->status = QP_ERR_INVALID_ARGUMENT; /* benign race: every writer stores the same value */
      return;
    }
    size_t used = 0;
#if defined(FB_HAVE_X86)
    if (c->avx512) {
      used = fb_emb8_bag__avx512(c, s, e, acc);
      s = e; /* done: skip the row-at-a-time loop */
    }
#endif
    const int kind = fb_emb8_kind(c, s, e);
    if (kind != FB_EMB8_MAX && s < e)
      for (size_t j = 0; j < c->dim; j++) acc[j] = -0.0f; /* sums start from the additive identity */
    float bias = -0.0f; /* FB_EMB8_BSUM: sum of -zp * scale over the rows */
    for (size_t i = s; i < e; i++) {
      fb_emb8_hint(c, i + FB_EMB8_AHEAD);
      const int64_t r = fb_get_index(c->idx, c->idx64, i);
      if (r == c->pad) continue;
      const int32_t zp = c->zps[(size_t)r * c->qstride];
      const float scale = c->scales[(size_t)r * c->qstride];
      if (kind == FB_EMB8_BSUM) bias = fmaf(-(float)zp, scale, bias);
      fb_emb8_row__scalar(c->w + (size_t)r * c->row_bytes, c->bits, c->dim, zp, scale,
                          c->psw != NULL ? c->psw[i] : 1.0f, kind, used == 0, acc);
      used++;
    }
    if (kind == FB_EMB8_BSUM && s < e)
      for (size_t j = 0; j < c->dim; j++) acc[j] = acc[j] + bias;
    if (used == 0) {
      memset(acc, 0, c->dim * sizeof(float));
    } else if (c->mode == FB_BAG_MEAN) {
      const float len = (float)used;
      for (size_t j = 0; j < c->dim; j++) acc[j] = acc[j] / len;
    }
  }
}

static int fb_emb_bag_codes(const uint8_t *weight, int bits, const float *scales,
                            const int32_t *zero_points, size_t qstride, size_t rows, size_t dim,
                            const void *indices, int indices_are_int64, size_t num_indices,
                            const void *offsets, int offsets_are_int64, int open_end,
                            size_t num_bags, const float *per_sample_weights, int mode,
                            int64_t padding_idx, float *out) {
  if ((bits == 4 && dim % 2 != 0) || weight == NULL || scales == NULL || zero_points == NULL ||
      (out == NULL && num_bags > 0) || rows == 0 || dim == 0 || dim > ((size_t)1 << 24) ||
      mode < FB_BAG_SUM || mode > FB_BAG_MAX ||
      (per_sample_weights != NULL && mode != FB_BAG_SUM) ||
      padding_idx < -1 || padding_idx >= (int64_t)rows || (num_indices > 0 && indices == NULL) ||
      fb_emb_check_offsets(offsets, offsets_are_int64, num_indices, num_bags, open_end) != QP_OK)
    return QP_ERR_INVALID_ARGUMENT;
  int status = QP_OK; /* the tasks check each bag's indices before it reads a row (fb_emb8_bad) */
  fb_emb8_ctx c = {weight, bits, bits == 8 ? dim : dim / 2, scales, zero_points, qstride, dim,
                   indices, offsets, num_indices, indices_are_int64, offsets_are_int64, mode,
                   num_bags, open_end, rows, &status, per_sample_weights, padding_idx, out, 0};
#if defined(FB_HAVE_X86)
  if (fb_emb_use_avx512()) c.avx512 = 1;
#endif
  fb_emb_run(num_bags, num_indices * dim, fb_emb8_task, &c);
  return status;
}

int fbgemm_embedding_bag_int8(const int8_t *weight, const float *scales, const int32_t *zero_points,
                              size_t rows, size_t dim, const void *indices, int indices_are_int64,
                              size_t num_indices, const void *offsets, int offsets_are_int64,
                              size_t num_bags, const float *per_sample_weights, int mode,
                              int64_t padding_idx, float *out) {
  return fb_emb_bag_codes((const uint8_t *)weight, 8, scales, zero_points, 1, rows, dim, indices,
                          indices_are_int64, num_indices, offsets, offsets_are_int64, 0, num_bags,
                          per_sample_weights, mode, padding_idx, out);
}

int fbgemm_embedding_bag_int4(const uint8_t *weight, const float *scales,
                              const int32_t *zero_points, size_t rows, size_t dim,
                              const void *indices, int indices_are_int64, size_t num_indices,
                              const void *offsets, int offsets_are_int64, size_t num_bags,
                              const float *per_sample_weights, int mode, int64_t padding_idx,
                              float *out) {
  return fb_emb_bag_codes(weight, 4, scales, zero_points, 1, rows, dim, indices, indices_are_int64,
                          num_indices, offsets, offsets_are_int64, 0, num_bags, per_sample_weights,
                          mode, padding_idx, out);
}

int fbgemm_embedding_bag_codes(const uint8_t *weight, int bits, const int32_t *qparams,
                               size_t rows, size_t dim, const void *indices,
                               int indices_are_int64, size_t num_indices, const void *offsets,
                               uint32_t flags, size_t num_bags,
                               const float *per_sample_weights, int mode, int64_t padding_idx,
                               float *out) {
  if ((bits != 8 && bits != 4) || qparams == NULL ||
      (flags & ~(uint32_t)(FBGEMM_BAG_OFFSETS_INT64 | FBGEMM_BAG_OPEN_END)))
    return QP_ERR_INVALID_ARGUMENT;
  /* the scale is read as float32 through its own pointer (memcpy-free, same object bits) */
  return fb_emb_bag_codes(weight, bits, (const float *)(const void *)qparams, qparams + 1, 2, rows,
                          dim, indices, indices_are_int64, num_indices, offsets,
                          (flags & FBGEMM_BAG_OFFSETS_INT64) != 0,
                          (flags & FBGEMM_BAG_OPEN_END) != 0, num_bags, per_sample_weights, mode,
                          padding_idx, out);
}

int fbgemm_embedding_qparams_interleave(const float *scales, const int32_t *zero_points,
                                        size_t rows, int32_t *qparams) {
  if (scales == NULL || zero_points == NULL || qparams == NULL) return QP_ERR_INVALID_ARGUMENT;
  int bad = 0;
  for (size_t r = 0; r < rows; r++) {
    bad |= !isfinite(scales[r]);
    memcpy(&qparams[2 * r], &scales[r], sizeof(float));
    qparams[2 * r + 1] = zero_points[r];
  }
  return bad ? QP_ERR_INVALID_ARGUMENT : QP_OK;
}
