/*
 * Standalone test driver for the xnnpack plugin kernels (no Python).
 *
 * Built natively (x86-64: scalar, AVX2, AVX-512, AVX-512 VNNI) and for
 * AArch64 under qemu (scalar, NEON, NEON dot product) by run_arm_tests.sh.
 * For many random shapes and qparams it checks:
 *   - the scalar path against naive loops over the unpacked weights (exact);
 *   - every other usable ISA path against the scalar path (bit for bit,
 *     int8 outputs and the fp32 outputs of the dynamic linear);
 *   - that no path writes outside its output (sentinel guard bytes);
 *   - the qd8 dynamic quantizer against an independent implementation;
 *   - the int4 group-wise kernel: scalar against float64 loops, every other path
 *     against scalar bit for bit (incl. inf/NaN from overflowing sums);
 *   - the int8 weight-only (f32-qc8w) linear: scalar against float64 loops,
 *     every other path against scalar bit for bit, over every row tiling, and
 *     every path against the documented phase order on a case k order fails;
 *   - the quantized add on every path against naive fp32 loops (exact);
 *   - the NHWC convolution (groups, depthwise, stride, padding, dilation) on
 *     every path against naive loops over the unpacked OIHW weights (exact);
 *   - argument validation (QP_ERR_INVALID_ARGUMENT, never a crash).
 * Exits 1 on the first mismatch (printing it), 0 when everything matched.
 *
 * Usage: test_kernels [--require ISA[,ISA...]] [--trials N] [--seed S]
 *   --require fails unless each named ISA path was usable and exercised.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quantplug/qp_quantize.h"
#include "quantplug/qp_requant.h"
#include "quantplug/qp_runtime.h"
#include "xnnpack_kernels.h"

#define GUARD 64
#define SENTINEL 0x5a

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) { /* xorshift64* */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ull;
}
static int64_t rnd_range(int64_t lo, int64_t hi) { return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1)); }
static float rnd_float(float lo, float hi) { return lo + (hi - lo) * (float)((rnd() >> 11) * (1.0 / 9007199254740992.0)); }

static int failures = 0;
static long checks = 0;
static int exercised[QP_ISA_COUNT];

#define FAIL(...)                                           \
  do {                                                      \
    fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);    \
    fprintf(stderr, __VA_ARGS__);                           \
    fprintf(stderr, "\n");                                  \
    failures++;                                             \
    return 1;                                               \
  } while (0)

static void *guarded_alloc(size_t bytes) {
  unsigned char *p = (unsigned char *)malloc(bytes + GUARD);
  memset(p, SENTINEL, bytes + GUARD);
  return p;
}
static int guard_intact(const void *p, size_t bytes) {
  const unsigned char *c = (const unsigned char *)p + bytes;
  for (size_t i = 0; i < GUARD; i++)
    if (c[i] != SENTINEL) return 0;
  return 1;
}

static const size_t K_CHOICES[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 257, 515};
static const size_t MN_CHOICES[] = {1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 33, 64, 65};

static size_t pick(const size_t *choices, size_t count, size_t random_max) {
  return (rnd() % 3 == 0) ? (size_t)rnd_range(1, (int64_t)random_max) : choices[rnd() % count];
}

/* ------------------------------------------------------------ static linear -- */

static int test_static(size_t m, size_t k, size_t n, int extreme, int threads) {
  int8_t *x = malloc(m * k), *w = malloc(n * k);
  int32_t *bias = malloc(n * sizeof(int32_t));
  float *mult = malloc(n * sizeof(float));
  const int per_channel = rnd() % 2, has_bias = rnd() % 4 != 0, relu = rnd() % 4 == 0;
  int32_t x_zp = (int32_t)rnd_range(-128, 127), out_zp = (int32_t)rnd_range(-128, 127);
  for (size_t i = 0; i < m * k; i++) x[i] = (int8_t)(extreme ? (rnd() % 2 ? 127 : -128) : rnd_range(-128, 127));
  for (size_t i = 0; i < n * k; i++) w[i] = (int8_t)(extreme ? (rnd() % 2 ? 127 : -127) : rnd_range(-127, 127));
  if (extreme) x_zp = rnd() % 2 ? 127 : -128;
  const float base = 1.0f / (127.0f * 64.0f * sqrtf((float)k));
  for (size_t j = 0; j < n; j++) {
    bias[j] = has_bias ? (int32_t)rnd_range(-100000, 100000) : 0;
    mult[j] = base * rnd_float(0.05f, 8.0f);
  }
  if (rnd() % 16 == 0) mult[0] = rnd_float(1.0f, 255.0f); /* saturating outputs */
  const int32_t qmin = relu ? (out_zp > -128 ? out_zp : -128) : (int32_t)rnd_range(-128, -100);
  const int32_t qmax = rnd() % 4 ? 127 : (int32_t)rnd_range(qmin, 127);
  const size_t psize = xnnpack_qc8w_packed_size(n, k), rsize = xnnpack_qc8w_row_sums_size(n);
  int8_t *packed = malloc(psize);
  int32_t *row_sums = malloc(rsize * sizeof(int32_t));
  if (xnnpack_pack_qc8w(w, n, k, packed, psize, row_sums, rsize) != QP_OK) FAIL("pack failed n=%zu k=%zu", n, k);

  /* naive reference over the unpacked weights */
  int8_t *ref = malloc(m * n);
  for (size_t i = 0; i < m; i++)
    for (size_t j = 0; j < n; j++) {
      int64_t acc = has_bias ? bias[j] : 0;
      for (size_t p = 0; p < k; p++) acc += ((int64_t)x[i * k + p] - x_zp) * w[j * k + p];
      if (acc < INT32_MIN || acc > INT32_MAX) FAIL("test bug: accumulator overflow");
      ref[i * n + j] = (int8_t)qp_requantize((int32_t)acc, mult[per_channel ? j : 0], out_zp, qmin, qmax);
    }
  int8_t *scalar = guarded_alloc(m * n), *out = guarded_alloc(m * n);
  qp_set_num_threads(1);
  qp_set_isa(QP_ISA_SCALAR);
  int st = xnnpack_qs8_qc8w_linear(x, m, k, x_zp, packed, row_sums, n, has_bias ? bias : NULL, mult,
                                   per_channel ? n : 1, out_zp, qmin, qmax, scalar);
  if (st != QP_OK) FAIL("scalar static linear returned %d", st);
  if (!guard_intact(scalar, m * n)) FAIL("scalar static linear wrote past its output");
  for (size_t i = 0; i < m * n; i++)
    if (scalar[i] != ref[i])
      FAIL("scalar vs naive: m=%zu k=%zu n=%zu at %zu: %d != %d", m, k, n, i, scalar[i], ref[i]);
  checks++;
  exercised[QP_ISA_SCALAR] = 1;
  qp_set_num_threads(threads);
  for (int isa = 1; isa < QP_ISA_COUNT; isa++) {
    if (!qp_isa_usable(isa)) continue;
    qp_set_isa(isa);
    memset(out, SENTINEL, m * n + GUARD);
    st = xnnpack_qs8_qc8w_linear(x, m, k, x_zp, packed, row_sums, n, has_bias ? bias : NULL, mult,
                                 per_channel ? n : 1, out_zp, qmin, qmax, out);
    if (st != QP_OK) FAIL("%s static linear returned %d", qp_isa_name(isa), st);
    if (!guard_intact(out, m * n)) FAIL("%s static linear wrote past its output (m=%zu n=%zu)", qp_isa_name(isa), m, n);
    for (size_t i = 0; i < m * n; i++)
      if (out[i] != scalar[i])
        FAIL("%s vs scalar (static): m=%zu k=%zu n=%zu x_zp=%d out_zp=%d at [%zu,%zu]: %d != %d",
             qp_isa_name(isa), m, k, n, x_zp, out_zp, i / n, i % n, out[i], scalar[i]);
    exercised[isa] = 1;
    checks++;
  }
  qp_set_isa(-1);
  free(x), free(w), free(bias), free(mult), free(packed), free(row_sums), free(ref), free(scalar), free(out);
  return 0;
}

