"""quantplug.save / quantplug.load, state_dict and torch.export round trips.

Lowered graphs use the ``refk`` backend (the kernel contract in pure PyTorch, see
``tests/refkernels_backend.py``), so these tests need no plugin; the plugins run the same
checks through the conformance suite.
"""

import json
import pickle
import subprocess
import sys

import pytest
import torch
from torch import nn

import quantplug
import quantplug.registry as registry
from quantplug import serialization as ser
from quantplug.annotators import PatternQuantizer, make_quantization_config
from quantplug.backend_config import BackendConfig, BackendPatternConfig, DTypeConfig, DTypeWithConstraints
from quantplug.builtin_plugin import ReferenceQuantizer
from quantplug.direct_calls import op_of
from quantplug.specs import INT4
from tests import refkernels_backend as refk
from tests.models import MLP, calibrate


def _convert(model, quantizer, x, lower=True, cal=None):
    prepared = quantplug.prepare_pt2e(model.eval(), quantizer, (x,))
    calibrate(prepared, cal if cal is not None else [torch.randn_like(x) for _ in range(4)] + [x])
    return quantplug.convert_pt2e(prepared, lower=lower)


@pytest.fixture(scope="module")
def models():
    """Converted MLPs: lowered static and dynamic on refk, and a reference-form one."""
    registry.reset()
    refk.register()
    torch.manual_seed(0)
    x = torch.randn(8, 32)
    float_model = MLP().eval()
    cal = [torch.randn(8, 32) for _ in range(4)] + [x]
    out = {
        "static": _convert(float_model, refk.RefkQuantizer(), x, cal=cal),
        "dynamic": _convert(float_model, refk.RefkQuantizer(is_dynamic=True), x, cal=cal),
        "reference": _convert(float_model, refk.RefkQuantizer(), x, lower=False, cal=cal),
        "calibration": cal,
    }
    registry.reset()
    return out, x, float_model


@pytest.fixture
def with_refk():
    registry.reset()
    refk.register()
    yield
    registry.reset()


def _rewrite_recipe(directory, edit):
    """Edit a directory-format recipe and recompute its checksum (what a forger would do)."""
    path = directory / ser.RECIPE_FILE
    recipe = json.loads(path.read_text())
    edit(recipe)
    recipe.pop("recipe_sha256")
    recipe["recipe_sha256"] = ser._sha256(ser._canonical(recipe).encode())
    path.write_text(json.dumps(recipe))


# ----------------------------------------------------------------- round trips --


@pytest.mark.parametrize("kind", ["static", "dynamic", "reference"])
@pytest.mark.parametrize("layout", ["m.safetensors", "m_dir"])
def test_round_trip_is_bit_identical(models, with_refk, tmp_path, kind, layout):
    converted, x, _ = models
    model = converted[kind]
    path = ser.save(model, tmp_path / layout)
    loaded = quantplug.load(path)
    assert isinstance(loaded, torch.fx.GraphModule)
    for batch in (x, torch.randn(3, 32), torch.randn(1, 32)):  # dynamic batch survives
        assert torch.equal(loaded(batch), model(batch))
    assert len(quantplug.explain(loaded).kernels) == len(quantplug.explain(model).kernels)


def test_recipe_documents_the_model(models, with_refk, tmp_path):
    converted, _, _ = models
    ser.save(converted["static"], tmp_path / "m.safetensors")
    recipe = ser.read_recipe(tmp_path / "m.safetensors")
    assert (recipe["format"], recipe["format_version"], recipe["flow"]) == ("quantplug", 1, "graph")
    assert recipe["quantplug_version"] == quantplug.__version__
    assert recipe["backend"] == {"name": "refk", "distribution": refk.DISTRIBUTION, "version": "1.2.3",
                                 "kernel_isa": "pytorch", "needs_kernels": True}
    assert "quantplug.linear.default" in recipe["graph"]["op_schemas"]
    assert recipe["graph"]["packed"]["linear"]["fields"] == ["weight", "scales", "zero_points", "n", "k"]
    lowered = [q for q in recipe["qparams"] if q["op"] == "quantplug.linear.default"]
    assert len(lowered) == 2 and all({"x_scale", "out_scale", "out_zero_point"} <= set(q) for q in lowered)
    assert all(len(t["sha256"]) == 64 for t in recipe["tensors"].values() if "alias_of" not in t)
    nodes = {n["name"]: n for n in recipe["graph"]["nodes"]}
    assert all(n["op"] in ("placeholder", "get_attr", "call_function", "output") for n in nodes.values())


