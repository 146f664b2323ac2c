#!/usr/bin/env bash
# Builds the standalone kernel test driver (test_kernels.c + the plugin's
# kernels + the core's qp_runtime.c / qp_quantize.c) and runs it:
#   1. natively on this machine (x86-64: scalar, SSE2, AVX2, AVX-512 paths
#      that the CPU supports; on an aarch64 host: NEON / dot product);
#   2. cross-compiled for aarch64 with aarch64-linux-gnu-gcc and run under
#      qemu-aarch64-static (NEON and NEON dot-product paths), when not on
#      an aarch64 host.
# Exit status is non-zero when a build or a comparison fails. When the
# cross toolchain is missing the ARM step fails if QUANTPLUG_REQUIRE_ARM=1
# and is skipped (exit 0, message on stderr) otherwise.
#
# usage: run_arm_tests.sh [iterations] [seed]      (env: CC, OUT_DIR)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CSRC="$(cd "$HERE/.." && pwd)"
ROOT="$(cd "$CSRC/../../.." && pwd)"
CORE="$ROOT/core/quantplug/csrc"
OUT_DIR="${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/qnnpack-ctests.XXXXXX")}"
ITER="${1:-300}"
SEED="${2:-1}"
SOURCES=("$HERE/test_kernels.c" "$CSRC"/*.c "$CORE/qp_runtime.c" "$CORE/qp_quantize.c")
CFLAGS=(-O2 -std=gnu11 -Wall -Wextra -Werror -fno-strict-aliasing -I"$CSRC" -I"$CORE/include")
LIBS=(-lpthread -lm)

native_cc="${CC:-cc}"
echo "== native ($(uname -m)) with $native_cc"
"$native_cc" "${CFLAGS[@]}" "${SOURCES[@]}" -o "$OUT_DIR/test_kernels_native" "${LIBS[@]}"
"$OUT_DIR/test_kernels_native" "$ITER" "$SEED"

if [ "$(uname -m)" = "aarch64" ]; then
  exit 0  # the native run above already covered the ARM paths
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || ! command -v qemu-aarch64-static >/dev/null 2>&1; then
  msg="aarch64-linux-gnu-gcc / qemu-aarch64-static not found (apt-get install -y gcc-aarch64-linux-gnu qemu-user-static)"
  if [ "${QUANTPLUG_REQUIRE_ARM:-0}" = "1" ]; then
    echo "run_arm_tests: FAIL: $msg, and QUANTPLUG_REQUIRE_ARM=1" >&2
    exit 1
  fi
  echo "run_arm_tests: SKIP ARM: $msg" >&2
  exit 0
fi
echo "== aarch64 (cross-compiled, qemu-aarch64-static)"
aarch64-linux-gnu-gcc "${CFLAGS[@]}" -march=armv8-a "${SOURCES[@]}" -o "$OUT_DIR/test_kernels_aarch64" "${LIBS[@]}"
# qemu's default CPU ("max") has Advanced SIMD and the dot-product extension.
qemu-aarch64-static -L /usr/aarch64-linux-gnu "$OUT_DIR/test_kernels_aarch64" "$ITER" "$SEED"
# Also as a CPU without the dot product (plain ARMv8.0 NEON): checks the runtime detection.
qemu-aarch64-static -L /usr/aarch64-linux-gnu -cpu cortex-a57 "$OUT_DIR/test_kernels_aarch64" "$((ITER / 4 + 1))" "$SEED"
echo "run_arm_tests: all passed"
