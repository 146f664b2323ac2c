/* Cost of one qp_parallel_for call with ~15 us of work, 1 and 2 threads.
 *
 * The core's thread pool (core/quantplug/csrc/qp_runtime.c) spins briefly before its
 * workers sleep; this measures what that buys for back-to-back small kernel calls.
 *   bash benchmarks/pool/run.sh            # the pool as it is now
 *   bash benchmarks/pool/run.sh <git-rev>  # also the pool of an older commit, side by side
 */
#include "quantplug/qp_runtime.h"
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

const uint32_t qp_plugin_compiled_isas = 1u; /* normally defined by each plugin's build */

static atomic_long sink;

static void task(void *ctx, size_t begin, size_t end) {
  (void)ctx;
  long s = 0;
  for (size_t i = begin; i < end; i++)
    for (int k = 0; k < 200; k++) s += (long)i ^ k;
  atomic_fetch_add(&sink, s);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(void) {
  enum { CALLS = 5000 };
  for (int threads = 1; threads <= 2; threads++) {
    qp_set_num_threads(threads);
    double best = 1e9;
    for (int rep = 0; rep < 3; rep++) {
      double t0 = now();
      for (int i = 0; i < CALLS; i++) qp_parallel_for(256, 1, task, NULL);
      double per_call = (now() - t0) / CALLS * 1e6;
      if (per_call < best) best = per_call;
    }
    printf("threads %d: %.1f us per call (best of 3 runs of %d calls)\n", threads, best, CALLS);
  }
  return 0;
}
