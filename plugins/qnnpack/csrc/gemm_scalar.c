/*
 * Scalar reference path: the definition every SIMD path must reproduce bit
 * for bit. Integer arithmetic is done in uint32_t so that wrap-around is
 * defined behaviour (the SIMD paths wrap the same way).
 */
#include <math.h>

#include "qnnpack_internal.h"
#include "quantplug/qp_requant.h"

static void qnnpack_qu8_gemm_ukernel_4x16c4__scalar(size_t mr, size_t k, const uint8_t *const *a,
                                                    const uint8_t *w, const int32_t *wsum,
                                                    int32_t *acc) {
  (void)wsum;
  const size_t kg_count = (k + QNNPACK_KR - 1) / QNNPACK_KR;
  for (size_t i = 0; i < mr; i++) {
    uint32_t sums[QNNPACK_NR] = {0};
    const uint8_t *row = a[i];
    for (size_t kg = 0; kg < kg_count; kg++) {
      const uint8_t *wg = w + kg * QNNPACK_NR * QNNPACK_KR;
      const size_t kk = kg * QNNPACK_KR;
      const size_t len = k - kk < QNNPACK_KR ? k - kk : QNNPACK_KR;
      for (size_t j = 0; j < QNNPACK_NR; j++)
        for (size_t t = 0; t < len; t++)
          sums[j] += (uint32_t)row[kk + t] * (uint32_t)wg[j * QNNPACK_KR + t];
    }
    for (size_t j = 0; j < QNNPACK_NR; j++)
      acc[i * QNNPACK_NR + j] = (int32_t)((uint32_t)acc[i * QNNPACK_NR + j] + sums[j]);
  }
}

void qnnpack_qu8_requant_scalar(size_t mr, size_t nc, const int32_t *acc, const float *mult,
                                int32_t out_zp, int32_t qmin, int32_t qmax, uint8_t *out,
                                size_t out_stride) {
  for (size_t i = 0; i < mr; i++)
    for (size_t j = 0; j < nc; j++)
      out[i * out_stride + j] =
          (uint8_t)qp_requantize(acc[i * QNNPACK_NR + j], mult[j], out_zp, qmin, qmax);
}

void qnnpack_qu8_dequant_scalar(size_t mr, size_t nc, const int32_t *acc, const float *scale,
                                const float *bias, float *out, size_t out_stride) {
  for (size_t i = 0; i < mr; i++)
    for (size_t j = 0; j < nc; j++) {
      float p = (float)acc[i * QNNPACK_NR + j] * scale[j];
      QNNPACK_NO_CONTRACT(p);
      out[i * out_stride + j] = p + bias[j];
    }
}

void qnnpack_qu8_acc_init_rows_scalar(size_t mr, const int32_t *wsum, const int32_t *wzp,
                                      const int32_t *rzp, const uint32_t *xsum, int32_t *acc) {
  for (size_t i = 0; i < mr; i++)
    for (size_t j = 0; j < QNNPACK_NR; j++)
      acc[i * QNNPACK_NR + j] = (int32_t)(0u - (uint32_t)rzp[i] * (uint32_t)wsum[j] -
                                          (uint32_t)wzp[j] * xsum[i]);
}

void qnnpack_qu8_dequant_rows_scalar(size_t mr, size_t nc, const int32_t *acc, const float *rscale,
                                     const float *wscale, const float *bias, float *out,
                                     size_t out_stride) {
  for (size_t i = 0; i < mr; i++)
    for (size_t j = 0; j < nc; j++) {
      float s = rscale[i] * wscale[j];
      QNNPACK_NO_CONTRACT(s);
      float p = (float)acc[i * QNNPACK_NR + j] * s;
      QNNPACK_NO_CONTRACT(p);
      out[i * out_stride + j] = p + bias[j];
    }
}

void qnnpack_qu8_quant_scalar(const float *x, size_t n, float inv_scale, int32_t zp,
                              uint8_t *out) {
  for (size_t i = 0; i < n; i++) out[i] = (uint8_t)qp_quantize(x[i], inv_scale, zp, 0, 255);
}

void qnnpack_f32_minmax_scalar(const float *x, size_t n, float *lo, float *hi) {
  float mn = *lo, mx = *hi;
  for (size_t i = 0; i < n; i++) {
    const float v = x[i];
    mn = v < mn ? v : mn; /* NaN compares false: ignored */
    mx = v > mx ? v : mx;
  }
  *lo = mn;
  *hi = mx;
}

void qnnpack_qu8_dwconv_scalar_from(size_t c0, size_t channels, size_t taps,
                                    const uint8_t *const *x, const int16_t *w, size_t cstride,
                                    int32_t x_zp, const int32_t *bias, int32_t *acc) {
  for (size_t c = c0; c < channels; c++) {
    uint32_t s = (uint32_t)bias[c];
    for (size_t t = 0; t < taps; t++)
      s += (uint32_t)(((int32_t)x[t][c] - x_zp) * (int32_t)w[t * cstride + c]);
    acc[c] = (int32_t)s;
  }
}

void qnnpack_qu8_dwconv_ukernel_up16__scalar(size_t channels, size_t taps, const uint8_t *const *x,
                                             const int16_t *w, size_t cstride, int32_t x_zp,
                                             const int32_t *bias, int32_t *acc) {
  qnnpack_qu8_dwconv_scalar_from(0, channels, taps, x, w, cstride, x_zp, bias, acc);
}