/* ----------------------------------------------------------- dynamic linear -- */

/* Independent qd8 qparams: torch's affine observer formula. */
static void naive_qparams(float lo, float hi, float *scale, int32_t *zp) {
  float mn = fminf(lo, 0.0f), mx = fmaxf(hi, 0.0f);
  float s = (mx - mn) / 255.0f;
  s = fmaxf(s, FLT_EPSILON);
  long z = -128 - lrintf(mn / s);
  *scale = s;
  *zp = (int32_t)(z < -128 ? -128 : z > 127 ? 127 : z);
}

static int test_dynamic(size_t m, size_t k, size_t n, int threads) {
  float *x = malloc(m * k * sizeof(float)), *ws = malloc(n * sizeof(float)), *bias = malloc(n * sizeof(float));
  int8_t *w = malloc(n * k);
  const int per_row = rnd() % 2, per_channel = rnd() % 2, has_bias = rnd() % 3 != 0;
  const float amp = powf(10.0f, rnd_float(-3.0f, 3.0f)), shift = rnd() % 3 == 0 ? rnd_float(-2.0f, 2.0f) * amp : 0.0f;
  for (size_t i = 0; i < m * k; i++) x[i] = rnd_float(-amp, amp) + shift;
  if (m > 1 && rnd() % 4 == 0) memset(x, 0, k * sizeof(float)); /* an all-zero row: scale = eps */
  for (size_t i = 0; i < n * k; i++) w[i] = (int8_t)rnd_range(-127, 127);
  for (size_t j = 0; j < n; j++) ws[j] = rnd_float(1e-4f, 1e-1f), bias[j] = rnd_float(-5.0f, 5.0f);
  const size_t psize = xnnpack_qc8w_packed_size(n, k), rsize = xnnpack_qc8w_row_sums_size(n);
  int8_t *packed = malloc(psize);
  int32_t *row_sums = malloc(rsize * sizeof(int32_t));
  if (xnnpack_pack_qc8w(w, n, k, packed, psize, row_sums, rsize) != QP_OK) FAIL("pack failed");

  /* quantizer vs the independent formula, on every path (the last one run is kept below) */
  int8_t *xq = malloc(m * k);
  float *xs = malloc(m * sizeof(float));
  int32_t *xz = malloc(m * sizeof(int32_t));
  for (int isa = 0; isa < QP_ISA_COUNT; isa++) {
    if (!qp_isa_usable(isa)) continue;
    qp_set_isa(isa);
    if (xnnpack_qd8_quantize(x, m, k, per_row, xq, xs, xz) != QP_OK) FAIL("qd8 quantize failed (%s)", qp_isa_name(isa));
    for (size_t i = 0; i < m; i++) {
      float lo = INFINITY, hi = -INFINITY;
      const size_t b = per_row ? i * k : 0, e = per_row ? (i + 1) * k : m * k;
      for (size_t p = b; p < e; p++) lo = fminf(lo, x[p]), hi = fmaxf(hi, x[p]);
      float s;
      int32_t z;
      naive_qparams(lo, hi, &s, &z);
      if (s != xs[i] || z != xz[i]) FAIL("qd8 qparams row %zu: (%g, %d) != (%g, %d)", i, xs[i], xz[i], s, z);
      const float inv = 1.0f / s;
      for (size_t p = 0; p < k; p++) {
        long q = lrintf(x[i * k + p] * inv) + z;
        q = q < -128 ? -128 : q > 127 ? 127 : q;
        if (xq[i * k + p] != q)
          FAIL("qd8 %s quantized value row %zu col %zu: %d != %ld", qp_isa_name(isa), i, p, xq[i * k + p], q);
      }
    }
  }
  qp_set_isa(-1);
  /* naive output */
  float *ref = malloc(m * n * sizeof(float));
  for (size_t i = 0; i < m; i++)
    for (size_t j = 0; j < n; j++) {
      int32_t acc = 0;
      for (size_t p = 0; p < k; p++) acc += ((int32_t)xq[i * k + p] - xz[i]) * w[j * k + p];
      volatile float y = (float)acc * (xs[i] * ws[per_channel ? j : 0]); /* volatile: never an FMA */
      ref[i * n + j] = has_bias ? y + bias[j] : y;
    }
  float *scalar = guarded_alloc(m * n * sizeof(float)), *out = guarded_alloc(m * n * sizeof(float));
  qp_set_num_threads(1);
  qp_set_isa(QP_ISA_SCALAR);
  int st = xnnpack_qd8_f32_qc8w_linear(x, m, k, per_row, packed, row_sums, n, ws, per_channel ? n : 1,
                                       has_bias ? bias : NULL, scalar);
  if (st != QP_OK) FAIL("scalar dynamic linear returned %d", st);
  if (memcmp(scalar, ref, m * n * sizeof(float)) != 0) {
    for (size_t i = 0; i < m * n; i++)
      if (memcmp(&scalar[i], &ref[i], sizeof(float)))
        FAIL("scalar vs naive (dynamic) m=%zu k=%zu n=%zu at %zu: %.9g != %.9g", m, k, n, i, scalar[i], ref[i]);
  }
  checks++;
  qp_set_num_threads(threads);
  for (int isa = 1; isa < QP_ISA_COUNT; isa++) {
    if (!qp_isa_usable(isa)) continue;
    qp_set_isa(isa);
    memset(out, SENTINEL, m * n * sizeof(float) + GUARD);
    st = xnnpack_qd8_f32_qc8w_linear(x, m, k, per_row, packed, row_sums, n, ws, per_channel ? n : 1,
                                     has_bias ? bias : NULL, out);
    if (st != QP_OK) FAIL("%s dynamic linear returned %d", qp_isa_name(isa), st);
    if (!guard_intact(out, m * n * sizeof(float))) FAIL("%s dynamic linear wrote past its output", qp_isa_name(isa));
    for (size_t i = 0; i < m * n; i++)
      if (memcmp(&out[i], &scalar[i], sizeof(float)))
        FAIL("%s vs scalar (dynamic): m=%zu k=%zu n=%zu per_row=%d at [%zu,%zu]: %.9g != %.9g",
             qp_isa_name(isa), m, k, n, per_row, i / n, i % n, out[i], scalar[i]);
    checks++;
  }
  qp_set_isa(-1);
  free(x), free(ws), free(bias), free(w), free(packed), free(row_sums), free(xq), free(xs), free(xz);
  free(ref), free(scalar), free(out);
  return 0;
}

