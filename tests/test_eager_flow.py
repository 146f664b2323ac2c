"""The eager flow on the core alone: configs, quantize_, module handlers, quantized modules.

Runs in the ``core`` tox env (no plugin installed), so every test names
``backend="reference"`` or registers a small fake backend whose "kernels" are
:class:`quantplug.reference_kernels.ReferenceKernels` (pure PyTorch with the
kernel API), which is enough to exercise the plugin-kernel code paths.
"""

from __future__ import annotations

import copy
import io
import json
import logging
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import quantplug
from quantplug import configs as qc
from quantplug.affine import choose_qparams, dequantize_affine, quantize_affine
from quantplug.annotators import PatternQuantizer, make_quantization_config
from quantplug.builtin_plugin import reference_backend_config
from quantplug.errors import BackendConflictError, CalibrationError, KernelInputError, QuantplugError
from quantplug.reference_kernels import ReferenceKernels

torch.manual_seed(0)


# ---------------------------------------------------------------- fakes --


class PerTensorKernels(ReferenceKernels):
    """A 'plugin' kernel library (pure PyTorch) that, like fbgemm, has no per-row dynamic mode."""

    name = "fake.per_tensor_kernels"

    def linear_dynamic(self, x, packed, bias, per_row=False):
        """Per-tensor only, as fbgemm / qnnpack."""
        if per_row:
            raise KernelInputError("fake.linear_dynamic: per_row=True is not supported")
        return super().linear_dynamic(x, packed, bias, per_row=False)


class NoConvKernels(PerTensorKernels):
    """A kernel library without the int8 conv ops (as xnnpack's today)."""

    pack_conv2d_weight = None
    conv2d = None


class FakeU8Quantizer(PatternQuantizer):
    """uint8 reduce-range activations (0..127), int8 symmetric weights: fbgemm-like numbers."""

    backend_name = "fakeu8"

    def __init__(self, *, is_per_channel=True, is_dynamic=False, is_qat=False):
        super().__init__(make_quantization_config(
            act_dtype=torch.uint8, act_range=(0, 127), weight_dtype=torch.int8, weight_range=(-128, 127),
            weight_per_channel=is_per_channel, is_dynamic=is_dynamic, is_qat=is_qat), reference_backend_config())


class FakePlugin:
    """Registers ``fakeu8`` (kernels without int4 / weight-only, no weight_only mode), ``fakewo``, ``fakenoconv``."""

    @quantplug.hookimpl
    def quantplug_register_backends(self, register):
        register(quantplug.Backend(
            name="fakeu8", distribution="fake-u8", version="1.0", description="test backend",
            quantizer_factory=FakeU8Quantizer, backend_config=reference_backend_config(),
            modes=("static", "dynamic", "qat"),
            kernels=PerTensorKernels(act_dtype=torch.uint8, act_range=(0, 127))))
        register(quantplug.Backend(
            name="fakewo", distribution="fake-u8", version="1.0", description="weight-only mode, no int4 kernel",
            quantizer_factory=FakeU8Quantizer, backend_config=reference_backend_config(),
            modes=("dynamic", "weight_only"), kernels=PerTensorKernels(act_dtype=torch.uint8, act_range=(0, 127))))
        register(quantplug.Backend(
            name="fakenoconv", distribution="fake-u8", version="1.0", description="no int8 conv kernel",
            quantizer_factory=FakeU8Quantizer, backend_config=reference_backend_config(),
            modes=("static", "dynamic", "qat"), kernels=NoConvKernels(act_dtype=torch.uint8, act_range=(0, 127))))


@pytest.fixture
def fake_backend(fresh_registry):
    """The ``fakeu8`` backend registered explicitly (cleared after the test)."""
    quantplug.register_plugin(FakePlugin(), name="fakeu8-plugin", distribution="fake-u8")
    yield quantplug.get_backend("fakeu8")


def mlp():
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16))


def all_linear_types(model):
    return [type(m).__name__ for m in model.modules() if not isinstance(m, (nn.Sequential, nn.ReLU))]


# -------------------------------------------------------------- configs --


