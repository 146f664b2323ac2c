/*
 * Standalone test driver for the qnnpack plugin kernels (no Python).
 *
 * Links the plugin's kernel sources and the core's qp_runtime.c /
 * qp_quantize.c. For many random shapes and qparams it checks:
 *   - the scalar path against a naive int64 reference built from the
 *     unpacked weights (independent of the packed layout);
 *   - every ISA path usable on this CPU against the scalar path, bit for
 *     bit, for the static linear (uint8 out), the dynamic linear (fp32 out),
 *     the dynamic qparams and quantization;
 *   - argument validation (QP_ERR_INVALID_ARGUMENT, never a crash).
 * Exits non-zero on the first mismatch. Built and run (natively and, on
 * x86 hosts, for aarch64 under qemu) by run_arm_tests.sh.
 *
 * usage: test_kernels [iterations] [seed]
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qnnpack_kernels.h"
#include "quantplug/qp_requant.h"
#include "quantplug/qp_runtime.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 16);
}
static uint32_t rnd_below(uint32_t n) { return rnd() % n; }
static float rnd_unit(void) { return (float)(rnd() & 0xffffff) / 16777216.0f; }

static int failures = 0;
#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                        \
      fprintf(stderr, "\n");                               \
      failures++;                                          \
      return 1;                                            \
    }                                                      \
  } while (0)

static const size_t DIMS[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65, 129};
static size_t pick_dim(void) { return DIMS[rnd_below(sizeof(DIMS) / sizeof(DIMS[0]))]; }

/* Byte generators: random, all-min, all-max, alternating extremes. */
static void fill_bytes(uint8_t *p, size_t n, int mode) {
  for (size_t i = 0; i < n; i++) {
    switch (mode) {
      case 0: p[i] = (uint8_t)rnd(); break;
      case 1: p[i] = 0; break;
      case 2: p[i] = 255; break;
      default: p[i] = (i & 1) ? 255 : 0; break;
    }
  }
}

static int usable_isas[QP_ISA_COUNT];
static int n_usable = 0;

static int test_static_case(size_t m, size_t k, size_t n, int per_channel, int extreme) {
  uint8_t *x = malloc(m * k), *w = malloc(n * k), *w_back = malloc(n * k);
  size_t psize = qnnpack_packed_weight_size(n, k), ssize = qnnpack_packed_sums_size(n);
  uint8_t *packed = malloc(psize);
  int32_t *wsums = malloc(ssize * 4), *wzp = malloc(n * 4), *bias = malloc(n * 4);
  float *mult = malloc(n * 4);
  uint8_t *ref = malloc(m * n), *got = malloc(m * n), *scalar = malloc(m * n);
  fill_bytes(x, m * k, extreme ? (int)rnd_below(4) : 0);
  fill_bytes(w, n * k, extreme ? (int)rnd_below(4) : 0);
  int32_t x_zp = extreme ? (rnd_below(2) ? 255 : 0) : (int32_t)rnd_below(256);
  int32_t out_zp = (int32_t)rnd_below(256);
  int32_t common_zp = (int32_t)rnd_below(256);
  float common_mult = ldexpf(0.5f + rnd_unit(), -(int)rnd_below(20) - 4);
  int use_bias = rnd_below(4) != 0;
  for (size_t j = 0; j < n; j++) {
    wzp[j] = per_channel ? (int32_t)rnd_below(256) : common_zp;
    mult[j] = per_channel ? ldexpf(0.5f + rnd_unit(), -(int)rnd_below(20) - 4) : common_mult;
    bias[j] = (int32_t)(rnd() % 200001) - 100000;
  }
  if (extreme && rnd_below(2)) { /* multipliers that saturate everything */
    for (size_t j = 0; j < n; j++) mult[j] = 1.0f + (float)rnd_below(1000);
  }
  int relu = rnd_below(3) == 0;
  int32_t qmin = relu ? out_zp : 0, qmax = 255;
  if (rnd_below(5) == 0) { qmin = (int32_t)rnd_below(128); qmax = 128 + (int32_t)rnd_below(128); }

  CHECK(qnnpack_pack_weight_u8(w, n, k, packed, psize, wsums, ssize) == QP_OK, "pack");
  CHECK(qnnpack_unpack_weight_u8(packed, psize, n, k, w_back) == QP_OK, "unpack");
  CHECK(memcmp(w, w_back, n * k) == 0, "unpack(pack(w)) != w for n=%zu k=%zu", n, k);

  /* naive reference (int64, unpacked) */
  for (size_t i = 0; i < m; i++)
    for (size_t j = 0; j < n; j++) {
      int64_t acc = use_bias ? bias[j] : 0;
      for (size_t p = 0; p < k; p++)
        acc += ((int64_t)x[i * k + p] - x_zp) * ((int64_t)w[j * k + p] - wzp[j]);
      CHECK(acc >= INT32_MIN && acc <= INT32_MAX, "reference accumulator overflow");
      ref[i * n + j] = (uint8_t)qp_requantize((int32_t)acc, mult[j], out_zp, qmin, qmax);
    }
  size_t n_mult = per_channel ? n : 1;
  for (int u = 0; u < n_usable; u++) {
    int isa = usable_isas[u];
    CHECK(qp_set_isa(isa) == QP_OK, "set isa %s", qp_isa_name(isa));
    qp_set_num_threads(1 + (int)rnd_below(3));
    memset(got, 0xAB, m * n);
    int st = qnnpack_linear_u8(x, m, k, x_zp, packed, psize, wsums, wzp, n, use_bias ? bias : NULL,
                               mult, n_mult, out_zp, qmin, qmax, got);
    CHECK(st == QP_OK, "linear status %d", st);
    const uint8_t *want = isa == QP_ISA_SCALAR ? ref : scalar;
    for (size_t e = 0; e < m * n; e++)
      CHECK(got[e] == want[e],
            "static linear %s vs %s: m=%zu k=%zu n=%zu at [%zu,%zu]: got %u want %u (x_zp=%d "
            "out_zp=%d per_channel=%d)",
            qp_isa_name(isa), isa == QP_ISA_SCALAR ? "naive reference" : "scalar", m, k, n,
            e / n, e % n, got[e], want[e], x_zp, out_zp, per_channel);
    if (isa == QP_ISA_SCALAR) memcpy(scalar, got, m * n);
  }
  free(x); free(w); free(w_back); free(packed); free(wsums); free(wzp); free(bias); free(mult);
  free(ref); free(got); free(scalar);
  return 0;
}