def test_load_unpickles_nothing(models, with_refk, tmp_path, monkeypatch):
    converted, x, _ = models
    ser.save(converted["static"], tmp_path / "m.safetensors")

    def forbidden(*args, **kwargs):
        raise AssertionError("quantplug.load must not unpickle")

    for mod, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(mod, name, forbidden)
    assert torch.equal(quantplug.load(tmp_path / "m.safetensors")(x), converted["static"](x))


def test_loaded_graph_keeps_module_names_for_debugging(models, with_refk, tmp_path):
    converted, x, float_model = models
    ser.save(converted["static"], tmp_path / "m.safetensors")
    report = quantplug.compare(float_model, quantplug.load(tmp_path / "m.safetensors"), x)
    assert {r.layer for r in report.rows} == {"fc1", "fc2"}


# ----------------------------------------------------------- backend checks --


def test_missing_backend_names_distribution_and_version(models, fresh_registry, tmp_path):
    converted, _, _ = models
    refk.register()
    ser.save(converted["static"], tmp_path / "m.safetensors")
    registry.reset()  # the plugin is "uninstalled"
    with pytest.raises(ser.MissingBackendError) as info:
        quantplug.load(tmp_path / "m.safetensors")
    msg = str(info.value)
    assert refk.DISTRIBUTION in msg and "1.2.3" in msg and f"pip install '{refk.DISTRIBUTION}==1.2.*'" in msg


@pytest.mark.parametrize("installed,ok", [("1.2.9", True), ("1.3.0", False), ("2.2.3", False)])
def test_plugin_version_compatibility(models, fresh_registry, tmp_path, installed, ok):
    converted, x, _ = models
    refk.register()
    ser.save(converted["static"], tmp_path / "m.safetensors")
    registry.reset()
    refk.register(installed)
    if ok:
        assert torch.equal(quantplug.load(tmp_path / "m.safetensors")(x), converted["static"](x))
    else:
        with pytest.raises(ser.IncompatibleBackendError, match=r"quantplug-refk-test==1\.2\.\*"):
            quantplug.load(tmp_path / "m.safetensors")


def test_reference_form_loads_without_the_plugin(models, fresh_registry, tmp_path):
    converted, x, _ = models
    refk.register()
    ser.save(converted["reference"], tmp_path / "m.safetensors")
    registry.reset()  # q/dq ops are the core's own: no kernels needed
    assert torch.equal(quantplug.load(tmp_path / "m.safetensors")(x), converted["reference"](x))


# ------------------------------------------------------------- damaged files --


