"""Lowering to kernels, tested with a backend whose kernels are the pure-PyTorch reference.

This checks the core's pattern matching and the lowered ops independently of
any plugin. Lowered kernels accumulate exactly in integers while the reference
representation computes in float32 on dequantized values, so the two may
round differently at a boundary: they must agree within one output step.
"""

import pytest
import torch
from torch import nn

import quantplug
from quantplug.builtin_plugin import ReferenceQuantizer, reference_backend_config
from quantplug.reference_kernels import ReferenceKernels
from quantplug.registry import ENV_DISABLE_AUTOLOAD
from tests.models import MLP, SmallCNN, calibrate

torch.manual_seed(0)


class _RefKernelPlugin:
    @quantplug.hookimpl
    def quantplug_register_backends(self, register):
        register(quantplug.Backend(
            name="refkernels", distribution="test-refkernels", version="0", description="reference kernels",
            quantizer_factory=_Quantizer, backend_config=reference_backend_config(),
            modes=("static", "dynamic"), kernels=ReferenceKernels()))


class _Quantizer(ReferenceQuantizer):
    backend_name = "refkernels"


@pytest.fixture
def refkernels(fresh_registry, monkeypatch):
    monkeypatch.setenv(ENV_DISABLE_AUTOLOAD, "1")
    quantplug.register_plugin(_RefKernelPlugin(), name="refk", distribution="test-refkernels")
    from quantplug import lowering

    lowering._kernels.cache_clear()
    yield quantplug.get_backend("refkernels")
    lowering._kernels.cache_clear()


def _output_step(reference_model):
    qs = [n for n in reference_model.graph.nodes if n.target == torch.ops.quantplug.quantize_per_tensor.default]
    return qs[-1].args[1]


def _convert_both(model, x, quantizer):
    model = model.eval()
    data = [torch.randn_like(x) for _ in range(3)] + [x]
    outs = []
    for lower in (False, True):
        prepared = quantplug.prepare_pt2e(model, quantizer, (x,))
        calibrate(prepared, data)
        outs.append(quantplug.convert_pt2e(prepared, lower=lower))
    return outs


@pytest.mark.parametrize("model_fn,shape", [(MLP, (5, 32)), (SmallCNN, (2, 3, 12, 12))])
def test_lowered_matches_reference_within_one_step(refkernels, model_fn, shape):
    x = torch.randn(*shape)
    ref, lowered = _convert_both(model_fn(), x, _Quantizer())
    report = quantplug.explain(lowered)
    assert len(report.kernels) >= 2
    assert not any(r.op in ("linear", "conv2d") for r in report.not_lowered)
    diff = (lowered(x) - ref(x)).abs()
    assert diff.max() <= _output_step(ref) * 1.0001
    assert (diff > 0).float().mean() < 0.2  # rounding ties are rare, not systematic


def test_lowered_model_exports_and_keeps_batch_dynamic(refkernels):
    x = torch.randn(4, 32)
    _, lowered = _convert_both(MLP(), x, _Quantizer())
    ep = torch.export.export(lowered, (x,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert "quantplug.linear.default" in targets
    for b in (1, 7):
        y = torch.randn(b, 32)
        torch.testing.assert_close(ep.module()(y), lowered(y))


def test_dynamic_linear_lowered(refkernels):
    x = torch.randn(6, 32)
    ref, lowered = _convert_both(MLP(), x, _Quantizer(is_dynamic=True))
    assert [r.op for r in quantplug.explain(lowered).kernels] == ["linear_dynamic", "linear_dynamic"]
    torch.testing.assert_close(lowered(x), ref(x), rtol=1e-5, atol=1e-5)


def test_weights_not_left_in_fp32_after_lowering(refkernels):
    x = torch.randn(4, 32)
    _, lowered = _convert_both(MLP(), x, _Quantizer())
    fp32_matrices = [k for k, v in lowered.state_dict().items() if v.dtype == torch.float32 and v.dim() == 2]
    assert fp32_matrices == []


def test_lowered_model_pickles(refkernels, tmp_path):
    x = torch.randn(4, 32)
    _, lowered = _convert_both(MLP(), x, _Quantizer())
    torch.save(lowered, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    torch.testing.assert_close(loaded(x), lowered(x), rtol=0, atol=0)