/* Random uint8 weights with zero points, scales and a bias for the dynamic linears, packed. */
static int dynamic_weights(size_t n, size_t k, int extreme, uint8_t *w, int32_t *wzp, float *wscale,
                           float *bias, uint8_t *packed, size_t psize, int32_t *wsums,
                           size_t ssize) {
  fill_bytes(w, n * k, extreme ? (int)rnd_below(4) : 0);
  for (size_t j = 0; j < n; j++) {
    wzp[j] = (int32_t)rnd_below(256);
    wscale[j] = ldexpf(0.5f + rnd_unit(), -(int)rnd_below(10));
    bias[j] = (rnd_unit() * 2 - 1) * 4;
  }
  return qnnpack_pack_weight_u8(w, n, k, packed, psize, wsums, ssize) == QP_OK ? 0 : 1;
}

static int test_dynamic_case(size_t m, size_t k, size_t n, int extreme) {
  float *x = malloc(m * k * 4), *wscale = malloc(n * 4), *bias = malloc(n * 4);
  uint8_t *w = malloc(n * k), *xq = malloc(m * k), *xq0 = malloc(m * k);
  size_t psize = qnnpack_packed_weight_size(n, k), ssize = qnnpack_packed_sums_size(n);
  uint8_t *packed = malloc(psize);
  int32_t *wsums = malloc(ssize * 4), *wzp = malloc(n * 4);
  float *got = malloc(m * n * 4), *scalar = malloc(m * n * 4);
  float amp = ldexpf(1.0f, (int)rnd_below(16) - 8);
  float shift = rnd_below(3) == 0 ? amp * (rnd_unit() * 2 - 1) : 0.0f;
  for (size_t e = 0; e < m * k; e++) {
    x[e] = (rnd_unit() * 2 - 1) * amp + shift;
    if (extreme && rnd_below(50) == 0) x[e] = NAN;
    if (extreme && rnd_below(50) == 0) x[e] = rnd_below(2) ? -0.0f : 0.0f;
  }
  if (extreme && rnd_below(4) == 0) memset(x, 0, m * k * 4); /* empty range */
  CHECK(dynamic_weights(n, k, extreme, w, wzp, wscale, bias, packed, psize, wsums, ssize) == 0, "pack");
  int use_bias = rnd_below(2);
  float s0 = 0;
  int32_t z0 = 0;
  for (int u = 0; u < n_usable; u++) {
    int isa = usable_isas[u];
    CHECK(qp_set_isa(isa) == QP_OK, "set isa");
    qp_set_num_threads(1 + (int)rnd_below(3));
    float s;
    int32_t z;
    int st = qnnpack_linear_dynamic_f32(x, m, k, packed, psize, wsums, wzp, wscale, n,
                                        use_bias ? bias : NULL, xq, got, &s, &z);
    CHECK(st == QP_OK, "dynamic status %d", st);
    float cs;
    int32_t cz;
    CHECK(qnnpack_choose_qparams_u8(x, m * k, &cs, &cz) == QP_OK, "choose_qparams");
    CHECK(cs == s && cz == z, "choose_qparams disagrees with the dynamic linear");
    if (isa == QP_ISA_SCALAR) {
      /* check the scalar path against a direct computation */
      float inv = 1.0f / s;
      for (size_t e = 0; e < m * k; e++)
        CHECK(xq[e] == (uint8_t)qp_quantize(x[e], inv, z, 0, 255), "scalar quantize at %zu", e);
      for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
          int64_t acc = 0;
          for (size_t p = 0; p < k; p++)
            acc += ((int64_t)xq[i * k + p] - z) * ((int64_t)w[j * k + p] - wzp[j]);
          volatile float prod = (float)(int32_t)acc * (s * wscale[j]);
          float want = prod + (use_bias ? bias[j] : 0.0f);
          CHECK(memcmp(&want, &got[i * n + j], 4) == 0,
                "scalar dynamic vs reference m=%zu k=%zu n=%zu at [%zu,%zu]: %.9g vs %.9g", m, k,
                n, i, j, got[i * n + j], want);
        }
      memcpy(scalar, got, m * n * 4);
      memcpy(xq0, xq, m * k);
      s0 = s;
      z0 = z;
    } else {
      CHECK(s == s0 && z == z0, "%s dynamic qparams (%g, %d) vs scalar (%g, %d)",
            qp_isa_name(isa), s, z, s0, z0);
      for (size_t e = 0; e < m * k; e++)
        CHECK(xq[e] == xq0[e], "%s quantize vs scalar at %zu: %u vs %u (x=%g)",
              qp_isa_name(isa), e, xq[e], xq0[e], x[e]);
      CHECK(memcmp(got, scalar, m * n * 4) == 0, "%s dynamic linear differs from scalar m=%zu k=%zu n=%zu",
            qp_isa_name(isa), m, k, n);
    }
  }
  free(x); free(wscale); free(bias); free(w); free(xq); free(xq0); free(packed); free(wsums);
  free(wzp); free(got); free(scalar);
  return 0;
}

