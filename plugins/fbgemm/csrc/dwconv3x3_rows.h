/*
 * The register-staged depthwise 3x3 rows kernel, included by dwconv3x3_x86.c once per variant
 * (a template, hence no include guard): FB_DW3_TARGET (function attribute), FB_DW3_NAME(n)
 * (the variant's name for n) and FB_DW3_VBMI (1: stage with vpermt2b, AVX512-VBMI; 0: vpsrld +
 * masked vpshufb on a broadcast, AVX512-BW only). Design and exactness: dwconv3x3_x86.c.
 */
#define FB_DW3_Q FB_DW3_NAME(fb_dw3_q)
FB_DW3_TARGET static inline __attribute__((always_inline)) __m512i FB_DW3_Q(
    const int small, __m512i vi, __m512i s0, __m512i s1, __m512i s2, __m512i w0, __m512i w1,
    __m512i w2, __m512 m, __m512 hi) {
  __m512i a = _mm512_dpbusd_epi32(vi, s0, w0);
  a = _mm512_dpbusd_epi32(a, s1, w1);
  a = _mm512_dpbusd_epi32(a, s2, w2);
  const __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(a), m);
  return _mm512_cvtps_epi32(small ? f : _mm512_min_ps(hi, f));
}

/* One output column of g <= 4 rows (S vectors t0 .. t{g+1}) into o, o + ors, ...
 * small (every multiplier <= 0.5, so |f| <= 2^30 and cvtps2dq never overflows upwards): the
 * float min against qmax - zp becomes vpminub qmax on the bytes (same result: values above
 * qmax - zp saturate to bytes >= qmax). */
#define FB_DW3_EMIT4(o, g, t0, t1, t2, t3, t4, t5)                                                  \
  do {                                                                                              \
    const __m512i q0 = FB_DW3_Q(small, vi, t0, t1, t2, w0, w1, w2, m, hi);                          \
    const __m512i q1 = (g) > 1 ? FB_DW3_Q(small, vi, t1, t2, t3, w0, w1, w2, m, hi) : q0;           \
    const __m512i q2 = (g) > 2 ? FB_DW3_Q(small, vi, t2, t3, t4, w0, w1, w2, m, hi) : q0;           \
    const __m512i q3 = (g) > 3 ? FB_DW3_Q(small, vi, t3, t4, t5, w0, w1, w2, m, hi) : q0;           \
    const __m512i p01 = _mm512_adds_epi16(_mm512_packs_epi32(q0, q1), zp16);                        \
    const __m512i p23 = _mm512_adds_epi16(_mm512_packs_epi32(q2, q3), zp16);                        \
    __m512i b = _mm512_packus_epi16(p01, p23);                                                      \
    if (lift) b = _mm512_max_epu8(b, qmin8); /* vpackuswb already clamps at 0 */                    \
    if (small) b = _mm512_min_epu8(b, qmax8);                                                       \
    /* lane L: channels 4L..4L+3 of rows 0..3; vpermd makes lane r row r */                         \
    b = _mm512_permutexvar_epi32(perm, b);                                                          \
    if (full) { /* plain 16-byte stores: masked byte stores are slow on Zen 4 */                    \
      _mm_storeu_si128((__m128i *)(o), _mm512_castsi512_si128(b));                                  \
      if ((g) > 1) _mm_storeu_si128((__m128i *)((o) + ors), _mm512_extracti32x4_epi32(b, 1));       \
      if ((g) > 2) _mm_storeu_si128((__m128i *)((o) + 2 * ors), _mm512_extracti32x4_epi32(b, 2));   \
      if ((g) > 3) _mm_storeu_si128((__m128i *)((o) + 3 * ors), _mm512_extracti32x4_epi32(b, 3));   \
    } else {                                                                                        \
      _mm_mask_storeu_epi8((o), nm, _mm512_castsi512_si128(b));                                     \
      if ((g) > 1) _mm_mask_storeu_epi8((o) + ors, nm, _mm512_extracti32x4_epi32(b, 1));            \
      if ((g) > 2) _mm_mask_storeu_epi8((o) + 2 * ors, nm, _mm512_extracti32x4_epi32(b, 2));        \
      if ((g) > 3) _mm_mask_storeu_epi8((o) + 3 * ors, nm, _mm512_extracti32x4_epi32(b, 3));        \
    }                                                                                               \
  } while (0)
/* nr <= 4 rows: one group; nr = 8: two groups of 4 sharing the S vectors s4, s5 */
#define FB_DW3_EMIT(o)                                                                              \
  do {                                                                                              \
    FB_DW3_EMIT4((o), nr > 4 ? 4 : nr, s0, s1, s2, s3, s4, s5);                                     \
    if (nr > 4) FB_DW3_EMIT4((o) + 4 * ors, 4, s4, s5, s6, s7, s8, s9);                             \
  } while (0)

#if FB_DW3_VBMI
/* S <- bytes 1, 2 of S and the 16 input bytes at src as byte 2 of each channel's dword:
 * one vpermt2b (byte 3 zeroed by the mask) */
