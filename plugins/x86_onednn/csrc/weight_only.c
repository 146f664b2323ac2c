/*
 * Weight-only linear: fp32 activations, int8 (per output channel) or int4
 * (symmetric, group-wise) weights dequantized in registers, fp32 out.
 *
 * Packed layouts:
 *   int8  the static linear's 16x4 tiles (onednn_kernels.h), so one packed weight serves
 *         the int8 GEMM and weight-only calls; per-channel scales [n]
 *   int4  w4[t][k/2][16]  tile t = 16 output channels, byte = (w[k+1] << 4) | (w[k] & 15)
 *         (k even; built by the Python wrapper); scales [K/group][np], np = n rounded to 16
 * Numerics, identical on every path (one output channel = one lane, k in order,
 * every multiply-add a single-rounding fmaf):
 *   int8  acc = fma(x[k], w[k], acc) over k;            y = acc * s[n]     (+ bias[n])
 *   int4  part = fma(x[k], w[k], part) within a group;  acc = fma(part, s[g][n], acc)
 *                                                       y = acc            (+ bias[n])
 * The final bias add is a separate rounding (no contraction).
 */
#include <math.h>
#include <string.h>

#include "onednn_kernels.h"
#include "xo_internal.h"

typedef struct {
  const float *x;
  size_t m, k, n, group; /* group == 0: int8 per channel */
  const uint8_t *w;
  const float *scales;
  const float *bias;
  float *out;
} xo_wo_problem;

/* Columns [t*16, t*16+16) of rows [0, m) into out (nc valid columns). */
typedef void (*xo_wo_tile_fn)(const xo_wo_problem *p, size_t t, size_t nc);
/* Tiles [t0, t0 + 4) (those that exist) of rows [0, m). */
typedef void (*xo_wo_tiles_fn)(const xo_wo_problem *p, size_t t0);

#define XO_WO_NT 4
/* Row count from which int4 calls take the row-blocked kernel (xo_wo4_rows_avx512); 2 rows
 * measured ~10% faster with the 2x4 block (4 tiles: 8 accumulator chains instead of 4). */
#define XO_WO4_MIN_ROWS 3

static inline float xo_wo_w(const xo_wo_problem *p, size_t t, size_t kk, size_t c) {
  if (p->group == 0)
    return (float)(int8_t)p->w[t * xo_round_up(p->k, XO_KC) * XO_NR + (kk / XO_KC) * (XO_NR * XO_KC) +
                               c * XO_KC + kk % XO_KC];
  const uint8_t b = p->w[(t * (p->k / 2) + kk / 2) * XO_NR + c];
  const int v = (kk & 1) ? (int)(int8_t)b >> 4 : ((int)(b & 15) ^ 8) - 8;
  return (float)v;
}

static inline float xo_wo_finish(const xo_wo_problem *p, float acc, size_t col) {
  if (p->bias != NULL) {
    XO_FP_BARRIER(acc);
    acc = acc + p->bias[col];
  }
  return acc;
}

