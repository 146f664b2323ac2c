#!/usr/bin/env bash
# Installs the Debian packages the test matrix needs when they are missing:
# the aarch64 cross compiler and qemu user-mode emulation (ARM NEON kernels are
# compiled for aarch64 and run under qemu). Needs root (CI and dev machines run
# as root); without root it says what to install and carries on.
set -u
need=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu)
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "ensure_toolchains: missing ${need[*]}; install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 0
fi
echo "ensure_toolchains: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null
