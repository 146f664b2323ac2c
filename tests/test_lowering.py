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
from quantplug.direct_calls import op_of
from quantplug.registry import ENV_DISABLE_AUTOLOAD
from tests import refkernels_backend as refk
from tests.models import MLP, SmallCNN, calibrate

torch.manual_seed(0)


_Quantizer = refk.RefkQuantizer


@pytest.fixture
def refkernels(fresh_registry, monkeypatch):
    monkeypatch.setenv(ENV_DISABLE_AUTOLOAD, "1")
    refk.register()
    from quantplug import lowering

    lowering._kernels.cache_clear()
    yield quantplug.get_backend(refk.NAME)
    lowering._kernels.cache_clear()


def _output_step(reference_model):
    qs = [n for n in reference_model.graph.nodes if op_of(n.target) == torch.ops.quantplug.quantize_per_tensor.default]
    return qs[-1].args[1]


def _convert_both(model, x, quantizer, modes=(False, True)):
    model = model.eval()
    data = [torch.randn_like(x) for _ in range(3)] + [x]
    outs = []
    for lower in modes:
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
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}  # the op itself, not its direct call
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
    # unpickling re-traces the code: the linears must stay direct calls, not fall back to the op
    from quantplug.direct_calls import direct_call

    assert sum(n.target is direct_call(torch.ops.quantplug.linear.default) for n in loaded.graph.nodes) == 2


def test_every_pattern_of_ops_cnn_lowered_within_one_step(refkernels):
    # conv1d (as a 1xL conv2d), depthwise conv, conv-bn-relu6 (relu6 implied by the output
    # qparams), add+relu, cat with shared qparams: all lowered; the reference kernels have no
    # mul or pool kernels, so those stay in reference form with a reason.
    from tests.models import OpsCNN

    x = torch.randn(2, 3, 8, 8)
    ref, lowered = _convert_both(OpsCNN(size=8), x, _Quantizer())
    report = quantplug.explain(lowered)
    details = " | ".join(r.detail for r in report.kernels)
    for expected in ("conv2d+hardtanh", "depthwise conv2d", "conv1d (as 1xL conv2d)", "add+relu", "integer cat", "linear"):
        assert expected in details, f"{expected!r} not lowered:\n{report}"
    not_lowered = {r.op: r.detail for r in report.not_lowered}
    assert not_lowered["mul"].startswith("op unsupported by backend") and "mul" in not_lowered["mul"]
    assert not any(r.op in ("conv2d", "conv1d", "linear", "add", "cat") for r in report.not_lowered)
    diff = (lowered(x) - ref(x)).abs()
    assert diff.max() <= _output_step(ref) * 1.0001


class _ClampNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.clamp(self.conv(x), min=0.5)  # cuts inside the quantized range: not a relu


def test_clamp_not_implied_by_qparams_stays_reference_with_reason(refkernels):
    x = torch.randn(2, 3, 8, 8)
    ref, lowered = _convert_both(_ClampNet(), x, _Quantizer())
    row = next(r for r in quantplug.explain(lowered).rows if r.op == "conv2d")
    assert row.runs_as == "reference" and row.reason == "constraint violated" and "hardtanh" in row.detail
    torch.testing.assert_close(lowered(x), ref(x))


def test_explain_gives_a_reason_for_every_node_not_lowered(refkernels):
    from tests.models import AttentionBlock

    x = torch.randn(2, 5, 32)
    q = _Quantizer().set_module_name("fc2", None)
    (lowered,) = _convert_both(AttentionBlock(), x, q, modes=(True,))
    report = quantplug.explain(lowered)
    rows = {r.node: r for r in report.rows}
    from quantplug.explain import REASONS

    assert {r.reason for r in report.not_lowered} <= set(REASONS)
    assert all(r.reason is not None and ":" in r.detail for r in report.not_lowered)
    by_op = {}
    for r in report.not_lowered:
        by_op.setdefault(r.op, set()).add(r.reason)
    assert by_op["softmax"] == {"no pattern"}
    assert "op unsupported by backend" in by_op["matmul"]  # annotated, no int8 matmul kernel
    assert "no pattern" in by_op["mul"]  # the tensor * scalar scaling
    fc2 = [r for r in rows.values() if r.op == "linear" and r.reason == "excluded by config"]
    assert len(fc2) == 1
    assert sum(r.op == "linear" for r in report.kernels) == 5


def test_lowered_model_runs_under_torch_compile(refkernels):
    x = torch.randn(4, 32)
    (lowered,) = _convert_both(MLP(), x, _Quantizer(), modes=(True,))
    compiled = torch.compile(lowered, backend="aot_eager", fullgraph=True)
    for b in (4, 9):
        y = torch.randn(b, 32)
        torch.testing.assert_close(compiled(y), lowered(y), rtol=0, atol=0)


def test_packed_objects_are_reused_per_call_and_not_leaked(refkernels, monkeypatch):
    import copy
    import gc
    import weakref

    from quantplug import lowering

    built = []
    unflatten = lowering.unflatten_packed
    monkeypatch.setattr(lowering, "unflatten_packed", lambda *a: built.append(1) or unflatten(*a))
    x = torch.randn(4, 32)
    (lowered,) = _convert_both(MLP(), x, _Quantizer(), modes=(True,))
    y = lowered(x)
    lowered(x)
    assert built == []  # lowering's own packed objects are reused on every call
    node = next(n for n in lowered.graph.nodes if op_of(n.target) == torch.ops.quantplug.linear.default)
    tensors = [getattr(lowered, a.target) for a in node.args[3]]
    first = lowering._packed_object(refk.NAME, "linear", tensors)
    other = [t.clone() for t in tensors[:1]] + tensors[1:]  # one different tensor: no hit
    assert lowering._packed_object(refk.NAME, "linear", other) is not first
    copied = copy.deepcopy(lowered)  # a copy rebuilds once per op, then reuses
    built.clear()
    for _ in range(3):
        torch.testing.assert_close(copied(x), y, rtol=0, atol=0)
    assert len(built) == 2
    ref = weakref.ref(tensors[0])
    del lowered, copied, node, tensors, first, other
    gc.collect()
    assert ref() is None, "a packed-object cache keeps a dropped model's weights alive"


