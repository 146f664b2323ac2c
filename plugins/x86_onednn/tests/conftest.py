"""Shared helpers of the x86_onednn plugin tests.

The tests import the INSTALLED distribution (run pytest from outside the
source tree); nothing here adds the plugin's ``src`` to ``sys.path``.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from quantplug.reference_kernels import ReferenceKernels


def isa_paths(kernels, conv: bool = False) -> list[str]:
    """Every kernel path runnable here, plus the 256-bit VNNI probe on AVX-512 VNNI CPUs.

    ``"avx512vnni_ymm"`` runs the AVX-VNNI microkernel source compiled with EVEX
    encoding, so that code is exercised on CPUs without AVX-VNNI (like Zen 4).
    With ``conv``, ``"avx512vnni_im2col"`` runs convolutions through im2col rows instead of the indirect
    (igemm) microkernel, so both conv schedules of that ISA are checked.
    """
    paths = list(kernels.usable_isas())
    if "avx512vnni" in paths:
        paths.append("avx512vnni_ymm")
        if conv:
            paths.append("avx512vnni_im2col")
    return paths


@contextlib.contextmanager
def on_path(kernels, path: str):
    """Force one kernel path for the block."""
    if path == "avx512vnni_ymm":
        with kernels.use_isa("avx512vnni"):
            prev = kernels.lib.x86_onednn_set_ymm_vnni_probe(1)
            try:
                assert "ymm" in kernels.ukernel_name()
                yield
            finally:
                kernels.lib.x86_onednn_set_ymm_vnni_probe(prev)
    elif path == "avx512vnni_im2col":
        with kernels.use_isa("avx512vnni"):
            prev = kernels.lib.x86_onednn_set_conv_im2col_probe(1)
            try:
                yield
            finally:
                kernels.lib.x86_onednn_set_conv_im2col_probe(prev)
    else:
        with kernels.use_isa(path):
            yield


def for_each_path(kernels, body, conv: bool = False) -> None:
    for p in isa_paths(kernels, conv):
        with on_path(kernels, p):
            body(p)


@pytest.fixture(scope="session")
def xk():
    """The plugin's kernel library."""
    from quantplug_x86_onednn.kernels import load_kernels

    return load_kernels()


@pytest.fixture(scope="session")
def ref():
    """The core's pure-PyTorch kernels with x86 numerics (uint8, 0..255)."""
    return ReferenceKernels(act_dtype=torch.uint8, act_range=(0, 255))


def make_gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) % (2**63))


def rand_u8(g, shape) -> torch.Tensor:
    return torch.randint(0, 256, tuple(shape), generator=g, dtype=torch.int32).to(torch.uint8)


def rand_s8(g, shape) -> torch.Tensor:
    return torch.randint(-128, 128, tuple(shape), generator=g, dtype=torch.int32).to(torch.int8)


def weight_qparams(g, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.rand(n, generator=g) * 0.018 + 0.002).float(), torch.zeros(n, dtype=torch.int32)
