/*
 * Single-thread read bandwidth of a buffer that stays in cache between passes, the way a
 * decode-style (M = 1) linear re-reads its packed int8 weights call after call.
 *
 * Usage: read_bw BYTES [BYTES...]   prints one "BYTES GB/s" line per size.
 *
 * Each pass sums the buffer with 64-byte AVX-512 loads into 8 independent accumulators (so the
 * loop is bound by the loads, not by an add chain); the best of many passes is reported, after
 * a warm-up pass that brings the buffer into the cache level it fits. A kernel that must touch
 * every weight byte once per call cannot take less than BYTES / bandwidth per call, whatever
 * its arithmetic: bench_kernels.py prints this floor next to the M = 1 rows.
 * Built and run by bench_kernels.py: gcc -O2 -mavx512f read_bw.c
 */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One pass over n bytes (n a multiple of 512); returns a value that depends on every byte so
 * the compiler cannot drop the loads. */
static long long read_pass(const unsigned char *buf, size_t n) {
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
  for (size_t i = 0; i < n; i += 512) {
    s0 = _mm512_add_epi32(s0, _mm512_load_si512((const void *)(buf + i)));
    s1 = _mm512_add_epi32(s1, _mm512_load_si512((const void *)(buf + i + 64)));
    s2 = _mm512_add_epi32(s2, _mm512_load_si512((const void *)(buf + i + 128)));
    s3 = _mm512_add_epi32(s3, _mm512_load_si512((const void *)(buf + i + 192)));
    s4 = _mm512_add_epi32(s4, _mm512_load_si512((const void *)(buf + i + 256)));
    s5 = _mm512_add_epi32(s5, _mm512_load_si512((const void *)(buf + i + 320)));
    s6 = _mm512_add_epi32(s6, _mm512_load_si512((const void *)(buf + i + 384)));
    s7 = _mm512_add_epi32(s7, _mm512_load_si512((const void *)(buf + i + 448)));
  }
  __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(s0, s1), _mm512_add_epi32(s2, s3)),
                               _mm512_add_epi32(_mm512_add_epi32(s4, s5), _mm512_add_epi32(s6, s7)));
  return _mm512_reduce_add_epi32(s);
}

static double bandwidth_gbs(size_t bytes) {
  size_t n = (bytes + 511) / 512 * 512;
  unsigned char *buf = aligned_alloc(64, n);
  if (!buf) return 0.0;
  memset(buf, 1, n);
  volatile long long sink = read_pass(buf, n); /* warm-up: bring the buffer into cache */
  /* Enough passes for ~0.2 s in total, timed in groups so one group is well above the clock's
   * resolution; the fastest group wins (the machine is shared). */
  int per_group = (int)(2000000 / n) + 1, groups = 40;
  double best = 1e30;
  for (int g = 0; g < groups; g++) {
    double t0 = now();
    for (int p = 0; p < per_group; p++) sink += read_pass(buf, n);
    double t = (now() - t0) / per_group;
    if (t < best) best = t;
  }
  (void)sink;
  free(buf);
  return n / best / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s BYTES [BYTES...]\n", argv[0]);
    return 2;
  }
  for (int i = 1; i < argc; i++) {
    long long bytes = atoll(argv[i]);
    if (bytes <= 0) {
      fprintf(stderr, "read_bw: size must be a positive byte count, got '%s'\n", argv[i]);
      return 2;
    }
    printf("%lld %.1f\n", bytes, bandwidth_gbs((size_t)bytes));
  }
  return 0;
}
