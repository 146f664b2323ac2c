"""The ARM NEON / NEON-dot paths, cross-compiled for AArch64 and run under qemu, bit-exact against scalar.

The Python tests can only run the ISA paths of this machine; this test runs
``csrc/tests/run_arm_tests.sh``, which builds the standalone C driver
natively (plus ASan/UBSan) and for AArch64 (``aarch64-linux-gnu-gcc``) and
runs the latter under ``qemu-aarch64-static``. Without the toolchain the test
skips, unless ``QUANTPLUG_REQUIRE_ARM=1`` (set by CI), where a missing
toolchain fails.

The script is started in the background when collection finishes
(``conftest.py``), so its compiles and qemu runs overlap the other tests;
this test waits for it.
"""

import os
import platform
import shutil

import pytest

INSTALL = "apt-get update && apt-get install -y gcc-aarch64-linux-gnu qemu-user-static"


def missing_tools() -> list[str]:
    """The programs the script needs that are not on PATH."""
    native_arm = platform.machine().lower() in ("aarch64", "arm64")
    tools = ("gcc", "bash") + (() if native_arm else ("aarch64-linux-gnu-gcc", "qemu-aarch64-static"))
    return [t for t in tools if shutil.which(t) is None]


def test_arm_kernels_under_qemu(arm_tests_run):
    required = os.environ.get("QUANTPLUG_REQUIRE_ARM") == "1"
    missing = missing_tools()
    if missing:
        message = f"ARM kernel tests need {', '.join(missing)} (install: {INSTALL})"
        if required:
            pytest.fail(f"QUANTPLUG_REQUIRE_ARM=1 but {message}")
        pytest.skip(message)
    returncode, report = arm_tests_run.result(timeout=300)
    if returncode == 77 and not required:
        pytest.skip(report.strip().splitlines()[-1])
    assert returncode == 0, report
    assert "neondot" in report and "all kernel paths match the scalar reference" in report, report
