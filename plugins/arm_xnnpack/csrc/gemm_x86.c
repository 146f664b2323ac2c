/*
 * x86-64 microkernels for the packed qc8w layout (16 channels x 4 k per 64 bytes).
 *
 *   AVX2        2x16c4: sign-extend to int16 (vpmovsxbw) and vpmaddwd, exact
 *               (no vpmaddubsw: its int16 pair sums saturate for s8 x s8).
 *   AVX-512     4x16c4: the same with zmm registers.
 *   AVX-512 VNNI 4x16c4: vpdpbusd multiplies u8 x s8 only, so activations are
 *               fed as x + 128 (x ^ 0x80) and 128 * row_sum is subtracted at
 *               the end: sum (x + 128) * w - 128 * sum w = sum x * w.
 *
 * Epilogues convert int32 to float (vcvtdq2ps, the same rounding as a C cast),
 * multiply, clamp in float, and round with vcvtps2dq (round half to even in
 * the default MXCSR mode, like nearbyintf), so they match qp_requantize bit
 * for bit. Everything is compiled through target attributes, never -m flags.
 */
#include "xnnpack_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* Rows past mr re-read the last valid row (their results are never stored). */
#define XNN_ROW_PTRS(a, a_stride, mr, a0, a1, a2, a3)      \
  const int8_t *a0 = (a);                                   \
  const int8_t *a1 = (mr) > 1 ? a0 + (a_stride) : a0;       \
  const int8_t *a2 = (mr) > 2 ? a1 + (a_stride) : a1;       \
  const int8_t *a3 = (mr) > 3 ? a2 + (a_stride) : a2;       \
  (void)a2;                                                 \
  (void)a3

/* ------------------------------------------------------------------ AVX2 -- */

QP_TARGET_AVX2 static inline __m256i xnn_avx2_bcast_x4(int32_t x4) {
  return _mm256_broadcastq_epi64(_mm_cvtepi8_epi16(_mm_cvtsi32_si128(x4)));
}

QP_TARGET_AVX2 static inline void xnn_avx2_step(const int8_t *w, __m256i x0, __m256i x1, __m256i c0[4],
                                                __m256i c1[4]) {
  for (int q = 0; q < 4; q++) {
    const __m256i vw = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 16 * q)));
    c0[q] = _mm256_add_epi32(c0[q], _mm256_madd_epi16(vw, x0));
    c1[q] = _mm256_add_epi32(c1[q], _mm256_madd_epi16(vw, x1));
  }
}

/* [c0a c0b c1a c1b | c2a c2b c3a c3b] x2 -> 8 channel sums in order. */
QP_TARGET_AVX2 static inline __m256i xnn_avx2_reduce(__m256i lo, __m256i hi) {
  return _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo, hi), _MM_SHUFFLE(3, 1, 2, 0));
}

QP_TARGET_AVX2 static void xnn_qs8_qc8w_gemm_ukernel_2x16c4__avx2(size_t mr, size_t k, const int8_t *a,
                                                                  size_t a_stride, const int8_t *w,
                                                                  const int32_t *row_sums, int32_t *raw) {
  (void)row_sums;
  XNN_ROW_PTRS(a, a_stride, mr, a0, a1, a2, a3);
  __m256i c0[4], c1[4];
  for (int q = 0; q < 4; q++) c0[q] = c1[q] = _mm256_setzero_si256();
  size_t p = 0;
  for (; p + 4 <= k; p += 4, w += 64)
    xnn_avx2_step(w, xnn_avx2_bcast_x4(xnn_load_x4(a0 + p)), xnn_avx2_bcast_x4(xnn_load_x4(a1 + p)), c0, c1);
  if (p < k)
    xnn_avx2_step(w, xnn_avx2_bcast_x4(xnn_load_x4_tail(a0 + p, k - p)),
                  xnn_avx2_bcast_x4(xnn_load_x4_tail(a1 + p, k - p)), c0, c1);
  _mm256_storeu_si256((__m256i *)raw, xnn_avx2_reduce(c0[0], c0[1]));
  _mm256_storeu_si256((__m256i *)(raw + 8), xnn_avx2_reduce(c0[2], c0[3]));
  if (mr > 1) {
    _mm256_storeu_si256((__m256i *)(raw + 16), xnn_avx2_reduce(c1[0], c1[1]));
    _mm256_storeu_si256((__m256i *)(raw + 24), xnn_avx2_reduce(c1[2], c1[3]));
  }
}

