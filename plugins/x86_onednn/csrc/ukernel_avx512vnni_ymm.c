/* The AVX-VNNI microkernel source compiled with EVEX AVX512-VL VNNI (test probe, see
 * x86_onednn_set_ymm_vnni_probe): same logic, runnable on AVX-512 VNNI CPUs. */
#include "xo_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define XO_YMM_TARGET QP_TARGET_AVX512VNNI
#define XO_YMM_DPBUSD _mm256_dpbusd_epi32
#define XO_YMM_PREFIX(name) x86_onednn_qu8_gemm_4x16c4__avx512vnni_ymm_##name
#include "ukernel_ymmvnni.inc.h"

const xo_gemm_impl xo_impl_avx512vnni_ymm = {
    "x86_onednn_qu8_gemm_minmax_ukernel_4x16c4__avx512vnni_ymm (AVX-VNNI source, EVEX)",
    4,
    x86_onednn_qu8_gemm_4x16c4__avx512vnni_ymm_ukernel,
    xo_epilogue_avx2,
    xo_minmax_avx2,
    xo_quantize_avx2,
};
#endif
