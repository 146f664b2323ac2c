"""The ARM NEON / NEON-dot paths, cross-compiled for AArch64 and run under qemu, bit-exact against scalar.

The Python tests can only run the ISA paths of this machine; this test runs
``csrc/tests/run_arm_tests.sh``, which builds the standalone C driver
natively and for AArch64 (``aarch64-linux-gnu-gcc``) and runs the latter
under ``qemu-aarch64-static``. Without the toolchain the test skips, unless
``QUANTPLUG_REQUIRE_ARM=1`` (set by CI), where a missing toolchain fails.
"""

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "csrc" / "tests" / "run_arm_tests.sh"
TOOLS = ("aarch64-linux-gnu-gcc", "qemu-aarch64-static")
INSTALL = "apt-get update && apt-get install -y gcc-aarch64-linux-gnu qemu-user-static"


def test_arm_kernels_under_qemu():
    required = os.environ.get("QUANTPLUG_REQUIRE_ARM") == "1"
    native_arm = platform.machine().lower() in ("aarch64", "arm64")
    missing = [t for t in ("gcc", "bash") + (() if native_arm else TOOLS) if shutil.which(t) is None]
    if missing:
        message = f"ARM kernel tests need {', '.join(missing)} (install: {INSTALL})"
        if required:
            pytest.fail(f"QUANTPLUG_REQUIRE_ARM=1 but {message}")
        pytest.skip(message)
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TRIALS": os.environ.get("TRIALS", "300")})
    report = f"{result.stdout}\n{result.stderr}"
    if result.returncode == 77 and not required:
        pytest.skip(report.strip().splitlines()[-1])
    assert result.returncode == 0, report
    assert "neondot" in result.stdout and "all kernel paths match the scalar reference" in result.stdout, report