/* 16 floats already on the output grid (before the zero point): clamp, round half to even, add zp, int8. */
QP_TARGET_AVX2 static inline __m128i xnn_avx2_round_pack16(__m256 f0, __m256 f1, __m256 lo, __m256 hi, __m256i zp) {
  f0 = _mm256_min_ps(_mm256_max_ps(f0, lo), hi);
  f1 = _mm256_min_ps(_mm256_max_ps(f1, lo), hi);
  const __m256i i0 = _mm256_add_epi32(_mm256_cvtps_epi32(f0), zp);
  const __m256i i1 = _mm256_add_epi32(_mm256_cvtps_epi32(f1), zp);
  const __m256i s16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(i0, i1), _MM_SHUFFLE(3, 1, 2, 0));
  return _mm_packs_epi16(_mm256_castsi256_si128(s16), _mm256_extracti128_si256(s16, 1));
}

QP_TARGET_AVX2 static inline __m128i xnn_avx2_requant16(__m256i v0, __m256i v1, __m256 m0, __m256 m1,
                                                        __m256 lo, __m256 hi, __m256i zp) {
  return xnn_avx2_round_pack16(_mm256_mul_ps(_mm256_cvtepi32_ps(v0), m0), _mm256_mul_ps(_mm256_cvtepi32_ps(v1), m1),
                               lo, hi, zp);
}

QP_TARGET_AVX2 static void xnn_qs8_requant__avx2(size_t mr, size_t nc, const int32_t *raw,
                                                 const xnn_requant_params *p, int8_t *out,
                                                 size_t out_stride) {
  if (nc < XNN_NR) { /* a partial block: the scalar epilogue (same arithmetic) reads only nc */
    xnn_qs8_requant__scalar(mr, nc, raw, p, out, out_stride);
    return;
  }
  const __m256i b0 = _mm256_loadu_si256((const __m256i *)p->bias_eff);
  const __m256i b1 = _mm256_loadu_si256((const __m256i *)(p->bias_eff + 8));
  const __m256 m0 = p->per_channel ? _mm256_loadu_ps(p->mult) : _mm256_set1_ps(p->mult[0]);
  const __m256 m1 = p->per_channel ? _mm256_loadu_ps(p->mult + 8) : m0;
  const __m256 lo = _mm256_set1_ps((float)(p->qmin - p->zp)), hi = _mm256_set1_ps((float)(p->qmax - p->zp));
  const __m256i zp = _mm256_set1_epi32(p->zp);
  for (size_t r = 0; r < mr; r++) {
    const __m256i v0 = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(raw + r * 16)), b0);
    const __m256i v1 = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(raw + r * 16 + 8)), b1);
    _mm_storeu_si128((__m128i *)(out + r * out_stride), xnn_avx2_requant16(v0, v1, m0, m1, lo, hi, zp));
  }
}

QP_TARGET_AVX2 static inline __m256 xnn_avx2_dequant8(__m256i raw, __m256i rs, __m256i zp, __m256 xs,
                                                      __m256 ws, const float *bias) {
  __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(raw, _mm256_mullo_epi32(zp, rs))),
                           _mm256_mul_ps(xs, ws));
  XNN_FP_BARRIER(y); /* no FMA: product and sum are rounded separately */
  return bias ? _mm256_add_ps(y, _mm256_loadu_ps(bias)) : y;
}

