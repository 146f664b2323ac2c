/*
 * quantplug shared runtime: CPU feature detection, ISA selection and a small
 * persistent thread pool. Compiled into every plugin's extension module
 * (quantplug.build adds it), so each .so has its own copy; Python loads
 * extensions with RTLD_LOCAL, so the copies never clash.
 */
#include "quantplug/qp_runtime.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

#ifndef QP_BUILD_VERSION
#define QP_BUILD_VERSION "unknown"
#endif

/* ------------------------------------------------------------------ CPU -- */

#if defined(__x86_64__) || defined(__i386__)
static uint64_t qp_xgetbv0(void) {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return ((uint64_t)edx << 32) | eax;
}

static uint32_t qp_detect_x86(void) {
  uint32_t f = 0, a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
  if (d & (1u << 26)) f |= QP_CPU_SSE2;
  if (c & (1u << 9)) f |= QP_CPU_SSSE3;
  if (c & (1u << 19)) f |= QP_CPU_SSE41;
  int has_fma = (c >> 12) & 1;
  /* AVX needs both the CPU bit and the OS saving YMM state (OSXSAVE+XCR0). */
  int osxsave = (c >> 27) & 1;
  uint64_t xcr0 = osxsave ? qp_xgetbv0() : 0;
  int ymm_ok = (xcr0 & 0x6) == 0x6;
  int zmm_ok = ymm_ok && (xcr0 & 0xe0) == 0xe0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  if (ymm_ok && (b & (1u << 5))) f |= QP_CPU_AVX2;
  if (ymm_ok && has_fma) f |= QP_CPU_FMA;
  if (zmm_ok && (b & (1u << 16))) f |= QP_CPU_AVX512F;
  if (zmm_ok && (b & (1u << 30))) f |= QP_CPU_AVX512BW;
  if (zmm_ok && (b & (1u << 31))) f |= QP_CPU_AVX512VL;
  if (zmm_ok && (c & (1u << 11))) f |= QP_CPU_AVX512VNNI;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && ymm_ok && (a & (1u << 4))) f |= QP_CPU_AVXVNNI;
  return f;
}
#endif

static uint32_t qp_detect(void) {
#if defined(__x86_64__) || defined(__i386__)
  return qp_detect_x86();
#elif defined(__aarch64__) && defined(__linux__)
  unsigned long hw = getauxval(AT_HWCAP);
  uint32_t f = QP_CPU_NEON; /* Advanced SIMD is mandatory on AArch64 */
  if (hw & HWCAP_ASIMDDP) f |= QP_CPU_NEON_DOT;
  return f;
#elif defined(__aarch64__)
  return QP_CPU_NEON;
#else
  return 0;
#endif
}

static atomic_uint qp_features_cache = 0; /* 0 = not yet detected */

uint32_t qp_cpu_features(void) {
  uint32_t f = atomic_load(&qp_features_cache);
  if (f == 0) {
    f = qp_detect() | 0x80000000u; /* high bit marks "detected" */
    atomic_store(&qp_features_cache, f);
  }
  return f & 0x7fffffffu;
}

static const uint32_t qp_isa_requirements[QP_ISA_COUNT] = {
    [QP_ISA_SCALAR] = 0,
    [QP_ISA_SSE2] = QP_CPU_SSE2,
    [QP_ISA_AVX2] = QP_CPU_AVX2 | QP_CPU_FMA,
    [QP_ISA_AVX512] = QP_CPU_AVX512F | QP_CPU_AVX512BW | QP_CPU_AVX512VL | QP_CPU_AVX2,
    [QP_ISA_AVX512VNNI] =
        QP_CPU_AVX512F | QP_CPU_AVX512BW | QP_CPU_AVX512VL | QP_CPU_AVX512VNNI | QP_CPU_AVX2,
    [QP_ISA_AVXVNNI] = QP_CPU_AVX2 | QP_CPU_FMA | QP_CPU_AVXVNNI,
    [QP_ISA_NEON] = QP_CPU_NEON,
    [QP_ISA_NEONDOT] = QP_CPU_NEON | QP_CPU_NEON_DOT,
};

static const char *const qp_isa_names[QP_ISA_COUNT] = {
    "scalar", "sse2", "avx2", "avx512", "avx512vnni", "avxvnni", "neon", "neondot",
};

/* Best first: the automatic choice is the first usable entry. */
static const int qp_isa_preference[] = {
    QP_ISA_AVX512VNNI, QP_ISA_AVX512, QP_ISA_AVXVNNI, QP_ISA_AVX2,
    QP_ISA_SSE2,       QP_ISA_NEONDOT, QP_ISA_NEON,   QP_ISA_SCALAR,
};

uint32_t qp_compiled_isas(void) { return qp_plugin_compiled_isas | (1u << QP_ISA_SCALAR); }

