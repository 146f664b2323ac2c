"""Bad inputs raise KernelInputError naming the op and the tensor; the process never crashes."""

import pytest
import torch

from quantplug import KernelInputError


@pytest.fixture(scope="module")
def setup(kernels):
    g = torch.Generator().manual_seed(0)
    w = torch.randint(-128, 128, (8, 16), dtype=torch.int8, generator=g)
    packed = kernels.pack_linear_weight(w, torch.full((8,), 0.01), torch.zeros(8, dtype=torch.int32))
    x = torch.randint(0, 128, (4, 16), dtype=torch.uint8, generator=g)
    return packed, x


def _linear(kernels, packed_, x, **over):
    args = dict(x_q=x, x_scale=0.1, x_zero_point=3, packed=packed_, bias=None, out_scale=0.2, out_zero_point=4)
    args.update(over)
    return kernels.linear(**args)


@pytest.mark.parametrize("over,match", [
    (dict(x_q=torch.zeros(4, 16, dtype=torch.int8)), r"fbgemm\.linear: x_q has dtype torch\.int8, expected torch\.uint8"),
    (dict(x_q=torch.zeros(4, 16)), "x_q has dtype torch.float32"),
    (dict(x_q=torch.zeros(16, 4, dtype=torch.uint8).t()), "x_q is not contiguous"),
    (dict(x_q=torch.zeros(4, 15, dtype=torch.uint8)), r"x_q has shape \(4, 15\), expected \[\.\.\., 16\]"),
    (dict(x_q=torch.zeros(4, 16, dtype=torch.uint8, device="meta")), "x_q is on meta"),
    (dict(x_q=[[1, 2]]), "x_q must be a torch.Tensor"),
    (dict(x_scale=0.0), "x_scale must be a finite float > 0"),
    (dict(x_scale=float("nan")), "x_scale must be a finite float > 0"),
    (dict(out_scale=-1.0), "out_scale must be a finite float > 0"),
    (dict(out_scale=float("inf")), "out_scale must be a finite float > 0"),
    (dict(x_zero_point=256), r"x_zero_point=256 is outside \[0, 255\]"),
    (dict(out_zero_point=-1), r"out_zero_point=-1 is outside \[0, 255\]"),
    (dict(x_zero_point=1.5), "x_zero_point must be an int"),
    (dict(bias=torch.zeros(7)), r"bias has shape \(7,\), expected 8"),
    (dict(bias=torch.zeros(8, dtype=torch.float64)), "bias has dtype torch.float64"),
    (dict(bias=torch.tensor([float("inf")] + [0.0] * 7)), "bias contains inf or NaN"),
    (dict(packed="weights"), "packed must be a quantplug_fbgemm PackedLinearWeight"),
])
def test_linear_rejects(kernels, setup, over, match):
    packed, x = setup
    with pytest.raises(KernelInputError, match=match):
        _linear(kernels, packed, x, **over)


def test_linear_rejects_corrupted_packed_weight(kernels, setup):
    import dataclasses

    packed, x = setup
    for field, value, match in [("packed", packed.packed[:-1], "packed.packed has shape"),
                                ("scales", packed.scales.double(), "packed.scales has dtype"),
                                ("row_sums", packed.row_sums[:3], "packed.row_sums has shape"),
                                ("n", -1, "invalid n=-1"),
                                ("scales", torch.zeros(8), "the kernel rejected its arguments")]:
        bad = dataclasses.replace(packed, **{field: value})
        with pytest.raises(KernelInputError, match=match):
            _linear(kernels, bad, x)


def test_out_range_arguments(kernels, setup):
    packed, x = setup
    with pytest.raises(KernelInputError, match="out_quant_min 100 > out_quant_max 50"):
        _linear(kernels, packed, x, out_quant_min=100, out_quant_max=50)
    with pytest.raises(KernelInputError, match=r"out_quant_max=256 is outside"):
        _linear(kernels, packed, x, out_quant_max=256)
    out = _linear(kernels, packed, x, out_quant_max=255)  # torch's quint8 range is allowed explicitly
    assert out.dtype == torch.uint8


@pytest.mark.parametrize("args,match", [
    ((torch.zeros(8, 16, dtype=torch.uint8), torch.ones(8), torch.zeros(8, dtype=torch.int32)), "w_q has dtype torch.uint8"),
    ((torch.zeros(8, 16, dtype=torch.int8), torch.ones(7), torch.zeros(8, dtype=torch.int32)), r"w_scales has shape \(7,\)"),
    ((torch.zeros(8, 16, dtype=torch.int8), torch.ones(8), torch.zeros(8, dtype=torch.int64)), "w_zero_points has dtype torch.int64"),
    ((torch.zeros(8, 16, dtype=torch.int8), torch.zeros(8), torch.zeros(8, dtype=torch.int32)), "w_scales entry must be finite and > 0"),
    ((torch.zeros(8, 16, dtype=torch.int8), torch.ones(8), torch.full((8,), 200, dtype=torch.int32)), r"\[-128, 127\]"),
    ((torch.zeros(16, 8, dtype=torch.int8).t(), torch.ones(8), torch.zeros(8, dtype=torch.int32)), "w_q is not contiguous"),
    ((torch.zeros(8, 16, 1, dtype=torch.int8), torch.ones(8), torch.zeros(8, dtype=torch.int32)), "w_q must be 2-D"),
    ((torch.zeros(0, 16, dtype=torch.int8), torch.ones(0), torch.zeros(0, dtype=torch.int32)), "empty dimension"),
])
def test_pack_rejects(kernels, args, match):
    with pytest.raises(KernelInputError, match=match):
        kernels.pack_linear_weight(*args)


def test_dynamic_rejects(kernels, setup):
    packed, _ = setup
    with pytest.raises(KernelInputError, match="x has dtype torch.uint8, expected torch.float32"):
        kernels.linear_dynamic(torch.zeros(2, 16, dtype=torch.uint8), packed, None)
    with pytest.raises(KernelInputError, match="x is not contiguous"):
        kernels.linear_dynamic(torch.zeros(16, 2).t(), packed, None)
    with pytest.raises(KernelInputError, match=r"expected \[\.\.\., 16\]"):
        kernels.linear_dynamic(torch.zeros(2, 17), packed, None)
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.zeros(2, 16)
        x[1, 3] = bad
        for per_row in (False, True):
            with pytest.raises(KernelInputError, match="x contains inf or NaN"):
                kernels.linear_dynamic(x, packed, None, per_row=per_row)


def test_forcing_an_unusable_or_unknown_isa(kernels):
    with pytest.raises(ValueError, match="unknown ISA"):
        kernels.set_isa("avx1024")
    with pytest.raises(ValueError, match="not usable here"):
        kernels.set_isa("neon")
    assert kernels.selected_isa() == kernels.usable_isas()[0]