QP_TARGET_AVX2 static void xnn_qd8_f32_dequant__avx2(size_t mr, size_t nc, const int32_t *raw,
                                                     const xnn_dequant_params *p, float *out,
                                                     size_t out_stride) {
  if (nc < XNN_NR) { /* a partial block: the scalar epilogue (same arithmetic) reads only nc */
    xnn_qd8_f32_dequant__scalar(mr, nc, raw, p, out, out_stride);
    return;
  }
  const __m256i rs0 = _mm256_loadu_si256((const __m256i *)p->row_sums);
  const __m256i rs1 = _mm256_loadu_si256((const __m256i *)(p->row_sums + 8));
  const __m256 ws0 = p->per_channel ? _mm256_loadu_ps(p->w_scale) : _mm256_set1_ps(p->w_scale[0]);
  const __m256 ws1 = p->per_channel ? _mm256_loadu_ps(p->w_scale + 8) : ws0;
  for (size_t r = 0; r < mr; r++) {
    const __m256i zp = _mm256_set1_epi32(p->x_zp[r]);
    const __m256 xs = _mm256_set1_ps(p->x_scale[r]);
    float *o = out + r * out_stride;
    _mm256_storeu_ps(o, xnn_avx2_dequant8(_mm256_loadu_si256((const __m256i *)(raw + r * 16)), rs0, zp, xs,
                                          ws0, p->bias));
    _mm256_storeu_ps(o + 8, xnn_avx2_dequant8(_mm256_loadu_si256((const __m256i *)(raw + r * 16 + 8)), rs1,
                                              zp, xs, ws1, p->bias ? p->bias + 8 : NULL));
  }
}

/* 16 lanes of the add, as two halves of 8 (the scalar kernel does the tail). */
QP_TARGET_AVX2 static inline __m256 xnn_avx2_vadd8(__m128i a8, __m128i b8, const xnn_vadd_params *p) {
  __m256 av = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepi8_epi32(a8), _mm256_set1_epi32(p->a_zp))),
                            _mm256_set1_ps(p->a_scale));
  __m256 bv = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepi8_epi32(b8), _mm256_set1_epi32(p->b_zp))),
                            _mm256_set1_ps(p->b_scale));
  XNN_FP_BARRIER(av);
  XNN_FP_BARRIER(bv);
  return _mm256_mul_ps(_mm256_add_ps(av, bv), _mm256_set1_ps(p->inv_out_scale));
}

QP_TARGET_AVX2 static void xnn_qs8_vadd_minmax_ukernel__avx2(size_t n, const int8_t *a, const int8_t *b,
                                                             const xnn_vadd_params *p, int8_t *out) {
  const __m256 lo = _mm256_set1_ps((float)(p->qmin - p->out_zp)), hi = _mm256_set1_ps((float)(p->qmax - p->out_zp));
  const __m256i zp = _mm256_set1_epi32(p->out_zp);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i va = _mm_loadu_si128((const __m128i *)(a + i)), vb = _mm_loadu_si128((const __m128i *)(b + i));
    const __m256 f0 = xnn_avx2_vadd8(va, vb, p), f1 = xnn_avx2_vadd8(_mm_srli_si128(va, 8), _mm_srli_si128(vb, 8), p);
    _mm_storeu_si128((__m128i *)(out + i), xnn_avx2_round_pack16(f0, f1, lo, hi, zp));
  }
  if (i < n) xnn_qs8_vadd_minmax_ukernel__scalar(n - i, a + i, b + i, p, out + i);
}

const xnn_gemm_config xnn_config_avx2 = {2, xnn_qs8_qc8w_gemm_ukernel_2x16c4__avx2, xnn_qs8_requant__avx2,
                                         xnn_qd8_f32_dequant__avx2, xnn_qs8_vadd_minmax_ukernel__avx2, 0, NULL, NULL, NULL};

/* --------------------------------------------------------------- AVX-512 -- */