/* ------------------------------------------------------------------- conv -- */

/* One convolution against the naive reference, on every usable ISA path. big_acc: biases and
 * multipliers so large that the float products reach 2^31 (the requantization's overflow
 * guards), instead of the usual accumulator-sized scales. */
static int check_conv(size_t batch, size_t h, size_t w, size_t cin, size_t cout, size_t groups, size_t kh, size_t kw,
                      size_t sh, size_t sw, size_t ph, size_t pw, size_t dh, size_t dw, int big_acc, int threads) {
  const size_t cin_g = cin / groups, cout_g = cout / groups;
  const size_t span_h = dh * (kh - 1) + 1, span_w = dw * (kw - 1) + 1;
  if (h + 2 * ph < span_h || w + 2 * pw < span_w) return 0; /* no output: skip this geometry */
  const size_t oh = (h + 2 * ph - span_h) / sh + 1, ow = (w + 2 * pw - span_w) / sw + 1, pixels = batch * oh * ow;
  const size_t nx = batch * h * w * cin, nw = cout * cin_g * kh * kw, nout = pixels * cout;
  int8_t *x = malloc(nx), *wt = malloc(nw), *ref = malloc(nout);
  int32_t *bias = malloc(cout * sizeof(int32_t));
  float *mult = malloc(cout * sizeof(float));
  for (size_t i = 0; i < nx; i++) x[i] = (int8_t)rnd_range(-128, 127);
  for (size_t i = 0; i < nw; i++) wt[i] = (int8_t)rnd_range(-127, 127);
  const int32_t x_zp = (int32_t)rnd_range(-128, 127), out_zp = (int32_t)rnd_range(-128, 127);
  const int per_channel = rnd() % 2, relu = rnd() % 3 == 0;
  const int32_t qmin = relu ? out_zp : -128;
  const int32_t qmax = rnd() % 4 == 0 ? (int32_t)rnd_range(qmin, 127) : 127; /* a clamp below 127 (relu6-like) */
  for (size_t j = 0; j < cout; j++) {
    bias[j] = big_acc ? (int32_t)rnd_range(-2000000000, 2000000000) : (int32_t)rnd_range(-50000, 50000);
    mult[j] = big_acc ? rnd_float(0.5f, 200.0f)
                      : rnd_float(0.1f, 4.0f) / (127.0f * 64.0f * sqrtf((float)(kh * kw * cin_g)));
  }
  /* naive reference on the OIHW weights */
  for (size_t pix = 0; pix < pixels; pix++) {
    const size_t b = pix / (oh * ow), oy = pix / ow % oh, ox = pix % ow;
    for (size_t co = 0; co < cout; co++) {
      const size_t g = co / cout_g;
      int64_t acc = bias[co];
      for (size_t c = 0; c < cin_g; c++)
        for (size_t ky = 0; ky < kh; ky++)
          for (size_t kx = 0; kx < kw; kx++) {
            const long iy = (long)(oy * sh + ky * dh) - (long)ph, ix = (long)(ox * sw + kx * dw) - (long)pw;
            if (iy < 0 || iy >= (long)h || ix < 0 || ix >= (long)w) continue;
            acc += ((int64_t)x[((b * h + (size_t)iy) * w + (size_t)ix) * cin + g * cin_g + c] - x_zp) *
                   wt[((co * cin_g + c) * kh + ky) * kw + kx];
          }
      ref[pix * cout + co] = (int8_t)qp_requantize((int32_t)acc, mult[per_channel ? co : 0], out_zp, qmin, qmax);
    }
  }
  const size_t psize = xnnpack_qc8w_conv2d_packed_size(groups, cout, cin_g, kh, kw);
  const size_t rsize = xnnpack_qc8w_conv2d_row_sums_size(groups, cout);
  int8_t *packed = malloc(psize);
  int32_t *rs = malloc(rsize * sizeof(int32_t));
  if (xnnpack_pack_qc8w_conv2d(wt, cout, cin_g, kh, kw, groups, packed, psize, rs, rsize) != QP_OK)
    FAIL("conv pack failed");
  int8_t *out = guarded_alloc(nout);
  for (int isa = 0; isa < QP_ISA_COUNT; isa++) {
    if (!qp_isa_usable(isa)) continue;
    qp_set_isa(isa);
    qp_set_num_threads(isa == QP_ISA_SCALAR ? 1 : threads);
    memset(out, SENTINEL, nout + GUARD);
    int st = xnnpack_qs8_qc8w_conv2d_nhwc(x, batch, h, w, cin, x_zp, packed, rs, groups, cout, kh, kw, sh, sw, ph, pw,
                                          dh, dw, oh, ow, bias, mult, per_channel ? cout : 1, out_zp, qmin, qmax, out);
    if (st != QP_OK) FAIL("%s conv returned %d", qp_isa_name(isa), st);
    if (!guard_intact(out, nout)) FAIL("%s conv wrote past its output", qp_isa_name(isa));
    for (size_t i = 0; i < nout; i++)
      if (out[i] != ref[i])
        FAIL("%s conv vs naive: b%zu %zux%zux%zu -> %zu g%zu k%zux%zu s%zu,%zu p%zu,%zu d%zu,%zu at %zu: %d != %d",
             qp_isa_name(isa), batch, h, w, cin, cout, groups, kh, kw, sh, sw, ph, pw, dh, dw, i, out[i], ref[i]);
    checks++;
  }
  qp_set_isa(-1);
  if (xnnpack_qs8_qc8w_conv2d_nhwc(x, batch, h, w, cin, x_zp, packed, rs, groups, cout, kh, kw, sh, sw, ph, pw, dh,
                                   dw, oh + 1, ow, bias, mult, 1, out_zp, qmin, 127, out) != QP_ERR_INVALID_ARGUMENT)
    FAIL("conv accepted a wrong output height");
  free(x), free(wt), free(ref), free(bias), free(mult), free(packed), free(rs), free(out);
  return 0;
}