#define FB_DW3_ADV(s, src)                                                                          \
  s = _mm512_maskz_permutex2var_epi8(                                                               \
      k3, s, idx,                                                                                   \
      _mm512_castsi128_si512(full ? _mm_loadu_si128((const __m128i *)(src))                         \
                                  : _mm_maskz_loadu_epi8(nm, (const void *)(src))))
#else
/* S <- (S >> 8) with the 16 input bytes at src merged into byte 2 of each channel's dword */
#define FB_DW3_ADV(s, src)                                                                          \
  s = _mm512_mask_shuffle_epi8(                                                                     \
      _mm512_srli_epi32(s, 8), k2,                                                                  \
      _mm512_broadcast_i32x4(full ? _mm_loadu_si128((const __m128i *)(src))                         \
                                  : _mm_maskz_loadu_epi8(nm, (const void *)(src))),                 \
      ctl)
#endif
#define FB_DW3_ADV_ZP(s) s = _mm512_mask_mov_epi8(_mm512_srli_epi32(s, 8), k2, zpv)
/* every live S one column right: input bytes at column offset off / x_zp (padding columns) */
#define FB_DW3_STEP(off)                                                                            \
  do {                                                                                              \
    FB_DW3_ADV(s0, p0 + (off)); FB_DW3_ADV(s1, p1 + (off)); FB_DW3_ADV(s2, p2 + (off));             \
    if (nr > 1) FB_DW3_ADV(s3, p3 + (off));                                                         \
    if (nr > 2) FB_DW3_ADV(s4, p4 + (off));                                                         \
    if (nr > 3) FB_DW3_ADV(s5, p5 + (off));                                                         \
    if (nr > 4) {                                                                                   \
      FB_DW3_ADV(s6, p6 + (off)); FB_DW3_ADV(s7, p7 + (off)); FB_DW3_ADV(s8, p8 + (off));           \
      FB_DW3_ADV(s9, p9 + (off));                                                                   \
    }                                                                                               \
  } while (0)
#define FB_DW3_STEP_ZP()                                                                            \
  do {                                                                                              \
    FB_DW3_ADV_ZP(s0); FB_DW3_ADV_ZP(s1); FB_DW3_ADV_ZP(s2);                                        \
    if (nr > 1) FB_DW3_ADV_ZP(s3);                                                                  \
    if (nr > 2) FB_DW3_ADV_ZP(s4);                                                                  \
    if (nr > 3) FB_DW3_ADV_ZP(s5);                                                                  \
    if (nr > 4) { FB_DW3_ADV_ZP(s6); FB_DW3_ADV_ZP(s7); FB_DW3_ADV_ZP(s8); FB_DW3_ADV_ZP(s9); }     \
  } while (0)

FB_DW3_TARGET static inline __attribute__((always_inline)) void FB_DW3_NAME(fb_dw3_rows_body)(
    const int nr, const int full, const int small, const int lift, const uint8_t *const *xr,
    size_t w, size_t cs, size_t pw,
    size_t ox0, size_t ox1, const fb_dw3_block *blk, uint8_t x_zp, int32_t zp, int32_t qmin, int32_t qmax,
    size_t nc, uint8_t *out, size_t ors, size_t ocs) {
  const __mmask16 nm = (__mmask16)((1u << nc) - 1u);
  const __m512i vi = _mm512_loadu_si512((const void *)blk->init3);
  const __m512i w0 = _mm512_loadu_si512((const void *)blk->w[0]);
  const __m512i w1 = _mm512_loadu_si512((const void *)blk->w[1]);
  const __m512i w2 = _mm512_loadu_si512((const void *)blk->w[2]);
  const __m512 m = _mm512_loadu_ps(blk->params.mult), hi = _mm512_set1_ps((float)(qmax - zp));
  const __m512i zp16 = _mm512_set1_epi16((short)zp), qmin8 = _mm512_set1_epi8((char)qmin);
  const __m512i qmax8 = _mm512_set1_epi8((char)qmax);
  const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  /* vpshufb control on the broadcast 16 input bytes: channel 4L + d (lane L, dword d) to byte 2
   * of its dword; merged (mask k2) into S >> 8, which moves bytes 1, 2 down and zeroes byte 3 */
  const __m512i ctl = _mm512_set_epi32(
      0x000F0000, 0x000E0000, 0x000D0000, 0x000C0000, 0x000B0000, 0x000A0000, 0x00090000,
      0x00080000, 0x00070000, 0x00060000, 0x00050000, 0x00040000, 0x00030000, 0x00020000,
      0x00010000, 0x00000000);
  const __mmask64 k2 = 0x4444444444444444ull;
#if FB_DW3_VBMI
  /* vpermt2b indices: byte k of dword j takes byte 4j + k + 1 of S (k < 2), input byte j (k = 2) */
  const __m512i idx = _mm512_setr_epi32(
      0x00400201, 0x00410605, 0x00420A09, 0x00430E0D, 0x00441211, 0x00451615, 0x00461A19,
      0x00471E1D, 0x00482221, 0x00492625, 0x004A2A29, 0x004B2E2D, 0x004C3231, 0x004D3635,
      0x004E3A39, 0x004F3E3D);
  const __mmask64 k3 = 0x7777777777777777ull;
  (void)ctl;
#endif
  const __m512i zpv = _mm512_set1_epi8((char)x_zp);
  /* all rows (padding rows too: xr[r] then points into a row of x_zp) advance by cs */
  const uint8_t *p0 = xr[0], *p1 = xr[1], *p2 = xr[2], *p3 = xr[nr > 1 ? 3 : 0],
                *p4 = xr[nr > 2 ? 4 : 0], *p5 = xr[nr > 3 ? 5 : 0], *p6 = xr[nr > 4 ? 6 : 0],
                *p7 = xr[nr > 4 ? 7 : 0], *p8 = xr[nr > 4 ? 8 : 0], *p9 = xr[nr > 4 ? 9 : 0];
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0,
          s7 = s0, s8 = s0, s9 = s0;
  /* input column j enters as the right tap of output column i = j + pw - 2; for outputs
   * ox0 .. ox1 - 1, j runs from 2 columns before ox0's right tap (warm-up) to ox1's: the left
   * padding (x_zp), the row, the right padding */
  const ptrdiff_t i0 = (ptrdiff_t)pw - 2, jend = (ptrdiff_t)ox1 - i0, jfirst = (ptrdiff_t)ox0 - i0;
  const ptrdiff_t jin = jend < (ptrdiff_t)w ? jend : (ptrdiff_t)w;
  ptrdiff_t j = jfirst - 2;
  for (; j < 0 && j < jend; j++) {
    FB_DW3_STEP_ZP();
    if (j >= jfirst) FB_DW3_EMIT(out + (size_t)(j + i0) * ocs);
  }
  for (; j < jin && j < jfirst; j++) { /* warm-up columns inside the row */
    FB_DW3_STEP((size_t)j * cs);
  }
  for (; j < jin; j++) { /* the interior: the hot loop */
    FB_DW3_STEP((size_t)j * cs);
    FB_DW3_EMIT(out + (size_t)(j + i0) * ocs);
  }
  for (; j < jend; j++) {
    FB_DW3_STEP_ZP();
    if (j >= jfirst) FB_DW3_EMIT(out + (size_t)(j + i0) * ocs);
  }
}
#undef FB_DW3_EMIT
#undef FB_DW3_EMIT4
#undef FB_DW3_ADV
#undef FB_DW3_ADV_ZP
#undef FB_DW3_STEP
#undef FB_DW3_STEP_ZP