ALL_CONFIGS = [
    qc.Int8DynamicActivationInt8WeightConfig(per_row=False, embeddings=True),
    qc.Int8WeightOnlyConfig(group_size=32),
    qc.Int4WeightOnlyConfig(group_size=64),
    qc.Int8StaticActivationInt8WeightConfig(act_observer="minmax", modules_to_fuse=[["a", "b"]]),
    qc.QATConfig(target="weight_only", weight_dtype="int4", group_size=32, learn_ranges=True),
]


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda c: type(c).__name__)
def test_config_json_round_trip(config):
    text = json.dumps(config.to_dict())
    back = qc.BaseConfig.from_dict(json.loads(text))
    assert back == config and type(back) is type(config)
    assert json.loads(text)["_version"] == type(config).VERSION


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="group_size=48"):
        qc.Int4WeightOnlyConfig(group_size=48)
    with pytest.raises(ValueError, match="act_observer"):
        qc.Int8StaticActivationInt8WeightConfig(act_observer="kl")
    with pytest.raises(ValueError, match="target='weight_only'"):
        qc.QATConfig(weight_dtype="int4", group_size=32)
    with pytest.raises(ValueError, match="per_row must be True or False"):
        qc.Int8DynamicActivationInt8WeightConfig(per_row="yes")
    with pytest.raises(ValueError, match="modules_to_fuse"):
        qc.QATConfig(modules_to_fuse=["conv"])


def test_from_dict_rejects_newer_versions_and_unknown_fields():
    d = qc.Int4WeightOnlyConfig().to_dict()
    with pytest.raises(ValueError, match="upgrade quantplug"):
        qc.BaseConfig.from_dict({**d, "_version": 99})
    with pytest.raises(ValueError, match="unknown field"):
        qc.BaseConfig.from_dict({**d, "bits": 3})
    with pytest.raises(ValueError, match="unknown config type"):
        qc.BaseConfig.from_dict({"_type": "NoSuchConfig"})


def test_snake_case_aliases_build_the_configs():
    assert qc.int4_weight_only(group_size=32) == qc.Int4WeightOnlyConfig(group_size=32)
    assert qc.int8_weight_only() == qc.Int8WeightOnlyConfig()
    assert qc.int8_dynamic_activation_int8_weight() == qc.Int8DynamicActivationInt8WeightConfig()


def test_alias_function_passed_uncalled_says_call_it():
    with pytest.raises(TypeError, match=r"call it, quantize_\(model, int8_weight_only\(\)\)"):
        quantplug.quantize_(mlp(), quantplug.int8_weight_only, backend="reference")


def test_old_style_callable_says_what_to_pass():
    def apply_fn(module):
        return module

    with pytest.raises(TypeError, match="register_quantize_module_handler"):
        quantplug.quantize_(mlp(), apply_fn, backend="reference")
    with pytest.raises(TypeError, match="pass an instance"):
        quantplug.quantize_(mlp(), qc.Int8WeightOnlyConfig, backend="reference")


def test_unregistered_config_is_a_keyerror_naming_the_decorator(fresh_registry):
    @dataclass
    class NotRegistered(qc.BaseConfig):
        bits: int = 2

    with pytest.raises(KeyError) as err:
        quantplug.quantize_(mlp(), NotRegistered(), backend="reference")
    assert isinstance(err.value, qc.ConfigNotRegisteredError)
    assert "register_quantize_module_handler(NotRegistered)" in str(err.value)


def test_user_config_registered_with_the_decorator(fresh_registry):
    @dataclass
    class HalfConfig(qc.BaseConfig):
        """Store Linear weights in float16 (a toy user config)."""

    seen = []

    @quantplug.register_quantize_module_handler(HalfConfig)
    def _half(module, config, backend):
        seen.append(type(module))
        out = copy.deepcopy(module).half().float()
        return out

    assert quantplug.get_config_transform(HalfConfig) is _half  # same registry as the plugin hook
    model = mlp()
    info = quantplug.quantize_(model, HalfConfig(), backend="reference")
    assert set(seen) == {nn.Linear}  # default filter: module_types = (nn.Linear,)
    assert sorted(info.swapped) == ["0", "2"]
    with pytest.raises(BackendConflictError, match="registered twice"):
        quantplug.register_quantize_module_handler(HalfConfig)(_half)
        quantplug.get_backend("reference")