static int test_conv(int threads) {
  /* depthwise with multiplier 1 and 16+ channels takes dwconv.c's SIMD path (full and partial 16-blocks) */
  const int wide_dw = rnd() % 4 == 0;
  /* wide depthwise: up to 150 channels (AVX-512 VNNI: two full groups of 64 and a partial one) */
  const size_t groups = wide_dw ? (size_t)rnd_range(14, rnd() % 4 ? 50 : 150) : rnd() % 3 == 0 ? (size_t)rnd_range(1, 6) : 1;
  const int depthwise = wide_dw || (groups > 1 && rnd() % 2);
  /* stem: a 7x7 / 2 (or / 1) over few channels (kernel-row runs of kw * cin bytes, many row tiles;
   * conv.c's stem mode on a padded copy of x, as for most small shapes here; cin 22-40 with a
   * 3-wide kernel has runs over 64 bytes and takes the general patch path);
   * big: k and cout large enough for several weight panels of the gemm path */
  const int shape = depthwise || groups > 1 ? 0 : rnd() % 12 == 0 ? 1 : rnd() % 12 == 0 ? 2 : 0;
  const size_t cin_g = depthwise ? 1 : shape == 1 ? (size_t)rnd_range(1, 4) : shape == 2 ? (size_t)rnd_range(200, 330)
                                            : (size_t)(rnd() % 4 ? rnd_range(1, 12) : rnd_range(22, 40));
  const size_t cout_g = wide_dw ? 1 : (size_t)rnd_range(1, depthwise ? 3 : shape == 2 ? 170 : shape == 1 ? 70 : 24);
  /* kh up to 9: the VNNI depthwise kernel takes the vertical taps four at a time */
  const size_t batch = (size_t)rnd_range(1, 2);
  const size_t kh = shape == 1 ? 7 : shape == 2 ? 3 : (size_t)rnd_range(1, wide_dw ? (rnd() % 3 ? 5 : 9) : 3);
  const size_t kw = shape == 1 ? 7 : shape == 2 ? 3 : (size_t)rnd_range(1, wide_dw ? 5 : 3);
  const size_t stem_s = (size_t)(rnd() % 3 ? 2 : 1);
  const size_t sh = shape == 1 ? stem_s : (size_t)rnd_range(1, 2), sw = shape == 1 ? stem_s : (size_t)rnd_range(1, 2);
  const size_t dh = shape ? 1 : (size_t)rnd_range(1, 2), dw = shape ? 1 : (size_t)rnd_range(1, 2);
  const size_t ph = (size_t)rnd_range(shape == 1 ? 1 : 0, shape == 1 ? 3 : 2);
  const size_t pw = (size_t)rnd_range(shape == 1 ? 1 : 0, shape == 1 ? 3 : 2);
  const size_t h = (size_t)(shape == 1 ? rnd_range(7, 24) : shape == 2 ? rnd_range(1, 5) : rnd_range(1, 9));
  const size_t w = (size_t)(shape == 1 ? rnd_range(7, 24) : shape == 2 ? rnd_range(1, 5) : rnd_range(1, 9));
  return check_conv(batch, h, w, cin_g * groups, cout_g * groups, groups, kh, kw, sh, sw, ph, pw, dh, dw,
                    rnd() % 8 == 0, threads);
}

/* The depthwise shape classes of the row kernels (dwconv_x86.c), each ISA against the reference:
 * channel counts around the 64-channel groups and the 16-channel tail (nc < 16 included), widths
 * below, at and past the 2- and 4-pixel steps (odd ones), stride 1 and 2, padding 0 and 1, border
 * rows (h = 1 .. 5: row pairs cut by the image edge), batch 2, 1 and 3 threads (task boundaries),
 * the 3x3 fast paths and their generic neighbours (1x3, 4x3, 5x5, dilation 2), and the big-scale
 * requantization. */
static int test_dwconv_classes(void) {
  static const size_t chans[] = {1, 7, 16, 17, 31, 32, 33, 48, 64, 80, 96, 144, 150};
  static const size_t widths[] = {1, 2, 3, 5, 8, 9};
  static const size_t kernels[][4] = {{3, 3, 1, 1}, {1, 3, 1, 1}, {4, 3, 1, 1}, {5, 5, 1, 1}, {3, 3, 2, 2}};
  size_t n = 0;
  for (size_t ci = 0; ci < sizeof chans / sizeof *chans; ci++)
    for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++)
      for (size_t ki = 0; ki < sizeof kernels / sizeof *kernels; ki++) {
        const size_t c = chans[ci], w = widths[wi], kh = kernels[ki][0], kw = kernels[ki][1];
        const size_t d = kernels[ki][2], s = n % 3 == 2 ? 2 : 1, pad = n % 4 == 3 ? 0 : kw / 2;
        const size_t h = 1 + n % 5, batch = n % 7 == 6 ? 2 : 1;
        const int threads = n % 2 ? 3 : 1, big = n % 11 == 5;
        n++;
        if (check_conv(batch, h, w, c, c, c, kh, kw, s, s, pad, pad, d, d, big, threads)) return 1;
      }
  return 0;
}

/* -------------------------------------------------------------------- add -- */

