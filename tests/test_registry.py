"""Plugin discovery: lookup, aliases, missing plugins, broken plugins, clashes, autoload switch."""

import warnings
from importlib import metadata

import pluggy
import pytest

import quantplug
from quantplug import registry
from quantplug.errors import BackendConflictError, BackendNotFoundError, PluginLoadWarning
from tests.plugins import fake_backends as fb


def test_reference_backend_is_always_there(fresh_registry):
    names = [b.name for b in quantplug.list_backends()]
    assert "reference" in names
    ref = quantplug.get_backend("reference")
    assert ref.distribution == "quantplug" and ref.version == quantplug.__version__


def test_missing_official_plugin_names_the_distribution(fresh_registry, monkeypatch):
    monkeypatch.setenv(registry.ENV_DISABLE_AUTOLOAD, "1")
    with pytest.raises(BackendNotFoundError) as info:
        quantplug.get_quantizer("xnnpack")
    msg = str(info.value)
    assert "pip install quantplug-arm-xnnpack" in msg
    assert "reference" in msg  # lists what is installed
    assert registry.ENV_DISABLE_AUTOLOAD in msg
    assert isinstance(info.value, KeyError)


@pytest.mark.parametrize("alias,dist", [("x86", "quantplug-x86-onednn"), ("onednn", "quantplug-x86-onednn"),
                                        ("fbgemm", "quantplug-fbgemm"), ("qnnpack", "quantplug-qnnpack"),
                                        ("arm_xnnpack", "quantplug-arm-xnnpack")])
def test_every_official_alias_maps_to_its_distribution(fresh_registry, monkeypatch, alias, dist):
    monkeypatch.setenv(registry.ENV_DISABLE_AUTOLOAD, "1")
    with pytest.raises(KeyError, match=f"pip install {dist}"):
        quantplug.get_backend(alias)


def test_unknown_name_lists_installed(fresh_registry):
    with pytest.raises(BackendNotFoundError, match="installed backends: .*reference"):
        quantplug.get_backend("tpu9000")


def test_explicit_registration_with_autoload_disabled(fresh_registry, monkeypatch):
    monkeypatch.setenv(registry.ENV_DISABLE_AUTOLOAD, "1")
    quantplug.register_plugin(fb.GoodPlugin(), name="good", distribution="fake-good")
    assert quantplug.get_backend("fk").name == "fake"
    assert quantplug.get_backend("fake") is quantplug.get_backend("fk")
    assert isinstance(quantplug.get_quantizer("fk"), quantplug.Quantizer)


def test_duplicate_names_are_a_clear_error(fresh_registry, monkeypatch):
    monkeypatch.setenv(registry.ENV_DISABLE_AUTOLOAD, "1")
    quantplug.register_plugin(fb.GoodPlugin(), name="good", distribution="fake-good")
    quantplug.register_plugin(fb.ClashingPlugin(), name="clash", distribution="fake-clash")
    with pytest.raises(BackendConflictError) as info:
        quantplug.list_backends()
    msg = str(info.value)
    assert "'fk'" in msg and "fake-good" in msg and "fake-clash" in msg
    assert registry.ENV_LOAD_PLUGINS in msg


def test_raising_plugin_is_reported_and_others_still_load(fresh_registry, monkeypatch):
    monkeypatch.setenv(registry.ENV_DISABLE_AUTOLOAD, "1")
    quantplug.register_plugin(fb.RaisingPlugin(), name="raising", distribution="fake-raising")
    quantplug.register_plugin(fb.GoodPlugin(), name="good", distribution="fake-good")
    with pytest.warns(PluginLoadWarning, match="fake-raising.*kernel library missing"):
        names = [b.name for b in quantplug.list_backends()]
    assert "fake" in names and "reference" in names
    assert "fake-raising" in quantplug.plugin_errors()


def test_misspelled_hook_fails_loudly(fresh_registry, monkeypatch):
    monkeypatch.setenv(registry.ENV_DISABLE_AUTOLOAD, "1")
    quantplug.register_plugin(fb.MisspelledPlugin(), name="typo", distribution="fake-typo")
    with pytest.raises(pluggy.PluginValidationError, match="quantplug_register_backend"):
        quantplug.list_backends()