# ---------------------------------------------------------- backend choice --


def test_backend_none_picks_reference_without_plugins_and_logs_it(fresh_registry, monkeypatch):
    monkeypatch.setenv("QUANTPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("quantplug.eager")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        model = mlp()
        info = quantplug.quantize_(model, quantplug.Int8DynamicActivationInt8WeightConfig())
    finally:
        log.removeHandler(handler)
    assert info.backend == "reference" and "best installed backend" in info.backend_reason
    assert model.quantplug_info is info
    assert any("'reference'" in r.getMessage() for r in records)


def test_explicit_backend_always_wins(fake_backend):
    info = quantplug.quantize_(mlp(), quantplug.Int8DynamicActivationInt8WeightConfig(), backend="fakeu8")
    assert info.backend == "fakeu8" and info.backend_reason == "explicit"


def test_capability_errors_come_before_any_change(fake_backend):
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(qc.BackendCapabilityError, match="does not offer the 'weight_only' mode"):
        quantplug.quantize_(model, quantplug.Int8WeightOnlyConfig(), backend="fakeu8")
    with pytest.raises(qc.BackendCapabilityError, match="no int4 weight-only linear kernel"):
        quantplug.quantize_(model, quantplug.Int4WeightOnlyConfig(group_size=32), backend="fakewo")
    with pytest.raises(qc.BackendCapabilityError, match="lacks linear_weight_only"):
        quantplug.quantize_(model, quantplug.Int8WeightOnlyConfig(), backend="fakewo")
    assert all(type(m) in (nn.Sequential, nn.Linear, nn.ReLU) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_missing_layer_kernels_are_refused_before_any_change(fake_backend):
    """A plugin backend never silently runs a layer as PyTorch reference code."""
    model = nn.Sequential(nn.Linear(8, 8), nn.Conv2d(3, 4, 3), nn.EmbeddingBag(10, 8))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(qc.BackendCapabilityError, match=r"no kernel for int8 Conv2d.*filter_fn"):
        quantplug.quantize_(model, quantplug.Int8StaticActivationInt8WeightConfig(), backend="fakenoconv")
    with pytest.raises(qc.BackendCapabilityError, match=r"no kernel for int8 Conv2d"):
        quantplug.prepare_qat(model, quantplug.QATConfig(), backend="fakenoconv")
    with pytest.raises(qc.BackendCapabilityError, match=r"int8 EmbeddingBag\(10, 8\).*embeddings=None"):
        quantplug.quantize_(model, quantplug.Int8DynamicActivationInt8WeightConfig(embeddings=True), backend="fakeu8")
    assert [type(m) for m in model] == [nn.Linear, nn.Conv2d, nn.EmbeddingBag]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the fix the messages suggest works: convs excluded, embeddings auto (float without a kernel)
    quantplug.quantize_(model, quantplug.Int8StaticActivationInt8WeightConfig(), backend="fakenoconv",
                        filter_fn=lambda m, name: not isinstance(m, nn.Conv2d))
    assert [type(m).__name__ for m in model] == ["ObservedLinear", "Conv2d", "EmbeddingBag"]
    model = nn.Sequential(nn.Linear(8, 8), nn.EmbeddingBag(10, 8))
    info = quantplug.quantize_(model, quantplug.Int8DynamicActivationInt8WeightConfig(embeddings=None),
                               backend="fakeu8")
    assert info.swapped == {"0": "DynamicLinear"}


def test_module_level_error_leaves_model_untouched():
    model = nn.Sequential(nn.Linear(64, 8), nn.Linear(8, 100))  # second: 8 is not a multiple of 32
    with pytest.raises(QuantplugError, match="in_features=8"):
        quantplug.quantize_(model, quantplug.Int4WeightOnlyConfig(group_size=32), backend="reference")
    assert [type(m) for m in model] == [nn.Linear, nn.Linear]


def test_root_module_cannot_be_replaced():
    with pytest.raises(QuantplugError, match="nn.Sequential"):
        quantplug.quantize_(nn.Linear(4, 4), quantplug.Int8DynamicActivationInt8WeightConfig(), backend="reference")


def test_filter_fn_and_multihead_attention_out_proj():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
            self.fc = nn.Linear(16, 16)
            self.head = nn.Linear(16, 4)

        def forward(self, x):
            return self.head(self.fc(self.attn(x, x, x)[0]))

    model = Block()
    x = torch.randn(2, 5, 16)
    ref = model(x)
    info = quantplug.quantize_(model, quantplug.Int8DynamicActivationInt8WeightConfig(), backend="reference",
                               filter_fn=lambda m, name: name != "head")
    assert set(info.swapped) == {"fc"}  # MHA reads out_proj.weight directly: it must stay float
    assert type(model.attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    assert (model(x) - ref).abs().max() < 0.05


# ------------------------------------------------------------ dynamic modules --


def _expected_dynamic(x, lin, per_row, act=(-128, 127), w_range=(-127, 127)):
    """Independent computation: per-channel symmetric weights, asymmetric activations."""
    w = lin.weight.detach()
    ws, wz = choose_qparams(w.amin(1), w.amax(1), quant_min=w_range[0], quant_max=w_range[1], symmetric=True)
    w_q = quantize_affine(w, ws, wz, quant_min=w_range[0], quant_max=w_range[1], dtype=torch.int8, axis=0)
    flat = x.reshape(-1, x.shape[-1])
    mn, mx = (flat.amin(1), flat.amax(1)) if per_row else (flat.amin(), flat.amax())
    xs, xz = choose_qparams(mn, mx, quant_min=act[0], quant_max=act[1], symmetric=False)
    xs, xz = xs.reshape(-1, 1), xz.reshape(-1, 1)
    x_q = (torch.round(flat * torch.reciprocal(xs)) + xz).clamp(*act)
    acc = (x_q.double() - xz) @ w_q.double().t()
    return (acc * (xs.double() * ws.double()) + lin.bias.double()).float()


@pytest.mark.parametrize("per_row", [True, False])
def test_dynamic_linear_matches_independent_integer_math(per_row):
    model = mlp()
    x = torch.randn(6, 32) * torch.logspace(-1, 1, 6).reshape(-1, 1)  # rows with very different ranges
    expected = _expected_dynamic(x, model[0], per_row)
    quantplug.quantize_(model, quantplug.Int8DynamicActivationInt8WeightConfig(per_row=per_row), backend="reference")
    out = model[0](x)
    assert torch.allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_per_row_is_more_accurate_on_rows_with_different_ranges():
    base = mlp()
    x = torch.randn(8, 32) * torch.logspace(-2, 1, 8).reshape(-1, 1)
    ref = base[0](x)
    errs = {}
    for per_row in (True, False):
        m = copy.deepcopy(base)
        quantplug.quantize_(m, quantplug.Int8DynamicActivationInt8WeightConfig(per_row=per_row), backend="reference")
        errs[per_row] = ((m[0](x) - ref).abs() / ref.abs().amax(1, keepdim=True)).amax(1)[0].item()
    assert errs[True] < errs[False] / 5  # the small-range row is crushed by per-tensor scaling


def test_per_tensor_kernel_gets_per_row_accuracy_by_row_equalization(fake_backend):
    base = mlp()
    x = torch.randn(8, 32) * torch.logspace(-2, 1, 8).reshape(-1, 1)
    ref = base[0](x)
    m = copy.deepcopy(base)
    quantplug.quantize_(m, quantplug.Int8DynamicActivationInt8WeightConfig(per_row=True), backend="fakeu8")
    assert m[0].row_equalize and "rows equalized" in repr(m[0]) and "fakeu8 dynamic int8 linear kernel" in repr(m[0])
    m_t = copy.deepcopy(base)
    quantplug.quantize_(m_t, quantplug.Int8DynamicActivationInt8WeightConfig(per_row=False), backend="fakeu8")
    rel = lambda out: ((out - ref).abs() / ref.abs().amax(1, keepdim=True)).amax().item()  # noqa: E731
    assert rel(m[0](x)) < rel(m_t[0](x)) / 5
    assert rel(m[0](x)) < 0.03  # 7-bit activations (0..127), per-row resolution


def test_constant_rows_are_exact_under_row_equalization(fake_backend):
    m = mlp()
    quantplug.quantize_(m, quantplug.Int8DynamicActivationInt8WeightConfig(per_row=True), backend="fakeu8")
    x = torch.full((3, 32), 0.75)
    ref = F.linear(x, _dequant_from(m[0]), m[0].bias)
    assert torch.allclose(m[0](x), ref, atol=1e-5)


def _dequant_from(mod):
    p = mod._packed("packed")
    return (p.weight.float() - p.zero_points.float().reshape(-1, 1)) * p.scales.reshape(-1, 1)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_dynamic_recurrent_layers_track_float(kind):
    cls = nn.LSTM if kind == "lstm" else nn.GRU
    rnn = cls(12, 20, num_layers=2, bidirectional=True, batch_first=True)
    model = nn.Sequential(rnn)
    x = torch.randn(3, 9, 12)
    h0 = torch.randn(4, 3, 20)
    hx = (h0, torch.randn(4, 3, 20)) if kind == "lstm" else h0
    ref_out, ref_h = rnn(x, hx)
    quantplug.quantize_(model, quantplug.Int8DynamicActivationInt8WeightConfig(), backend="reference")
    assert type(model[0]).__name__ == ("DynamicLSTM" if kind == "lstm" else "DynamicGRU")
    out, h = model[0](x, hx)
    assert out.shape == ref_out.shape and (out - ref_out).abs().max() < 0.02
    hs, ref_hs = (h, ref_h) if kind == "lstm" else ((h,), (ref_h,))
    for a, b in zip(hs, ref_hs):
        assert a.shape == b.shape and (a - b).abs().max() < 0.03
    unbatched, _ = model[0](x[0])  # unbatched input, default zero state
    assert unbatched.shape == (9, 40)


@pytest.mark.parametrize("cls", [nn.LSTMCell, nn.GRUCell, nn.RNNCell])
def test_dynamic_cells_track_float(cls):
    model = nn.Sequential(cls(10, 14))
    x = torch.randn(4, 10)
    ref = model[0](x)
    quantplug.quantize_(model, quantplug.Int8DynamicActivationInt8WeightConfig(), backend="reference")
    out = model[0](x)
    a, b = (out[0], ref[0]) if isinstance(out, tuple) else (out, ref)
    assert type(model[0]).__name__.startswith("Dynamic") and (a - b).abs().max() < 0.02


# --------------------------------------------------------- weight-only modules --


def test_int8_weight_only_equals_float_linear_with_dequantized_weight():
    model = nn.Sequential(nn.Linear(64, 24))
    x = torch.randn(5, 64)
    quantplug.quantize_(model, quantplug.Int8WeightOnlyConfig(), backend="reference")
    mod = model[0]
    assert mod.weight_q.dtype == torch.int8
    assert torch.equal(mod(x), F.linear(x, mod.dequantized_weight(), mod.bias))
    grouped = nn.Sequential(nn.Linear(64, 24))
    quantplug.quantize_(grouped, quantplug.Int8WeightOnlyConfig(group_size=16), backend="reference")
    assert grouped[0].weight_scales.shape == (24, 4)


def test_int4_weight_only_packs_two_per_byte_and_matches_reference():
    lin = nn.Linear(128, 12)
    model = nn.Sequential(lin)
    w = lin.weight.detach().clone()
    x = torch.randn(3, 128)
    quantplug.quantize_(model, quantplug.Int4WeightOnlyConfig(group_size=32), backend="reference")
    mod = model[0]
    assert mod.weight_packed.dtype == torch.uint8 and mod.weight_packed.shape == (12, 64)
    g = w.reshape(12, 4, 32)
    scale = g.abs().amax(-1) / 7.5
    assert torch.allclose(mod.weight_scales, scale, rtol=1e-6)
    deq = mod.dequantized_weight()
    assert (deq - w).abs().max() <= scale.max() / 2 + 1e-6  # every weight within half a step
    assert torch.allclose(mod(x), F.linear(x, deq, lin.bias), atol=1e-5)


def test_quantized_embedding_and_bag_are_exact_on_dequantized_rows():
    emb = nn.Embedding(40, 8, padding_idx=0)
    bag = nn.EmbeddingBag(40, 8, mode="sum", padding_idx=3)
    model = nn.Sequential(emb, bag)
    quantplug.quantize_(model, quantplug.Int8WeightOnlyConfig(), backend="reference")
    q_emb, q_bag = model[0], model[1]
    idx = torch.tensor([[0, 5, 39], [7, 7, 1]])
    assert torch.equal(q_emb(idx), F.embedding(idx, q_emb.dequantized_weight()))
    assert torch.equal(q_emb(torch.tensor([0])), torch.zeros(1, 8))  # padding row stays exactly zero
    inp, off = torch.tensor([1, 3, 9, 9, 20, 3]), torch.tensor([0, 2, 5])
    psw = torch.rand(6)
    expected = F.embedding_bag(inp, q_bag.dequantized_weight(), off, mode="sum", per_sample_weights=psw,
                               padding_idx=3)
    assert torch.allclose(q_bag(inp, off, psw), expected, atol=1e-6)
    for mode in ("mean", "max"):
        b = nn.Sequential(nn.EmbeddingBag(40, 8, mode=mode))
        quantplug.quantize_(b, quantplug.Int8WeightOnlyConfig(), backend="reference")
        exp = F.embedding_bag(inp, b[0].dequantized_weight(), off, mode=mode)
        assert torch.allclose(b[0](inp, off), exp, atol=1e-6)


def test_int4_embedding_rows_pack_two_per_byte_and_stay_within_half_a_step():
    torch.manual_seed(0)
    emb = nn.Embedding(30, 12, padding_idx=2)
    bag = nn.EmbeddingBag(30, 12, mode="mean")
    model = nn.Sequential(emb, bag)
    w_emb, w_bag = emb.weight.detach().clone(), bag.weight.detach().clone()
    cfg = quantplug.Int8WeightOnlyConfig(embeddings=True, embedding_bits=4)
    info = quantplug.quantize_(model, cfg, backend="reference")
    assert info.swapped == {"0": "QuantizedEmbedding", "1": "QuantizedEmbeddingBag"}
    q_emb, q_bag = model
    assert q_emb.weight_q.dtype == torch.uint8 and q_emb.weight_q.shape == (30, 6)
    assert "int4 asymmetric per-row (packed 2/byte)" in repr(q_emb)
    for q, w in ((q_emb, w_emb), (q_bag, w_bag)):
        # 16 codes per row; the all-zero padding row gets the smallest scale (float32 eps)
        step = ((w.amax(1).clamp(min=0) - w.amin(1).clamp(max=0)) / 15).clamp(min=torch.finfo(torch.float32).eps)
        assert torch.allclose(q.weight_scales, step, rtol=1e-6)
        assert ((q.dequantized_weight() - w).abs() <= q.weight_scales[:, None] / 2 + 1e-6).all()
    idx = torch.tensor([[0, 2, 29], [7, 7, 1]])
    assert torch.equal(q_emb(idx), F.embedding(idx, q_emb.dequantized_weight()))
    assert torch.equal(q_emb(torch.tensor([2])), torch.zeros(1, 12))  # padding row stays exactly zero
    inp, off = torch.tensor([1, 3, 9, 9, 20, 3]), torch.tensor([0, 2, 5])
    assert torch.allclose(q_bag(inp, off), F.embedding_bag(inp, q_bag.dequantized_weight(), off, mode="mean"),
                          atol=1e-6)


def test_int4_embeddings_need_an_even_dim_and_valid_bits():
    model = nn.Sequential(nn.Embedding(10, 5), nn.Embedding(10, 6))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(quantplug.QuantplugError, match=r"Embedding\(10, 5\).*embedding_dim must be even"):
        quantplug.quantize_(model, quantplug.Int8WeightOnlyConfig(embeddings=True, embedding_bits=4),
                            backend="reference")
    assert [type(m) for m in model] == [nn.Embedding, nn.Embedding]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # auto mode keeps the odd table float and quantizes the even one
    info = quantplug.quantize_(model, quantplug.Int8WeightOnlyConfig(embeddings=None, embedding_bits=4),
                               backend="reference")
    assert info.swapped == {"1": "QuantizedEmbedding"} and model[1].bits == 4
    for bad in (2, 16, True, "4"):
        with pytest.raises(ValueError, match="embedding_bits must be 8"):
            quantplug.Int8WeightOnlyConfig(embedding_bits=bad).validate()


def test_dynamic_config_leaves_embeddings_float_unless_asked():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4))
    info = quantplug.quantize_(model, quantplug.Int8DynamicActivationInt8WeightConfig(), backend="reference")
    assert set(info.swapped) == {"1"}
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4))
    info = quantplug.quantize_(model, quantplug.Int8DynamicActivationInt8WeightConfig(embeddings=True),
                               backend="reference")
    assert info.swapped == {"0": "QuantizedEmbedding", "1": "DynamicLinear"}


