"""Every eager config on every installed plugin backend (the plugin tox env; nothing to run without plugins).

Must hold for each (backend, config): either every quantized layer runs the
plugin's C kernels (``kernel_path`` names the backend and its ISA, ``repr``
shows the backend) and the model pickles and reloads through ``state_dict``
bit-exactly, or ``quantize_`` / ``prepare_qat`` raises
``BackendCapabilityError`` and the model is exactly as it was.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

import quantplug
from quantplug import configs as qc
from quantplug.nn import QATLinear

class _AllLayers(nn.Module):
    """One of every layer type the eager configs handle."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.emb = nn.Embedding(50, 32)
        self.bag = nn.EmbeddingBag(50, 32)
        self.lstm = nn.LSTM(32, 32, batch_first=True)
        self.gru = nn.GRU(32, 32, batch_first=True)
        self.lstm_cell = nn.LSTMCell(32, 32)
        self.gru_cell = nn.GRUCell(32, 32)
        self.fc = nn.Linear(32, 64)
        self.out = nn.Linear(64, 32)

    def forward(self, img, ids):
        c = self.relu(self.bn(self.conv(img))).mean((2, 3)).sum(1, keepdim=True)
        h, _ = self.lstm(self.emb(ids))
        g, _ = self.gru(h)
        hc, _ = self.lstm_cell(g[:, -1])
        return self.out(torch.relu(self.fc(self.gru_cell(hc) + self.bag(ids)))) + c


_PLUGIN_CONFIGS = {
    "dynamic": qc.Int8DynamicActivationInt8WeightConfig(embeddings=None),
    "dynamic+embeddings": qc.Int8DynamicActivationInt8WeightConfig(embeddings=True),
    "dynamic+int4 embeddings": qc.Int8DynamicActivationInt8WeightConfig(embeddings=True, embedding_bits=4),
    "int8 weight-only": qc.Int8WeightOnlyConfig(),
    "int4 weight-only": qc.Int4WeightOnlyConfig(group_size=32),
    "static": qc.Int8StaticActivationInt8WeightConfig(),
    "qat static": qc.QATConfig(),
    "qat dynamic": qc.QATConfig(target="dynamic"),
    "qat int4": qc.QATConfig(target="weight_only", weight_dtype="int4", group_size=32),
}


def _plugin_backends() -> list[str]:
    return sorted(b.name for b in quantplug.list_backends() if b.kernels is not None)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny layers: threads only add contention on a shared machine
    yield
    torch.set_num_threads(threads)


def _quantize_all(model, config, backend, img, ids):
    if isinstance(config, qc.QATConfig):
        quantplug.prepare_qat(model.train(), config, backend=backend)
        model(img, ids)
        quantplug.convert(model.eval())
    else:
        quantplug.quantize_(model.eval(), config, backend=backend)
        if isinstance(config, qc.Int8StaticActivationInt8WeightConfig):
            with torch.no_grad():
                model(img, ids)
            quantplug.convert(model)
    return model


@pytest.mark.parametrize("config_name", sorted(_PLUGIN_CONFIGS))
@pytest.mark.parametrize("backend", _plugin_backends())
def test_every_config_runs_plugin_kernels_or_fails_before_any_change(backend, config_name):
    """On an installed plugin: the plugin's C kernels run every quantized layer, or nothing changes."""
    config = _PLUGIN_CONFIGS[config_name]
    b = quantplug.get_backend(backend)
    torch.manual_seed(0)
    img, ids = torch.randn(16, 3, 8, 8), torch.randint(0, 50, (16, 6))  # M > 8: past a single row tile
    model = _AllLayers()
    with torch.no_grad():
        ref = model.eval()(img, ids)
    before = copy.deepcopy(model.state_dict())
    try:
        _quantize_all(model, config, backend, img, ids)
    except qc.BackendCapabilityError as exc:
        assert backend in str(exc) and "Nothing was changed" in str(exc)
        assert [type(m) for m in model.modules()] == [type(m) for m in _AllLayers().modules()]
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        return
    quantized = [(n, m) for n, m in model.named_modules() if hasattr(m, "kernel_path")]
    assert quantized
    for name, m in quantized:
        assert m.uses_plugin_kernel and m.kernel_path.startswith(f"{backend} ") and \
            m.kernel_path.endswith(f"kernel ({b.kernel_isa()})"), (name, m.kernel_path)
        assert f"backend={backend}" in repr(m)
    with torch.no_grad():
        y = model(img, ids)
        # coarse sanity of the kernels' answer (measured 0.0004 to 0.016 across backends and configs)
        assert (y - ref).norm() / ref.norm() < 0.1
        restored = pickle.loads(pickle.dumps(model))
        assert torch.equal(restored(img, ids), y)
        # state_dict: a second model quantized the same way (other float weights) loads it exactly
        torch.manual_seed(1)
        other = _quantize_all(_AllLayers(), config, backend, img, ids)
        other.load_state_dict(model.state_dict())
        assert torch.equal(other(img, ids), y)


def _qat_net(with_conv: bool) -> nn.Module:
    torch.manual_seed(0)
    head = [nn.Linear(6 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 5)]
    if not with_conv:  # for backends without an int8 conv kernel (refused with a clear error, tested above)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 6 * 6 * 6), *head)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3), nn.ReLU(),
                         nn.Flatten(), *head)


