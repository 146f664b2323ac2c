#!/usr/bin/env bash
# Builds benchmarks/pool/pool_overhead.c against the core's runtime (and, given a git revision,
# against that revision's runtime too) and runs them one after the other.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
inc="$root/core/quantplug/csrc/include"
out="$(mktemp -d)"
gcc -O2 -I"$inc" "$root/benchmarks/pool/pool_overhead.c" "$root/core/quantplug/csrc/qp_runtime.c" -lpthread -o "$out/now"
echo "== pool of the working tree"; "$out/now"
if [ $# -ge 1 ]; then
  git -C "$root" show "$1:core/quantplug/csrc/qp_runtime.c" > "$out/old_runtime.c"
  gcc -O2 -I"$inc" -I"$root/core/quantplug/csrc" "$root/benchmarks/pool/pool_overhead.c" "$out/old_runtime.c" -lpthread -o "$out/old"
  echo "== pool of $1"; "$out/old"
fi
rm -rf "$out"