static void xo_wo_tile_scalar(const xo_wo_problem *p, size_t t, size_t nc) {
  const size_t np = xo_ntiles(p->n) * XO_NR;
  for (size_t r = 0; r < p->m; r++)
    for (size_t c = 0; c < nc; c++) {
      const float *xr = p->x + r * p->k;
      const size_t col = t * XO_NR + c;
      float acc = 0.0f;
      if (p->group == 0) {
        for (size_t kk = 0; kk < p->k; kk++) acc = fmaf(xr[kk], xo_wo_w(p, t, kk, c), acc);
        acc = acc * p->scales[col];
      } else {
        for (size_t g0 = 0; g0 < p->k; g0 += p->group) {
          float part = 0.0f;
          for (size_t kk = g0; kk < g0 + p->group; kk++) part = fmaf(xr[kk], xo_wo_w(p, t, kk, c), part);
          acc = fmaf(part, p->scales[(g0 / p->group) * np + col], acc);
        }
      }
      p->out[r * p->n + col] = xo_wo_finish(p, acc, col);
    }
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* AVX-512: one zmm = the 16 columns of a tile. A block of MR rows x NT tiles keeps MR*NT
 * independent accumulator chains (GEMV needs several tiles in flight to hide the FMA latency);
 * rows / tiles past the end repeat the last valid one and are not stored. */
static inline __attribute__((always_inline)) QP_TARGET_AVX512 void xo_wo_block_avx512(
    const xo_wo_problem *p, const size_t MR, const size_t NT, size_t r0, size_t t0) {
  const size_t np = xo_ntiles(p->n) * XO_NR, ntiles = xo_ntiles(p->n);
  const float *xr[4];
  size_t tt[4];
  for (size_t r = 0; r < MR; r++) xr[r] = p->x + (r0 + r < p->m ? r0 + r : p->m - 1) * p->k;
  for (size_t j = 0; j < NT; j++) tt[j] = t0 + j < ntiles ? t0 + j : ntiles - 1;
  __m512 acc[4][4];
  for (size_t r = 0; r < MR; r++)
    for (size_t j = 0; j < NT; j++) acc[r][j] = _mm512_setzero_ps();
  if (p->group == 0) {
    /* 16x4 tiles: one 64-byte load = 16 columns x 4 k; byte j of each dword is k = 4g + j,
     * sign-extended by shifting it to the top and back. */
    const size_t kp = xo_round_up(p->k, XO_KC);
    const int8_t *w[4];
    for (size_t j = 0; j < NT; j++) w[j] = (const int8_t *)p->w + tt[j] * kp * XO_NR;
    for (size_t k0 = 0; k0 < p->k; k0 += XO_KC) {
      __m512i wb[4];
      for (size_t j = 0; j < NT; j++) wb[j] = _mm512_loadu_si512(w[j] + k0 * XO_NR);
      const size_t kn = p->k - k0 < XO_KC ? p->k - k0 : XO_KC;
      for (size_t u = 0; u < kn; u++) {
        __m512 wv[4];
        for (size_t j = 0; j < NT; j++) {
          const __m512i sh = _mm512_slli_epi32(wb[j], (unsigned)(24 - 8 * u));
          wv[j] = _mm512_cvtepi32_ps(_mm512_srai_epi32(sh, 24));
        }
        for (size_t r = 0; r < MR; r++) {
          const __m512 xv = _mm512_set1_ps(xr[r][k0 + u]);
          for (size_t j = 0; j < NT; j++) acc[r][j] = _mm512_fmadd_ps(xv, wv[j], acc[r][j]);
        }
      }
    }
    for (size_t j = 0; j < NT; j++) {
      const size_t nc = p->n - tt[j] * XO_NR < XO_NR ? p->n - tt[j] * XO_NR : XO_NR;
      const __m512 s = _mm512_maskz_loadu_ps((__mmask16)(nc >= 16 ? 0xFFFFu : ((1u << nc) - 1u)),
                                             p->scales + tt[j] * XO_NR);
      for (size_t r = 0; r < MR; r++) acc[r][j] = _mm512_mul_ps(acc[r][j], s);
    }
  } else {
    const uint8_t *w[4];
    for (size_t j = 0; j < NT; j++) w[j] = p->w + tt[j] * (p->k / 2) * XO_NR;
    for (size_t g0 = 0; g0 < p->k; g0 += p->group) {
      __m512 part[4][4];
      for (size_t r = 0; r < MR; r++)
        for (size_t j = 0; j < NT; j++) part[r][j] = _mm512_setzero_ps();
      for (size_t kk = g0; kk < g0 + p->group; kk += 2) {
        __m512 lo[4], hi[4];
        for (size_t j = 0; j < NT; j++) {
          const __m512i b = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w[j] + (kk / 2) * XO_NR)));
          lo[j] = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(b, 28), 28));
          hi[j] = _mm512_cvtepi32_ps(_mm512_srai_epi32(b, 4));
        }
        for (size_t r = 0; r < MR; r++) {
          const __m512 xl = _mm512_set1_ps(xr[r][kk]), xh = _mm512_set1_ps(xr[r][kk + 1]);
          for (size_t j = 0; j < NT; j++) {
            part[r][j] = _mm512_fmadd_ps(xl, lo[j], part[r][j]);
            part[r][j] = _mm512_fmadd_ps(xh, hi[j], part[r][j]);
          }
        }
      }
      for (size_t j = 0; j < NT; j++) {
        const __m512 s = _mm512_loadu_ps(p->scales + (g0 / p->group) * np + tt[j] * XO_NR);
        for (size_t r = 0; r < MR; r++) acc[r][j] = _mm512_fmadd_ps(part[r][j], s, acc[r][j]);
      }
    }
  }
  for (size_t j = 0; j < NT && t0 + j < ntiles; j++) {
    const size_t t = t0 + j, nc = p->n - t * XO_NR < XO_NR ? p->n - t * XO_NR : XO_NR;
    const __mmask16 mask = (__mmask16)(nc >= 16 ? 0xFFFFu : ((1u << nc) - 1u));
    for (size_t r = 0; r < MR && r0 + r < p->m; r++) {
      __m512 v = acc[r][j];
      if (p->bias != NULL) {
        XO_FP_BARRIER_ZMM(v);
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, p->bias + t * XO_NR));
      }
      _mm512_mask_storeu_ps(p->out + (r0 + r) * p->n + t * XO_NR, mask, v);
    }
  }
}