class _NarrowActQuantizer(refk.RefkQuantizer):
    """int8 activations over -64..63 only (as x86_onednn's ``reduce_range`` narrows 0..255 to 0..127)."""

    def __init__(self) -> None:
        super().__init__()
        from quantplug.annotators import make_quantization_config

        self.set_global(make_quantization_config(act_dtype=torch.int8, weight_dtype=torch.int8,
                                                 act_range=(-64, 63), weight_range=(-127, 127)))


def test_quantize_range_narrower_than_the_kernels_gets_an_integer_clamp(refkernels):
    # The kernels clamp to -128..127; the quantize nodes ask for -64..63. Without a clamp after
    # each kernel, inputs beyond the calibrated range would give values the reference never can.
    x = torch.randn(4, 32)
    ref, lowered = _convert_both(MLP(), x, _NarrowActQuantizer())
    report = quantplug.explain(lowered)
    assert [r.op for r in report.kernels if r.op == "linear"] == ["linear", "linear"]
    assert any("clamp to the output's quantized range -64..63" in r.detail for r in report.rows), report
    big = x * 20
    assert float((lowered(big) - ref(big)).abs().max()) <= _output_step(ref) * 1.0001
    q_out = [n for n in lowered.graph.nodes if n.target == torch.ops.aten.clamp.default]
    assert q_out, "no clamp node after the kernels"


@pytest.fixture
def narrow_refkernels(fresh_registry, monkeypatch):
    """refk whose kernels clamp to -100..100: narrower than the quantizer's -128..127."""
    monkeypatch.setenv(ENV_DISABLE_AUTOLOAD, "1")
    kernels = refk.StrictReferenceKernels(act_range=(-100, 100))
    quantplug.register_plugin(refk.make_plugin(kernels=kernels), name="refk-narrow", distribution=refk.DISTRIBUTION)
    from quantplug import lowering

    lowering._kernels.cache_clear()
    yield quantplug.get_backend(refk.NAME)
    lowering._kernels.cache_clear()


def test_quantize_range_wider_than_the_kernels_stays_reference_with_reason(narrow_refkernels):
    x = torch.randn(4, 32)
    ref, lowered = _convert_both(MLP(), x, _Quantizer())
    report = quantplug.explain(lowered)
    reasons = [r.detail for r in report.not_lowered if r.op == "linear"]
    assert len(reasons) == 2 and all("-128..127" in d and "-100..100" in d for d in reasons), report
    torch.testing.assert_close(lowered(x * 20), ref(x * 20), rtol=0, atol=0)


def test_lowered_graph_calls_kernels_without_the_dispatcher(refkernels):
    # Each lowered node targets its op's direct-call function: in eager execution the op's CPU
    # implementation runs straight away (the dispatcher's argument boxing costs ~8 us per call
    # for quantplug::linear); an op-level TorchDispatchMode therefore never sees quantplug ops.
    from torch.utils._python_dispatch import TorchDispatchMode

    from quantplug.direct_calls import direct_call, use_direct_calls

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    x = torch.randn(4, 32)
    _, lowered = _convert_both(MLP(), x, _Quantizer())
    linears = [n for n in lowered.graph.nodes if op_of(n.target) == torch.ops.quantplug.linear.default]
    assert len(linears) == 2 and all(n.target is direct_call(torch.ops.quantplug.linear.default) for n in linears)
    with Recorder() as rec:
        y = lowered(x)
    assert "quantplug.linear.default" not in rec.ops, rec.ops  # (refk's reference quantize still dispatches)
    # the same graph calling the ops through the dispatcher gives the same bits
    for n in lowered.graph.nodes:
        n.target = op_of(n.target)
    lowered.recompile()
    with Recorder() as rec:
        assert torch.equal(lowered(x), y)
    assert "quantplug.linear.default" in rec.ops
    assert use_direct_calls(lowered) == 2 and torch.equal(lowered(x), y)  # both linears switched back


def test_direct_call_of_a_missing_plugin_names_it():
    import quantplug.direct_calls as dc

    with pytest.raises(AttributeError, match="quantplug_nosuchplugin.*not installed"):
        getattr(dc, "quantplug_nosuchplugin__linear__default")


def test_lowered_bias_is_a_plain_tensor_owned_by_the_converted_model(refkernels):
    # Kernel wrappers' fast paths test `type(t) is Tensor`: an nn.Parameter bias sent x86_onednn's
    # linear down its checked path (~20 us per call). And training the float model afterwards
    # must not change the converted one.
    model, x = MLP().eval(), torch.randn(4, 32)
    prepared = quantplug.prepare_pt2e(model, _Quantizer(), (x,))
    prepared(x)
    lowered = quantplug.convert_pt2e(prepared)
    assert [name for name, _ in lowered.named_parameters()] == []  # constants are buffers, not parameters
    biases = {k: v for k, v in lowered.named_buffers() if k.endswith("_bias_fp32")}
    assert len(biases) == 2 and all(type(v) is torch.Tensor for v in biases.values())
    y = lowered(x)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert torch.equal(lowered(x), y)
