/*
 * Scalar reference path: the microkernel, the epilogues (which define the
 * numerics every SIMD path reproduces bit for bit), min/max and quantize.
 */
#include <math.h>

#include "quantplug/qp_requant.h"
#include "xo_internal.h"

/* Raw dot products from the packed tile: w[c][kk] = tile[(kk/4)*64 + c*4 + kk%4]. Sums are
 * formed in uint32 so that they wrap (as vpaddd / vpdpbusd do) instead of overflowing. */
static void x86_onednn_qu8_gemm_ukernel_8x16c4__scalar(size_t mr, size_t k, const uint8_t *a,
                                                       size_t lda, const int8_t *w,
                                                       int32_t *acc) {
  for (size_t r = 0; r < mr; r++) {
    const uint8_t *row = a + r * lda;
    for (size_t c = 0; c < XO_NR; c++) {
      uint32_t s = 0;
      for (size_t kk = 0; kk < k; kk++)
        s += (uint32_t)((int32_t)row[kk] * (int32_t)w[(kk / XO_KC) * (XO_NR * XO_KC) + c * XO_KC + kk % XO_KC]);
      acc[r * XO_NR + c] = (int32_t)s;
    }
  }
}

static inline int32_t xo_wrap_add(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }

void xo_epilogue_scalar(const xo_epilogue *e, const int32_t *acc, size_t row0, size_t mr,
                        size_t col0, size_t nc) {
  for (size_t r = 0; r < mr; r++) {
    const int32_t *ar = acc + r * XO_NR;
    const size_t row = row0 + r;
    switch (e->kind) {
      case XO_EPI_REQUANT: {
        uint8_t *o = e->out_u8 + row * e->ldo + col0;
        for (size_t c = 0; c < nc; c++) {
          int32_t v = xo_wrap_add(ar[c], e->bias_eff[col0 + c]);
          o[c] = (uint8_t)qp_requantize(v, e->mult[col0 + c], e->out_zp, e->qmin, e->qmax);
        }
        break;
      }
      case XO_EPI_REQUANT_ADD: {
        uint8_t *o = e->out_u8 + row * e->ldo + col0;
        const uint8_t *oth = e->other + row * e->ld_other + col0;
        for (size_t c = 0; c < nc; c++) {
          int32_t v = xo_wrap_add(ar[c], e->bias_eff[col0 + c]);
          float f1 = (float)v * e->mult[col0 + c];
          float f2 = (float)((int32_t)oth[c] - e->other_zp) * e->other_mult;
          XO_FP_BARRIER(f1);
          XO_FP_BARRIER(f2);
          float f = f1 + f2;
          o[c] = (uint8_t)(qp_round_clamp(f, e->qmin - e->out_zp, e->qmax - e->out_zp) + e->out_zp);
        }
        break;
      }
      case XO_EPI_DEQUANT: {
        float *o = e->out_f32 + row * e->ldo + col0;
        const int32_t zp = e->row_zp[e->per_row ? row : 0];
        const float sr = e->row_scale[e->per_row ? row : 0];
        for (size_t c = 0; c < nc; c++) {
          int32_t v = (int32_t)((uint32_t)ar[c] - (uint32_t)zp * (uint32_t)e->colsum[col0 + c]);
          float s = sr * e->wscale[col0 + c];
          float f = (float)v * s;
          if (e->fbias != NULL) {
            XO_FP_BARRIER(f);
            f = f + e->fbias[col0 + c];
          }
          o[c] = f;
        }
        break;
      }
      default: { /* XO_EPI_ACC */
        int32_t *o = e->out_i32 + row * e->ldo + col0;
        for (size_t c = 0; c < nc; c++) o[c] = xo_wrap_add(ar[c], e->bias_eff[col0 + c]);
        break;
      }
    }
  }
}

static int xo_minmax_scalar(const float *x, size_t n, float *mn, float *mx) {
  float lo = INFINITY, hi = -INFINITY;
  int nan = 0;
  for (size_t i = 0; i < n; i++) {
    float v = x[i];
    nan |= (v != v);
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  *mn = lo;
  *mx = hi;
  return nan;
}

static void xo_quantize_scalar(const float *x, size_t n, float inv, int32_t zp, uint8_t *q) {
  for (size_t i = 0; i < n; i++) q[i] = (uint8_t)qp_quantize(x[i], inv, zp, 0, 255);
}

const xo_gemm_impl xo_impl_scalar = {
    "x86_onednn_qu8_gemm_minmax_ukernel_8x16c4__scalar",
    8,
    x86_onednn_qu8_gemm_ukernel_8x16c4__scalar,
    xo_epilogue_scalar,
    xo_minmax_scalar,
    xo_quantize_scalar,
};