FB_DW3_TARGET void FB_DW3_NAME(fb_dw3_rows_u8)(const uint8_t *const *xrows, size_t nr, size_t w,
                                              size_t cstride, size_t pw, size_t ox0, size_t ox1,
                                              const fb_dw3_block *blk, uint8_t x_zp, int32_t zp,
                                              int32_t qmin, int32_t qmax, size_t nc, uint8_t *out,
                                              size_t out_row_stride, size_t out_stride) {
#define FB_DW3_CASE(NR)                                                                             \
  if (nc == FB_NR)                                                                                  \
    FB_DW3_NAME(fb_dw3_rows_body)(NR, 1, 0, 1, xrows, w, cstride, pw, ox0, ox1, blk, x_zp, zp, qmin, qmax, nc, \
                     out, out_row_stride, out_stride);                                              \
  else                                                                                              \
    FB_DW3_NAME(fb_dw3_rows_body)(NR, 0, 0, 1, xrows, w, cstride, pw, ox0, ox1, blk, x_zp, zp, qmin, qmax, nc, \
                     out, out_row_stride, out_stride)
  if (nr == 8 && nc == FB_NR && blk->small) { /* the hot case, without vpmaxub when qmin = 0 */
    if (qmin == 0)
      FB_DW3_NAME(fb_dw3_rows_body)(8, 1, 1, 0, xrows, w, cstride, pw, ox0, ox1, blk, x_zp, zp, qmin,
                                    qmax, nc, out, out_row_stride, out_stride);
    else
      FB_DW3_NAME(fb_dw3_rows_body)(8, 1, 1, 1, xrows, w, cstride, pw, ox0, ox1, blk, x_zp, zp, qmin,
                                    qmax, nc, out, out_row_stride, out_stride);
    return;
  }
  if (nr > 4) { /* 8 rows otherwise: two calls of 4 */
    FB_DW3_NAME(fb_dw3_rows_u8)(xrows, 4, w, cstride, pw, ox0, ox1, blk, x_zp, zp, qmin, qmax, nc,
                                out, out_row_stride, out_stride);
    FB_DW3_NAME(fb_dw3_rows_u8)(xrows + 4, nr - 4, w, cstride, pw, ox0, ox1, blk, x_zp, zp, qmin,
                                qmax, nc, out + 4 * out_row_stride, out_row_stride, out_stride);
    return;
  }
  switch (nr) { /* one register-allocated copy per row count and channel-tail case */
    case 4: FB_DW3_CASE(4); break;
    case 3: FB_DW3_CASE(3); break;
    case 2: FB_DW3_CASE(2); break;
    default: FB_DW3_CASE(1); break;
  }
#undef FB_DW3_CASE
}
#undef FB_DW3_Q