QP_TARGET_AVX512 static inline __m512i xnn_avx512_bcast_x4(int32_t x4) {
  return _mm512_broadcastq_epi64(_mm_cvtepi8_epi16(_mm_cvtsi32_si128(x4)));
}

QP_TARGET_AVX512 static void xnn_qs8_qc8w_gemm_ukernel_4x16c4__avx512skx(size_t mr, size_t k,
                                                                        const int8_t *a, size_t a_stride,
                                                                        const int8_t *w,
                                                                        const int32_t *row_sums,
                                                                        int32_t *raw) {
  (void)row_sums;
  XNN_ROW_PTRS(a, a_stride, mr, a0, a1, a2, a3);
  const int8_t *rows[4] = {a0, a1, a2, a3};
  /* c[r][0]: channels 0-7 as (k0+k1, k2+k3) pairs; c[r][1]: channels 8-15 */
  __m512i c[4][2];
  for (int r = 0; r < 4; r++) c[r][0] = c[r][1] = _mm512_setzero_si512();
  for (size_t p = 0; p < k; p += 4, w += 64) {
    const __m512i w0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)w));
    const __m512i w1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(w + 32)));
    const int tail = p + 4 > k;
    for (int r = 0; r < 4; r++) {
      const __m512i x = xnn_avx512_bcast_x4(tail ? xnn_load_x4_tail(rows[r] + p, k - p) : xnn_load_x4(rows[r] + p));
      c[r][0] = _mm512_add_epi32(c[r][0], _mm512_madd_epi16(w0, x));
      c[r][1] = _mm512_add_epi32(c[r][1], _mm512_madd_epi16(w1, x));
    }
  }
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  for (size_t r = 0; r < mr; r++) {
    const __m512i s = _mm512_add_epi32(_mm512_permutex2var_epi32(c[r][0], even, c[r][1]),
                                       _mm512_permutex2var_epi32(c[r][0], odd, c[r][1]));
    _mm512_storeu_si512(raw + r * 16, s);
  }
}

QP_TARGET_AVX512 static void xnn_qs8_requant__avx512(size_t mr, size_t nc, const int32_t *raw,
                                                     const xnn_requant_params *p, int8_t *out,
                                                     size_t out_stride) {
  /* Channels nc..15 of a partial block are neither read nor stored (masked), so the caller's
   * arrays need only nc entries; same arithmetic on every lane as the full block. */
  const __mmask16 k = (__mmask16)((1u << nc) - 1u);
  const __m512i b = _mm512_maskz_loadu_epi32(k, p->bias_eff);
  const __m512 m = p->per_channel ? _mm512_maskz_loadu_ps(k, p->mult) : _mm512_set1_ps(p->mult[0]);
  const __m512 lo = _mm512_set1_ps((float)(p->qmin - p->zp)), hi = _mm512_set1_ps((float)(p->qmax - p->zp));
  const __m512i zp = _mm512_set1_epi32(p->zp);
  for (size_t r = 0; r < mr; r++) {
    const __m512i v = _mm512_add_epi32(_mm512_loadu_si512(raw + r * 16), b);
    const __m512 f = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(v), m), lo), hi);
    const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(f), zp);
    _mm_mask_storeu_epi8(out + r * out_stride, k, _mm512_cvtsepi32_epi8(q));
  }
}

QP_TARGET_AVX512 static void xnn_qd8_f32_dequant__avx512(size_t mr, size_t nc, const int32_t *raw,
                                                         const xnn_dequant_params *p, float *out,
                                                         size_t out_stride) {
  const __mmask16 k = (__mmask16)((1u << nc) - 1u); /* partial blocks: see the requant above */
  const __m512i rs = _mm512_maskz_loadu_epi32(k, p->row_sums);
  const __m512 ws = p->per_channel ? _mm512_maskz_loadu_ps(k, p->w_scale) : _mm512_set1_ps(p->w_scale[0]);
  for (size_t r = 0; r < mr; r++) {
    const __m512i acc = _mm512_sub_epi32(_mm512_loadu_si512(raw + r * 16),
                                         _mm512_mullo_epi32(_mm512_set1_epi32(p->x_zp[r]), rs));
    __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(_mm512_set1_ps(p->x_scale[r]), ws));
    XNN_FP_BARRIER_ZMM(y);
    if (p->bias) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(k, p->bias));
    _mm512_mask_storeu_ps(out + r * out_stride, k, y);
  }
}