int qp_isa_usable(int isa) {
  if (isa < 0 || isa >= QP_ISA_COUNT) return 0;
  if (!(qp_compiled_isas() & (1u << isa))) return 0;
  uint32_t need = qp_isa_requirements[isa];
  return (qp_cpu_features() & need) == need;
}

static atomic_int qp_isa_choice = -1; /* -1 = not chosen yet */

static int qp_best_isa(void) {
  for (size_t i = 0; i < sizeof(qp_isa_preference) / sizeof(qp_isa_preference[0]); i++)
    if (qp_isa_usable(qp_isa_preference[i])) return qp_isa_preference[i];
  return QP_ISA_SCALAR;
}

int qp_active_isa(void) {
  int isa = atomic_load(&qp_isa_choice);
  if (isa < 0) {
    isa = qp_best_isa();
    atomic_store(&qp_isa_choice, isa);
  }
  return isa;
}

int qp_set_isa(int isa) {
  if (isa == -1) {
    atomic_store(&qp_isa_choice, qp_best_isa());
    return QP_OK;
  }
  if (!qp_isa_usable(isa)) return QP_ERR_UNSUPPORTED_ISA;
  atomic_store(&qp_isa_choice, isa);
  return QP_OK;
}

const char *qp_isa_name(int isa) {
  return (isa >= 0 && isa < QP_ISA_COUNT) ? qp_isa_names[isa] : "invalid";
}

const char *qp_build_version(void) { return QP_BUILD_VERSION; }

int qp_runtime_api_version(void) { return QP_RUNTIME_API_VERSION; }

/* ---------------------------------------------------------- thread pool -- */

#define QP_MAX_THREADS 64

/* How a parallel loop finishes without waiting for idle workers. Each call is one
 * generation. Its chunks are claimed through one 64-bit word, `claim` = (tag << 32) | next
 * chunk, where tag is the generation's low 32 bits: a claim is a compare-and-swap that only
 * succeeds while the word still carries the claimant's tag. The caller returns as soon as
 * `done` counts every chunk, whether or not each worker has woken up: a worker that is
 * scheduled late (another process holds the core) finds the chunks taken, or a newer tag,
 * and goes back to sleep without touching the finished call's fn / ctx. (Waiting for every
 * worker to check in made 2-thread calls wait for the OS scheduler: 4x slower than 1 thread
 * on a loaded machine.) */
typedef struct {
  pthread_mutex_t mu;          /* guards the call description below (not the atomics) */
  pthread_cond_t work_cv;      /* workers wait here for a new generation */
  pthread_cond_t done_cv;      /* the caller waits here for the last chunk */
  pthread_mutex_t busy;        /* held by the one caller using the pool */
  pthread_t threads[QP_MAX_THREADS];
  int started;                 /* worker threads created so far */
  atomic_ulong generation;     /* bumped (under mu) once per parallel_for */
  int wanted;                  /* workers that take part in this generation */
  qp_task_fn fn;
  void *ctx;
  size_t n, chunk, nchunks;
  atomic_uint_least64_t claim; /* (tag << 32) | next unclaimed chunk */
  atomic_size_t done;          /* chunks finished in this generation */
} qp_pool_t;

static qp_pool_t qp_pool = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .work_cv = PTHREAD_COND_INITIALIZER,
    .done_cv = PTHREAD_COND_INITIALIZER,
    .busy = PTHREAD_MUTEX_INITIALIZER,
};
static atomic_int qp_num_threads = 1;

void qp_set_num_threads(int n) {
  if (n < 1) n = 1;
  if (n > QP_MAX_THREADS) n = QP_MAX_THREADS;
  atomic_store(&qp_num_threads, n);
}

int qp_get_num_threads(void) { return atomic_load(&qp_num_threads); }

/* Claims and runs chunks of the generation tagged `tag` until none is left (or the pool
 * has moved on to a newer generation); wakes the caller after the last chunk. */
static void qp_run_chunks(qp_task_fn fn, void *ctx, size_t n, size_t chunk, size_t nchunks,
                          uint32_t tag) {
  for (;;) {
    uint_least64_t cur = atomic_load(&qp_pool.claim);
    if ((uint32_t)(cur >> 32) != tag || (size_t)(cur & 0xFFFFFFFFu) >= nchunks) break;
    if (!atomic_compare_exchange_weak(&qp_pool.claim, &cur, cur + 1)) continue;
    const size_t begin = (size_t)(cur & 0xFFFFFFFFu) * chunk;
    fn(ctx, begin, begin + chunk < n ? begin + chunk : n);
    if (atomic_fetch_add(&qp_pool.done, 1) + 1 == nchunks) {
      /* the caller may be asleep on done_cv: signal under mu (no lost wake-up) */
      pthread_mutex_lock(&qp_pool.mu);
      pthread_cond_signal(&qp_pool.done_cv);
      pthread_mutex_unlock(&qp_pool.mu);
    }
  }
}

