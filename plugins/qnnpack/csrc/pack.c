/* Weight packing into the c4 / NR=16 layout described in qnnpack_kernels.h. */
#include "qnnpack_internal.h"
#include "qnnpack_kernels.h"

size_t qnnpack_packed_weight_size(size_t n, size_t k) {
  size_t nb = (n + QNNPACK_NR - 1) / QNNPACK_NR;
  size_t kg = (k + QNNPACK_KR - 1) / QNNPACK_KR;
  return nb * kg * QNNPACK_NR * QNNPACK_KR;
}

size_t qnnpack_packed_sums_size(size_t n) {
  return (n + QNNPACK_NR - 1) / QNNPACK_NR * QNNPACK_NR;
}

/* Empty or absurdly large shapes (whose packed size could overflow) are rejected. */
static int qnnpack_bad_shape(size_t n, size_t k) {
  return n == 0 || k == 0 || n > ((size_t)1 << 31) || k > ((size_t)1 << 31);
}

static int qnnpack_pack(const uint8_t *w, uint8_t flip, size_t n, size_t k, uint8_t *packed,
                        size_t packed_size, int32_t *wsums, size_t wsums_size) {
  if (!w || !packed || !wsums || qnnpack_bad_shape(n, k)) return QP_ERR_INVALID_ARGUMENT;
  if (packed_size != qnnpack_packed_weight_size(n, k) || wsums_size != qnnpack_packed_sums_size(n))
    return QP_ERR_INVALID_ARGUMENT;
  const size_t kg_count = (k + QNNPACK_KR - 1) / QNNPACK_KR;
  const size_t nb_count = (n + QNNPACK_NR - 1) / QNNPACK_NR;
  for (size_t nb = 0; nb < nb_count; nb++) {
    for (size_t j = 0; j < QNNPACK_NR; j++) {
      const size_t row = nb * QNNPACK_NR + j;
      uint32_t sum = 0;
      for (size_t kg = 0; kg < kg_count; kg++) {
        uint8_t *dst = packed + ((nb * kg_count + kg) * QNNPACK_NR + j) * QNNPACK_KR;
        for (size_t i = 0; i < QNNPACK_KR; i++) {
          const size_t col = kg * QNNPACK_KR + i;
          uint8_t v = 0;
          if (row < n && col < k) v = (uint8_t)(w[row * k + col] ^ flip);
          dst[i] = v;
          sum += v;
        }
      }
      wsums[row] = (int32_t)sum;
    }
  }
  return QP_OK;
}

int qnnpack_pack_weight_u8(const uint8_t *w, size_t n, size_t k, uint8_t *packed,
                           size_t packed_size, int32_t *wsums, size_t wsums_size) {
  return qnnpack_pack(w, 0, n, k, packed, packed_size, wsums, wsums_size);
}

/* int8 -> uint8 by adding 128: the same as flipping the sign bit. */
int qnnpack_pack_weight_s8(const int8_t *w, size_t n, size_t k, uint8_t *packed,
                           size_t packed_size, int32_t *wsums, size_t wsums_size) {
  return qnnpack_pack((const uint8_t *)w, 0x80, n, k, packed, packed_size, wsums, wsums_size);
}

int qnnpack_unpack_weight_u8(const uint8_t *packed, size_t packed_size, size_t n, size_t k,
                             uint8_t *w) {
  if (!w || !packed || qnnpack_bad_shape(n, k) || packed_size != qnnpack_packed_weight_size(n, k))
    return QP_ERR_INVALID_ARGUMENT;
  const size_t kg_count = (k + QNNPACK_KR - 1) / QNNPACK_KR;
  for (size_t row = 0; row < n; row++)
    for (size_t col = 0; col < k; col++) {
      const size_t nb = row / QNNPACK_NR, j = row % QNNPACK_NR;
      const size_t kg = col / QNNPACK_KR, i = col % QNNPACK_KR;
      w[row * k + col] = packed[((nb * kg_count + kg) * QNNPACK_NR + j) * QNNPACK_KR + i];
    }
  return QP_OK;
}
