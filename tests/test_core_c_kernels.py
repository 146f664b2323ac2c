"""The core's shared C quantize and dequantize kernels (``csrc/qp_quantize.c``, compiled into every plugin):
each SIMD path equals the scalar path, natively (plain and under ASan/UBSan) and on aarch64
(NEON) under qemu.

Builds ``csrc/tests/test_quantize.c`` with the core's runtime. With
``QUANTPLUG_REQUIRE_ARM=1`` a missing cross toolchain is a failure, not a skip.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[1] / "core" / "quantplug" / "csrc"
SOURCES = [CSRC / "tests" / "test_quantize.c", CSRC / "qp_quantize.c", CSRC / "qp_runtime.c", CSRC / "qp_pool.c"]
CFLAGS = ["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-fno-strict-aliasing", f"-I{CSRC / 'include'}"]
REQUIRE_ARM = os.environ.get("QUANTPLUG_REQUIRE_ARM") == "1"
ON_X86 = platform.machine().lower() in ("x86_64", "amd64")


def _build_and_run(cc: list[str], extra: list[str], out: Path, runner: list[str] = ()) -> str:
    build = subprocess.run([*cc, *CFLAGS, *extra, *map(str, SOURCES), "-o", str(out), "-lpthread", "-lm"],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    run = subprocess.run([*runner, str(out), "300", "7"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "asan+ubsan"])
def test_quantize_simd_paths_equal_scalar_natively(tmp_path, sanitize):
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc)")
    extra = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"] if sanitize else []
    env_out = _build_and_run(["cc"], extra, tmp_path / "test_quantize")
    assert "all equal" in env_out
    if ON_X86 and "avx2" in Path("/proc/cpuinfo").read_text():
        # at least AVX2 ran (the AVX-512 paths too where the CPU has them)
        assert "0 SIMD path" not in env_out, env_out


def test_quantize_neon_path_equals_scalar_under_qemu(tmp_path):
    if not ON_X86:
        pytest.skip("the aarch64 cross build runs from an x86-64 host")
    missing = [t for t in ("aarch64-linux-gnu-gcc", "qemu-aarch64-static") if shutil.which(t) is None]
    if missing:
        message = f"missing {', '.join(missing)}: apt-get install -y gcc-aarch64-linux-gnu qemu-user-static"
        if REQUIRE_ARM:
            pytest.fail(f"QUANTPLUG_REQUIRE_ARM=1 but {message}")
        pytest.skip(message)
    out = _build_and_run(["aarch64-linux-gnu-gcc"], ["-march=armv8-a"], tmp_path / "test_quantize_arm",
                         ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu"])
    assert "2 SIMD path(s)" in out and "all equal" in out, out  # neon and neondot (qemu's default CPU)


POOL_SOURCES = [CSRC / "tests" / "test_pool.c", CSRC / "qp_quantize.c", CSRC / "qp_runtime.c", CSRC / "qp_pool.c"]
_SANITIZERS = {
    "plain": [],
    "asan+ubsan": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"],
    "tsan": ["-fsanitize=thread", "-g"],
}


@pytest.mark.parametrize("mode", sorted(_SANITIZERS))
def test_thread_pool_runs_every_item_once_and_returns_when_done(tmp_path, mode):
    """qp_parallel_for under 1-4 threads, late workers (sleeping tasks), nested calls; TSan too."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc)")
    if mode == "tsan":
        lib = subprocess.run(["cc", "-print-file-name=libtsan.so"], capture_output=True, text=True).stdout.strip()
        if not Path(lib).is_file():
            pytest.skip("the C compiler has no ThreadSanitizer runtime (libtsan)")
    out = tmp_path / f"test_pool_{mode.replace('+', '_')}"
    build = subprocess.run(["cc", *CFLAGS, *_SANITIZERS[mode], *map(str, POOL_SOURCES), "-o", str(out), "-lpthread",
                            "-lm"], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    env = {**os.environ, "TSAN_OPTIONS": "halt_on_error=1"}
    run = subprocess.run([str(out), "1000", "11"], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0 and "all correct" in run.stdout, run.stdout + run.stderr