/* Waking a thread blocked on a condition variable costs tens of microseconds on some
 * machines (VMs especially), as much as a whole small GEMM or depthwise conv. So workers and
 * the caller first spin for a bounded while (QP_SPIN_ITERS pauses, roughly 10-50 us) on the
 * atomic they wait for, and only then block. Back-to-back kernel calls (a model's layers)
 * find the workers awake; an idle pool still sleeps and burns no core. */
#ifndef QP_SPIN_ITERS
#define QP_SPIN_ITERS 4000
#endif

static inline void qp_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static void *qp_worker(void *arg) {
  int index = (int)(intptr_t)arg;
  unsigned long seen = 0;
  for (;;) {
    for (int i = 0; i < QP_SPIN_ITERS &&
                    atomic_load_explicit(&qp_pool.generation, memory_order_acquire) == seen; i++)
      qp_cpu_relax();
    pthread_mutex_lock(&qp_pool.mu);
    while (atomic_load(&qp_pool.generation) == seen) pthread_cond_wait(&qp_pool.work_cv, &qp_pool.mu);
    seen = atomic_load(&qp_pool.generation);
    if (index >= qp_pool.wanted) { /* not needed this time */
      pthread_mutex_unlock(&qp_pool.mu);
      continue;
    }
    qp_task_fn fn = qp_pool.fn;
    void *ctx = qp_pool.ctx;
    size_t n = qp_pool.n, chunk = qp_pool.chunk, nchunks = qp_pool.nchunks;
    pthread_mutex_unlock(&qp_pool.mu);
    qp_run_chunks(fn, ctx, n, chunk, nchunks, (uint32_t)seen);
  }
  return NULL;
}

/* After fork() only the forking thread exists in the child: forget workers. */
static void qp_pool_atfork_child(void) {
  pthread_mutex_init(&qp_pool.mu, NULL);
  pthread_mutex_init(&qp_pool.busy, NULL);
  pthread_cond_init(&qp_pool.work_cv, NULL);
  pthread_cond_init(&qp_pool.done_cv, NULL);
  qp_pool.started = 0;
}

static pthread_once_t qp_atfork_once = PTHREAD_ONCE_INIT;
static void qp_register_atfork(void) { pthread_atfork(NULL, NULL, qp_pool_atfork_child); }

void qp_parallel_for(size_t n, size_t grain, qp_task_fn fn, void *ctx) {
  if (n == 0) return;
  if (grain == 0) grain = 1;
  int threads = qp_get_num_threads();
  size_t max_useful = (n + grain - 1) / grain;
  if ((size_t)threads > max_useful) threads = (int)max_useful;
  if (threads <= 1 || pthread_mutex_trylock(&qp_pool.busy) != 0) {
    fn(ctx, 0, n);
    return;
  }
  pthread_once(&qp_atfork_once, qp_register_atfork);
  pthread_mutex_lock(&qp_pool.mu);
  while (qp_pool.started < threads - 1) {
    if (pthread_create(&qp_pool.threads[qp_pool.started], NULL, qp_worker,
                       (void *)(intptr_t)qp_pool.started) != 0)
      break;
    pthread_detach(qp_pool.threads[qp_pool.started]);
    qp_pool.started++;
  }
  int workers = qp_pool.started < threads - 1 ? qp_pool.started : threads - 1;
  /* Chunks of ~4 per thread balance load without much atomic traffic. */
  size_t chunk = (n + (size_t)threads * 4 - 1) / ((size_t)threads * 4);
  if (chunk < grain) chunk = grain;
  const size_t nchunks = (n + chunk - 1) / chunk; /* <= 4 * threads: fits the 32-bit field */
  const unsigned long gen = atomic_load(&qp_pool.generation) + 1;
  qp_pool.fn = fn;
  qp_pool.ctx = ctx;
  qp_pool.n = n;
  qp_pool.chunk = chunk;
  qp_pool.nchunks = nchunks;
  qp_pool.wanted = workers;
  atomic_store(&qp_pool.done, 0);
  atomic_store(&qp_pool.claim, (uint_least64_t)(uint32_t)gen << 32);
  atomic_store_explicit(&qp_pool.generation, gen, memory_order_release);
  pthread_cond_broadcast(&qp_pool.work_cv);
  pthread_mutex_unlock(&qp_pool.mu);

  qp_run_chunks(fn, ctx, n, chunk, nchunks, (uint32_t)gen); /* the caller works too */

  for (int i = 0; i < QP_SPIN_ITERS && atomic_load(&qp_pool.done) < nchunks; i++) qp_cpu_relax();
  pthread_mutex_lock(&qp_pool.mu); /* also orders the workers' writes before our return */
  while (atomic_load(&qp_pool.done) < nchunks) pthread_cond_wait(&qp_pool.done_cv, &qp_pool.mu);
  pthread_mutex_unlock(&qp_pool.mu);
  pthread_mutex_unlock(&qp_pool.busy);
}
