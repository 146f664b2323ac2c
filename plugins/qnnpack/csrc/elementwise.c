/* Elementwise drivers (add, mul, 256-entry lookup table): argument checks, dispatch, threads. */
#include <math.h>

#include "qnnpack_internal.h"
#include "qnnpack_kernels.h"

/* At least 64 Ki elements per chunk before a second thread helps. */
#define QNNPACK_ELEMENTWISE_GRAIN ((size_t)1 << 16)

static int qnnpack_bad_scale(float s) { return !(s > 0.0f) || !isfinite(s); }

static int qnnpack_bad_zp(int32_t zp) { return zp < 0 || zp > 255; }

static int qnnpack_bad_clamp(int32_t qmin, int32_t qmax) { return qmin < 0 || qmax > 255 || qmin > qmax; }

/* ------------------------------------------------------------------ add, mul -- */

typedef struct {
  const qnnpack_isa_kernels *kern;
  const qnnpack_add_params *add; /* exactly one of add / mul is set */
  const qnnpack_mul_params *mul;
  const uint8_t *a, *b;
  uint8_t *out;
} qnnpack_binary_ctx;

static void qnnpack_binary_range(void *vctx, size_t begin, size_t end) {
  const qnnpack_binary_ctx *c = (const qnnpack_binary_ctx *)vctx;
  if (c->add)
    c->kern->add(end - begin, c->a + begin, c->b + begin, c->add, c->out + begin);
  else
    c->kern->mul(end - begin, c->a + begin, c->b + begin, c->mul, c->out + begin);
}

static int qnnpack_bad_binary(int32_t a_zp, int32_t b_zp, int32_t out_zp, int32_t qmin, int32_t qmax) {
  return qnnpack_bad_zp(a_zp) || qnnpack_bad_zp(b_zp) || qnnpack_bad_zp(out_zp) || qnnpack_bad_clamp(qmin, qmax);
}

static int qnnpack_run_binary(qnnpack_binary_ctx *c, size_t n) {
  if (n == 0) return QP_OK;
  if (!c->a || !c->b || !c->out) return QP_ERR_INVALID_ARGUMENT;
  c->kern = qnnpack_active_kernels();
  qp_parallel_for(n, QNNPACK_ELEMENTWISE_GRAIN, qnnpack_binary_range, c);
  return QP_OK;
}

int qnnpack_add_u8(const uint8_t *a, float a_scale, int32_t a_zp, const uint8_t *b, float b_scale,
                   int32_t b_zp, size_t n, float out_scale, int32_t out_zp, int32_t qmin,
                   int32_t qmax, uint8_t *out) {
  if (qnnpack_bad_scale(a_scale) || qnnpack_bad_scale(b_scale) || qnnpack_bad_scale(out_scale) ||
      qnnpack_bad_binary(a_zp, b_zp, out_zp, qmin, qmax))
    return QP_ERR_INVALID_ARGUMENT;
  const float inv = 1.0f / out_scale;
  if (!isfinite(inv)) return QP_ERR_INVALID_ARGUMENT;
  const qnnpack_add_params p = {.a_scale = a_scale, .b_scale = b_scale, .inv_out = inv,
                                .a_zp = a_zp, .b_zp = b_zp, .out_zp = out_zp, .qmin = qmin,
                                .qmax = qmax};
  qnnpack_binary_ctx c = {.add = &p, .a = a, .b = b, .out = out};
  return qnnpack_run_binary(&c, n);
}

int qnnpack_mul_u8(const uint8_t *a, int32_t a_zp, const uint8_t *b, int32_t b_zp, size_t n,
                   float multiplier, int32_t out_zp, int32_t qmin, int32_t qmax, uint8_t *out) {
  if (qnnpack_bad_scale(multiplier) || qnnpack_bad_binary(a_zp, b_zp, out_zp, qmin, qmax))
    return QP_ERR_INVALID_ARGUMENT;
  const qnnpack_mul_params p = {.mult = multiplier, .a_zp = a_zp, .b_zp = b_zp, .out_zp = out_zp,
                                .qmin = qmin, .qmax = qmax};
  qnnpack_binary_ctx c = {.mul = &p, .a = a, .b = b, .out = out};
  return qnnpack_run_binary(&c, n);
}

/* ------------------------------------------------------------- lookup table -- */

/*
 * QNNPACK's x8lut: one table read per byte. QNNPACK ships only a scalar
 * kernel for it, and so does this plugin: a 256-byte table lives in L1, the
 * loop runs at about a byte per cycle per core and is memory bound on any
 * tensor large enough to matter (vector byte shuffles cover 16 or 64 table
 * entries per instruction, so a 256-entry gather costs more instructions).
 */
void qnnpack_x8_lut_ukernel__scalar(size_t n, const uint8_t *x, const uint8_t *table, uint8_t *out) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const uint8_t v0 = table[x[i]], v1 = table[x[i + 1]], v2 = table[x[i + 2]], v3 = table[x[i + 3]];
    out[i] = v0;
    out[i + 1] = v1;
    out[i + 2] = v2;
    out[i + 3] = v3;
  }
  for (; i < n; i++) out[i] = table[x[i]];
}

typedef struct {
  const uint8_t *x, *table;
  uint8_t *out;
} qnnpack_lut_ctx;

static void qnnpack_lut_range(void *vctx, size_t begin, size_t end) {
  const qnnpack_lut_ctx *c = (const qnnpack_lut_ctx *)vctx;
  qnnpack_x8_lut_ukernel__scalar(end - begin, c->x + begin, c->table, c->out + begin);
}

int qnnpack_lut_u8(const uint8_t *x, size_t n, const uint8_t *table, size_t table_size,
                   uint8_t *out) {
  if (!table || table_size != 256) return QP_ERR_INVALID_ARGUMENT;
  if (n == 0) return QP_OK;
  if (!x || !out) return QP_ERR_INVALID_ARGUMENT;
  qnnpack_lut_ctx c = {.x = x, .table = table, .out = out};
  qp_parallel_for(n, QNNPACK_ELEMENTWISE_GRAIN, qnnpack_lut_range, &c);
  return QP_OK;
}