static QP_TARGET_AVX512 void xo_wo_1x4_avx512(const xo_wo_problem *p, size_t r0, size_t t0) {
  xo_wo_block_avx512(p, 1, 4, r0, t0);
}
static QP_TARGET_AVX512 void xo_wo_4x2_avx512(const xo_wo_problem *p, size_t r0, size_t t0) {
  xo_wo_block_avx512(p, 4, 2, r0, t0);
}
static QP_TARGET_AVX512 void xo_wo_2x4_avx512(const xo_wo_problem *p, size_t r0, size_t t0) {
  xo_wo_block_avx512(p, 2, 4, r0, t0);
}

/* The signed int4 in bits 0-3 of each lane as an exact float, without vcvtdq2ps: one
 * vpternlogd forms the float 2^23 + (nibble ^ 8) (bits 0x4B000000 | u, u < 16), and
 * subtracting 2^23 + 8 leaves nibble ^ 8 - 8, the two's-complement value (-8..7). Both steps
 * are exact, so the weights equal the converted ones bit for bit. Measured 2-3% faster than
 * shift + vcvtdq2ps in the 8-row block at 32x4096x4096, which runs near the FMA peak. */
static inline __attribute__((always_inline)) QP_TARGET_AVX512 __m512 xo_nibble_f32(__m512i v) {
  /* per bit: mask bit set (bits 0-3) ? v ^ c : c, with c = 0x4B000008 */
  const __m512i bits =
      _mm512_ternarylogic_epi32(v, _mm512_set1_epi32(0xF), _mm512_set1_epi32(0x4B000008), 0x6A);
  return _mm512_sub_ps(_mm512_castsi512_ps(bits), _mm512_set1_ps(8388616.0f));
}

/* int4, several rows: MR (<= 8) rows x 2 tiles. Turning a tile's 2 k x 16 nibbles into two
 * float vectors takes ~5 vector ops, so the 2-row blocks of xo_wo_block_avx512 (4 FMAs per
 * unpack) spent as much time unpacking as multiplying (int4 was ~30% slower than int8 from
 * 8 rows up); here each unpacked pair of k values feeds 2 * MR FMAs (16 with 8 rows). The
 * 16 group partial sums stay in registers; the 16 running sums across groups live in a stack
 * block (one load / FMA / store per group and row). Per lane the operations and their order
 * are exactly those of the scalar path (k in order inside a group, then fma(part, s, acc)
 * group by group), so the result is bit-identical; only the loop nest around them changes.
 * A lone last tile (odd tile count) is computed twice and stored once. */
