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
 * correctly rounded like vfmadd), so the AVX-512 path equals the scalar one bit for bit. Some
 * AVX-512 forms (int8 rows with VNNI, 4-bit 128-column blocks) widen codes into permuted lanes
 * and restore the column order once per bag; every operation is lane-wise, so no value changes.
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
 * then keeps the larger. The bias form's -zp * scale term is added by the caller. Inlined into
 * fb_emb8_row__scalar and fb_emb8_row__avx2. */
static inline __attribute__((always_inline)) void fb_emb8_row(const uint8_t *row, int bits,
                                                             size_t dim, int32_t zp, float scale,
                                                             float w, int kind, int first,
                                                             float *acc) {
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

typedef void (*fb_emb8_row_fn)(const uint8_t *, int, size_t, int32_t, float, float, int, int,
                               float *);

/* The scalar reference (the build's baseline ISA: on x86-64 each fmaf is a libm call). */
static void fb_emb8_row__scalar(const uint8_t *row, int bits, size_t dim, int32_t zp, float scale,
                                float w, int kind, int first, float *acc) {
  fb_emb8_row(row, bits, dim, zp, scale, w, kind, first, acc);
}

#if defined(FB_HAVE_X86)
#include <immintrin.h>

/* The same loop compiled for AVX2 + FMA (CPUs without AVX-512): fmaf becomes one vfmadd instead
 * of a libm call per element, and with bits and kind constant GCC vectorizes the sums; fmaf and
 * vfmadd both round once, so the results are the scalar path's bit for bit. The benchmark's
 * 10240 lookups (128 columns, 1000-row table): scalar ~3700 us, int8 here 152 us, 4-bit 843 us
 * (its nibble select stays scalar); the AVX-512 paths 52 / 58 us. */
QP_TARGET_AVX2 static void fb_emb8_row__avx2(const uint8_t *row, int bits, size_t dim, int32_t zp,
                                             float scale, float w, int kind, int first,
                                             float *acc) {
  /* constant bits and kind: a loop without per-element branches, which GCC vectorizes */
#define FB_EMB8_ROW_AVX2(BITS)                                                               \
  switch (kind) {                                                                            \
    case FB_EMB8_BSUM: fb_emb8_row(row, BITS, dim, zp, scale, w, FB_EMB8_BSUM, 0, acc); break; \
    case FB_EMB8_SUM: fb_emb8_row(row, BITS, dim, zp, scale, w, FB_EMB8_SUM, 0, acc); break;   \
    default: fb_emb8_row(row, BITS, dim, zp, scale, w, kind, first, acc);                      \
  }
  if (bits == 8) {
    FB_EMB8_ROW_AVX2(8)
  } else {
    FB_EMB8_ROW_AVX2(4)
  }
#undef FB_EMB8_ROW_AVX2
}
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
  int avx512; /* run whole bags with fb_emb8_bag__avx512; 2: with the VNNI form (int8 only) */
  fb_emb8_row_fn row_fn; /* otherwise, one row at a time */
} fb_emb8_ctx;

/* Rows are hinted into the cache FB_EMB8_AHEAD indices before their use, one row per row
 * accumulated (fb_emb8_hint). The previous form, a burst of the next 20 rows' hints at the start
 * of each bag, was ~37% of the kernel's samples on the benchmark's 100000 x 128 table, 70% of
 * them stalled on the hint instructions themselves (miss buffers full), time the FMAs could not
 * use. The in-loop hints still stall when the miss buffers are full, so fewer hints in flight is
 * faster: on that table (12.8 MB, past the part of the shared L3 this VM keeps; 10240 lookups,
 * int64 indices, timed in C, the same process alternating the forms), 32 rows ahead 75-76 us,
 * 16 or 20 ~72, 8 / 10 / 12 ~71; 12 was also the best of 12 / 20 / 32 for dim 32, 64 and 256
 * and for 4-bit rows. A hint per 64-byte line (both lines of a 128-byte row) instead of per 128
 * bytes took 74 us against 71: the second line of an aligned pair comes with the first (the
 * L2's adjacent-line prefetch), and also when rows start mid-pair (a table 64 bytes off a
 * 128-byte boundary measured the same). Hinting no qparams line was slower (int4 +14%).
 * Override with -DFB_EMB8_AHEAD=n. */