static int test_vadd(size_t n, int threads) {
  int8_t *a = malloc(n + 1), *b = malloc(n + 1), *ref = malloc(n + 1);
  for (size_t i = 0; i < n; i++) a[i] = (int8_t)rnd_range(-128, 127), b[i] = (int8_t)rnd_range(-128, 127);
  const int32_t a_zp = (int32_t)rnd_range(-128, 127), b_zp = (int32_t)rnd_range(-128, 127);
  const int32_t out_zp = (int32_t)rnd_range(-128, 127), relu = rnd() % 3 == 0;
  const int32_t qmin = relu ? out_zp : -128, qmax = 127;
  const float a_scale = rnd_float(1e-3f, 1.0f), b_scale = rnd_float(1e-3f, 1.0f);
  const float out_scale = (a_scale + b_scale) * rnd_float(0.3f, 3.0f);
  const float inv = 1.0f / out_scale;
  for (size_t i = 0; i < n; i++) {
    volatile float av = (float)(a[i] - a_zp) * a_scale, bv = (float)(b[i] - b_zp) * b_scale; /* never an FMA */
    float v = (av + bv) * inv;
    const float lo = (float)(qmin - out_zp), hi = (float)(qmax - out_zp);
    v = v < lo ? lo : v > hi ? hi : v;
    ref[i] = (int8_t)(lrintf(v) + out_zp);
  }
  int8_t *out = guarded_alloc(n);
  for (int isa = 0; isa < QP_ISA_COUNT; isa++) {
    if (!qp_isa_usable(isa)) continue;
    qp_set_isa(isa);
    qp_set_num_threads(isa == QP_ISA_SCALAR ? 1 : threads);
    memset(out, SENTINEL, n + GUARD);
    if (xnnpack_qs8_vadd(a, b, n, a_zp, a_scale, b_zp, b_scale, out_scale, out_zp, qmin, qmax, out) != QP_OK)
      FAIL("%s vadd failed", qp_isa_name(isa));
    if (!guard_intact(out, n)) FAIL("%s vadd wrote past its output (n=%zu)", qp_isa_name(isa), n);
    for (size_t i = 0; i < n; i++)
      if (out[i] != ref[i])
        FAIL("%s vadd vs naive n=%zu at %zu: %d != %d (a=%d b=%d)", qp_isa_name(isa), n, i, out[i], ref[i], a[i], b[i]);
    checks++;
  }
  qp_set_isa(-1);
  if (xnnpack_qs8_vadd(a, b, n, a_zp, 0.0f, b_zp, b_scale, out_scale, out_zp, qmin, qmax, out) != QP_ERR_INVALID_ARGUMENT)
    FAIL("vadd accepted a zero scale");
  free(a), free(b), free(ref), free(out);
  return 0;
}

/* --------------------------------------------------------------- int4 qb4w -- */

/* Same float bits, or both NaN (the payload of a NaN is not part of the contract). */
static int same_float(float a, float b) {
  uint32_t ua, ub;
  memcpy(&ua, &a, 4), memcpy(&ub, &b, 4);
  return ua == ub || (a != a && b != b);
}

/* extreme: activations near the fp32 limit (sums overflow to +-inf and inf - inf = NaN, identically
 * on every path) or exact small integers (every product and sum exact). */
static int test_qb4w(size_t m, size_t n, size_t group, size_t groups, int extreme) {
  const size_t k = group * groups;
  float *x = malloc(m * k * sizeof(float)), *sc = malloc(n * groups * sizeof(float)), *bias = malloc(n * sizeof(float));
  int8_t *w = malloc(n * k);
  for (size_t i = 0; i < m * k; i++)
    x[i] = extreme == 1 ? (rnd() % 2 ? 3.0e38f : -3.0e38f) * rnd_float(0.5f, 1.0f)
           : extreme == 2 ? (float)rnd_range(-3, 3) : rnd_float(-2.0f, 2.0f);
  for (size_t i = 0; i < n * k; i++) w[i] = extreme && rnd() % 2 ? (rnd() % 2 ? -8 : 7) : (int8_t)rnd_range(-8, 7);
  for (size_t i = 0; i < n * groups; i++) sc[i] = extreme == 2 ? 0.5f : rnd() % 16 ? rnd_float(1e-3f, 0.5f) : 0.0f;
  for (size_t j = 0; j < n; j++) bias[j] = extreme == 2 ? (float)rnd_range(-3, 3) : rnd_float(-1.0f, 1.0f);
  const size_t psize = xnnpack_qb4w_packed_size(n, k), ssize = xnnpack_qb4w_packed_scales_size(n, k, group);
  const size_t npad = (n + 15) / 16 * 16;
  if (psize != npad * k / 2 || ssize != groups * npad) FAIL("qb4w packed sizes %zu %zu", psize, ssize);
  uint8_t *packed = malloc(psize);
  float *psc = malloc(ssize * sizeof(float));
  if (xnnpack_pack_qb4w(w, sc, n, k, group, packed, psize, psc, ssize) != QP_OK) FAIL("qb4w pack failed");
  for (size_t c = 0; c < npad; c++) /* blocks of 16 channels, a 32-bit word of 8 k per channel and row */
    for (size_t p = 0; p < k; p++) {
      const uint8_t byte = packed[(c / 16) * 16 * (k / 2) + (p / 8) * 64 + (c % 16) * 4 + (p % 8) / 2];
      const int v = p % 2 ? byte >> 4 : byte & 15;
      if ((v >= 8 ? v - 16 : v) != (c < n ? w[c * k + p] : 0)) FAIL("qb4w nibble c=%zu p=%zu", c, p);
    }
  for (size_t g = 0; g < groups; g++) /* scales [block][group][16], zero for the padded channels */
    for (size_t c = 0; c < npad; c++)
      if (psc[((c / 16) * groups + g) * 16 + c % 16] != (c < n ? sc[c * groups + g] : 0.0f))
        FAIL("qb4w packed scale g=%zu c=%zu", g, c);
  float *scalar = guarded_alloc(m * n * sizeof(float)), *out = guarded_alloc(m * n * sizeof(float));
  qp_set_num_threads((int)rnd_range(1, 3));
  qp_set_isa(QP_ISA_SCALAR);
  if (xnnpack_f32_qb4w_linear(x, m, k, packed, n, psc, group, bias, scalar) != QP_OK) FAIL("qb4w linear failed");
  if (!guard_intact(scalar, m * n * sizeof(float))) FAIL("qb4w wrote past its output");
  for (size_t i = 0; i < m && extreme != 1; i++) /* scalar vs float64 loops (exact for extreme == 2) */
    for (size_t j = 0; j < n; j++) {
      double acc = bias[j], mag = fabs(bias[j]);
      for (size_t p = 0; p < k; p++) {
        const double t = (double)x[i * k + p] * w[j * k + p] * sc[j * groups + p / group];
        acc += t, mag += fabs(t);
      }
      if (fabs(scalar[i * n + j] - acc) > (extreme == 2 ? 0.0 : 1e-5 * mag + 1e-6))
        FAIL("qb4w m=%zu n=%zu k=%zu g=%zu at [%zu,%zu]: %.9g vs %.9g", m, n, k, group, i, j, scalar[i * n + j], acc);
    }
  exercised[QP_ISA_SCALAR] = 1;
  for (int isa = 1; isa < QP_ISA_COUNT; isa++) {
    if (!qp_isa_usable(isa)) continue;
    qp_set_isa(isa);
    memset(out, SENTINEL, m * n * sizeof(float) + GUARD);
    if (xnnpack_f32_qb4w_linear(x, m, k, packed, n, psc, group, bias, out) != QP_OK)
      FAIL("qb4w %s failed", qp_isa_name(isa));
    if (!guard_intact(out, m * n * sizeof(float))) FAIL("qb4w %s wrote past its output", qp_isa_name(isa));
    for (size_t i = 0; i < m * n; i++)
      if (!same_float(out[i], scalar[i]))
        FAIL("qb4w %s vs scalar m=%zu n=%zu k=%zu g=%zu at %zu: %.9g != %.9g", qp_isa_name(isa), m, n, k, group, i,
             out[i], scalar[i]);
    exercised[isa] = 1;
    checks++;
  }
  qp_set_isa(-1);
  free(x), free(sc), free(bias), free(w), free(packed), free(psc), free(out), free(scalar);
  return 0;
}