QP_TARGET_AVX512 static void xnn_qs8_vadd_minmax_ukernel__avx512(size_t n, const int8_t *a, const int8_t *b,
                                                                 const xnn_vadd_params *p, int8_t *out) {
  const __m512 lo = _mm512_set1_ps((float)(p->qmin - p->out_zp)), hi = _mm512_set1_ps((float)(p->qmax - p->out_zp));
  const __m512i zp = _mm512_set1_epi32(p->out_zp), a_zp = _mm512_set1_epi32(p->a_zp), b_zp = _mm512_set1_epi32(p->b_zp);
  const __m512 a_scale = _mm512_set1_ps(p->a_scale), b_scale = _mm512_set1_ps(p->b_scale);
  const __m512 inv = _mm512_set1_ps(p->inv_out_scale);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i va = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(a + i)));
    const __m512i vb = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + i)));
    __m512 av = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(va, a_zp)), a_scale);
    __m512 bv = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(vb, b_zp)), b_scale);
    XNN_FP_BARRIER_ZMM(av);
    XNN_FP_BARRIER_ZMM(bv);
    const __m512 f = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_add_ps(av, bv), inv), lo), hi);
    _mm_storeu_si128((__m128i *)(out + i), _mm512_cvtsepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(f), zp)));
  }
  if (i < n) xnn_qs8_vadd_minmax_ukernel__scalar(n - i, a + i, b + i, p, out + i);
}

const xnn_gemm_config xnn_config_avx512 = {4, xnn_qs8_qc8w_gemm_ukernel_4x16c4__avx512skx,
                                           xnn_qs8_requant__avx512, xnn_qd8_f32_dequant__avx512,
                                           xnn_qs8_vadd_minmax_ukernel__avx512, 0, NULL, NULL, NULL};

/* ---------------------------------------------------------- AVX-512 VNNI -- */

/* Four activation bytes broadcast to every lane as u8: x + 128 (x ^ 0x80) for int8 rows
 * (FLIP), as stored for rows the qd8 conversion already wrote as x + 128. */
#define XNN_VNNI_BCAST(FLIP, x4) \
  ((FLIP) ? _mm512_xor_si512(_mm512_set1_epi32(x4), _mm512_set1_epi32((int32_t)0x80808080)) : _mm512_set1_epi32(x4))

/* 4 rows x 16 channels (one packed block); MR and FLIP are constants after inlining. */
__attribute__((always_inline)) QP_TARGET_AVX512VNNI static inline void xnn_vnni_4x16_body(
    const size_t MR, const int FLIP, size_t k, const int8_t *a, size_t a_stride, const int8_t *w,
    const int32_t *row_sums, int32_t *raw) {
  XNN_ROW_PTRS(a, a_stride, MR, a0, a1, a2, a3);
  const int8_t *rows[4] = {a0, a1, a2, a3};
  __m512i c[4];
#pragma GCC unroll 4
  for (size_t r = 0; r < MR; r++) c[r] = _mm512_setzero_si512();
  size_t p = 0;
  for (; p + 4 <= k; p += 4, w += 64) {
    const __m512i vw = _mm512_loadu_si512(w);
#pragma GCC unroll 4
    for (size_t r = 0; r < MR; r++) XNN_DPBUSD(c[r], XNN_VNNI_BCAST(FLIP, xnn_load_x4(rows[r] + p)), vw);
  }
  if (p < k) { /* padded k: the packed weights there are 0, whatever x is */
    const __m512i vw = _mm512_loadu_si512(w);
#pragma GCC unroll 4
    for (size_t r = 0; r < MR; r++)
      XNN_DPBUSD(c[r], XNN_VNNI_BCAST(FLIP, xnn_load_x4_tail(rows[r] + p, k - p)), vw);
  }
  const __m512i corr = _mm512_slli_epi32(_mm512_loadu_si512(row_sums), 7); /* 128 * sum w */
#pragma GCC unroll 4
  for (size_t r = 0; r < MR; r++) _mm512_storeu_si512(raw + r * 16, _mm512_sub_epi32(c[r], corr));
}