static inline __attribute__((always_inline)) QP_TARGET_AVX512 void xo_wo4_rows_avx512(
    const xo_wo_problem *p, const size_t MR, size_t r0, size_t t0) {
  const size_t np = xo_ntiles(p->n) * XO_NR, ntiles = xo_ntiles(p->n), kb = p->k / 2;
  const size_t t1 = t0 + 1 < ntiles ? t0 + 1 : t0;
  const uint8_t *w0 = p->w + t0 * kb * XO_NR, *w1 = p->w + t1 * kb * XO_NR;
  const float *xr[8];
  for (size_t r = 0; r < MR; r++) xr[r] = p->x + (r0 + r) * p->k;
  __m512 acc[8][2]; /* across groups: memory operands (see above) */
  for (size_t r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (size_t g0 = 0; g0 < p->k; g0 += p->group) {
    __m512 part[8][2];
    for (size_t r = 0; r < MR; r++) part[r][0] = part[r][1] = _mm512_setzero_ps();
    for (size_t kk = g0; kk < g0 + p->group; kk += 2) {
      const size_t off = (kk / 2) * XO_NR;
      const __m512i b0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(w0 + off)));
      const __m512i b1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(w1 + off)));
      const __m512 lo0 = xo_nibble_f32(b0), lo1 = xo_nibble_f32(b1);
      const __m512 hi0 = xo_nibble_f32(_mm512_srli_epi32(b0, 4));
      const __m512 hi1 = xo_nibble_f32(_mm512_srli_epi32(b1, 4));
#pragma GCC unroll 8
      for (size_t r = 0; r < MR; r++) {
        const __m512 xl = _mm512_set1_ps(xr[r][kk]), xh = _mm512_set1_ps(xr[r][kk + 1]);
        part[r][0] = _mm512_fmadd_ps(xh, hi0, _mm512_fmadd_ps(xl, lo0, part[r][0]));
        part[r][1] = _mm512_fmadd_ps(xh, hi1, _mm512_fmadd_ps(xl, lo1, part[r][1]));
      }
    }
    const __m512 s0 = _mm512_loadu_ps(p->scales + (g0 / p->group) * np + t0 * XO_NR);
    const __m512 s1 = _mm512_loadu_ps(p->scales + (g0 / p->group) * np + t1 * XO_NR);
    for (size_t r = 0; r < MR; r++) {
      acc[r][0] = _mm512_fmadd_ps(part[r][0], s0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(part[r][1], s1, acc[r][1]);
    }
  }
  for (size_t j = 0; j < 2 && t0 + j < ntiles; j++) {
    const size_t t = t0 + j, nc = p->n - t * XO_NR < XO_NR ? p->n - t * XO_NR : XO_NR;
    const __mmask16 mask = (__mmask16)(nc >= 16 ? 0xFFFFu : ((1u << nc) - 1u));
    for (size_t r = 0; r < MR; r++) {
      __m512 v = acc[r][j];
      if (p->bias != NULL) {
        XO_FP_BARRIER_ZMM(v);
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, p->bias + t * XO_NR));
      }
      _mm512_mask_storeu_ps(p->out + (r0 + r) * p->n + t * XO_NR, mask, v);
    }
  }
}

typedef void (*xo_wo4_rows_fn)(const xo_wo_problem *p, size_t r0, size_t t0);
#define XO_WO4_ROWS(MR)                                                                        \
  static QP_TARGET_AVX512 void xo_wo4_rows##MR##_avx512(const xo_wo_problem *p, size_t r0,     \
                                                        size_t t0) {                           \
    xo_wo4_rows_avx512(p, MR, r0, t0);                                                         \
  }