# ---------------------------------------------------------------- static flow --


class ConvNet(nn.Module):
    """conv-bn-relu (functional relu), a conv1d, linear-relu (module), a plain linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c1 = nn.Conv1d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 8, 16)
        self.act = nn.ReLU()
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x))).mean(2)
        y = self.c1(y)
        return self.out(self.act(self.fc(y.flatten(1))))


def _convnet():
    m = ConvNet().eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.3, 0.3)
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn.weight.uniform_(0.5, 1.5)
    return m


def test_static_flow_fuses_calibrates_and_converts():
    model = _convnet()
    x = torch.randn(32, 3, 8, 8)
    ref = model(x)
    info = quantplug.quantize_(model, quantplug.Int8StaticActivationInt8WeightConfig(), backend="reference")
    assert ["conv", "bn"] in info.fused and ["fc", "act"] in info.fused
    assert type(model.bn) is nn.Identity and type(model.act) is nn.Identity
    assert model.conv.relu and model.fc.relu and not model.out.relu
    with pytest.raises(CalibrationError, match="conv.input_observer"):
        quantplug.convert(model)
    with torch.no_grad():
        model(x)
    quantplug.convert(model)
    assert model.quantplug_info.stage == "converted"
    assert [type(model.conv).__name__, type(model.c1).__name__, type(model.fc).__name__] == [
        "QuantizedConv2d", "QuantizedConv1d", "QuantizedLinear"]
    out = model(x)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_static_linear_equals_reference_kernel_computation():
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU())
    x = torch.randn(20, 16)
    quantplug.quantize_(model, quantplug.Int8StaticActivationInt8WeightConfig(act_observer="minmax"),
                        backend="reference")
    with torch.no_grad():
        model(x)
    obs = model[0]
    in_q = [float(v) for v in obs.input_observer.calculate_qparams()]
    out_q = [float(v) for v in obs.output_observer.calculate_qparams()]
    lin = obs.float_module
    quantplug.convert(model)
    ws, wz = choose_qparams(lin.weight.amin(1), lin.weight.amax(1), quant_min=-127, quant_max=127, symmetric=True)
    w_q = quantize_affine(lin.weight.detach(), ws, wz, quant_min=-127, quant_max=127, dtype=torch.int8, axis=0)
    k = ReferenceKernels()
    x_q = quantize_affine(x, in_q[0], int(in_q[1]), quant_min=-128, quant_max=127, dtype=torch.int8)
    y_q = k.linear(x_q, in_q[0], int(in_q[1]), k.pack_linear_weight(w_q, ws, wz), lin.bias.detach(), out_q[0],
                   int(out_q[1]), relu=True)
    assert torch.equal(model[0](x), dequantize_affine(y_q, out_q[0], int(out_q[1])))


def test_sequential_fallback_and_explicit_fusion():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
            self.c2 = nn.Conv2d(4, 4, 1)
            self.r2 = nn.ReLU()

        def forward(self, x):
            if x.sum() > 1e9:  # data-dependent control flow: torch.fx cannot trace this
                return x
            return self.r2(self.c2(self.body(x)))

    model = Untraceable().eval()
    info = quantplug.quantize_(model, quantplug.Int8StaticActivationInt8WeightConfig(
        modules_to_fuse=[["c2", "r2"]]), backend="reference")
    assert ["body.0", "body.1", "body.2"] in info.fused and ["c2", "r2"] in info.fused


def test_static_conv_padding_modes():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), nn.Conv2d(3, 3, 4, padding="same"))
    x = torch.randn(4, 2, 9, 9)
    ref = model(x)
    quantplug.quantize_(model, quantplug.Int8StaticActivationInt8WeightConfig(fuse=False), backend="reference")
    with torch.no_grad():
        model(x)
    quantplug.convert(model)
    out = model(x)
    assert out.shape == ref.shape and (out - ref).abs().max() < 0.05 * ref.abs().max()


# -------------------------------------------------- saving, loading, repr, kernels --


def test_state_dict_loads_into_a_freshly_converted_model_and_pickles():
    x = torch.randn(4, 32)
    a, b = mlp(), mlp()
    cfg = quantplug.Int8DynamicActivationInt8WeightConfig()
    quantplug.quantize_(a, cfg, backend="reference")
    quantplug.quantize_(b, cfg, backend="reference")
    assert not torch.equal(a(x), b(x))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))
    buf = io.BytesIO()
    torch.save(a, buf)
    buf.seek(0)
    c = torch.load(buf, weights_only=False)
    assert torch.equal(c(x), a(x))


def test_static_qparams_travel_in_the_state_dict():
    x = torch.randn(16, 32)
    models = []
    for scale in (1.0, 3.0):
        m = mlp()
        torch.manual_seed(1)
        m.load_state_dict(mlp().state_dict())
        quantplug.quantize_(m, quantplug.Int8StaticActivationInt8WeightConfig(), backend="reference")
        with torch.no_grad():
            m(x * scale)
        models.append(quantplug.convert(m))
    a, b = models
    assert not torch.equal(a(x), b(x))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))


def test_loading_weights_packed_by_another_backend_is_a_clear_error(fake_backend):
    a, b = mlp(), mlp()
    quantplug.quantize_(a, quantplug.Int8DynamicActivationInt8WeightConfig(), backend="reference")
    quantplug.quantize_(b, quantplug.Int8DynamicActivationInt8WeightConfig(), backend="fakeu8")
    with pytest.raises(QuantplugError, match="packed by backend 'reference'"):
        b.load_state_dict(a.state_dict())


def test_repr_shows_backend_dtypes_and_kernel_path(fake_backend):
    model = nn.Sequential(nn.Linear(8, 8), nn.EmbeddingBag(10, 8))
    quantplug.quantize_(model, quantplug.Int8DynamicActivationInt8WeightConfig(), backend="fakeu8")
    text = repr(model)
    assert "backend=fakeu8" in text and "act=uint8[0,127]" in text and "weight=int8[-128,127]" in text
    assert "kernel=fakeu8 dynamic int8 linear kernel (pytorch)" in text
    ref = nn.Sequential(nn.EmbeddingBag(10, 8))
    quantplug.quantize_(ref, quantplug.Int8WeightOnlyConfig(), backend="reference")
    assert "kernel=pytorch reference (reference is the reference backend, no C kernels)" in repr(ref)


def test_static_modules_call_the_backend_kernels(fake_backend):
    calls = []
    k = fake_backend.kernels
    orig_linear, orig_conv = k.linear, k.conv2d
    k.linear = lambda *a, **kw: calls.append("linear") or orig_linear(*a, **kw)
    k.conv2d = lambda *a, **kw: calls.append("conv2d") or orig_conv(*a, **kw)
    try:
        model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
        x = torch.randn(2, 2, 6, 6)
        quantplug.quantize_(model, quantplug.Int8StaticActivationInt8WeightConfig(), backend="fakeu8")
        with torch.no_grad():
            model(x)
        quantplug.convert(model)
        assert model[0].input_zero_point.item() >= 0 and model[2].numerics.act_range == (0, 127)
        model(x)
    finally:
        k.linear, k.conv2d = orig_linear, orig_conv
    assert calls == ["conv2d", "linear"]