QP_TARGET_AVX512VNNI static void xnn_qs8_qc8w_gemm_ukernel_4x16c4__avx512vnni(
    size_t mr, size_t k, const int8_t *a, size_t a_stride, const int8_t *w, const int32_t *row_sums,
    int32_t *raw) {
#define XNN_VNNI_4X16(R, FLIP) xnn_vnni_4x16_body(R, FLIP, k, a, a_stride, w, row_sums, raw)
  XNN_DISPATCH_MR4(mr, XNN_VNNI_4X16, 1)
}

/* The same on rows already stored as x + 128 (see xnn_gemm_config.gemm_u8). */
QP_TARGET_AVX512VNNI static void xnn_qu8_qc8w_gemm_ukernel_4x16c4__avx512vnni(
    size_t mr, size_t k, const int8_t *a, size_t a_stride, const int8_t *w, const int32_t *row_sums,
    int32_t *raw) {
  XNN_DISPATCH_MR4(mr, XNN_VNNI_4X16, 0)
#undef XNN_VNNI_4X16
}

/* Software prefetch distance (bytes) of the two weight streams of the 8x32 loop: with few rows
 * (M = 8 at K = N = 4096) a call streams 16 MB of weights from beyond L2 and the loop waits on
 * the loads: 8x4096x4096 static took 773-873 us without the prefetch, 659-674 us with it (same
 * build otherwise; `python benchmarks/bench_linear_cpu_time.py xnnpack --m 8`). Prefetches
 * never fault, past a panel's end too. */
#define XNN_PF_DIST 2048

/* 8 rows x 32 channels: 16 accumulators, two weight loads and eight activation broadcasts per
 * four k, so the loop is bound by vpdpbusd throughput rather than by loads or latency. The body
 * is instantiated for each row count (MR a constant after inlining): a 1-row call does 1/8 of
 * the work, not 8 rows of which 7 are thrown away. */
__attribute__((always_inline)) QP_TARGET_AVX512VNNI static inline void xnn_vnni_8x32_body(
    const size_t MR, const int FLIP, size_t k, const int8_t *a, size_t a_stride, const int8_t *w,
    size_t w_block_stride, const int32_t *row_sums, int32_t *raw) {
  const int8_t *rows[8];
  for (size_t r = 0; r < 8; r++) rows[r] = a + (r < MR ? r : 0) * a_stride;
  const int8_t *w1 = w + w_block_stride;
  __m512i c[8][2];
#pragma GCC unroll 8
  for (size_t r = 0; r < MR; r++) c[r][0] = c[r][1] = _mm512_setzero_si512();
  size_t p = 0;
  for (; p + 4 <= k; p += 4, w += 64, w1 += 64) {
    const __m512i vw0 = _mm512_loadu_si512(w), vw1 = _mm512_loadu_si512(w1);
    _mm_prefetch((const char *)w + XNN_PF_DIST, _MM_HINT_T0);
    _mm_prefetch((const char *)w1 + XNN_PF_DIST, _MM_HINT_T0);
#pragma GCC unroll 8
    for (size_t r = 0; r < MR; r++) {
      const __m512i x = XNN_VNNI_BCAST(FLIP, xnn_load_x4(rows[r] + p));
      XNN_DPBUSD(c[r][0], x, vw0);
      XNN_DPBUSD(c[r][1], x, vw1);
    }
  }
  if (p < k) { /* padded k: the packed weights there are 0, whatever x is */
    const __m512i vw0 = _mm512_loadu_si512(w), vw1 = _mm512_loadu_si512(w1);
#pragma GCC unroll 8
    for (size_t r = 0; r < MR; r++) {
      const __m512i x = XNN_VNNI_BCAST(FLIP, xnn_load_x4_tail(rows[r] + p, k - p));
      XNN_DPBUSD(c[r][0], x, vw0);
      XNN_DPBUSD(c[r][1], x, vw1);
    }
  }
  const __m512i corr0 = _mm512_slli_epi32(_mm512_loadu_si512(row_sums), 7); /* 128 * sum w */
  const __m512i corr1 = _mm512_slli_epi32(_mm512_loadu_si512(row_sums + 16), 7);
#pragma GCC unroll 8
  for (size_t r = 0; r < MR; r++) {
    _mm512_storeu_si512(raw + r * 16, _mm512_sub_epi32(c[r][0], corr0));
    _mm512_storeu_si512(raw + (XNN_MR_WIDE_MAX + r) * 16, _mm512_sub_epi32(c[r][1], corr1));
  }
}

