/*
 * AArch64 qd8 activation conversion for the dynamic linear (range scan and
 * fp32 -> int8), the NEON twins of the scalar code in gemm.c: x * inv is one
 * rounded product, the clamp is in float and vcvtnq_s32_f32 rounds half to
 * even like nearbyintf, so every value equals qp_quantize's.
 */
#include "quantplug/qp_requant.h"
#include "xnnpack_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>

static void xnn_f32_minmax__neon(const float *x, size_t n, float *lo, float *hi, int *nan) {
  size_t i = 0;
  if (n >= 4) {
    float32x4_t vlo = vdupq_n_f32(*lo), vhi = vdupq_n_f32(*hi);
    uint32x4_t ok = vdupq_n_u32(0xffffffffu);
    for (; i + 4 <= n; i += 4) {
      const float32x4_t v = vld1q_f32(x + i);
      vlo = vminq_f32(vlo, v); /* NaN propagates here, but a NaN fails the whole call anyway */
      vhi = vmaxq_f32(vhi, v);
      ok = vandq_u32(ok, vceqq_f32(v, v));
    }
    const float l = vminvq_f32(vlo), h = vmaxvq_f32(vhi);
    *lo = l < *lo ? l : *lo;
    *hi = h > *hi ? h : *hi;
    *nan |= vminvq_u32(ok) == 0 || l != l || h != h;
  }
  for (; i < n; i++) {
    const float v = x[i];
    *lo = v < *lo ? v : *lo;
    *hi = v > *hi ? v : *hi;
    *nan |= v != v;
  }
}

static void xnn_f32_qs8_convert__neon(const float *x, size_t n, float inv, int32_t zp, uint8_t flip, int8_t *out) {
  const float32x4_t lo = vdupq_n_f32((float)(-128 - zp)), hi = vdupq_n_f32((float)(127 - zp));
  const int8x8_t vflip = vdup_n_s8((int8_t)flip);
  const int32x4_t vzp = vdupq_n_s32(zp);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const float32x4_t a = vminq_f32(vmaxq_f32(vmulq_n_f32(vld1q_f32(x + i), inv), lo), hi);
    const float32x4_t b = vminq_f32(vmaxq_f32(vmulq_n_f32(vld1q_f32(x + i + 4), inv), lo), hi);
    const int16x8_t q16 = vcombine_s16(vqmovn_s32(vaddq_s32(vcvtnq_s32_f32(a), vzp)),
                                       vqmovn_s32(vaddq_s32(vcvtnq_s32_f32(b), vzp)));
    vst1_s8(out + i, veor_s8(vqmovn_s16(q16), vflip));
  }
  for (; i < n; i++) out[i] = (int8_t)((uint8_t)qp_quantize(x[i], inv, zp, -128, 127) ^ flip);
}

static const xnn_qd8_config xnn_qd8_neon = {xnn_f32_minmax__neon, xnn_f32_qs8_convert__neon};

const xnn_qd8_config *xnn_qd8_config_for(int isa) {
  return isa == QP_ISA_NEON || isa == QP_ISA_NEONDOT ? &xnn_qd8_neon : NULL;
}

#else
typedef int xnn_qd8_arm_unused; /* ISO C forbids an empty translation unit */
#endif
