/*
 * Standalone check of the core's shared quantize and dequantize kernels
 * (qp_quantize.c): every SIMD path this CPU can run gives exactly what the
 * scalar path gives, for random lengths (SIMD bodies and scalar tails), scales,
 * zero points, ranges (uint8, reduce_range uint8, int8), exact ties, NaN,
 * +-inf and huge values; dequantize over every byte value, including zero
 * points outside the range the SIMD paths take (the scalar loop then runs).
 * Run by tests/test_core_c_kernels.py natively (also under ASan/UBSan) and,
 * cross-compiled for aarch64, under qemu-aarch64-static for the NEON path.
 *
 * usage: test_quantize [iterations] [seed]       exit status 0 = all equal
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quantplug/qp_quantize.h"
#include "quantplug/qp_runtime.h"

/* The driver stands in for a plugin that compiled every path of its architecture. */
#if defined(__x86_64__) || defined(__i386__)
const uint32_t qp_plugin_compiled_isas = (1u << QP_ISA_SSE2) | (1u << QP_ISA_AVX2) | (1u << QP_ISA_AVX512) |
                                         (1u << QP_ISA_AVX512VNNI) | (1u << QP_ISA_AVXVNNI);
#elif defined(__aarch64__)
const uint32_t qp_plugin_compiled_isas = (1u << QP_ISA_NEON) | (1u << QP_ISA_NEONDOT);
#else
const uint32_t qp_plugin_compiled_isas = 0;
#endif

static uint64_t rng_state;
static uint32_t rnd(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng_state >> 33);
}
static float rnd_float(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() % 1000001) / 1e6f; }

int main(int argc, char **argv) {
  int iters = argc > 1 ? atoi(argv[1]) : 200;
  rng_state = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
  enum { MAX_N = 777 };
  static float x[MAX_N];
  static uint8_t ref[MAX_N], out[MAX_N];
  static float fref[MAX_N], fout[MAX_N];
  const int ranges[3][3] = {{0, 0, 255}, {0, 0, 127}, {1, -128, 127}}; /* signed?, qmin, qmax */
  int paths = 0, failures = 0;
  for (int isa = 1; isa < QP_ISA_COUNT; isa++) {
    if (!qp_isa_usable(isa)) continue;
    paths++;
    for (int it = 0; it < iters; it++) {
      const int *r = ranges[it % 3];
      size_t n = 1 + rnd() % MAX_N;
      /* a power-of-two scale every other time: x * (1/scale) exact, so k + 0.5 are true ties */
      float scale = (it & 1) ? ldexpf(1.0f, -(int)(rnd() % 8)) : rnd_float(1e-4f, 2.0f);
      int32_t zp = r[1] + (int32_t)(rnd() % (uint32_t)(r[2] - r[1] + 1));
      for (size_t i = 0; i < n; i++) {
        uint32_t kind = rnd() % 64;
        if (kind == 0) x[i] = NAN;
        else if (kind == 1) x[i] = (rnd() & 1) ? INFINITY : -INFINITY;
        else if (kind == 2) x[i] = (rnd() & 1) ? 3e38f : -3e38f;
        else if (kind < 16) x[i] = ((float)((int)(rnd() % 512) - 256) + 0.5f) * scale; /* ties */
        else x[i] = rnd_float(-300.0f, 300.0f) * scale;
      }
      int st_ref, st;
      qp_set_isa(QP_ISA_SCALAR);
      if (r[0]) st_ref = qp_quantize_per_tensor_s8(x, n, scale, zp, r[1], r[2], (int8_t *)ref);
      else st_ref = qp_quantize_per_tensor_u8(x, n, scale, zp, r[1], r[2], ref);
      qp_set_isa(isa);
      if (r[0]) st = qp_quantize_per_tensor_s8(x, n, scale, zp, r[1], r[2], (int8_t *)out);
      else st = qp_quantize_per_tensor_u8(x, n, scale, zp, r[1], r[2], out);
      if (st != 0 || st_ref != 0 || memcmp(ref, out, n) != 0) {
        size_t at = 0;
        while (at < n && ref[at] == out[at]) at++;
        fprintf(stderr, "FAIL %s: n=%zu scale=%g zp=%d range=[%d,%d] status=%d/%d first diff at %zu "
                "(x=%g: scalar %d, simd %d)\n", qp_isa_name(isa), n, (double)scale, zp, r[1], r[2],
                st_ref, st, at, at < n ? (double)x[at] : 0.0, at < n ? ref[at] : 0, at < n ? out[at] : 0);
        if (++failures > 10) return 1;
      }
      /* dequantize: random bytes (every value reachable), the zero point anywhere in the range,
         now and then far outside it */
      for (size_t i = 0; i < n; i++) ref[i] = (uint8_t)rnd();
      int32_t dzp = (it % 17 == 0) ? (int32_t)(rnd() % 200000) - 100000 : zp;
      qp_set_isa(QP_ISA_SCALAR);
      if (r[0]) st_ref = qp_dequantize_per_tensor_s8((const int8_t *)ref, n, scale, dzp, fref);
      else st_ref = qp_dequantize_per_tensor_u8(ref, n, scale, dzp, fref);
      qp_set_isa(isa);
      if (r[0]) st = qp_dequantize_per_tensor_s8((const int8_t *)ref, n, scale, dzp, fout);
      else st = qp_dequantize_per_tensor_u8(ref, n, scale, dzp, fout);
      if (st != 0 || st_ref != 0 || memcmp(fref, fout, n * sizeof(float)) != 0) {
        size_t at = 0;
        while (at < n && memcmp(&fref[at], &fout[at], sizeof(float)) == 0) at++;
        fprintf(stderr, "FAIL dequantize %s: n=%zu scale=%g zp=%d signed=%d first diff at %zu (scalar %g, simd %g)\n",
                qp_isa_name(isa), n, (double)scale, dzp, r[0], at, at < n ? (double)fref[at] : 0.0,
                at < n ? (double)fout[at] : 0.0);
        if (++failures > 10) return 1;
      }
    }
  }
  qp_set_isa(-1);
  printf("test_quantize: %d SIMD path(s) x %d cases (quantize and dequantize): %s\n", paths, iters, failures ? "FAILED" : "all equal");
  return failures ? 1 : 0;
}