#ifndef FB_EMB8_AHEAD
#define FB_EMB8_AHEAD 12
#endif
/* Hints the row of index i (if any) into the cache: one hint per 128 bytes of codes (see above)
 * and the row's qparams line. Index i is not checked yet (bags are checked as they start), so an
 * index outside the table hints row 0 instead: no address is formed outside the table. IDX64 is
 * the index type (a constant where the AVX-512 bag functions inline this, c->idx64 in the scalar
 * path). */
static inline __attribute__((always_inline)) void fb_emb8_hint_idx(const fb_emb8_ctx *c, size_t i,
                                                                   const int IDX64) {
  if (i >= c->nidx) return;
  size_t r = (size_t)fb_get_index(c->idx, IDX64, i);
  r = r < c->rows ? r : 0;
  const uint8_t *row = c->w + r * c->row_bytes;
  __builtin_prefetch(row, 0, 3); /* rows are never empty: no loop test for one-hint rows */
  for (size_t o = 128; o < c->row_bytes; o += 128) __builtin_prefetch(row + o, 0, 3);
  __builtin_prefetch(c->scales + r * c->qstride, 0, 3);
  if (c->qstride == 1) __builtin_prefetch(c->zps + r, 0, 3); /* interleaved: the same line */
}
static inline __attribute__((always_inline)) void fb_emb8_hint(const fb_emb8_ctx *c, size_t i) {
  fb_emb8_hint_idx(c, i, c->idx64);
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

/* Codes [j, j + 64) of an int8 row as four vectors of int32 lanes in a permuted order: vector k,
 * lane d holds code j + 4 d + k (fb_emb8_unpermute restores the order). vpdpbusd with the byte
 * pattern 1 << 8 k adds 1 * (code 4 d + k) and 0 * the other three codes of dword d to zero, i.e.
 * sign-extends one byte per dword exactly. It runs on the FMA pipes, vpmovsxbd on the pipes that
 * also convert to float, the bottleneck of a row in cache: on Zen 4 (a loop over 64 rows in L1)
 * 8 vpmovsxbd + 8 vcvtdq2ps + 8 FMAs per 128-code row took 4.4 ns, with half of the widenings
 * done here 3.7-3.9 ns, all of them here 4.4 (the FMA pipes then the bottleneck); the kernel on
 * a 1000 x 128 table 55.7 -> 52.2 us. Other widenings were slower: shifts of 32-bit lanes 6.0,
 * vpmovsxbw + shifts 5.5, magic-number float conversion 4.8-5.0 ns.
 * Inline asm, not the intrinsic, because the caller is compiled for AVX-512 without VNNI (the
 * instantiation that runs this is only called when the CPU has VNNI, fb_emb8_bag__avx512). */
QP_TARGET_AVX512 static inline __attribute__((always_inline)) void fb_emb8_load64_vnni(
    const uint8_t *p, __m512i *q0, __m512i *q1, __m512i *q2, __m512i *q3) {
  const __m512i x = _mm512_loadu_si512((const void *)p);
#define FB_EMB8_PICK(q, k)                                                                  \
  *q = _mm512_setzero_si512();                                                             \
  __asm__("vpdpbusd %1, %2, %0" : "+v"(*q) : "v"(x), "v"(_mm512_set1_epi32(1 << (8 * k))));
  FB_EMB8_PICK(q0, 0) FB_EMB8_PICK(q1, 1) FB_EMB8_PICK(q2, 2) FB_EMB8_PICK(q3, 3)
#undef FB_EMB8_PICK
}

/* Inverse of fb_emb8_load64_vnni's order: a_k[d] is column 4 d + k of a 64-column block; on
 * return a0 .. a3 hold columns 0-15, 16-31, 32-47, 48-63. A 4 x 4 transpose of 32-bit lanes in
 * each 128-bit lane, then of the 128-bit lanes; once per bag, not per row. */
QP_TARGET_AVX512 static inline __attribute__((always_inline)) void fb_emb8_unpermute(
    __m512 *a0, __m512 *a1, __m512 *a2, __m512 *a3) {
  const __m512 t0 = _mm512_unpacklo_ps(*a0, *a1), t1 = _mm512_unpackhi_ps(*a0, *a1);
  const __m512 t2 = _mm512_unpacklo_ps(*a2, *a3), t3 = _mm512_unpackhi_ps(*a2, *a3);
  /* u_j's 128-bit lane L: columns 16 L + 4 j .. 16 L + 4 j + 3 */
  const __m512 u0 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
  const __m512 u1 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
  const __m512 u2 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
  const __m512 u3 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
  const __m512 v0 = _mm512_shuffle_f32x4(u0, u1, 0x44), v1 = _mm512_shuffle_f32x4(u0, u1, 0xee);
  const __m512 v2 = _mm512_shuffle_f32x4(u2, u3, 0x44), v3 = _mm512_shuffle_f32x4(u2, u3, 0xee);
  *a0 = _mm512_shuffle_f32x4(v0, v2, 0x88);
  *a1 = _mm512_shuffle_f32x4(v0, v2, 0xdd);
  *a2 = _mm512_shuffle_f32x4(v1, v3, 0x88);
  *a3 = _mm512_shuffle_f32x4(v1, v3, 0xdd);
}

/* The 32 4-bit codes of bytes p[0 .. 16) as two vectors of int32 lanes: lane d of *lo holds code
 * 2 d (the low nibble of byte d), of *hi code 2 d + 1 (fb_emb4_unpermute restores the order).
 * One widening per 32 codes instead of two per 16 (fb_emb8_load16's in-order nibble interleave):
 * a 128-column 4-bit row took 16 widenings and 32 and / or / shift ops, now 4 and 8. Kernel on
 * the benchmark's 10240 lookups: 100000 x 128 table 90 -> 59 us, 1000 x 128 85 -> 58 us. */
QP_TARGET_AVX512 static inline __attribute__((always_inline)) void fb_emb4_load32(
    const uint8_t *p, __m512i *lo, __m512i *hi) {
  const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
  *lo = _mm512_and_si512(b, _mm512_set1_epi32(0x0f));
  *hi = _mm512_srli_epi32(b, 4);
}

/* Inverse of fb_emb4_load32's order: a[d] is column 2 d, b[d] column 2 d + 1 of a 32-column
 * block; on return a holds columns 0-15 and b 16-31. Once per bag, not per row. */
QP_TARGET_AVX512 static inline __attribute__((always_inline)) void fb_emb4_unpermute(__m512 *a,
                                                                                     __m512 *b) {
  /* column t of the block: lane t / 2 of a (t even) or of b (t odd); 16 + t selects b */
  const __m512i first = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i second = _mm512_add_epi32(first, _mm512_set1_epi32(8));
  const __m512 lo = _mm512_permutex2var_ps(*a, first, *b);
  *b = _mm512_permutex2var_ps(*a, second, *b);
  *a = lo;
}

QP_TARGET_AVX512 static inline __attribute__((always_inline)) __mmask16 fb_emb8_lanes(
    const fb_emb8_ctx *c, size_t j, int bytes) {
  const size_t lanes = j >= c->dim ? 0 : (c->dim - j < 16 ? c->dim - j : 16);
  return (__mmask16)((1u << (bytes ? (lanes + 1) / 2 : lanes)) - 1u);
}

/* Columns [j0, j0 + 16 NV) of one bag [s, e) into out, the NV accumulators in registers over the
 * bag's rows. KIND, BITS, NV, FULL (every lane of the block inside the row), VNNI (int8, NV 8,
 * FULL only: fb_emb8_load64_vnni for the block's second half; the CPU must have AVX512-VNNI) and
 * IDX64 (int64 indices) are constants in each instantiation, so the row loop has no per-element
 * branches. Per element the float32
 * operations of the scalar path in its order; sums start from -0.0 and max from -inf, which
 * equals the scalar "first row is stored" because values are never NaN (codes and scales are
 * finite). Returns the rows used. */
QP_TARGET_AVX512 static inline __attribute__((always_inline)) size_t fb_emb8_bag_block(
    const fb_emb8_ctx *c, size_t s, size_t e, size_t j0, float *out, const int BITS,
    const int KIND, const int NV, const int FULL, const int VNNI, const int IDX64) {
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
  /* 4-bit rows of whole 128-column blocks: the codes of 16 bytes at a time (fb_emb4_load32) */
  const int SPLIT4 = BITS == 4 && FULL && NV == 8;
  /* the block's first code byte of row 0: each vector's load is then a constant displacement
   * from one row pointer (with j0 + 16 v in registers GCC spilled the offsets and reloaded
   * them every row: 99 -> 94 us on the benchmark's raw kernel loop) */
  const uint8_t *base = c->w + (BITS == 8 ? j0 : j0 / 2);
  const size_t row_bytes = c->row_bytes, qstride = c->qstride;
  const int64_t pad = c->pad;
  for (size_t i = s; i < e; i++) {
    if (j0 == 0) fb_emb8_hint_idx(c, i + FB_EMB8_AHEAD, IDX64); /* later blocks: rows in L1 */
    const int64_t r = fb_get_index(c->idx, IDX64, i);
    if (r == pad) continue;
    const uint8_t *row = base + (size_t)r * row_bytes;
    const int32_t zp = c->zps[(size_t)r * qstride];
    const __m512i vz = _mm512_set1_epi32(zp);
    const float scale = c->scales[(size_t)r * qstride];
    const __m512 vs = _mm512_set1_ps(scale);
    const __m512 vw = _mm512_set1_ps(KIND == FB_EMB8_WSUM ? c->psw[i] : 1.0f);
    if (KIND == FB_EMB8_BSUM) bias = fmaf(-(float)zp, scale, bias);
    /* VNNI (int8, 8 full vectors only): codes 64 .. 127 of the block in fb_emb8_load64_vnni's
     * order, so acc4 .. acc7 hold permuted columns until the store; SPLIT4: all 128 codes in
     * fb_emb4_load32's order (acc0 .. acc7 permuted in pairs) */
    __m512i qv0 = _mm512_setzero_si512(), qv1 = qv0, qv2 = qv0, qv3 = qv0, qv4 = qv0, qv5 = qv0,
            qv6 = qv0, qv7 = qv0;
    if (VNNI) fb_emb8_load64_vnni(row + 64, &qv4, &qv5, &qv6, &qv7);
    if (SPLIT4) {
      fb_emb4_load32(row, &qv0, &qv1);
      fb_emb4_load32(row + 16, &qv2, &qv3);
      fb_emb4_load32(row + 32, &qv4, &qv5);
      fb_emb4_load32(row + 48, &qv6, &qv7);
    }
#define FB_EMB8_STEP(v)                                                                      \
    if (v < NV) {                                                                            \
      const __m512i q = (VNNI && v >= 4) || SPLIT4                                           \
                            ? qv##v                                                          \
                            : fb_emb8_load16(row, BITS, FULL, 16 * v, m##v, mb##v);          \
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
  /* every operation above is lane-wise (the bias add below too), so permuting back at the end
   * gives each column exactly the value the in-order lanes would */
  if (VNNI) fb_emb8_unpermute(&acc4, &acc5, &acc6, &acc7);
  if (SPLIT4) {
    fb_emb4_unpermute(&acc0, &acc1);
    fb_emb4_unpermute(&acc2, &acc3);
    fb_emb4_unpermute(&acc4, &acc5);
    fb_emb4_unpermute(&acc6, &acc7);
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

/* One instantiation per (index type, bits, kind, block width, full block): the index type as a
 * constant takes a branch and a few instructions off each row's index read and hint. */
#define FB_EMB8_BAG_FN(IDX, BITS, KIND, NV, FULL, VNNI, NAME)                                  \
  QP_TARGET_AVX512 static size_t fb_emb8_bag_##IDX##_##BITS##_##KIND##_##NV##_##FULL##NAME(   \
      const fb_emb8_ctx *c, size_t s, size_t e, size_t j0, float *out) {                       \
    return fb_emb8_bag_block(c, s, e, j0, out, BITS, KIND, NV, FULL, VNNI, IDX == 64);         \
  }
#define FB_EMB8_BAG_FNS(IDX, BITS, KIND)   \
  FB_EMB8_BAG_FN(IDX, BITS, KIND, 2, 0, 0, ) \
  FB_EMB8_BAG_FN(IDX, BITS, KIND, 2, 1, 0, ) \
  FB_EMB8_BAG_FN(IDX, BITS, KIND, 8, 0, 0, ) \
  FB_EMB8_BAG_FN(IDX, BITS, KIND, 8, 1, 0, )
#define FB_EMB8_BAG_FNS_IDX(IDX)                                               \
  FB_EMB8_BAG_FNS(IDX, 8, 0) FB_EMB8_BAG_FNS(IDX, 8, 1) FB_EMB8_BAG_FNS(IDX, 8, 2) \
  FB_EMB8_BAG_FNS(IDX, 8, 3) FB_EMB8_BAG_FNS(IDX, 4, 0) FB_EMB8_BAG_FNS(IDX, 4, 1) \
  FB_EMB8_BAG_FNS(IDX, 4, 2) FB_EMB8_BAG_FNS(IDX, 4, 3)                          \
  /* int8 128-column blocks with half of the codes widened by vpdpbusd */       \
  FB_EMB8_BAG_FN(IDX, 8, 0, 8, 1, 1, _vnni) FB_EMB8_BAG_FN(IDX, 8, 1, 8, 1, 1, _vnni) \
  FB_EMB8_BAG_FN(IDX, 8, 2, 8, 1, 1, _vnni) FB_EMB8_BAG_FN(IDX, 8, 3, 8, 1, 1, _vnni)
FB_EMB8_BAG_FNS_IDX(32)
FB_EMB8_BAG_FNS_IDX(64)
#define FB_EMB8_ROW(IDX, BITS, KIND)                                                        \
  {fb_emb8_bag_##IDX##_##BITS##_##KIND##_2_0, fb_emb8_bag_##IDX##_##BITS##_##KIND##_2_1,    \
   fb_emb8_bag_##IDX##_##BITS##_##KIND##_8_0, fb_emb8_bag_##IDX##_##BITS##_##KIND##_8_1}
#define FB_EMB8_BITS(IDX, BITS)                                                    \
  {FB_EMB8_ROW(IDX, BITS, 0), FB_EMB8_ROW(IDX, BITS, 1), FB_EMB8_ROW(IDX, BITS, 2), \
   FB_EMB8_ROW(IDX, BITS, 3)}
/* [int64 indices][bits == 4][kind][2 * (block of 8 vectors) + full] */
static const fb_emb8_bag_fn fb_emb8_bag_fns[2][2][4][4] = {
    {FB_EMB8_BITS(32, 8), FB_EMB8_BITS(32, 4)}, {FB_EMB8_BITS(64, 8), FB_EMB8_BITS(64, 4)}};
/* [int64 indices][kind]: fb_emb8_bag_fns[.][0][kind][3] on CPUs with AVX512-VNNI */
static const fb_emb8_bag_fn fb_emb8_bag_fns_vnni[2][4] = {
    {fb_emb8_bag_32_8_0_8_1_vnni, fb_emb8_bag_32_8_1_8_1_vnni, fb_emb8_bag_32_8_2_8_1_vnni,
     fb_emb8_bag_32_8_3_8_1_vnni},
    {fb_emb8_bag_64_8_0_8_1_vnni, fb_emb8_bag_64_8_1_8_1_vnni, fb_emb8_bag_64_8_2_8_1_vnni,
     fb_emb8_bag_64_8_3_8_1_vnni}};
#undef FB_EMB8_BITS
#undef FB_EMB8_ROW
#undef FB_EMB8_BAG_FNS_IDX
#undef FB_EMB8_BAG_FNS
#undef FB_EMB8_BAG_FN

/* fb_emb8_bad with 8 indices per compare (int32 indices sign-extended, so a negative one is a
 * huge unsigned value as in the scalar form): the scalar loop was ~4% of the kernel's samples
 * on the benchmark's 20-index bags. */
QP_TARGET_AVX512 static uint64_t fb_emb8_bad__avx512(const fb_emb8_ctx *c, size_t s, size_t e) {
  const __m512i rows = _mm512_set1_epi64((long long)c->rows);
  __mmask8 bad = 0;
  for (size_t i = s; i < e; i += 8) {
    const __mmask8 m = (__mmask8)(e - i >= 8 ? 0xff : (1u << (e - i)) - 1u);
    const __m512i v = c->idx64
                          ? _mm512_maskz_loadu_epi64(m, (const int64_t *)c->idx + i)
                          : _mm512_cvtepi32_epi64(
                                _mm256_maskz_loadu_epi32(m, (const int32_t *)c->idx + i));
    bad |= _mm512_mask_cmpge_epu64_mask(m, v, rows);
  }
  return bad;
}

/* The whole bag [s, e): 32-column blocks for narrow tables, 128-column blocks otherwise (a
 * wide row takes several passes over the bag; the later ones find its rows in L1). */
static size_t fb_emb8_bag__avx512(const fb_emb8_ctx *c, size_t s, size_t e, float *out) {
  const int kind = fb_emb8_kind(c, s, e);
  const size_t width = c->dim > 32 ? 128 : 32;
  const fb_emb8_bag_fn *fns =
      fb_emb8_bag_fns[c->idx64 != 0][c->bits == 4][kind] + (width == 128 ? 2 : 0);
  const fb_emb8_bag_fn full = c->avx512 == 2 && width == 128
                                  ? fb_emb8_bag_fns_vnni[c->idx64 != 0][kind]
                                  : fns[1];
  size_t used = 0;
  for (size_t j0 = 0; j0 < c->dim; j0 += width)
    used = (j0 + width <= c->dim ? full : fns[0])(c, s, e, j0, out);
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
#if defined(FB_HAVE_X86)
    const uint64_t bad = c->avx512 ? fb_emb8_bad__avx512(c, s, e) : fb_emb8_bad(c, s, e);
#else
    const uint64_t bad = fb_emb8_bad(c, s, e);
#endif
    if (bad) {
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
      c->row_fn(c->w + (size_t)r * c->row_bytes, c->bits, c->dim, zp, scale,
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
                   num_bags, open_end, rows, &status, per_sample_weights, padding_idx, out, 0,
                   fb_emb8_row__scalar};
#if defined(FB_HAVE_X86)
  const int isa = qp_active_isa();
  if (isa == QP_ISA_AVX2 || isa == QP_ISA_AVXVNNI) c.row_fn = fb_emb8_row__avx2;
  /* The VNNI form (fb_emb8_load64_vnni) saves vector work but lengthens each row's dependency
   * chain: on tables the cache holds (int8, 128 columns: 1000 to 64000 rows, up to 8 MB) it was
   * 4-6% faster, on the 100000-row (12.8 MB) benchmark table, which waits on memory, ~1.5%
   * slower; hence the size test. */
  if (fb_emb_use_avx512())
    c.avx512 = isa == QP_ISA_AVX512VNNI && bits == 8 &&
                       rows * c.row_bytes <= ((size_t)8 << 20)
                   ? 2
                   : 1;
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