XO_WO4_ROWS(1)
XO_WO4_ROWS(2)
XO_WO4_ROWS(3)
XO_WO4_ROWS(4)
XO_WO4_ROWS(5)
XO_WO4_ROWS(6)
XO_WO4_ROWS(7)
XO_WO4_ROWS(8)
static const xo_wo4_rows_fn xo_wo4_rows_table[8] = {
    xo_wo4_rows1_avx512, xo_wo4_rows2_avx512, xo_wo4_rows3_avx512, xo_wo4_rows4_avx512,
    xo_wo4_rows5_avx512, xo_wo4_rows6_avx512, xo_wo4_rows7_avx512, xo_wo4_rows8_avx512};

/* The tiles [t0, t0 + 4) for every row (the task unit of all paths is 4 tiles). */
static void xo_wo_tiles_avx512(const xo_wo_problem *p, size_t t0) {
  if (p->m == 1) {
    xo_wo_1x4_avx512(p, 0, t0);
  } else if (p->group == 0) {
    for (size_t r0 = 0; r0 < p->m; r0 += 4) {
      xo_wo_4x2_avx512(p, r0, t0);
      xo_wo_4x2_avx512(p, r0, t0 + 2);
    }
  } else if (p->m < XO_WO4_MIN_ROWS) {
    for (size_t r0 = 0; r0 < p->m; r0 += 2) xo_wo_2x4_avx512(p, r0, t0);
  } else {
    for (size_t t = t0; t < t0 + XO_WO_NT && t < xo_ntiles(p->n); t += 2)
      for (size_t r0 = 0; r0 < p->m; r0 += 8)
        xo_wo4_rows_table[(p->m - r0 < 8 ? p->m - r0 : 8) - 1](p, r0, t);
  }
}

/* AVX2: the tile as two 8-column halves; same per-lane operation order. */
static QP_TARGET_AVX2 void xo_wo_tile_avx2(const xo_wo_problem *p, size_t t, size_t nc) {
  const size_t np = xo_ntiles(p->n) * XO_NR;
  for (size_t r = 0; r < p->m; r++) {
    const float *xr = p->x + r * p->k;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    if (p->group == 0) {
      const int8_t *w = (const int8_t *)p->w + t * xo_round_up(p->k, XO_KC) * XO_NR;
      for (size_t k0 = 0; k0 < p->k; k0 += XO_KC) {
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)(w + k0 * XO_NR));
        const __m256i b1 = _mm256_loadu_si256((const __m256i *)(w + k0 * XO_NR + 32));
        const size_t kn = p->k - k0 < XO_KC ? p->k - k0 : XO_KC;
        for (size_t u = 0; u < kn; u++) {
          const __m256 xv = _mm256_set1_ps(xr[k0 + u]);
          const __m128i sh = _mm_cvtsi32_si128((int)(24 - 8 * u));
          acc0 = _mm256_fmadd_ps(xv, _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_sll_epi32(b0, sh), 24)), acc0);
          acc1 = _mm256_fmadd_ps(xv, _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_sll_epi32(b1, sh), 24)), acc1);
        }
      }
      float sc[16] = {0};
      memcpy(sc, p->scales + t * XO_NR, nc * sizeof(float));
      acc0 = _mm256_mul_ps(acc0, _mm256_loadu_ps(sc));
      acc1 = _mm256_mul_ps(acc1, _mm256_loadu_ps(sc + 8));
    } else {
      const uint8_t *w = p->w + t * (p->k / 2) * XO_NR;
      for (size_t g0 = 0; g0 < p->k; g0 += p->group) {
        __m256 q0 = _mm256_setzero_ps(), q1 = q0;
        for (size_t kk = g0; kk < g0 + p->group; kk += 2) {
          const __m128i b = _mm_loadu_si128((const __m128i *)(w + (kk / 2) * XO_NR));
          const __m256i b0 = _mm256_cvtepi8_epi32(b), b1 = _mm256_cvtepi8_epi32(_mm_srli_si128(b, 8));
          const __m256 xl = _mm256_set1_ps(xr[kk]), xh = _mm256_set1_ps(xr[kk + 1]);
          q0 = _mm256_fmadd_ps(xl, _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(b0, 28), 28)), q0);
          q1 = _mm256_fmadd_ps(xl, _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(b1, 28), 28)), q1);
          q0 = _mm256_fmadd_ps(xh, _mm256_cvtepi32_ps(_mm256_srai_epi32(b0, 4)), q0);
          q1 = _mm256_fmadd_ps(xh, _mm256_cvtepi32_ps(_mm256_srai_epi32(b1, 4)), q1);
        }
        const float *s = p->scales + (g0 / p->group) * np + t * XO_NR;
        acc0 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(s), acc0);
        acc1 = _mm256_fmadd_ps(q1, _mm256_loadu_ps(s + 8), acc1);
      }
    }
    float tmp[16];
    _mm256_storeu_ps(tmp, acc0);
    _mm256_storeu_ps(tmp + 8, acc1);
    for (size_t c = 0; c < nc; c++) p->out[r * p->n + t * XO_NR + c] = xo_wo_finish(p, tmp[c], t * XO_NR + c);
  }
}
#endif