void qnnpack_qu8_dwconv_run__scalar(size_t channels, size_t npix, size_t taps,
                                    const uint8_t *const *x, size_t x_step, const int16_t *w,
                                    size_t cstride, const qnnpack_dw_params *p, uint8_t *out,
                                    size_t out_step) {
  for (size_t px = 0; px < npix; px++)
    for (size_t c = 0; c < channels; c++) {
      uint32_t s = (uint32_t)p->bias[c];
      for (size_t t = 0; t < taps; t++)
        s += (uint32_t)((int32_t)x[t][px * x_step + c] * (int32_t)w[t * cstride + c]);
      out[px * out_step + c] =
          (uint8_t)qp_requantize((int32_t)s, p->mult[c], p->out_zp, p->qmin, p->qmax);
    }
}

void qnnpack_dw3_stage__scalar(const uint8_t *row, size_t in_w, size_t pix_stride, size_t pw,
                               size_t sw, int quad, size_t n, size_t nc, uint8_t x_zp,
                               uint32_t *dst) {
  const size_t entries = quad ? (n + 1) / 2 : n, taps = quad ? 4 : 3, step = quad ? 2 : sw;
  for (size_t i = 0; i < entries; i++)
    for (size_t j = 0; j < 16; j++) {
      uint32_t v = 0;
      for (size_t k = 0; k < taps && j < nc; k++) {
        const size_t ix = i * step + k; /* + pw */
        const uint8_t b = ix >= pw && ix - pw < in_w ? row[(ix - pw) * pix_stride + j] : x_zp;
        v |= (uint32_t)b << (8 * k);
      }
      dst[i * 16 + j] = v;
    }
}

/* Byte k of lane j of set g, phase ph, row r of a row kernel's weights, as the int8 it encodes. */
static int32_t qnnpack_dw3_wbyte(const qnnpack_dw3_row_params *p, size_t g, size_t ph, size_t r,
                                 size_t j, size_t k) {
  const size_t phases = p->quad ? 2 : 1;
  const uint32_t v = p->w[((g * phases + ph) * p->nv + r) * 16 + j];
  return (int32_t)(int8_t)(uint8_t)(v >> (8 * k));
}

void qnnpack_dw3_row__scalar(const uint32_t *const *rows, size_t n,
                             const qnnpack_dw3_row_params *p, size_t nc, uint8_t *out,
                             size_t out_stride) {
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < nc; j++) {
      const size_t ph = p->quad ? i % 2 : 0, e = p->quad ? i / 2 : i;
      uint32_t a = (uint32_t)p->init[j];
      for (size_t r = 0; r < p->nv; r++)
        for (size_t k = 0; k < 4; k++) {
          const int32_t x = (int32_t)(uint8_t)(rows[r][e * 16 + j] >> (8 * k));
          const int32_t d = p->split ? 2 * qnnpack_dw3_wbyte(p, 0, ph, r, j, k) +
                                           qnnpack_dw3_wbyte(p, 1, ph, r, j, k)
                                     : qnnpack_dw3_wbyte(p, 0, ph, r, j, k);
          a += (uint32_t)(x * d);
        }
      out[i * out_stride + j] =
          (uint8_t)qp_requantize((int32_t)a, p->mult[j], p->out_zp, p->qmin, p->qmax);
    }
}

void qnnpack_qu8_vadd_ukernel__scalar(size_t n, const uint8_t *a, const uint8_t *b,
                                      const qnnpack_add_params *p, uint8_t *out) {
  for (size_t i = 0; i < n; i++) {
    float fa = (float)((int32_t)a[i] - p->a_zp) * p->a_scale;
    float fb = (float)((int32_t)b[i] - p->b_zp) * p->b_scale;
    QNNPACK_NO_CONTRACT(fa);
    QNNPACK_NO_CONTRACT(fb);
    const float v = (fa + fb) * p->inv_out;
    out[i] = (uint8_t)(qp_round_clamp(v, p->qmin - p->out_zp, p->qmax - p->out_zp) + p->out_zp);
  }
}

void qnnpack_qu8_vmul_ukernel__scalar(size_t n, const uint8_t *a, const uint8_t *b,
                                      const qnnpack_mul_params *p, uint8_t *out) {
  for (size_t i = 0; i < n; i++) {
    const int32_t prod = ((int32_t)a[i] - p->a_zp) * ((int32_t)b[i] - p->b_zp);
    out[i] = (uint8_t)(qp_round_clamp((float)prod * p->mult, p->qmin - p->out_zp,
                                      p->qmax - p->out_zp) + p->out_zp);
  }
}

const qnnpack_isa_kernels qnnpack_kernels_scalar = {
    .mr = 4,
    .add = qnnpack_qu8_vadd_ukernel__scalar,
    .mul = qnnpack_qu8_vmul_ukernel__scalar,
    .dwconv = qnnpack_qu8_dwconv_ukernel_up16__scalar,
    .dwconv_run = qnnpack_qu8_dwconv_run__scalar,
    .dw3_stage = qnnpack_dw3_stage__scalar,
    .dw3_row = qnnpack_dw3_row__scalar,
    .gemm = qnnpack_qu8_gemm_ukernel_4x16c4__scalar,
    .requant = qnnpack_qu8_requant_scalar,
    .dequant = qnnpack_qu8_dequant_scalar,
    .acc_init_rows = qnnpack_qu8_acc_init_rows_scalar,
    .dequant_rows = qnnpack_qu8_dequant_rows_scalar,
    .quant = qnnpack_qu8_quant_scalar,
    .minmax = qnnpack_f32_minmax_scalar,
};
