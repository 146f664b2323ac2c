/*
 * Scalar reference path: the microkernel and epilogues every SIMD path must match bit for bit.
 * Integer sums are formed in uint32 (wrapping, like PyTorch's int32 arithmetic) so that no
 * input, however extreme, is undefined behaviour.
 */
#include <math.h>
#include <string.h>

#include "fbgemm_kernels.h"
#include "quantplug/qp_requant.h"
#include "quantplug/qp_runtime.h"

void fbgemm_qu8_gemm_ukernel_4x16c4__scalar(size_t mr, size_t k, const uint8_t *a,
                                            size_t a_stride, const int8_t *w, int32_t *acc,
                                            int split) {
  (void)split; /* 32-bit products and sums: exact for any input */
  const size_t kg = (k + FB_KR - 1) / FB_KR;
  for (size_t r = 0; r < mr; r++) {
    const uint8_t *ar = a + r * a_stride;
    uint32_t sums[FB_NR] = {0};
    for (size_t g = 0; g < kg; g++) {
      const int8_t *wg = w + g * FB_NR * FB_KR;
      const size_t kk = (g + 1) * FB_KR <= k ? FB_KR : k - g * FB_KR;
      for (size_t t = 0; t < kk; t++) {
        const int32_t av = ar[g * FB_KR + t];
        for (size_t j = 0; j < FB_NR; j++) sums[j] += (uint32_t)(av * (int32_t)wg[j * FB_KR + t]);
      }
    }
    for (size_t j = 0; j < FB_NR; j++) acc[r * FB_NR + j] = (int32_t)sums[j];
  }
}

static inline int32_t fb_fold(const int32_t *acc, const int32_t *row_sums,
                              const fb_block_params *p, size_t r, size_t j) {
  uint32_t v = (uint32_t)acc[r * FB_NR + j] + (uint32_t)p->col[j];
  if (row_sums != NULL) v -= (uint32_t)p->wz[j] * (uint32_t)row_sums[r];
  return (int32_t)v;
}

void fb_epilogue_u8__scalar(size_t mr, size_t nc, const int32_t *acc, const int32_t *row_sums,
                            const fb_block_params *p, int32_t zp, int32_t qmin, int32_t qmax,
                            uint8_t *out, size_t out_stride) {
  for (size_t r = 0; r < mr; r++)
    for (size_t j = 0; j < nc; j++)
      out[r * out_stride + j] =
          (uint8_t)qp_requantize(fb_fold(acc, row_sums, p, r, j), p->mult[j], zp, qmin, qmax);
}

void fb_epilogue_f32__scalar(size_t mr, size_t nc, const int32_t *acc, const int32_t *row_sums,
                             const fb_block_params *p, int has_bias, float *out,
                             size_t out_stride) {
  for (size_t r = 0; r < mr; r++)
    for (size_t j = 0; j < nc; j++) {
      float v = (float)fb_fold(acc, row_sums, p, r, j) * p->mult[j];
      if (has_bias) {
        FB_OPAQUE_F32(v);
        v = v + p->bias[j];
      }
      out[r * out_stride + j] = v;
    }
}

size_t fb_quantize_row_u8__scalar(const float *x, size_t n, float inv_scale, int32_t zp,
                                  int32_t qmin, int32_t qmax, uint8_t *out) {
  for (size_t i = 0; i < n; i++) out[i] = (uint8_t)qp_quantize(x[i], inv_scale, zp, qmin, qmax);
  return n;
}

void fb_epilogue_rows__scalar(size_t mr, size_t nc, const int32_t *acc, const int32_t *xsum,
                              const fb_block_params *p, const float *rscale, const int32_t *rzp,
                              int32_t k, int has_bias, float *out, size_t out_stride) {
  for (size_t r = 0; r < mr; r++) {
    const uint32_t zr = (uint32_t)rzp[r];
    /* w_zp term of sum_k (q - zp)(w - wz): wz * (k * zp - sum_k q) */
    const uint32_t wcorr = xsum != NULL ? (uint32_t)k * zr - (uint32_t)xsum[r] : 0u;
    for (size_t j = 0; j < nc; j++) {
      const uint32_t v = (uint32_t)acc[r * FB_NR + j] - zr * (uint32_t)p->col[j] +
                         (uint32_t)p->wz[j] * wcorr;
      float mult = rscale[r] * p->mult[j];
      FB_OPAQUE_F32(mult); /* rounded product first, as torch's scale * w_scale */
      float f = (float)(int32_t)v * mult;
      if (has_bias) {
        FB_OPAQUE_F32(f);
        f = f + p->bias[j];
      }
      out[r * out_stride + j] = f;
    }
  }
}