def test_truncated_files_rejected(models, with_refk, tmp_path):
    converted, _, _ = models
    data = ser.save(converted["static"], tmp_path / "m.safetensors").read_bytes()
    for cut in (4, 100, len(data) // 2, len(data) - 1):
        (tmp_path / "t.safetensors").write_bytes(data[:cut])
        with pytest.raises(ser.CorruptModelFileError):
            quantplug.load(tmp_path / "t.safetensors")


def test_flipped_tensor_byte_rejected(models, with_refk, tmp_path):
    converted, _, _ = models
    data = bytearray(ser.save(converted["static"], tmp_path / "m.safetensors").read_bytes())
    header = int.from_bytes(data[:8], "little") + 8
    for pos in (header, (header + len(data)) // 2, len(data) - 1):  # first, middle, last tensor byte
        bad = bytearray(data)
        bad[pos] ^= 0x01
        (tmp_path / "f.safetensors").write_bytes(bytes(bad))
        with pytest.raises(ser.CorruptModelFileError, match="checksum"):
            quantplug.load(tmp_path / "f.safetensors")


def test_edited_recipe_rejected(models, with_refk, tmp_path):
    converted, _, _ = models
    path = ser.save(converted["static"], tmp_path / "d")
    recipe_file = path / ser.RECIPE_FILE
    text = recipe_file.read_text()
    recipe_file.write_text(text.replace('"out_zero_point"', '"out_zero_point_"', 1))
    with pytest.raises(ser.CorruptModelFileError, match="checksum"):
        quantplug.load(path)
    recipe_file.write_text(text[: len(text) // 2])
    with pytest.raises(ser.CorruptModelFileError, match="JSON"):
        quantplug.load(path)
    (path / ser.TENSORS_FILE).unlink()
    with pytest.raises(ser.SerializationError, match="tensors.safetensors"):
        quantplug.load(path)


@pytest.mark.parametrize("target", ["builtins.eval", "os.system", "torch.load", "higher_order.cond.default",
                                    "subprocess.run.default"])
def test_forged_targets_rejected_even_with_valid_checksum(models, with_refk, tmp_path, target):
    converted, _, _ = models
    path = ser.save(converted["static"], tmp_path / "d")

    def edit(recipe):
        node = next(n for n in recipe["graph"]["nodes"] if n["op"] == "call_function")
        node["target"] = target

    _rewrite_recipe(path, edit)
    with pytest.raises(ser.UnsafeGraphError):
        quantplug.load(path)


def test_forged_call_module_rejected(models, with_refk, tmp_path):
    converted, _, _ = models
    path = ser.save(converted["static"], tmp_path / "d")

    def edit(recipe):
        node = next(n for n in recipe["graph"]["nodes"] if n["op"] == "call_function")
        node["op"] = "call_module"

    _rewrite_recipe(path, edit)
    with pytest.raises(ser.UnsafeGraphError):
        quantplug.load(path)


def test_changed_op_schema_and_newer_format_rejected(models, with_refk, tmp_path):
    converted, _, _ = models
    path = ser.save(converted["static"], tmp_path / "d")
    _rewrite_recipe(path, lambda r: r["graph"]["op_schemas"].update({"quantplug.linear.default": "quantplug::linear(Tensor x) -> Tensor"}))
    with pytest.raises(ser.IncompatibleBackendError, match="pip install 'quantplug=="):
        quantplug.load(path)
    _rewrite_recipe(path, lambda r: r.update(format_version=ser.FORMAT_VERSION + 1))
    with pytest.raises(ser.IncompatibleBackendError, match="newer"):
        quantplug.load(path)


def test_refuses_unconverted_and_foreign_models(tmp_path):
    prepared = quantplug.prepare_pt2e(MLP().eval(), ReferenceQuantizer(), (torch.randn(2, 32),))
    with pytest.raises(ser.SerializationError, match="convert_pt2e"):
        ser.save(prepared, tmp_path / "p.safetensors")
    with pytest.raises(ser.SerializationError, match="quantize_"):
        ser.save(nn.Linear(2, 2), tmp_path / "l.safetensors")
    with pytest.raises(FileNotFoundError):
        quantplug.load(tmp_path / "nothing.safetensors")


# --------------------------------------------------------------------- sizes --


class _Int4WeightOnlyQuantizer(PatternQuantizer):
    """int4 group-wise weight-only (activations float), for the size measurement."""

    backend_name = "reference"

    def __init__(self, group_size=128):
        cfg = make_quantization_config(act_dtype=torch.int8, weight_dtype=INT4, weight_range=(-8, 7),
                                       weight_group_size=group_size, weight_only=True)
        bc = BackendConfig("int4", [BackendPatternConfig(("linear",), dtype_configs=[
            DTypeConfig(weight_dtype=DTypeWithConstraints(INT4, group_sizes=(group_size,)))])])
        super().__init__(cfg, bc)


class _Wide(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 256))

    def forward(self, x):
        return self.layers(x)


def test_serialized_sizes_int8_quarter_int4_eighth(with_refk, tmp_path, record_property):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = _Wide().eval()
    x = torch.randn(16, 512)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "fp32.safetensors"))
    fp32 = (tmp_path / "fp32.safetensors").stat().st_size
    int8 = ser.serialized_size(ser.save(_convert(model, refk.RefkQuantizer(), x), tmp_path / "int8.safetensors"))
    int4_model = _convert(model, _Int4WeightOnlyQuantizer(128), x, lower=False)
    int4 = ser.serialized_size(ser.save(int4_model, tmp_path / "int4.safetensors"))
    assert torch.equal(quantplug.load(tmp_path / "int4.safetensors")(x), int4_model(x))
    record_property("bytes", {"fp32": fp32, "int8": int8, "int4_g128": int4})
    print(f"\nserialized bytes: fp32 {fp32}, int8 {int8} ({int8 / fp32:.3f}), int4 g128 {int4} ({int4 / fp32:.3f})")
    # int8: 1 byte per weight + fp32 bias, per-channel scales and the recipe (~1.5%).
    assert 0.24 < int8 / fp32 < 0.27
    # int4: half a byte per weight + one fp32 scale per 128 weights (+0.8%) + bias and recipe.
    assert 0.12 < int4 / fp32 < 0.145


def test_nibble_codec_round_trips_odd_lengths_and_dtypes():
    g = torch.Generator().manual_seed(0)
    for dtype, lo, hi, enc in [(torch.int8, -8, 7, "int4"), (torch.uint8, 0, 15, "uint4"), (torch.int32, -8, 7, "int4")]:
        for n in (2, 3, 17, 1000):
            t = torch.randint(lo, hi + 1, (n,), generator=g).to(dtype)
            assert ser._nibble_encoding(t) == enc
            packed = ser._pack_nibbles(t)
            assert packed.numel() == (n + 1) // 2
            assert torch.equal(ser._unpack_nibbles(packed, enc, [n]).to(dtype), t)
    assert ser._nibble_encoding(torch.tensor([0, 8], dtype=torch.int8)) == "uint4"
    assert ser._nibble_encoding(torch.tensor([-1, 8], dtype=torch.int8)) is None


# ------------------------------------------------------ state_dict and export --


def test_state_dict_round_trip_into_a_freshly_converted_model(models, with_refk):
    """Weights and packed buffers transfer exactly into a model converted the same way.

    Activation qparams of the graph flow are constants of the graph (node arguments), not
    state: a fresh model converted from the same architecture with the same calibration data
    has the same ones, and then the outputs are bit-identical. (``quantplug.save`` stores the
    graph too, so it needs no fresh conversion.)
    """
    converted, x, float_model = models
    fresh_float = MLP().eval()
    fresh_float.load_state_dict(float_model.state_dict())
    fresh = _convert(fresh_float, refk.RefkQuantizer(), x, cal=converted["calibration"])
    for t in fresh.state_dict().values():
        t.zero_()  # prove the values come from the loaded state
    missing = fresh.load_state_dict(converted["static"].state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    assert torch.equal(fresh(x), converted["static"](x))


def test_torch_export_save_and_load_of_lowered_program(models, with_refk, tmp_path):
    converted, x, _ = models
    for kind in ("static", "dynamic"):
        ep = torch.export.export(converted[kind], (x,))
        assert any(op_of(n.target) == torch.ops.quantplug.linear.default or op_of(n.target) == torch.ops.quantplug.linear_dynamic.default
                   for n in ep.graph.nodes)
        torch.export.save(ep, tmp_path / f"{kind}.pt2")
        again = ser.load_exported(tmp_path / f"{kind}.pt2")
        assert torch.equal(again.module()(x), converted[kind](x))


def test_torch_export_load_in_a_fresh_process_needs_only_import_quantplug(models, tmp_path):
    converted, x, _ = models
    torch.export.save(torch.export.export(converted["reference"], (x,)), tmp_path / "m.pt2")
    torch.save({"x": x, "y": converted["reference"](x)}, tmp_path / "io.pt")
    code = (f"import torch, quantplug; ep = torch.export.load({str(tmp_path / 'm.pt2')!r}); "
            f"io = torch.load({str(tmp_path / 'io.pt')!r}); assert torch.equal(ep.module()(io['x']), io['y'])")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, capture_output=True)


# ----------------------------------------------------------------- eager flow --


def _seq():
    return nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 16)).eval()


