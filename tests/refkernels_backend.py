"""A backend whose kernels are the pure-PyTorch contract, for core tests of lowered models.

The core has no C kernels of its own; this backend lets the serialization, debugger and
conformance tests exercise lowered graphs (``quantplug::linear``, ``linear_dynamic``,
``conv2d``, ``add``) without any plugin installed. Its kernels add the input checks a plugin's
wrapper must make before calling C.
"""

import torch

import quantplug
from quantplug.builtin_plugin import ReferenceQuantizer, reference_backend_config
from quantplug.errors import KernelInputError
from quantplug.kernels import check_tensor
from quantplug.reference_kernels import ReferenceKernels

NAME = "refk"
DISTRIBUTION = "quantplug-refk-test"


class StrictReferenceKernels(ReferenceKernels):
    """ReferenceKernels plus shape checks (a KernelInputError, never a reshape error)."""

    def linear(self, x_q, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu=False):
        check_tensor(x_q, "x_q", dtype=self.act_dtype, op="refk.linear")
        if x_q.shape[-1] != packed.k:
            raise KernelInputError(f"refk.linear: x_q has {x_q.shape[-1]} features, the weight {packed.k}")
        return super().linear(x_q, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu)

    def linear_dynamic(self, x, packed, bias, per_row=False):
        check_tensor(x, "x", dtype=torch.float32, op="refk.linear_dynamic")
        if x.shape[-1] != packed.k:
            raise KernelInputError(f"refk.linear_dynamic: x has {x.shape[-1]} features, the weight {packed.k}")
        return super().linear_dynamic(x, packed, bias, per_row)

    def conv2d(self, x_q, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu=False):
        # Any memory format is accepted (the contract), so check the dense copy's dtype and rank.
        check_tensor(x_q.contiguous(), "x_q", dtype=self.act_dtype, ndim=4, op="refk.conv2d")
        if x_q.shape[1] != packed.weight.shape[1] * packed.groups:
            raise KernelInputError(f"refk.conv2d: x_q has {x_q.shape[1]} channels, the weight expects "
                                   f"{packed.weight.shape[1] * packed.groups}")
        return super().conv2d(x_q, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu)


class RefkQuantizer(ReferenceQuantizer):
    """The reference quantizer, naming the ``refk`` backend so lowering finds its kernels."""

    backend_name = NAME
    eager_only_modes = ()  # refk declares no weight_only mode (see make_plugin)


def make_plugin(version: str = "1.2.3", name: str = NAME, distribution: str = DISTRIBUTION,
                kernels: ReferenceKernels | None = None):
    """A plugin object registering the backend (``quantplug.register_plugin(make_plugin())``)."""

    class RefkPlugin:
        @quantplug.hookimpl
        def quantplug_register_backends(self, register):
            register(quantplug.Backend(
                name=name, distribution=distribution, version=version, description="test kernels",
                quantizer_factory=RefkQuantizer, backend_config=reference_backend_config(),
                # no weight_only: ReferenceKernels has no weight-only kernel for the eager flow
                modes=("static", "dynamic", "qat"),
                kernels=kernels if kernels is not None else StrictReferenceKernels()))

    return RefkPlugin()


def register(version: str = "1.2.3", distribution: str = DISTRIBUTION) -> None:
    """Register the backend in this process (undo with ``quantplug.registry.reset()``)."""
    quantplug.register_plugin(make_plugin(version, distribution=distribution), name=f"{NAME}-{version}",
                              distribution=distribution)