def test_register_rejects_non_backend(fresh_registry, monkeypatch):
    monkeypatch.setenv(registry.ENV_DISABLE_AUTOLOAD, "1")
    quantplug.register_plugin(fb.NotABackendPlugin(), name="nb", distribution="fake-nb")
    with pytest.warns(PluginLoadWarning, match="must call register\\(\\) with a quantplug.Backend"):
        quantplug.list_backends()


class _FakeDist:
    def __init__(self, name):
        self.name = name


class _FakeEntryPoint:
    """Stands in for an importlib.metadata entry point of an installed distribution."""

    def __init__(self, name, dist, target):
        self.name, self.dist, self.value, self._target = name, _FakeDist(dist), f"{dist}:plugin", target

    def load(self):
        if isinstance(self._target, BaseException):
            raise self._target
        return self._target


def test_broken_entry_point_warns_with_distribution(fresh_registry, monkeypatch):
    eps = [_FakeEntryPoint("broken", "quantplug-arm-xnnpack", ImportError("undefined symbol: qp_gemm")),
           _FakeEntryPoint("good", "fake-good", fb.GoodPlugin())]
    monkeypatch.setattr(registry, "_entry_points", lambda: eps)
    with pytest.warns(PluginLoadWarning, match="quantplug-arm-xnnpack.*undefined symbol"):
        assert quantplug.get_backend("fake").name == "fake"
    # asking for the broken backend says it is installed but failed, with the error
    with pytest.raises(BackendNotFoundError, match="installed but failed to load.*undefined symbol"):
        quantplug.get_backend("xnnpack")


def test_load_plugins_env_restricts_distributions(fresh_registry, monkeypatch):
    eps = [_FakeEntryPoint("good", "fake-good", fb.GoodPlugin()),
           _FakeEntryPoint("clash", "fake-clash", fb.ClashingPlugin())]
    monkeypatch.setattr(registry, "_entry_points", lambda: eps)
    monkeypatch.setenv(registry.ENV_LOAD_PLUGINS, "fake-good")
    assert quantplug.get_backend("fk").name == "fake"  # the clash was never loaded


def test_autoload_disabled_skips_entry_points(fresh_registry, monkeypatch):
    eps = [_FakeEntryPoint("good", "fake-good", fb.GoodPlugin())]
    monkeypatch.setattr(registry, "_entry_points", lambda: eps)
    monkeypatch.setenv(registry.ENV_DISABLE_AUTOLOAD, "true")
    with pytest.raises(BackendNotFoundError):
        quantplug.get_backend("fake")


def test_observers_registered_through_hook(fresh_registry):
    assert quantplug.get_observer_class("histogram").__name__ == "HistogramObserver"
    with pytest.raises(KeyError, match="registered observers"):
        quantplug.get_observer_class("nope")


def test_every_hook_is_documented():
    from quantplug import hookspecs

    for name in hookspecs.__all__:
        if name.startswith("quantplug_"):
            doc = getattr(hookspecs, name).__doc__ or ""
            assert "Called" in doc and "Example" in doc and ":param" in doc, name


def test_installed_entry_points_are_official_names():
    """Whatever plugin distributions are installed here register through the entry-point group."""
    for ep in metadata.entry_points(group=registry.ENTRY_POINT_GROUP):
        assert ep.dist is not None and ep.dist.name.startswith("quantplug-")


def test_cli_lists_backends(fresh_registry, capsys):
    from quantplug.cli import main

    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "reference" in out and "kernel isa" in out


def test_installed_backends_match_the_environment(fresh_registry):
    """tox states which backends each environment installs; discovery must find exactly those.

    Outside tox (no QUANTPLUG_EXPECT_BACKENDS) the reference backend is still required.
    """
    import os

    expected = set(filter(None, os.environ.get("QUANTPLUG_EXPECT_BACKENDS", "reference").split(",")))
    found = {b.name for b in quantplug.list_backends()}
    if "QUANTPLUG_EXPECT_BACKENDS" in os.environ:
        assert found == expected
    else:
        assert expected <= found
