"""Fixtures for the xnnpack plugin tests: the installed backend, its kernels and the core's reference kernels."""

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

import quantplug
from quantplug.reference_kernels import ReferenceKernels

ARM_SCRIPT = Path(__file__).resolve().parents[1] / "csrc" / "tests" / "run_arm_tests.sh"
ARM_TEST = "test_arm_kernels_under_qemu"


class BackgroundRun:
    """``run_arm_tests.sh`` running in the background; output goes to a temporary file (never a full pipe)."""

    def __init__(self) -> None:
        self.output = tempfile.TemporaryFile()
        # The script builds its own ASan/UBSan driver; a sanitizer runtime preloaded for the Python
        # kernels (tools/run_sanitized.sh) must not leak into gcc, bash and qemu.
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        env["TRIALS"] = os.environ.get("TRIALS", "200")
        self.proc = subprocess.Popen(["bash", str(ARM_SCRIPT)], stdout=self.output, stderr=subprocess.STDOUT, env=env)

    def result(self, timeout: float) -> tuple[int, str]:
        """Wait for the script: (exit status, stdout and stderr)."""
        try:
            returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return -1, f"run_arm_tests.sh did not finish in {timeout} s"
        self.output.seek(0)
        return returncode, self.output.read().decode(errors="replace")

    def stop(self) -> None:
        """Kill the script if it still runs (this process started it) and close the output file."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.output.close()


_arm_run: BackgroundRun | None = None


def pytest_collection_modifyitems(session, config, items):
    """Run the ARM test last: it only waits for the background script, which by then has had the whole run."""
    items.sort(key=lambda item: item.name == ARM_TEST)


def pytest_collection_finish(session):
    """Start the ARM script as soon as it is known to be selected, so it overlaps the other tests."""
    global _arm_run
    if _arm_run is None and any(item.name == ARM_TEST for item in session.items):
        _arm_run = BackgroundRun()


def pytest_sessionfinish(session, exitstatus):
    if _arm_run is not None:
        _arm_run.stop()


@pytest.fixture(scope="session")
def arm_tests_run():
    """The background run of ``csrc/tests/run_arm_tests.sh`` (started now if collection did not)."""
    global _arm_run
    if _arm_run is None:
        _arm_run = BackgroundRun()
    return _arm_run


@pytest.fixture(scope="session")
def backend():
    """The backend as the registry loads it from the installed distribution's entry point."""
    return quantplug.get_backend("xnnpack")


@pytest.fixture(scope="session")
def kernels(backend):
    """The compiled kernel library (``XNNPACKKernels``)."""
    return backend.kernels


@pytest.fixture(scope="session")
def ref():
    """quantplug's pure-PyTorch kernels with XNNPACK's activation numerics (int8, [-128, 127])."""
    return ReferenceKernels(act_dtype=torch.int8, act_range=(-128, 127), dynamic_symmetric=False)


def _usable_isas() -> list[str]:
    from quantplug_arm_xnnpack.kernels import load_kernels

    return list(load_kernels().usable_isas())


@pytest.fixture(params=_usable_isas())
def isa(request, kernels):
    """Every ISA path this build and CPU can run (scalar included).

    Paths of another architecture are not parametrized here (they would only
    skip): ``test_arm_emulation.py`` runs the NEON / NEON-dot paths under qemu.
    """
    with kernels.use_isa(request.param):
        yield request.param
