/* AVX-VNNI (VEX) path: 256-bit vpdpbusd, AVX2 epilogue. See ukernel_ymmvnni.inc.h. */
#include "xo_internal.h"

#if defined(XO_HAVE_AVXVNNI)
#include <immintrin.h>

#define XO_YMM_TARGET QP_TARGET_AVXVNNI
#define XO_YMM_DPBUSD _mm256_dpbusd_avx_epi32
#define XO_YMM_PREFIX(name) x86_onednn_qu8_gemm_4x16c4__avxvnni_##name
#include "ukernel_ymmvnni.inc.h"

const xo_gemm_impl xo_impl_avxvnni = {
    "x86_onednn_qu8_gemm_minmax_ukernel_4x16c4__avxvnni",
    4,
    x86_onednn_qu8_gemm_4x16c4__avxvnni_ukernel,
    xo_epilogue_avx2,
    xo_minmax_avx2,
    xo_quantize_avx2,
};
#endif
