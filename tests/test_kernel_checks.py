"""The core's input checks that every plugin's kernel wrappers run before handing pointers to C."""

from __future__ import annotations

import pytest
import torch

from quantplug.errors import KernelInputError
from quantplug.kernels import check_binary_operands, check_dense, check_finite, check_tensor


def test_check_tensor_accepts_a_good_tensor_and_returns_it():
    t = torch.zeros(2, 3, dtype=torch.int8)
    assert check_tensor(t, "w", dtype=torch.int8, shape=(2, None), op="k.linear") is t


@pytest.mark.parametrize(
    "tensor, kwargs, message",
    [
        ([1, 2], {}, "w must be a torch.Tensor, got list"),
        (torch.zeros(2, 3), {}, "w has dtype torch.float32, expected torch.int8"),
        (torch.zeros(2, 3, dtype=torch.int8), {"ndim": 3}, "w must be 3-D"),
        (torch.zeros(2, 3, dtype=torch.int8), {"shape": (2, 4)}, "expected 2x4"),
        (torch.zeros(3, 2, dtype=torch.int8).t(), {}, "w.contiguous()"),
    ],
)
def test_check_tensor_names_the_op_tensor_and_fix(tensor, kwargs, message):
    with pytest.raises(KernelInputError, match="k.linear") as err:
        check_tensor(tensor, "w", dtype=torch.int8, op="k.linear", **kwargs)
    assert message in str(err.value)


def test_binary_operands_keep_a_shared_channels_last_layout():
    a = torch.randint(0, 255, (1, 3, 4, 5), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    b = a.clone(memory_format=torch.channels_last)
    x, y = check_binary_operands(a, b, dtype=torch.uint8, op="k.add")
    assert x is a and y is b  # used in place: no copy of a dense NHWC buffer


def test_binary_operands_with_different_layouts_become_contiguous_with_values_kept():
    a = torch.randint(0, 255, (1, 3, 4, 5), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    b = torch.randint(0, 255, (1, 3, 4, 5), dtype=torch.uint8)
    x, y = check_binary_operands(a, b, dtype=torch.uint8, op="k.add")
    assert x.is_contiguous() and y.is_contiguous()
    assert torch.equal(x, a) and torch.equal(y, b)


def test_binary_operands_strided_views_are_made_dense():
    base = torch.randint(0, 255, (4, 6), dtype=torch.uint8)
    view = base[:, ::2]
    x, y = check_binary_operands(view, view.clone(), dtype=torch.uint8)
    assert x.is_contiguous() and torch.equal(x, view)


@pytest.mark.parametrize(
    "b, message",
    [
        (torch.zeros(2, 4, dtype=torch.uint8), "differ in shape; broadcasting is not supported"),
        (torch.zeros(2, 3, dtype=torch.int8), "b_q has dtype torch.int8"),
        (None, "b_q must be a torch.Tensor"),
    ],
)
def test_binary_operands_reject_bad_input_by_name(b, message):
    with pytest.raises(KernelInputError, match="k.mul") as err:
        check_binary_operands(torch.zeros(2, 3, dtype=torch.uint8), b, dtype=torch.uint8, op="k.mul")
    assert message in str(err.value)


def test_check_dense_keeps_channels_last_and_densifies_views():
    nhwc = torch.zeros(1, 3, 4, 5, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    assert check_dense(nhwc, "x_q", dtype=torch.uint8) is nhwc
    view = torch.arange(12, dtype=torch.uint8).reshape(3, 4)[:, ::2]
    out = check_dense(view, "x_q", dtype=torch.uint8)
    assert out.is_contiguous() and torch.equal(out, view)
    with pytest.raises(KernelInputError, match="k.lut: x_q has dtype torch.int8"):
        check_dense(torch.zeros(3, dtype=torch.int8), "x_q", dtype=torch.uint8, op="k.lut")


def test_check_finite_remembers_a_passing_tensor_until_it_is_modified():
    bias = torch.randn(8)
    assert check_finite(bias, "bias", op="k.conv2d") is bias
    bias[3] = float("nan")  # in place: _version moves on, so the check runs again
    with pytest.raises(KernelInputError, match=r"k.conv2d: bias contains NaN or inf"):
        check_finite(bias, "bias", op="k.conv2d")
    with pytest.raises(KernelInputError, match="inf"):
        check_finite(torch.tensor([1.0, float("inf")]), "scales", op="k.linear")


def test_unflatten_packed_reuses_its_object_until_a_tensor_changes():
    import dataclasses

    from quantplug.kernels import flatten_packed, unflatten_packed

    @dataclasses.dataclass
    class Packed:
        w: torch.Tensor
        k: int

    tensors = flatten_packed(Packed(torch.ones(4, dtype=torch.int8), 4))
    first = unflatten_packed(Packed, tensors)
    assert unflatten_packed(Packed, list(tensors)) is first  # same tensors: same object
    tensors[1].fill_(5)  # an in-place load_state_dict into the buffers
    again = unflatten_packed(Packed, tensors)
    assert again is not first and again.k == 5
    other = [tensors[0].clone(), tensors[1]]
    assert unflatten_packed(Packed, other) is not again  # a different tensor object: rebuilt


@pytest.mark.parametrize("zero_point", [2**40, -(2**31), (1 << 24) + 1])
def test_shared_quantize_kernels_reject_a_zero_point_c_cannot_hold(zero_point):
    # the per-tensor quantize / dequantize wrappers pass it to C as an int32 and subtract it there
    from quantplug.kernels import CffiKernelLibrary

    with pytest.raises(KernelInputError, match=f"k.dequantize_per_tensor: zero_point={zero_point} is out of range"):
        CffiKernelLibrary._zero_point(zero_point, "k.dequantize_per_tensor")
    assert CffiKernelLibrary._zero_point(-(1 << 24), "k.q") == -(1 << 24)  # the bound itself is accepted
