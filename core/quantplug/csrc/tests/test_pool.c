/*
 * Stress test of the core's thread pool (qp_parallel_for in qp_runtime.c): every item of
 * every call is processed exactly once, and the call returns only when all of them are done,
 * across thread counts, chunk sizes, back-to-back calls, workers that are scheduled late
 * (tasks that sleep, so a call can finish before a worker wakes and the next call starts
 * while that worker still holds the old one's description), and nested calls (run inline).
 * Run by tests/test_core_c_kernels.py natively, under ASan/UBSan and under TSan.
 *
 * usage: test_pool [calls per thread count] [seed]       exit status 0 = all correct
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quantplug/qp_runtime.h"

const uint32_t qp_plugin_compiled_isas = 0;

enum { MAX_N = 4096 };

typedef struct {
  atomic_int hits[MAX_N];
  int sleep_every; /* chunks whose begin is a multiple of this sleep (0: never) */
  int nested;      /* each chunk also runs a nested qp_parallel_for over its items */
  atomic_int inner[MAX_N];
} job;

static uint64_t rng_state;
static uint32_t rnd(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng_state >> 33);
}

static void inner_task(void *vctx, size_t begin, size_t end) {
  job *j = (job *)vctx;
  for (size_t i = begin; i < end; i++) atomic_fetch_add(&j->inner[i], 1);
}

static void task(void *vctx, size_t begin, size_t end) {
  job *j = (job *)vctx;
  if (j->sleep_every && begin % (size_t)j->sleep_every == 0) {
    struct timespec ts = {0, 200000}; /* 0.2 ms: lets the caller finish the other chunks */
    nanosleep(&ts, NULL);
  }
  for (size_t i = begin; i < end; i++) atomic_fetch_add(&j->hits[i], 1);
  if (j->nested) qp_parallel_for(end - begin, 1, inner_task, j); /* pool busy: runs inline */
}

int main(int argc, char **argv) {
  int calls = argc > 1 ? atoi(argv[1]) : 300;
  rng_state = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
  static job j;
  int failures = 0;
  for (int threads = 1; threads <= 4; threads++) {
    qp_set_num_threads(threads);
    for (int c = 0; c < calls; c++) {
      const size_t n = 1 + rnd() % MAX_N, grain = 1 + rnd() % 64;
      for (size_t i = 0; i < n; i++) {
        atomic_store(&j.hits[i], 0);
        atomic_store(&j.inner[i], 0);
      }
      j.sleep_every = (c % 5 == 0) ? (int)(1 + rnd() % 8) * (int)grain : 0;
      j.nested = c % 7 == 0;
      qp_parallel_for(n, grain, task, &j);
      /* the call has returned: every item must be done exactly once, right now */
      for (size_t i = 0; i < n; i++) {
        const int h = atomic_load(&j.hits[i]);
        if (h != 1) {
          fprintf(stderr, "FAIL threads=%d call=%d n=%zu grain=%zu: item %zu ran %d times\n", threads, c,
                  n, grain, i, h);
          if (++failures > 10) return 1;
          break;
        }
      }
      if (j.nested) {
        /* chunk k's nested loop covers [0, chunk length): the first item ran once per chunk */
        if (atomic_load(&j.inner[0]) < 1) {
          fprintf(stderr, "FAIL threads=%d call=%d: nested loop did not run\n", threads, c);
          if (++failures > 10) return 1;
        }
      }
    }
  }
  printf("test_pool: 4 thread counts x %d calls: %s\n", calls, failures ? "FAILED" : "all correct");
  return failures ? 1 : 0;
}