#define XNN_VNNI_8X32_CASES(FLIP)                                                                         \
  switch (mr) {                                                                                            \
    case 1: xnn_vnni_8x32_body(1, FLIP, k, a, a_stride, w, w_block_stride, row_sums, raw); break;          \
    case 2: xnn_vnni_8x32_body(2, FLIP, k, a, a_stride, w, w_block_stride, row_sums, raw); break;          \
    case 3: xnn_vnni_8x32_body(3, FLIP, k, a, a_stride, w, w_block_stride, row_sums, raw); break;          \
    case 4: xnn_vnni_8x32_body(4, FLIP, k, a, a_stride, w, w_block_stride, row_sums, raw); break;          \
    case 5: xnn_vnni_8x32_body(5, FLIP, k, a, a_stride, w, w_block_stride, row_sums, raw); break;          \
    case 6: xnn_vnni_8x32_body(6, FLIP, k, a, a_stride, w, w_block_stride, row_sums, raw); break;          \
    case 7: xnn_vnni_8x32_body(7, FLIP, k, a, a_stride, w, w_block_stride, row_sums, raw); break;          \
    case 8: xnn_vnni_8x32_body(8, FLIP, k, a, a_stride, w, w_block_stride, row_sums, raw); break;          \
    default: break; /* the driver never passes more than mr_wide rows */                                  \
  }

QP_TARGET_AVX512VNNI static void xnn_qs8_qc8w_gemm_ukernel_8x32c4__avx512vnni(
    size_t mr, size_t k, const int8_t *a, size_t a_stride, const int8_t *w, size_t w_block_stride,
    const int32_t *row_sums, int32_t *raw) {
  XNN_VNNI_8X32_CASES(1)
}

QP_TARGET_AVX512VNNI static void xnn_qu8_qc8w_gemm_ukernel_8x32c4__avx512vnni(
    size_t mr, size_t k, const int8_t *a, size_t a_stride, const int8_t *w, size_t w_block_stride,
    const int32_t *row_sums, int32_t *raw) {
  XNN_VNNI_8X32_CASES(0)
}
#undef XNN_VNNI_8X32_CASES

const xnn_gemm_config xnn_config_avx512vnni = {4, xnn_qs8_qc8w_gemm_ukernel_4x16c4__avx512vnni,
                                               xnn_qs8_requant__avx512, xnn_qd8_f32_dequant__avx512,
                                               xnn_qs8_vadd_minmax_ukernel__avx512, 8,
                                               xnn_qs8_qc8w_gemm_ukernel_8x32c4__avx512vnni,
                                               xnn_qu8_qc8w_gemm_ukernel_4x16c4__avx512vnni,
                                               xnn_qu8_qc8w_gemm_ukernel_8x32c4__avx512vnni};

#else
typedef int xnn_gemm_x86_unused; /* ISO C forbids an empty translation unit */
#endif
