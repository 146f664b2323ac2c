/*
 * Scalar requantization and quantization helpers: the exact arithmetic every
 * kernel path must reproduce. They mirror quantplug.affine:
 *
 *   quantize:    q = clamp(nearbyint(x * inv_scale) + zp, qmin, qmax)
 *   requantize:  q = clamp(nearbyint((float)acc * multiplier) + zp, qmin, qmax)
 *
 * where multiplier = input_scale * weight_scale / output_scale, computed once
 * in float32, and nearbyint rounds half to even (the default FP rounding mode,
 * which SIMD conversions such as cvtps2dq also use, so SIMD paths can match
 * the scalar path bit for bit).
 */
#ifndef QUANTPLUG_QP_REQUANT_H
#define QUANTPLUG_QP_REQUANT_H

#include <math.h>
#include <stdint.h>

static inline int32_t qp_clamp_i32(int32_t v, int32_t lo, int32_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

/* Round a float to the nearest integer, ties to even, after clamping it into
 * [lo, hi] so the conversion can never overflow. */
static inline int32_t qp_round_clamp(float v, int32_t lo, int32_t hi) {
  float flo = (float)lo, fhi = (float)hi;
  v = v < flo ? flo : (v > fhi ? fhi : v);
  return (int32_t)nearbyintf(v);
}

/* Requantize an int32 accumulator to the output integer grid. */
static inline int32_t qp_requantize(int32_t acc, float multiplier, int32_t zp, int32_t qmin,
                                    int32_t qmax) {
  return qp_round_clamp((float)acc * multiplier, qmin - zp, qmax - zp) + zp;
}

/* Quantize one float with a precomputed reciprocal scale. */
static inline int32_t qp_quantize(float x, float inv_scale, int32_t zp, int32_t qmin,
                                  int32_t qmax) {
  if (x != x) return qp_clamp_i32(zp, qmin, qmax); /* NaN maps to the zero point */
  return qp_round_clamp(x * inv_scale, qmin - zp, qmax - zp) + zp;
}

#endif /* QUANTPLUG_QP_REQUANT_H */
