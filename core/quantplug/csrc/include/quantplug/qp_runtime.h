/*
 * quantplug shared C runtime: the parts every backend plugin's kernels need,
 * written once. It is compiled into each plugin's extension by
 * quantplug.build (which adds csrc/qp_runtime.c to the sources), so plugins
 * get the same CPU detection, ISA selection and thread pool.
 *
 * Everything between QP_CDEF_BEGIN and QP_CDEF_END is also read by cffi as
 * the Python-visible declarations, so it must stay plain C declarations
 * (no macros, no #if).
 */
#ifndef QUANTPLUG_QP_RUNTIME_H
#define QUANTPLUG_QP_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this shared C API. Bump it whenever a shared function is added
 * or changes: a plugin compiled against another version refuses to load
 * (quantplug.kernels checks it) instead of failing later on a missing symbol. */
#define QP_RUNTIME_API_VERSION 2

/* QP_CDEF_BEGIN */
/* Status codes returned by every kernel entry point. */
enum qp_status {
  QP_OK = 0,
  QP_ERR_INVALID_ARGUMENT = 1, /* shape, stride or qparam out of range */
  QP_ERR_UNSUPPORTED_ISA = 2,  /* asked for a path this CPU or build lacks */
  QP_ERR_OUT_OF_MEMORY = 3
};

/* Instruction-set paths. A plugin compiles a subset; the runtime picks the
 * best one the CPU supports (see qp_isa_preference in qp_runtime.c). */
enum qp_isa {
  QP_ISA_SCALAR = 0,
  QP_ISA_SSE2 = 1,
  QP_ISA_AVX2 = 2,
  QP_ISA_AVX512 = 3,      /* AVX-512 F+BW+VL */
  QP_ISA_AVX512VNNI = 4,  /* AVX-512 F+BW+VL+VNNI */
  QP_ISA_AVXVNNI = 5,     /* AVX2 + AVX-VNNI (VEX encoded) */
  QP_ISA_NEON = 6,
  QP_ISA_NEONDOT = 7,     /* NEON + SDOT/UDOT */
  QP_ISA_COUNT = 8
};

/* CPU feature bits, as detected at run time (never from compile flags). */
enum qp_cpu_feature {
  QP_CPU_SSE2 = 1,
  QP_CPU_SSSE3 = 2,
  QP_CPU_SSE41 = 4,
  QP_CPU_AVX2 = 8,
  QP_CPU_FMA = 16,
  QP_CPU_AVX512F = 32,
  QP_CPU_AVX512BW = 64,
  QP_CPU_AVX512VL = 128,
  QP_CPU_AVX512VNNI = 256,
  QP_CPU_AVXVNNI = 512,
  QP_CPU_NEON = 1024,
  QP_CPU_NEON_DOT = 2048
};

uint32_t qp_cpu_features(void);
/* Bit i set when ISA i is compiled into this plugin. */
uint32_t qp_compiled_isas(void);
/* 1 if ISA `isa` is compiled in and this CPU can run it. */
int qp_isa_usable(int isa);
/* The ISA the kernels dispatch to now. */
int qp_active_isa(void);
/* Force a path (tests compare every path with the scalar reference); -1
 * restores the automatic choice. Returns QP_ERR_UNSUPPORTED_ISA, never
 * leaving the process able to hit an illegal instruction. */
int qp_set_isa(int isa);
const char *qp_isa_name(int isa);
/* The plugin version the extension was built for (checked at import). */
const char *qp_build_version(void);
/* QP_RUNTIME_API_VERSION of the core headers the plugin was built with. */
int qp_runtime_api_version(void);
/* Threads the pool may use at most (torch.get_num_threads() by default,
 * set from Python). */
void qp_set_num_threads(int n);
int qp_get_num_threads(void);
/* QP_CDEF_END */

/* ---- C-only API below (not visible from Python) ---- */

/* One chunk of a parallel loop: process items [begin, end). */
typedef void (*qp_task_fn)(void *ctx, size_t begin, size_t end);

/*
 * Run fn over [0, n) in chunks of at least `grain` items on up to
 * qp_get_num_threads() threads (the calling thread included). Runs inline
 * when n is small, when one thread is allowed, or when another caller is
 * already using the pool (so concurrent Python threads never deadlock and
 * never oversubscribe).
 */
void qp_parallel_for(size_t n, size_t grain, qp_task_fn fn, void *ctx);

/* Each plugin defines this: the ISAs its kernels implement (bit per qp_isa). */
extern const uint32_t qp_plugin_compiled_isas;

/* Function attributes for SIMD code compiled without global -m flags, so the
 * build machine's CPU never decides which paths exist. */
#if defined(__x86_64__) || defined(__i386__)
#define QP_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define QP_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#define QP_TARGET_AVX512VNNI \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")))
#define QP_TARGET_AVXVNNI __attribute__((target("avx2,fma,avxvnni")))
#endif

#if defined(__GNUC__)
#define QP_RESTRICT __restrict__
#define QP_LIKELY(x) __builtin_expect(!!(x), 1)
#define QP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define QP_RESTRICT
#define QP_LIKELY(x) (x)
#define QP_UNLIKELY(x) (x)
#endif

#ifdef __cplusplus
}
#endif
#endif /* QUANTPLUG_QP_RUNTIME_H */
