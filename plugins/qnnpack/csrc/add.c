/* Elementwise quantized add driver: argument checks, dispatch, threads. */
#include <math.h>

#include "qnnpack_internal.h"
#include "qnnpack_kernels.h"

typedef struct {
  qnnpack_add_fn fn;
  const uint8_t *a, *b;
  const qnnpack_add_params *p;
  uint8_t *out;
} qnnpack_add_ctx;

static void qnnpack_add_range(void *vctx, size_t begin, size_t end) {
  const qnnpack_add_ctx *c = (const qnnpack_add_ctx *)vctx;
  c->fn(end - begin, c->a + begin, c->b + begin, c->p, c->out + begin);
}

static int qnnpack_bad_scale(float s) { return !(s > 0.0f) || !isfinite(s); }

int qnnpack_add_u8(const uint8_t *a, float a_scale, int32_t a_zp, const uint8_t *b, float b_scale,
                   int32_t b_zp, size_t n, float out_scale, int32_t out_zp, int32_t qmin,
                   int32_t qmax, uint8_t *out) {
  if (qnnpack_bad_scale(a_scale) || qnnpack_bad_scale(b_scale) || qnnpack_bad_scale(out_scale) ||
      a_zp < 0 || a_zp > 255 || b_zp < 0 || b_zp > 255 || out_zp < 0 || out_zp > 255 ||
      qmin < 0 || qmax > 255 || qmin > qmax)
    return QP_ERR_INVALID_ARGUMENT;
  const float inv = 1.0f / out_scale;
  if (!isfinite(inv)) return QP_ERR_INVALID_ARGUMENT;
  if (n == 0) return QP_OK;
  if (!a || !b || !out) return QP_ERR_INVALID_ARGUMENT;
  const qnnpack_add_params p = {.a_scale = a_scale, .b_scale = b_scale, .inv_out = inv,
                                .a_zp = a_zp, .b_zp = b_zp, .out_zp = out_zp, .qmin = qmin,
                                .qmax = qmax};
  qnnpack_add_ctx c = {.fn = qnnpack_active_kernels()->add, .a = a, .b = b, .p = &p, .out = out};
  /* at least 64 Ki elements per chunk before a second thread helps */
  qp_parallel_for(n, (size_t)1 << 16, qnnpack_add_range, &c);
  return QP_OK;
}