/* Per-row dynamic linear: every path vs a direct computation (scalar) and vs scalar, bit for bit. */
static int test_dynamic_rows_case(size_t m, size_t k, size_t n, int extreme) {
  float *x = malloc(m * k * 4), *wscale = malloc(n * 4), *bias = malloc(n * 4);
  uint8_t *w = malloc(n * k), *xq = malloc(m * k);
  size_t psize = qnnpack_packed_weight_size(n, k), ssize = qnnpack_packed_sums_size(n);
  uint8_t *packed = malloc(psize);
  int32_t *wsums = malloc(ssize * 4), *wzp = malloc(n * 4), *rz = malloc(m * 4);
  float *got = malloc(m * n * 4), *scalar = malloc(m * n * 4), *rs = malloc(m * 4);
  for (size_t i = 0; i < m; i++) {
    /* rows of their own range and sign (some all positive / all negative / empty) */
    const float amp = ldexpf(1.0f, (int)rnd_below(16) - 8);
    const int kind = (int)rnd_below(5);
    const float shift = kind == 0 ? 2 * amp : (kind == 1 ? -2 * amp : 0.0f);
    for (size_t p = 0; p < k; p++) {
      float v = (rnd_unit() * 2 - 1) * amp + shift;
      if (kind == 2 && extreme) v = 0.0f;
      if (extreme && rnd_below(50) == 0) v = NAN;
      x[i * k + p] = v;
    }
  }
  CHECK(dynamic_weights(n, k, extreme, w, wzp, wscale, bias, packed, psize, wsums, ssize) == 0, "pack");
  int use_bias = rnd_below(2);
  for (int u = 0; u < n_usable; u++) {
    int isa = usable_isas[u];
    CHECK(qp_set_isa(isa) == QP_OK, "set isa");
    qp_set_num_threads(1 + (int)rnd_below(3));
    int st = qnnpack_linear_dynamic_rows_f32(x, m, k, packed, psize, wsums, wzp, wscale, n,
                                             use_bias ? bias : NULL, xq, got, rs, rz);
    CHECK(st == QP_OK, "dynamic rows status %d", st);
    for (size_t i = 0; i < m; i++) {
      float cs;
      int32_t cz;
      CHECK(qnnpack_choose_qparams_u8(x + i * k, k, &cs, &cz) == QP_OK, "choose_qparams row");
      CHECK(cs == rs[i] && cz == rz[i], "%s row %zu qparams (%g, %d) vs (%g, %d)", qp_isa_name(isa),
            i, rs[i], rz[i], cs, cz);
      const float inv = 1.0f / cs;
      for (size_t p = 0; p < k; p++)
        CHECK(xq[i * k + p] == (uint8_t)qp_quantize(x[i * k + p], inv, cz, 0, 255),
              "%s row quantize at [%zu,%zu]", qp_isa_name(isa), i, p);
    }
    if (isa == QP_ISA_SCALAR) {
      for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
          int64_t acc = 0;
          for (size_t p = 0; p < k; p++)
            acc += ((int64_t)xq[i * k + p] - rz[i]) * ((int64_t)w[j * k + p] - wzp[j]);
          volatile float prod = (float)(int32_t)acc * (rs[i] * wscale[j]);
          float want = prod + (use_bias ? bias[j] : 0.0f);
          CHECK(memcmp(&want, &got[i * n + j], 4) == 0,
                "scalar dynamic rows vs reference m=%zu k=%zu n=%zu at [%zu,%zu]: %.9g vs %.9g", m,
                k, n, i, j, got[i * n + j], want);
        }
      memcpy(scalar, got, m * n * 4);
    } else {
      CHECK(memcmp(got, scalar, m * n * 4) == 0,
            "%s dynamic rows linear differs from scalar m=%zu k=%zu n=%zu", qp_isa_name(isa), m, k, n);
    }
    /* without the optional outputs (the production call) */
    st = qnnpack_linear_dynamic_rows_f32(x, m, k, packed, psize, wsums, wzp, wscale, n,
                                         use_bias ? bias : NULL, NULL, got, NULL, NULL);
    CHECK(st == QP_OK && memcmp(got, scalar, m * n * 4) == 0, "%s dynamic rows without outputs",
          qp_isa_name(isa));
  }
  free(x); free(wscale); free(bias); free(w); free(xq); free(packed); free(wsums);
  free(wzp); free(rz); free(got); free(scalar); free(rs);
  return 0;
}