/* ------------------------------------------------- int8 weight-only f32-qc8w -- */

/* extreme: 1 = activations near the fp32 limit (inf / NaN sums, the same on every path),
 * 2 = small integers with a power-of-two scale and integer bias (every result exact). */
static int test_f32_qc8w(size_t m, size_t k, size_t n, int extreme) {
  float *x = malloc(m * k * sizeof(float)), *ws = malloc(n * sizeof(float)), *bias = malloc(n * sizeof(float));
  int8_t *w = malloc(n * k);
  for (size_t i = 0; i < m * k; i++)
    x[i] = extreme == 1 ? (rnd() % 2 ? 3.0e38f : -3.0e38f) * rnd_float(0.5f, 1.0f)
           : extreme == 2 ? (float)rnd_range(-4, 4) : rnd_float(-3.0f, 3.0f);
  for (size_t i = 0; i < n * k; i++) w[i] = extreme && rnd() % 2 ? (rnd() % 2 ? -127 : 127) : (int8_t)rnd_range(-127, 127);
  const size_t n_ws = rnd() % 4 ? n : 1;
  for (size_t j = 0; j < n_ws; j++) ws[j] = extreme == 2 ? 0.25f : rnd_float(1e-4f, 0.05f);
  const int has_bias = rnd() % 3 != 0;
  for (size_t j = 0; j < n; j++) bias[j] = extreme == 2 ? (float)rnd_range(-9, 9) : rnd_float(-1.0f, 1.0f);
  const size_t psize = xnnpack_qc8w_packed_size(n, k), rsize = xnnpack_qc8w_row_sums_size(n);
  int8_t *packed = malloc(psize);
  int32_t *rs = malloc(rsize * sizeof(int32_t));
  if (xnnpack_pack_qc8w(w, n, k, packed, psize, rs, rsize) != QP_OK) FAIL("f32_qc8w pack failed");
  float *scalar = guarded_alloc(m * n * sizeof(float)), *out = guarded_alloc(m * n * sizeof(float));
  const float *b = has_bias ? bias : NULL;
  qp_set_num_threads((int)rnd_range(1, 3));
  qp_set_isa(QP_ISA_SCALAR);
  if (xnnpack_f32_qc8w_linear(x, m, k, packed, n, ws, n_ws, b, scalar) != QP_OK) FAIL("f32_qc8w scalar failed");
  if (!guard_intact(scalar, m * n * sizeof(float))) FAIL("f32_qc8w wrote past its output");
  for (size_t i = 0; i < m && extreme != 1; i++) /* scalar vs float64 loops (exact for extreme == 2) */
    for (size_t j = 0; j < n; j++) {
      double acc = 0.0, mag = 0.0;
      for (size_t p = 0; p < k; p++) acc += (double)x[i * k + p] * w[j * k + p], mag += fabs((double)x[i * k + p] * w[j * k + p]);
      const double sc = ws[n_ws == 1 ? 0 : j], want = acc * sc + (b ? b[j] : 0.0);
      const double tol = extreme == 2 ? 0.0 : 1e-6 * (mag * sc + fabs(b ? b[j] : 0.0)) + 1e-6;
      if (fabs(scalar[i * n + j] - want) > tol)
        FAIL("f32_qc8w m=%zu k=%zu n=%zu at [%zu,%zu]: %.9g vs %.9g", m, k, n, i, j, scalar[i * n + j], want);
    }
  exercised[QP_ISA_SCALAR] = 1;
  for (int isa = 1; isa < QP_ISA_COUNT; isa++) {
    if (!qp_isa_usable(isa)) continue;
    qp_set_isa(isa);
    memset(out, SENTINEL, m * n * sizeof(float) + GUARD);
    if (xnnpack_f32_qc8w_linear(x, m, k, packed, n, ws, n_ws, b, out) != QP_OK) FAIL("f32_qc8w %s failed", qp_isa_name(isa));
    if (!guard_intact(out, m * n * sizeof(float))) FAIL("f32_qc8w %s wrote past its output", qp_isa_name(isa));
    for (size_t i = 0; i < m * n; i++)
      if (!same_float(out[i], scalar[i]))
        FAIL("f32_qc8w %s vs scalar m=%zu k=%zu n=%zu at %zu: %.9g != %.9g", qp_isa_name(isa), m, k, n, i, out[i],
             scalar[i]);
    exercised[isa] = 1;
    checks++;
  }
  qp_set_isa(-1);
  const float bad = 0.0f;
  if (xnnpack_f32_qc8w_linear(x, m, k, packed, n, &bad, 1, b, out) != QP_ERR_INVALID_ARGUMENT)
    FAIL("f32_qc8w accepted a zero weight scale");
  free(x), free(ws), free(bias), free(w), free(packed), free(rs), free(scalar), free(out);
  return 0;
}

/* The f32-qc8w order is four phase sums over k mod 4, then (a0 + a1) + (a2 + a3): with x = 2^24,
 * 1, 1, ... (8 k) and unit weights, k order gives 2^24 (each + 1 rounds away), phases 2^24 + 6. */