@pytest.mark.parametrize("target", ["static", "dynamic"])
@pytest.mark.parametrize("backend", _plugin_backends())
def test_qat_fake_quant_matches_the_plugin_kernels(backend, target):
    """What QAT trains against (eval mode) is what the converted model computes on the plugin's kernels."""
    from quantplug.nn.static import CONV_OPS
    from quantplug.nn._common import missing_kernel_ops

    b = quantplug.get_backend(backend)
    if "qat" not in b.modes or target not in b.modes:
        pytest.skip(f"{backend} has no {target} QAT")
    model = _qat_net(with_conv=target == "static" and not missing_kernel_ops(b, CONV_OPS))
    quantplug.prepare_qat(model, qc.QATConfig(target=target), backend=backend)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(5):
        loss = model(torch.randn(16, 1, 8, 8, generator=g)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x = torch.randn(8, 1, 8, 8, generator=g) * torch.logspace(-1, 1, 8).reshape(-1, 1, 1, 1)
    seen = {}
    hooks = [m.register_forward_hook(lambda m, a, out, name=name: seen.__setitem__(name, (a[0], out)))
             for name, m in model.named_children() if isinstance(m, QATLinear)]
    with torch.no_grad():
        qat_out = model(x)
        for h in hooks:
            h.remove()
        last = model[-1]
        quantplug.convert(model)
        assert all(m.kernel_path.startswith(backend) for m in model.modules() if hasattr(m, "kernel_path"))
        got = model(x)
        if target == "static":
            out_scale = last.output_fake_quant.calculate_qparams()[0].item()
            assert (got - qat_out).abs().max().item() <= out_scale * 1.01  # one output LSB
        else:
            # Layer by layer on the same input: the fake quant reproduces the kernel's grid (per row, or
            # rows equalized onto a per-tensor kernel), so only float summation order differs. End to end,
            # such 1e-7 differences can move a later layer's input across a rounding boundary.
            for name, (inp, ref) in seen.items():
                out = model.get_submodule(name)(inp)
                assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item()), name


#: the ``quantplug::`` kernel ops an exported model of each config must contain (at least)
_EXPORTED_OPS = {
    "dynamic": {"linear_dynamic"},
    "dynamic+embeddings": {"linear_dynamic", "embedding_int8", "embedding_bag_int8"},
    "dynamic+int4 embeddings": {"linear_dynamic", "embedding_int4", "embedding_bag_int4"},
    "int8 weight-only": {"linear_weight_only"},
    "int4 weight-only": {"linear_int4_weight_only"},
    "static": {"quantize_per_tensor", "linear", "conv2d", "dequantize_per_tensor"},
    "qat static": {"quantize_per_tensor", "linear", "conv2d", "dequantize_per_tensor"},
    "qat dynamic": {"linear_dynamic"},
    "qat int4": {"linear_int4_weight_only"},
}


@pytest.mark.parametrize("config_name", sorted(_PLUGIN_CONFIGS))
@pytest.mark.parametrize("backend", _plugin_backends())
def test_eager_quantized_model_exports_and_reloads_bit_exactly(backend, config_name, tmp_path):
    """torch.export of an eager-quantized model keeps the plugin's kernels (as registered ``quantplug::``
    ops) and, saved with ``torch.export.save`` and loaded back, computes exactly what the eager model does."""
    config = _PLUGIN_CONFIGS[config_name]
    torch.manual_seed(0)
    img, ids = torch.randn(16, 3, 8, 8), torch.randint(0, 50, (16, 6))
    model = _AllLayers()
    try:
        _quantize_all(model, config, backend, img, ids)
    except qc.BackendCapabilityError:
        pytest.skip(f"{backend} refuses {config_name} (tested above)")
    with torch.no_grad():
        eager = model(img, ids)
    program = torch.export.export(model, (img, ids))
    kernel_ops = {str(n.target).split(".")[1] for n in program.graph.nodes
                  if n.op == "call_function" and str(n.target).startswith("quantplug.")}
    assert _EXPORTED_OPS[config_name] <= kernel_ops, kernel_ops
    path = tmp_path / "model.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path).module()
    with torch.no_grad():
        assert torch.equal(program.module()(img, ids), eager)
        assert torch.equal(loaded(img, ids), eager)


@pytest.mark.parametrize("backend", _plugin_backends())
def test_exported_eager_model_takes_any_batch_and_compiles(backend):
    """A dynamic batch dimension survives export, and ``torch.compile`` runs the same kernels."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(24, 48), nn.ReLU(), nn.Linear(48, 8)).eval()
    quantplug.quantize_(model, qc.Int8DynamicActivationInt8WeightConfig(), backend=backend)
    batch = torch.export.Dim("batch", min=1, max=256)
    program = torch.export.export(model, (torch.randn(4, 24),), dynamic_shapes=({0: batch},))
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        for n in (1, 7, 33):
            x = torch.randn(n, 24)
            assert torch.equal(program.module()(x), model(x))
            assert torch.equal(compiled(x), model(x))


@pytest.mark.parametrize("backend", _plugin_backends())
def test_static_conv_takes_channels_last_and_nchw_alike(backend):
    """Quantize / dequantize run on a channels_last tensor's dense buffer (no layout copies): same numbers."""
    b = quantplug.get_backend(backend)
    from quantplug.nn._common import missing_kernel_ops
    from quantplug.nn.static import CONV_OPS

    if missing_kernel_ops(b, CONV_OPS):
        pytest.skip(f"{backend} has no int8 conv kernel")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)).eval()
    quantplug.quantize_(model, qc.Int8StaticActivationInt8WeightConfig(), backend=backend)
    x = torch.randn(2, 3, 9, 7)
    with torch.no_grad():
        model(x)
        quantplug.convert(model)
        y = model(x)
        y_cl = model(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(y, y_cl)
    assert y.is_contiguous(memory_format=torch.channels_last)  # the kernels' layout is kept, not copied back