/* Random conv geometry: regular, pointwise, grouped, depthwise, strided, dilated, padded. */
static int test_conv_case(int kind) {
  size_t groups = 1, cin_g, cout;
  size_t kh = 1 + rnd_below(5), kw = 1 + rnd_below(5);
  size_t sh = 1 + rnd_below(3), sw = 1 + rnd_below(3), dh = 1 + rnd_below(2), dw = 1 + rnd_below(2);
  size_t ph = rnd_below(3), pw = rnd_below(3);
  switch (kind) {
    case 0: cin_g = 1 + rnd_below(20); cout = 1 + rnd_below(40); break;            /* regular */
    case 1: cin_g = 1 + rnd_below(70); cout = 1 + rnd_below(70); kh = kw = 1;       /* pointwise */
            sh = sw = 1; ph = pw = 0; break;
    case 2: groups = 2 + rnd_below(3); cin_g = 1 + rnd_below(6);                   /* grouped */
            cout = groups * (1 + rnd_below(6)); break;
    case 4: cin_g = 1 + rnd_below(12); cout = 1 + rnd_below(40);                    /* many rows */
            groups = 1 + rnd_below(2); cout *= groups; break;
    default: groups = 1 + rnd_below(80); cin_g = 1; cout = groups;                  /* depthwise */
            if (rnd_below(8) == 0) kh = kw = 6; /* > 26 taps: the SIMD run kernels' scalar fallback */
            else if (rnd_below(3) == 0) sh = sw = dh = dw = 1, kh = kw = 3; /* pair-row paths */
            break;
  }
  const size_t cin = cin_g * groups, batch = 1 + rnd_below(2);
  size_t in_h = dh * (kh - 1) + 1 + rnd_below(7), in_w = dw * (kw - 1) + 1 + rnd_below(7);
  if (kind == 3) in_w += rnd_below(16); /* depthwise: long interior runs between the borders */
  if (kind == 4) { /* >= 128 output rows per thread: conv.c's fused row tasks */
    in_h += 14 + rnd_below(14);
    in_w += 14 + rnd_below(14);
  }
  if (in_h + 2 * ph < dh * (kh - 1) + 1) in_h = dh * (kh - 1) + 1;
  const size_t out_h = (in_h + 2 * ph - (dh * (kh - 1) + 1)) / sh + 1;
  const size_t out_w = (in_w + 2 * pw - (dw * (kw - 1) + 1)) / sw + 1;
  const size_t xs = batch * in_h * in_w * cin, ws = cout * cin_g * kh * kw, os = batch * out_h * out_w * cout;
  uint8_t *x = malloc(xs), *wu = malloc(ws), *ref = malloc(os), *got = malloc(os), *scalar = malloc(os);
  int8_t *w = malloc(ws);
  int32_t *wzp = malloc(cout * 4), *wzp_u8 = malloc(cout * 4), *bias = malloc(cout * 4);
  float *mult = malloc(cout * 4);
  fill_bytes(x, xs, rnd_below(8) == 0 ? (int)rnd_below(4) : 0);
  for (size_t i = 0; i < ws; i++) w[i] = (int8_t)rnd();
  int per_channel = (int)rnd_below(2);
  int32_t common = (int32_t)rnd_below(256) - 128;
  for (size_t c = 0; c < cout; c++) {
    wzp[c] = per_channel ? (int32_t)rnd_below(256) - 128 : common;
    wzp_u8[c] = wzp[c] + 128;
    bias[c] = (int32_t)(rnd() % 20001) - 10000;
    mult[c] = per_channel || c == 0 ? ldexpf(0.5f + rnd_unit(), -(int)rnd_below(8) - 8) : mult[0];
  }
  int32_t x_zp = (int32_t)rnd_below(256), out_zp = (int32_t)rnd_below(256);
  int relu = (int)rnd_below(2), use_bias = (int)rnd_below(2);
  size_t psize = qnnpack_conv2d_packed_size(cout, cin_g, kh, kw, groups);
  size_t ssize = qnnpack_conv2d_sums_size(cout, cin_g, groups);
  uint8_t *packed = malloc(psize);
  int32_t *wsums = malloc(ssize * 4);
  CHECK(psize > 0 && qnnpack_pack_conv2d_weight_s8(w, wzp_u8, cout, cin_g, kh, kw, groups, packed, psize,
                                                   wsums, ssize) == QP_OK, "conv pack");
  const size_t ng = cout / groups;
  for (size_t b = 0; b < batch; b++)
    for (size_t oy = 0; oy < out_h; oy++)
      for (size_t ox = 0; ox < out_w; ox++)
        for (size_t oc = 0; oc < cout; oc++) {
          const size_t g = oc / ng;
          int64_t acc = use_bias ? bias[oc] : 0;
          for (size_t ci = 0; ci < cin_g; ci++)
            for (size_t ky = 0; ky < kh; ky++)
              for (size_t kx = 0; kx < kw; kx++) {
                long iy = (long)(oy * sh + ky * dh) - (long)ph, ix = (long)(ox * sw + kx * dw) - (long)pw;
                if (iy < 0 || ix < 0 || iy >= (long)in_h || ix >= (long)in_w) continue;
                int32_t xv = x[((b * in_h + (size_t)iy) * in_w + (size_t)ix) * cin + g * cin_g + ci];
                int32_t wv = w[((oc * cin_g + ci) * kh + ky) * kw + kx];
                acc += (int64_t)(xv - x_zp) * (wv - wzp[oc]);
              }
          ref[((b * out_h + oy) * out_w + ox) * cout + oc] =
              (uint8_t)qp_requantize((int32_t)acc, mult[oc], out_zp, relu ? out_zp : 0, 255);
        }
  for (int u = 0; u < n_usable; u++) {
    int isa = usable_isas[u];
    CHECK(qp_set_isa(isa) == QP_OK, "set isa");
    qp_set_num_threads(1 + (int)rnd_below(3));
    memset(got, 0xCD, os);
    int st = qnnpack_conv2d_u8(x, batch, in_h, in_w, cin, x_zp, packed, psize, wsums, ssize, wzp_u8, cout,
                               kh, kw, sh, sw, ph, pw, dh, dw, groups, use_bias ? bias : NULL, mult,
                               per_channel ? cout : 1, out_zp, relu ? out_zp : 0, 255, got, out_h, out_w);
    CHECK(st == QP_OK, "conv status %d (kind %d)", st, kind);
    const uint8_t *want = isa == QP_ISA_SCALAR ? ref : scalar;
    for (size_t e = 0; e < os; e++)
      CHECK(got[e] == want[e],
            "conv2d %s vs %s (kind %d): N=%zu C=%zu H=%zu W=%zu Cout=%zu k=%zux%zu s=%zux%zu p=%zux%zu "
            "d=%zux%zu g=%zu at %zu: got %u want %u",
            qp_isa_name(isa), isa == QP_ISA_SCALAR ? "naive reference" : "scalar", kind, batch, cin,
            in_h, in_w, cout, kh, kw, sh, sw, ph, pw, dh, dw, groups, e, got[e], want[e]);
    if (isa == QP_ISA_SCALAR) memcpy(scalar, got, os);
  }
  (void)wu;
  free(x); free(wu); free(ref); free(got); free(scalar); free(w); free(wzp); free(wzp_u8); free(bias);
  free(mult); free(packed); free(wsums);
  return 0;
}