@pytest.mark.parametrize("config", ["dynamic", "static", "qat"])
def test_eager_round_trip_onto_skeleton(tmp_path, config):
    torch.manual_seed(1)
    model = _seq()
    if config == "dynamic":
        quantplug.quantize_(model, quantplug.Int8DynamicActivationInt8WeightConfig(), backend="reference")
    elif config == "static":
        quantplug.quantize_(model, quantplug.Int8StaticActivationInt8WeightConfig(), backend="reference")
        calibrate(model, [torch.randn(8, 32) for _ in range(3)])
        quantplug.convert(model)
    else:
        quantplug.prepare_qat(model, quantplug.QATConfig(), backend="reference")
        model.train()
        calibrate(model, [torch.randn(8, 32) for _ in range(3)])
        quantplug.convert(model.eval())
    path = ser.save(model, tmp_path / "e.safetensors")
    skeleton = _seq()
    before = {k: v.clone() for k, v in skeleton.state_dict().items()}
    loaded = quantplug.load(path, model=skeleton)
    x = torch.randn(5, 32)
    assert torch.equal(loaded(x), model(x))
    assert loaded.quantplug_info.swapped == model.quantplug_info.swapped
    assert all(torch.equal(before[k], v) for k, v in skeleton.state_dict().items())  # skeleton untouched
    recipe = ser.read_recipe(path)
    assert recipe["flow"] == "eager" and recipe["model"]["config"]["_type"] == type_name(config)


