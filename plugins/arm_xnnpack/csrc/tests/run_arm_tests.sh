#!/usr/bin/env bash
# Builds the standalone kernel test driver (test_kernels.c) and runs it:
#   1. natively with gcc (x86-64: scalar, AVX2, AVX-512, AVX-512 VNNI paths), and
#      again under ASan + UBSan when the compiler supports them;
#   2. cross-compiled for AArch64 and run under qemu user-mode emulation
#      (scalar, NEON, NEON dot product paths), twice: with
#      -march=armv8.2-a+dotprod -O2, and with the extension's own baseline
#      -march=armv8-a -O1 where the dotprod path is enabled by a target attribute.
# The four builds run concurrently (compiling is most of the run time).
# The driver compares every usable ISA path with the scalar path over many
# random shapes and qparams and exits non-zero on any mismatch.
#
# Exit status: 0 all passed; 1 a test or a build failed; 77 the ARM toolchain
# (aarch64-linux-gnu-gcc, qemu-aarch64-static) is missing and
# QUANTPLUG_REQUIRE_ARM is not 1 (with QUANTPLUG_REQUIRE_ARM=1 that is a
# failure, exit 1). Install it with:
#   apt-get update && apt-get install -y gcc-aarch64-linux-gnu qemu-user-static
#
# Environment: CC (native compiler, default gcc), QUANTPLUG_CSRC (the core's
# csrc directory, default: found from this file's place in the source tree),
# TRIALS (random cases per run, default 400).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
plugin_csrc="$(cd "$here/.." && pwd)"
core_csrc="${QUANTPLUG_CSRC:-$(cd "$here/../../../../core/quantplug/csrc" 2>/dev/null && pwd || true)}"
if [ -z "$core_csrc" ] || [ ! -f "$core_csrc/qp_runtime.c" ]; then
  echo "run_arm_tests: the core's csrc (qp_runtime.c, qp_quantize.c) was not found;" \
       "set QUANTPLUG_CSRC=<quantplug source>/core/quantplug/csrc" >&2
  exit 1
fi
trials="${TRIALS:-400}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

sources=("$here/test_kernels.c" "$plugin_csrc"/*.c "$core_csrc/qp_runtime.c" "$core_csrc/qp_quantize.c")
cflags=(-std=gnu11 -Wall -Wextra -Werror -I "$core_csrc/include" -I "$plugin_csrc")

build() { # build <compiler> <output> <flags...>
  local cc="$1" exe="$2"
  shift 2
  echo "+ $cc $* -o $(basename "$exe")"
  "$cc" "$@" "${cflags[@]}" "${sources[@]}" -lpthread -lm -o "$exe"
}

# Every build is started first and the builds run concurrently (they dominate the run time);
# a failed build fails the script when it is waited for.
pids=()
# (the background subshell drops the EXIT trap: a failed build must not delete $out under the others)
start_build() { { trap - EXIT; build "$@"; } & pids+=($!); }
wait_builds() { # wait for every build (none is left writing into $out), then fail if one failed
  local failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || { echo "run_arm_tests: a build failed (see above)" >&2; exit 1; }
}

native_cc="${CC:-gcc}"
case "$(uname -m)" in
  x86_64) native_require=(--require scalar,avx2) ;;  # AVX-512 paths run when this CPU has them
  aarch64) native_require=(--require scalar,neon) ;;
  *) native_require=() ;;
esac
start_build "$native_cc" "$out/test_native" -O2
# AddressSanitizer + UndefinedBehaviorSanitizer (out-of-bounds, overflow), when available; -O0
# compiles three times faster than -O1 and hides nothing from the sanitizers.
sanitize=0
if echo 'int main(void){return 0;}' | "$native_cc" -fsanitize=address,undefined -x c - -o "$out/asan_probe" 2>/dev/null; then
  sanitize=1
  start_build "$native_cc" "$out/test_sanitized" -O0 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined
fi
arm=0
if [ "$(uname -m)" != aarch64 ]; then
  missing=()
  command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing+=(gcc-aarch64-linux-gnu)
  command -v qemu-aarch64-static >/dev/null 2>&1 || missing+=(qemu-user-static)
  if [ ${#missing[@]} -eq 0 ]; then
    arm=1
    start_build aarch64-linux-gnu-gcc "$out/test_arm_dotprod" -O2 -march=armv8.2-a+dotprod
    start_build aarch64-linux-gnu-gcc "$out/test_arm_baseline" -O1 -march=armv8-a
  fi
fi
wait_builds

# 1. native (and sanitized)
"$out/test_native" --trials "$trials" "${native_require[@]}"
if [ "$sanitize" = 1 ]; then
  "$out/test_sanitized" --trials $((trials / 4 + 1))
else
  echo "run_arm_tests: $native_cc cannot build with -fsanitize=address,undefined here; sanitized run skipped"
fi

# 2. AArch64 under qemu
if [ "$(uname -m)" = aarch64 ]; then
  echo "run_arm_tests: native host is AArch64; the NEON paths ran above"
  exit 0
fi
if [ "$arm" = 0 ]; then
  msg="run_arm_tests: ARM toolchain missing (${missing[*]}); install with: apt-get update && apt-get install -y gcc-aarch64-linux-gnu qemu-user-static"
  echo "$msg" >&2
  [ "${QUANTPLUG_REQUIRE_ARM:-0}" = 1 ] && exit 1
  exit 77
fi
sysroot="${QEMU_LD_PREFIX:-/usr/aarch64-linux-gnu}"
qemu-aarch64-static -L "$sysroot" "$out/test_arm_dotprod" --trials "$trials" --require scalar,neon,neondot
qemu-aarch64-static -L "$sysroot" "$out/test_arm_baseline" --trials "$trials" --require scalar,neon,neondot
echo "run_arm_tests: all kernel paths match the scalar reference"
