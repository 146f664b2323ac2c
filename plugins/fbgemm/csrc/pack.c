/*
 * Weight packing and the scalar parameter math shared by every ISA path:
 * requantization multipliers, int32 bias and dynamic activation qparams.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "fbgemm_kernels.h"
#include "quantplug/qp_runtime.h"

static size_t fb_round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

size_t fbgemm_packed_linear_size(size_t n, size_t k) {
  if (n == 0 || k == 0 || k > FB_MAX_K || n > ((size_t)1 << 31)) return 0;
  return fb_round_up(n, FB_NR) * fb_round_up(k, FB_KR);
}

int fbgemm_pack_linear_weight(const int8_t *w, size_t n, size_t k, int8_t *packed,
                              int32_t *row_sums) {
  size_t size = fbgemm_packed_linear_size(n, k);
  if (size == 0 || w == NULL || packed == NULL || row_sums == NULL) return QP_ERR_INVALID_ARGUMENT;
  const size_t kg = fb_round_up(k, FB_KR) / FB_KR;
  memset(packed, 0, size);
  for (size_t j = 0; j < n; j++) {
    int8_t *dst = packed + (j / FB_NR) * kg * FB_NR * FB_KR + (j % FB_NR) * FB_KR;
    const int8_t *src = w + j * k;
    int32_t sum = 0;
    for (size_t p = 0; p < k; p++) {
      dst[(p / FB_KR) * FB_NR * FB_KR + p % FB_KR] = src[p];
      sum += src[p];
    }
    row_sums[j] = sum;
  }
  return QP_OK;
}

int fbgemm_unpack_linear_weight(const int8_t *packed, size_t n, size_t k, int8_t *w) {
  if (fbgemm_packed_linear_size(n, k) == 0 || packed == NULL || w == NULL)
    return QP_ERR_INVALID_ARGUMENT;
  const size_t kg = fb_round_up(k, FB_KR) / FB_KR;
  for (size_t j = 0; j < n; j++) {
    const int8_t *src = packed + (j / FB_NR) * kg * FB_NR * FB_KR + (j % FB_NR) * FB_KR;
    for (size_t p = 0; p < k; p++) w[j * k + p] = src[(p / FB_KR) * FB_NR * FB_KR + p % FB_KR];
  }
  return QP_OK;
}


int fbgemm_requant_params(float x_scale, const float *w_scales, size_t n, float out_scale,
                          const float *bias, float *multipliers, int32_t *bias_q) {
  if (!fb_valid_scale(x_scale) || !fb_valid_scale(out_scale) || w_scales == NULL ||
      multipliers == NULL)
    return QP_ERR_INVALID_ARGUMENT;
  for (size_t j = 0; j < n; j++) {
    /* the same float32 operations, in the same order, as quantplug.kernels.requant_params */
    float acc_scale = x_scale * w_scales[j];
    multipliers[j] = acc_scale / out_scale;
    if (bias != NULL && bias_q != NULL) bias_q[j] = fb_f32_to_i32_sat(nearbyintf(bias[j] / acc_scale));
  }
  return QP_OK;
}

int fbgemm_choose_qparams(float min_val, float max_val, int32_t qmin, int32_t qmax,
                          float *scale, int32_t *zero_point) {
  if (!isfinite(min_val) || !isfinite(max_val) || min_val > max_val || qmin >= qmax ||
      scale == NULL || zero_point == NULL)
    return QP_ERR_INVALID_ARGUMENT;
  /* The range always contains 0 so that 0.0 is exactly representable (padding, relu). */
  float lo = min_val < 0.0f ? min_val : 0.0f;
  float hi = max_val > 0.0f ? max_val : 0.0f;
  float s = (hi - lo) / (float)(qmax - qmin);
  if (!isfinite(s)) return QP_ERR_INVALID_ARGUMENT;
  if (s < FLT_EPSILON) s = FLT_EPSILON; /* torch's observers floor the scale at float32 eps */
  int32_t zp = qmin - (int32_t)nearbyintf(lo / s);
  *scale = s;
  *zero_point = zp < qmin ? qmin : (zp > qmax ? qmax : zp);
  return QP_OK;
}