def type_name(config):
    return {"dynamic": "Int8DynamicActivationInt8WeightConfig", "static": "Int8StaticActivationInt8WeightConfig",
            "qat": "QATConfig"}[config]


def test_eager_load_needs_a_matching_skeleton(tmp_path):
    model = _seq()
    quantplug.quantize_(model, quantplug.Int8DynamicActivationInt8WeightConfig(), backend="reference")
    path = ser.save(model, tmp_path / "e")
    with pytest.raises(ser.SerializationError, match="model=MyModel"):
        quantplug.load(path)
    wrong = nn.Sequential(nn.Linear(32, 40), nn.ReLU(), nn.Linear(40, 16)).eval()
    with pytest.raises(ser.SerializationError, match="cannot restore"):
        quantplug.load(path, model=wrong)
    assert isinstance(wrong[0], nn.Linear)  # not half-quantized
    fewer = nn.Sequential(nn.Linear(32, 48), nn.ReLU()).eval()
    with pytest.raises(ser.SerializationError):
        quantplug.load(path, model=fewer)


@pytest.mark.parametrize("installed,error", [(None, ser.MissingBackendError), ("1.3.0", ser.IncompatibleBackendError)])
def test_eager_model_on_a_plugin_names_what_to_install(fresh_registry, tmp_path, installed, error):
    """Eager models record their backend too: missing or incompatible plugins fail before any swap."""
    refk.register()
    model = _seq()
    quantplug.quantize_(model, quantplug.Int8DynamicActivationInt8WeightConfig(), backend=refk.NAME)
    path = ser.save(model, tmp_path / "e.safetensors")
    assert ser.read_recipe(path)["backend"]["needs_kernels"] is True
    registry.reset()
    if installed is not None:
        refk.register(installed)
    skeleton = _seq()
    with pytest.raises(error, match=r"quantplug-refk-test==1\.2\.\*"):
        quantplug.load(path, model=skeleton)
    assert isinstance(skeleton[0], nn.Linear)  # nothing swapped


def test_eager_file_damage_rejected(tmp_path):
    model = _seq()
    quantplug.quantize_(model, quantplug.Int8DynamicActivationInt8WeightConfig(), backend="reference")
    data = bytearray(ser.save(model, tmp_path / "e.safetensors").read_bytes())
    (tmp_path / "t.safetensors").write_bytes(bytes(data[: len(data) - 7]))
    data[-2] ^= 0x10
    (tmp_path / "f.safetensors").write_bytes(bytes(data))
    for name in ("t.safetensors", "f.safetensors"):
        skeleton = _seq()
        with pytest.raises(ser.CorruptModelFileError):
            quantplug.load(tmp_path / name, model=skeleton)
        assert isinstance(skeleton[0], nn.Linear)