/* The scalar contract of add (mul = 0) or mul (mul = 1) for element i. */
static uint8_t binary_want(int mul, uint8_t a, uint8_t b, float as, float bs, float os, float mult,
                           int32_t azp, int32_t bzp, int32_t ozp, int32_t qmin) {
  float v;
  if (mul) {
    v = (float)(((int32_t)a - azp) * ((int32_t)b - bzp)) * mult;
  } else {
    volatile float fa = (float)((int32_t)a - azp) * as, fb = (float)((int32_t)b - bzp) * bs;
    v = (fa + fb) * (1.0f / os);
  }
  return (uint8_t)(qp_round_clamp(v, qmin - ozp, 255 - ozp) + ozp);
}

/* add or mul on every usable path: the scalar one against the formula, the others against it. */
static int test_binary_case(int mul) {
  const char *name = mul ? "mul" : "add";
  const size_t n = 1 + rnd_below(rnd_below(4) == 0 ? 5000 : 100);
  uint8_t *a = malloc(n), *b = malloc(n), *got = malloc(n), *scalar = malloc(n);
  fill_bytes(a, n, rnd_below(6) == 0 ? (int)rnd_below(4) : 0);
  fill_bytes(b, n, rnd_below(6) == 0 ? (int)rnd_below(4) : 0);
  const float as = ldexpf(0.5f + rnd_unit(), -(int)rnd_below(10)), bs = ldexpf(0.5f + rnd_unit(), -(int)rnd_below(10));
  const float os = ldexpf(0.5f + rnd_unit(), -(int)rnd_below(10));
  const float mult = ldexpf(0.5f + rnd_unit(), -(int)rnd_below(16));
  const int32_t azp = (int32_t)rnd_below(256), bzp = (int32_t)rnd_below(256), ozp = (int32_t)rnd_below(256);
  const int32_t qmin = rnd_below(2) ? ozp : 0; /* fused relu or not */
  for (int u = 0; u < n_usable; u++) {
    int isa = usable_isas[u];
    CHECK(qp_set_isa(isa) == QP_OK, "set isa");
    qp_set_num_threads(1 + (int)rnd_below(3));
    const int status = mul ? qnnpack_mul_u8(a, azp, b, bzp, n, mult, ozp, qmin, 255, got)
                           : qnnpack_add_u8(a, as, azp, b, bs, bzp, n, os, ozp, qmin, 255, got);
    CHECK(status == QP_OK, "%s status", name);
    for (size_t i = 0; i < n; i++) {
      const uint8_t want = isa == QP_ISA_SCALAR
                               ? binary_want(mul, a[i], b[i], as, bs, os, mult, azp, bzp, ozp, qmin)
                               : scalar[i];
      CHECK(got[i] == want, "%s %s at %zu (n=%zu): %u vs %u", qp_isa_name(isa), name, i, n, got[i], want);
    }
    if (isa == QP_ISA_SCALAR) memcpy(scalar, got, n);
  }
  free(a); free(b); free(got); free(scalar);
  return 0;
}