/* Runs a per-tile function on the (up to) 4 tiles of a task. */
#define XO_WO_EACH_TILE(name, tile_fn)                                             \
  static void name(const xo_wo_problem *p, size_t t0) {                           \
    for (size_t t = t0; t < t0 + XO_WO_NT && t < xo_ntiles(p->n); t++)            \
      tile_fn(p, t, p->n - t * XO_NR < XO_NR ? p->n - t * XO_NR : XO_NR);         \
  }
XO_WO_EACH_TILE(xo_wo_tiles_scalar, xo_wo_tile_scalar)
#if defined(__x86_64__) || defined(__i386__)
XO_WO_EACH_TILE(xo_wo_tiles_avx2, xo_wo_tile_avx2)
#endif

static xo_wo_tiles_fn xo_wo_select(void) {
  switch (qp_active_isa()) {
#if defined(__x86_64__) || defined(__i386__)
    case QP_ISA_AVX512VNNI:
    case QP_ISA_AVX512:
      return xo_wo_tiles_avx512;
    case QP_ISA_AVXVNNI:
    case QP_ISA_AVX2:
      return xo_wo_tiles_avx2;
#endif
    default:
      return xo_wo_tiles_scalar;
  }
}

typedef struct {
  const xo_wo_problem *p;
  xo_wo_tiles_fn fn;
} xo_wo_ctx;

static void xo_wo_task(void *vctx, size_t begin, size_t end) {
  const xo_wo_ctx *c = (const xo_wo_ctx *)vctx;
  for (size_t q = begin; q < end; q++) c->fn(c->p, q * XO_WO_NT);
}

int x86_onednn_linear_weight_only_f32(const float *x, size_t m, size_t k, const uint8_t *packed,
                                      const float *scales, size_t n, size_t group,
                                      const float *bias, float *out) {
  if (group != 0 && (group % 2 != 0 || k % group != 0)) return QP_ERR_INVALID_ARGUMENT;
  if (n == 0 || m == 0) return QP_OK;
  if ((k > 0 && (x == NULL || packed == NULL)) || scales == NULL || out == NULL)
    return QP_ERR_INVALID_ARGUMENT;
  if (m > SIZE_MAX / (k + 1) || m > SIZE_MAX / n) return QP_ERR_INVALID_ARGUMENT;
  xo_wo_problem p = {x, m, k, n, group, packed, scales, bias, out};
  xo_wo_ctx ctx = {&p, xo_wo_select()};
  const size_t tasks = (xo_ntiles(n) + XO_WO_NT - 1) / XO_WO_NT;
  const size_t work = m * k * XO_NR * XO_WO_NT + 1;
  const size_t grain = work >= ((size_t)1 << 16) ? 1 : ((size_t)1 << 16) / work + 1;
  qp_parallel_for(tasks, grain, xo_wo_task, &ctx);
  return QP_OK;
}