static int test_f32_qc8w_phase_order(void) {
  const float x[8] = {16777216.0f, 1, 1, 1, 1, 1, 1, 1}, ws = 1.0f;
  const int8_t w[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  const size_t psize = xnnpack_qc8w_packed_size(1, 8), rsize = xnnpack_qc8w_row_sums_size(1);
  int8_t *packed = malloc(psize);
  int32_t *rs = malloc(rsize * sizeof(int32_t));
  if (xnnpack_pack_qc8w(w, 1, 8, packed, psize, rs, rsize) != QP_OK) FAIL("f32_qc8w phase pack failed");
  for (int isa = 0; isa < QP_ISA_COUNT; isa++) {
    if (!qp_isa_usable(isa)) continue;
    qp_set_isa(isa);
    float out = 0.0f;
    if (xnnpack_f32_qc8w_linear(x, 1, 8, packed, 1, &ws, 1, NULL, &out) != QP_OK || out != 16777222.0f)
      FAIL("f32_qc8w %s phase order: %.9g, want 16777222", qp_isa_name(isa), out);
  }
  qp_set_isa(-1);
  free(packed), free(rs);
  return 0;
}

/* --------------------------------------------------------------- arguments -- */

static int test_invalid(void) {
  int8_t w[8] = {1, 2, 3, -128, 5, 6, 7, 8}, packed[64];
  int32_t rs[16];
  if (xnnpack_pack_qc8w(w, 2, 4, packed, sizeof packed, rs, 16) != QP_ERR_INVALID_ARGUMENT)
    FAIL("pack accepted -128 (qc8w is narrow range)");
  w[3] = 4;
  if (xnnpack_pack_qc8w(w, 2, 4, packed, 63, rs, 16) != QP_ERR_INVALID_ARGUMENT) FAIL("pack accepted a short buffer");
  if (xnnpack_pack_qc8w(w, 2, 4, packed, 64, rs, 16) != QP_OK) FAIL("pack rejected good weights");
  int8_t x[4] = {0}, out[2];
  float mult[2] = {0.1f, 0.1f};
  if (xnnpack_qs8_qc8w_linear(x, 1, 4, 0, packed, rs, 2, NULL, mult, 3, 0, -128, 127, out) != QP_ERR_INVALID_ARGUMENT)
    FAIL("linear accepted 3 multipliers for n=2");
  if (xnnpack_qs8_qc8w_linear(x, 1, 4, 200, packed, rs, 2, NULL, mult, 1, 0, -128, 127, out) != QP_ERR_INVALID_ARGUMENT)
    FAIL("linear accepted x_zp=200");
  if (xnnpack_qs8_qc8w_linear(x, 1, 4, 0, packed, rs, 2, NULL, mult, 1, 0, 10, 5, out) != QP_ERR_INVALID_ARGUMENT)
    FAIL("linear accepted qmin > qmax");
  mult[0] = NAN;
  if (xnnpack_qs8_qc8w_linear(x, 1, 4, 0, packed, rs, 2, NULL, mult, 1, 0, -128, 127, out) != QP_ERR_INVALID_ARGUMENT)
    FAIL("linear accepted a NaN multiplier");
  if (xnnpack_qs8_qc8w_linear(NULL, 1, 4, 0, packed, rs, 2, NULL, mult, 1, 0, -128, 127, out) != QP_ERR_INVALID_ARGUMENT)
    FAIL("linear accepted x = NULL");
  float fx[4] = {1.0f, NAN, 0.0f, 2.0f}, fout[2], ws = 0.5f;
  if (xnnpack_qd8_f32_qc8w_linear(fx, 1, 4, 1, packed, rs, 2, &ws, 1, NULL, fout) != QP_ERR_INVALID_ARGUMENT)
    FAIL("dynamic linear accepted NaN input");
  float wide[40] = {0};
  for (int isa = 0; isa < QP_ISA_COUNT; isa++) { /* a NaN / inf inside the vector part, not the tail */
    if (!qp_isa_usable(isa)) continue;
    qp_set_isa(isa);
    for (int bad = 0; bad < 3; bad++) {
      int8_t wq[40];
      float s1;
      int32_t z1;
      wide[21] = bad == 0 ? NAN : bad == 1 ? INFINITY : -INFINITY;
      if (xnnpack_qd8_quantize(wide, 1, 40, bad % 2, wq, &s1, &z1) != QP_ERR_INVALID_ARGUMENT)
        FAIL("%s qd8 quantize accepted %g", qp_isa_name(isa), wide[21]);
    }
  }
  qp_set_isa(-1);
  fx[1] = INFINITY;
  if (xnnpack_qd8_f32_qc8w_linear(fx, 1, 4, 0, packed, rs, 2, &ws, 1, NULL, fout) != QP_ERR_INVALID_ARGUMENT)
    FAIL("dynamic linear accepted inf input");
  int8_t w4[4] = {1, 9, 0, 0};
  uint8_t p4[2];
  float sc = 1.0f, x4[48] = {0}, o4[1], ps4[16];
  if (xnnpack_pack_qb4w(w4, &sc, 1, 4, 32, p4, 2, ps4, 16) != QP_ERR_INVALID_ARGUMENT) FAIL("qb4w pack accepted k=4");
  int8_t w32[32] = {0};
  uint8_t p32[16 * 16];
  w32[5] = 9;
  if (xnnpack_pack_qb4w(w32, &sc, 1, 32, 32, p32, sizeof p32, ps4, 16) != QP_ERR_INVALID_ARGUMENT)
    FAIL("qb4w pack accepted 9");
  w32[5] = 1, sc = NAN;
  if (xnnpack_pack_qb4w(w32, &sc, 1, 32, 32, p32, sizeof p32, ps4, 16) != QP_ERR_INVALID_ARGUMENT)
    FAIL("qb4w pack accepted a NaN scale");
  sc = 1.0f;
  if (xnnpack_pack_qb4w(w32, &sc, 1, 32, 32, p32, sizeof p32 - 1, ps4, 16) != QP_ERR_INVALID_ARGUMENT)
    FAIL("qb4w pack accepted a short buffer");
  if (xnnpack_pack_qb4w(w32, &sc, 1, 32, 32, p32, sizeof p32, ps4, 16) != QP_OK) FAIL("qb4w pack failed");
  if (xnnpack_f32_qb4w_linear(x4, 1, 48, (uint8_t *)packed, 1, &sc, 48, NULL, o4) != QP_ERR_INVALID_ARGUMENT)
    FAIL("qb4w accepted group size 48");
  for (int i = 0; i < 16; i++) ps4[i] = i == 3 ? -1.0f : 1.0f;
  if (xnnpack_f32_qb4w_linear(x4, 1, 32, p32, 1, ps4, 32, NULL, o4) != QP_ERR_INVALID_ARGUMENT)
    FAIL("qb4w accepted a negative scale");
  ps4[3] = INFINITY;
  if (xnnpack_f32_qb4w_linear(x4, 1, 32, p32, 1, ps4, 32, NULL, o4) != QP_ERR_INVALID_ARGUMENT)
    FAIL("qb4w accepted an infinite scale");
  ps4[3] = -NAN;
  if (xnnpack_f32_qb4w_linear(x4, 1, 32, p32, 1, ps4, 32, NULL, o4) != QP_ERR_INVALID_ARGUMENT)
    FAIL("qb4w accepted a NaN scale");
  ps4[3] = -0.0f; /* zero scales are legal, of either sign */
  if (xnnpack_f32_qb4w_linear(x4, 1, 32, p32, 1, ps4, 32, NULL, o4) != QP_OK) FAIL("qb4w rejected a -0 scale");
  if (qp_set_isa(QP_ISA_COUNT + 3) == QP_OK) FAIL("qp_set_isa accepted an invalid isa");
  checks++;
  return 0;
}

/* Largest accumulators: |x - zp| = 255, |w| = 127 for every k. */
static int test_large_k(size_t k) {
  const size_t m = 3, n = 17;
  int8_t *x = malloc(m * k), *w = malloc(n * k);
  for (size_t i = 0; i < m * k; i++) x[i] = -128;
  for (size_t i = 0; i < n * k; i++) w[i] = (int8_t)((i / k) % 2 ? 127 : -127);
  const size_t psize = xnnpack_qc8w_packed_size(n, k), rsize = xnnpack_qc8w_row_sums_size(n);
  int8_t *packed = malloc(psize);
  int32_t *rs = malloc(rsize * 4);
  if (xnnpack_pack_qc8w(w, n, k, packed, psize, rs, rsize) != QP_OK) FAIL("pack k=%zu", k);
  const float mult = 1.0f / (255.0f * 127.0f * (float)k) * 100.0f;
  int8_t scalar[3 * 17], out[3 * 17];
  qp_set_isa(QP_ISA_SCALAR);
  if (xnnpack_qs8_qc8w_linear(x, m, k, 127, packed, rs, n, NULL, &mult, 1, 0, -128, 127, scalar) != QP_OK)
    FAIL("large k scalar");
  for (size_t j = 0; j < m * n; j++) /* acc = -255 * (+-127) * k -> -+100 after requantization */
    if (scalar[j] != ((j % n) % 2 ? -100 : 100)) FAIL("large k=%zu scalar value %d at %zu", k, scalar[j], j);
  for (int isa = 1; isa < QP_ISA_COUNT; isa++) {
    if (!qp_isa_usable(isa)) continue;
    qp_set_isa(isa);
    if (xnnpack_qs8_qc8w_linear(x, m, k, 127, packed, rs, n, NULL, &mult, 1, 0, -128, 127, out) != QP_OK)
      FAIL("large k %s", qp_isa_name(isa));
    if (memcmp(out, scalar, sizeof out)) FAIL("large k=%zu: %s differs from scalar", k, qp_isa_name(isa));
  }
  qp_set_isa(-1);
  if (xnnpack_qs8_qc8w_linear(x, m, xnnpack_max_k() + 1, 0, packed, rs, n, NULL, &mult, 1, 0, -128, 127, out) !=
      QP_ERR_INVALID_ARGUMENT)
    FAIL("k above xnnpack_max_k accepted");
  checks++;
  free(x), free(w), free(packed), free(rs);
  return 0;
}

int main(int argc, char **argv) {
  const char *require = NULL;
  long trials = 400;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--require") && i + 1 < argc) require = argv[++i];
    else if (!strcmp(argv[i], "--trials") && i + 1 < argc) trials = atol(argv[++i]);
    else if (!strcmp(argv[i], "--seed") && i + 1 < argc) rng_state = strtoull(argv[++i], NULL, 0) | 1;
    else {
      fprintf(stderr, "usage: %s [--require ISA[,ISA...]] [--trials N] [--seed S]\n", argv[0]);
      return 2;
    }
  }
  printf("xnnpack kernel test: compiled isas:");
  for (int isa = 0; isa < QP_ISA_COUNT; isa++)
    if (qp_compiled_isas() & (1u << isa)) printf(" %s%s", qp_isa_name(isa), qp_isa_usable(isa) ? "" : "(not usable here)");
  printf("\n");
  if (test_invalid() || test_dwconv_classes()) return 1;
  for (long t = 0; t < trials; t++) {
    const size_t m = pick(MN_CHOICES, sizeof MN_CHOICES / sizeof *MN_CHOICES, 40);
    const size_t n = pick(MN_CHOICES, sizeof MN_CHOICES / sizeof *MN_CHOICES, 80);
    const size_t k = pick(K_CHOICES, sizeof K_CHOICES / sizeof *K_CHOICES, 300);
    const int threads = (int)rnd_range(1, 4);
    if (test_static(m, k, n, t % 10 == 9, threads)) return 1;
    if (test_dynamic(m, k, n, threads)) return 1;
    if (t % 2 == 0 && test_conv(threads)) return 1;
    if (test_vadd(t % 5 == 0 ? (size_t)rnd_range(0, 70000) : (size_t)rnd_range(0, 300), threads)) return 1;
    if (t % 2 == 1 && test_f32_qc8w(m, k, n, t % 10 == 3 ? 1 : t % 10 == 7 ? 2 : 0)) return 1;
    if (t % 4 == 0) {
      static const size_t groups[] = {32, 64, 128};
      if (test_qb4w(pick(MN_CHOICES, 14, 9), pick(MN_CHOICES, 14, 20), groups[rnd() % 3], (size_t)rnd_range(1, 4),
                    t % 12 == 4 ? 1 : t % 12 == 8 ? 2 : 0))
        return 1;
    }
  }
  if (test_large_k(16384) || test_large_k(xnnpack_max_k())) return 1;
  /* qb4w row tiles: one row (the wide one-row tile), a partial tile, exactly one 8-row tile,
   * 8 + 1 rows (balanced to 5 + 4), 33 rows (five tiles); odd n leaves a partial block */
  static const size_t qb4w_ms[] = {1, 3, 8, 9, 33}, qb4w_groups[] = {32, 64, 128};
  for (size_t i = 0; i < 5; i++)
    for (size_t g = 0; g < 3; g++)
      if (test_qb4w(qb4w_ms[i], 37 + 30 * g, qb4w_groups[g], 3 - g, 0)) return 1;
  /* f32-qc8w row tiles (one row with up to 4 blocks, partial, full 8-row, 5 + 4, 33 rows), odd n
   * (a partial last block), k not a multiple of 4 (the zero-filled activation tail) or of 16 */
  if (test_f32_qc8w_phase_order()) return 1;
  for (size_t i = 0; i < 5; i++)
    if (test_f32_qc8w(qb4w_ms[i], 67, 37, 0) || test_f32_qc8w(qb4w_ms[i], 130, 71, 0)) return 1;
  /* k = 2000: 12 blocks per weight panel, so n = 200 (13 blocks) spans two panels, the second
   * a lone 16-channel block; m = 9 leaves a partial row tile */
  if (test_dynamic(9, 2000, 200, 1) || test_dynamic(9, 2000, 200, 3) || test_static(9, 2000, 200, 0, 2)) return 1;
  if (require) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", require);
    for (char *name = strtok(buf, ","); name; name = strtok(NULL, ",")) {
      int found = -1;
      for (int isa = 0; isa < QP_ISA_COUNT; isa++)
        if (!strcmp(qp_isa_name(isa), name)) found = isa;
      if (found < 0 || !exercised[found]) {
        fprintf(stderr, "FAIL: required ISA path %s was not %s\n", name, found < 0 ? "known" : "usable/exercised");
        return 1;
      }
    }
  }
  printf("xnnpack kernel test: %ld comparisons passed; exercised:", checks);
  for (int isa = 0; isa < QP_ISA_COUNT; isa++)
    if (exercised[isa]) printf(" %s", qp_isa_name(isa));
  printf("\n");
  return failures ? 1 : 0;
}