static int test_lut_case(void) {
  const size_t n = 1 + rnd_below(rnd_below(4) == 0 ? 70000 : 100);
  uint8_t table[256], *x = malloc(n), *got = malloc(n);
  fill_bytes(table, 256, 0);
  fill_bytes(x, n, 0);
  qp_set_num_threads(1 + (int)rnd_below(3));
  CHECK(qnnpack_lut_u8(x, n, table, 256, got) == QP_OK, "lut");
  for (size_t i = 0; i < n; i++) CHECK(got[i] == table[x[i]], "lut at %zu", i);
  free(x); free(got);
  return 0;
}

static int test_invalid_arguments(void) {
  uint8_t x[16] = {0}, w[16] = {0}, out[16];
  size_t psize = qnnpack_packed_weight_size(2, 4), ssize = qnnpack_packed_sums_size(2);
  uint8_t packed[256];
  int32_t wsums[16], wzp[2] = {128, 128}, badzp[2] = {128, 256};
  float mult[2] = {0.5f, 0.5f}, bad_mult[2] = {0.5f, NAN}, neg_mult[1] = {-1.0f};
  float fx[8] = {0}, fout[8], wscale[2] = {1, 1};
  CHECK(qnnpack_pack_weight_u8(w, 2, 4, packed, psize, wsums, ssize) == QP_OK, "pack ok");
  CHECK(qnnpack_pack_weight_u8(w, 0, 4, packed, psize, wsums, ssize) == QP_ERR_INVALID_ARGUMENT, "n=0");
  CHECK(qnnpack_pack_weight_u8(w, 2, 4, packed, psize - 1, wsums, ssize) == QP_ERR_INVALID_ARGUMENT, "size");
  CHECK(qnnpack_pack_weight_u8(NULL, 2, 4, packed, psize, wsums, ssize) == QP_ERR_INVALID_ARGUMENT, "null");
#define LIN(...) qnnpack_linear_u8(__VA_ARGS__)
  CHECK(LIN(x, 2, 4, 0, packed, psize, wsums, wzp, 2, NULL, mult, 2, 0, 0, 255, out) == QP_OK, "ok");
  CHECK(LIN(x, 2, 4, 256, packed, psize, wsums, wzp, 2, NULL, mult, 2, 0, 0, 255, out) == 1, "x_zp");
  CHECK(LIN(x, 2, 4, 0, packed, psize, wsums, badzp, 2, NULL, mult, 2, 0, 0, 255, out) == 1, "w_zp");
  CHECK(LIN(x, 2, 4, 0, packed, psize, wsums, wzp, 2, NULL, bad_mult, 2, 0, 0, 255, out) == 1, "nan mult");
  CHECK(LIN(x, 2, 4, 0, packed, psize, wsums, wzp, 2, NULL, neg_mult, 1, 0, 0, 255, out) == 1, "neg mult");
  CHECK(LIN(x, 2, 4, 0, packed, psize, wsums, wzp, 2, NULL, mult, 3, 0, 0, 255, out) == 1, "n_mult");
  CHECK(LIN(x, 2, 4, 0, packed, psize, wsums, wzp, 2, NULL, mult, 2, 0, 10, 5, out) == 1, "range");
  CHECK(LIN(x, 2, 5, 0, packed, psize, wsums, wzp, 2, NULL, mult, 2, 0, 0, 255, out) == 1, "k vs packed");
  CHECK(LIN(NULL, 2, 4, 0, packed, psize, wsums, wzp, 2, NULL, mult, 2, 0, 0, 255, out) == 1, "null x");
  CHECK(LIN(x, 0, 4, 0, packed, psize, wsums, wzp, 2, NULL, mult, 2, 0, 0, 255, NULL) == QP_OK, "m=0");
  fx[3] = INFINITY;
  CHECK(qnnpack_linear_dynamic_f32(fx, 2, 4, packed, psize, wsums, wzp, wscale, 2, NULL, NULL, fout,
                                   NULL, NULL) == 1, "inf input");
  fx[5] = -INFINITY; /* second row only */
  CHECK(qnnpack_linear_dynamic_rows_f32(fx, 2, 4, packed, psize, wsums, wzp, wscale, 2, NULL, NULL,
                                        fout, NULL, NULL) == 1, "dynamic rows inf");
  CHECK(qnnpack_linear_dynamic_rows_f32(NULL, 2, 4, packed, psize, wsums, wzp, wscale, 2, NULL, NULL,
                                        fout, NULL, NULL) == 1, "dynamic rows null x");
  CHECK(qnnpack_linear_dynamic_rows_f32(fx, 2, 4, packed, psize - 1, wsums, wzp, wscale, 2, NULL,
                                        NULL, fout, NULL, NULL) == 1, "dynamic rows packed size");
  fx[3] = 0;
  fx[5] = 0;
  CHECK(qnnpack_linear_dynamic_f32(fx, 2, 4, packed, psize, wsums, wzp, wscale, 2, NULL, NULL, fout,
                                   NULL, NULL) == QP_OK, "dynamic ok (scratch allocated inside)");
  CHECK(qnnpack_linear_dynamic_rows_f32(fx, 2, 4, packed, psize, wsums, wzp, wscale, 2, NULL, NULL,
                                        fout, NULL, NULL) == QP_OK, "dynamic rows ok");
  CHECK(qp_set_isa(QP_ISA_COUNT) == QP_ERR_UNSUPPORTED_ISA, "bad isa");
  CHECK(qnnpack_add_u8(x, 0.1f, 0, w, 0.1f, 0, 4, 0.0f, 0, 0, 255, out) == 1, "add zero out scale");
  CHECK(qnnpack_add_u8(x, 0.1f, 300, w, 0.1f, 0, 4, 0.1f, 0, 0, 255, out) == 1, "add bad zp");
  CHECK(qnnpack_mul_u8(x, 0, w, 0, 4, 0.0f, 0, 0, 255, out) == 1, "mul zero multiplier");
  CHECK(qnnpack_mul_u8(x, 0, w, 256, 4, 1.0f, 0, 0, 255, out) == 1, "mul bad zp");
  CHECK(qnnpack_mul_u8(x, 0, w, 0, 4, 1.0f, 0, 10, 5, out) == 1, "mul qmin > qmax");
  CHECK(qnnpack_lut_u8(x, 4, x, 16, out) == 1, "lut table size");
  CHECK(qnnpack_lut_u8(x, 4, NULL, 256, out) == 1, "lut null table");
  CHECK(qnnpack_conv2d_packed_size(4, 3, 3, 3, 3) == 0, "cout not divisible by groups");
  return 0;
}

