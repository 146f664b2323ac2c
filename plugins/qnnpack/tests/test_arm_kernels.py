"""The standalone C test driver: every ISA path vs scalar, natively and on aarch64 under qemu.

Runs ``csrc/tests/run_arm_tests.sh`` (needs the plugin's source tree, a C
compiler and, for ARM, ``aarch64-linux-gnu-gcc`` + ``qemu-aarch64-static``).
With ``QUANTPLUG_REQUIRE_ARM=1`` a missing toolchain is a failure, not a
skip, so CI cannot silently stop testing the NEON kernels.
"""

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "csrc" / "tests" / "run_arm_tests.sh"
REQUIRE_ARM = os.environ.get("QUANTPLUG_REQUIRE_ARM") == "1"
ON_ARM = platform.machine().lower() in ("aarch64", "arm64")


def _missing_tools() -> list[str]:
    tools = ["cc"] if ON_ARM else ["cc", "aarch64-linux-gnu-gcc", "qemu-aarch64-static"]
    return [t for t in tools if shutil.which(t) is None]


def test_c_kernels_every_isa_native_and_aarch64():
    if not SCRIPT.is_file():
        pytest.skip(f"{SCRIPT} not found: the C driver needs the plugin's source tree")
    missing = _missing_tools()
    if missing:
        message = (f"missing {', '.join(missing)}: install with "
                   f"apt-get install -y gcc-aarch64-linux-gnu qemu-user-static")
        if REQUIRE_ARM:
            pytest.fail(f"QUANTPLUG_REQUIRE_ARM=1 but {message}")
        pytest.skip(message)
    env = dict(os.environ, QUANTPLUG_REQUIRE_ARM="1")
    proc = subprocess.run(["bash", str(SCRIPT), "120", "11"], capture_output=True, text=True, env=env, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "random cases" in output
    if not ON_ARM:
        assert "usable: scalar neon neondot" in output, output  # qemu's CPU has the dot product
        assert "usable: scalar neon\n" in output, output  # and the cortex-a57 run has not