int main(int argc, char **argv) {
  int iterations = argc > 1 ? atoi(argv[1]) : 300;
  if (argc > 2) rng_state ^= strtoull(argv[2], NULL, 0) * 0x2545F4914F6CDD1Dull;
  for (int isa = 0; isa < QP_ISA_COUNT; isa++)
    if (qp_isa_usable(isa)) usable_isas[n_usable++] = isa; /* scalar (0) first */
  printf("qnnpack kernel tests: compiled ISAs 0x%x, usable:", qp_compiled_isas());
  for (int u = 0; u < n_usable; u++) printf(" %s", qp_isa_name(usable_isas[u]));
  printf("\n");
  if (test_invalid_arguments()) return 1;
  for (int it = 0; it < iterations; it++) {
    size_t m = pick_dim(), k = pick_dim(), n = pick_dim();
    if (rnd_below(20) == 0) k = 1000 + rnd_below(3000);
    if (test_static_case(m, k, n, (int)rnd_below(2), rnd_below(4) == 0)) return 1;
    if (test_dynamic_case(m, k, n, rnd_below(4) == 0)) return 1;
    if (it % 2 == 0 && test_dynamic_rows_case(m, k, n, rnd_below(4) == 0)) return 1;
    if (test_conv_case(it % 4)) return 1;
    if (it % 8 == 1 && test_conv_case(4)) return 1;
    if (test_binary_case(0) || test_binary_case(1)) return 1;
    if (it % 8 == 0 && test_lut_case()) return 1;
  }
  /* Large K: 255 * 255 * K must not overflow anywhere on the way. */
  if (test_static_case(3, 16384, 17, 1, 1)) return 1;
  if (test_static_case(9, 16383, 33, 0, 1)) return 1;
  if (test_dynamic_case(2, 16384, 5, 1)) return 1;
  /* per-tensor ranges over 140k values, on 1 to 3 threads */
  if (test_dynamic_case(70, 2001, 9, 1) || test_dynamic_case(33, 4099, 17, 0)) return 1;
  if (test_dynamic_rows_case(3, 16384, 5, 1)) return 1;
  qp_set_isa(-1);
  printf("qnnpack kernel tests: %d random cases x %d ISA paths passed (active: %s)\n", iterations,
         n_usable, qp_isa_name(qp_active_isa()));
  return failures ? 1 : 0;
}
