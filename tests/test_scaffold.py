"""``quantplug new-backend``: the scaffolded plugin installs and passes its own tests unchanged.

Runs in the core environment (it needs only the core and a C compiler): the plugin is
installed into a throw-away virtual environment layered on this one (a ``.pth`` file adds
this environment's site-packages), so nothing is installed here and nothing needs undoing.
"""

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from quantplug.cli import main
from quantplug.scaffold import create_backend, validate_backend_name


def _layered_venv(where: Path) -> Path:
    """A venv without pip whose interpreter also sees this environment's packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    python = where / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    outer = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in dict.fromkeys(outer))
    Path(purelib, "_quantplug_outer_env.pth").write_text(lines)
    return python


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUANTPLUG_", "PYTEST_", "PYTHONPATH"))}
    env["PIP_NO_INPUT"] = "1"
    return env


def test_scaffolded_plugin_installs_and_passes_its_tests(tmp_path):
    project = create_backend("kitdemo", tmp_path)
    python = _layered_venv(tmp_path / "venv")
    env = _clean_env()
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              str(project)], capture_output=True, text=True, env=env, timeout=600)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-4000:]
    # Only the new plugin, as on a third party's machine (this environment may hold the official ones).
    env["QUANTPLUG_LOAD_PLUGINS"] = "quantplug-kitdemo"
    listed = subprocess.run([str(python), "-m", "quantplug", "backends"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert "kitdemo" in listed.stdout and "quantplug-kitdemo" in listed.stdout, listed.stdout + listed.stderr
    tests = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=5",
                            str(project / "tests")],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    summary = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else ""
    assert tests.returncode == 0, tests.stdout[-5000:] + tests.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary


def test_scaffold_layout_and_entry_point(tmp_path):
    project = create_backend("my_chip", tmp_path)
    assert project.name == "quantplug-my-chip"
    files = {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}
    assert {"pyproject.toml", "setup.py", "csrc/my_chip_kernels.h", "csrc/my_chip_linear.c",
            "src/quantplug_my_chip/plugin.py", "src/quantplug_my_chip/quantizer.py",
            "src/quantplug_my_chip/backend_config.py", "src/quantplug_my_chip/kernels.py",
            "src/quantplug_my_chip/_ffi_build.py", "tests/test_conformance.py"} <= files
    pyproject = (project / "pyproject.toml").read_text()
    assert '[project.entry-points."quantplug.backends"]\nmy_chip = "quantplug_my_chip.plugin"' in pyproject
    assert "class MyChipQuantizer(PatternQuantizer)" in (project / "src/quantplug_my_chip/quantizer.py").read_text()
    rendered = "".join(p.read_text() for p in project.rglob("*") if p.is_file())
    assert "__NAME__" not in rendered and "__PKG__" not in rendered and "__CLASS__" not in rendered


@pytest.mark.parametrize("bad", ["", "MyChip", "1chip", "my-chip", "x", "fbgemm", "reference", "class", "a__b"])
def test_bad_backend_names_rejected(bad):
    with pytest.raises(ValueError):
        validate_backend_name(bad)


def test_cli_new_backend(tmp_path, capsys):
    assert main(["new-backend", "clichip", "--path", str(tmp_path)]) == 0
    assert "pip install --no-build-isolation" in capsys.readouterr().out
    assert main(["new-backend", "clichip", "--path", str(tmp_path)]) == 2  # exists
    assert "already exists" in capsys.readouterr().err
    assert main(["new-backend", "clichip", "--path", str(tmp_path), "--force"]) == 0
    assert main(["new-backend", "Bad-Name", "--path", str(tmp_path)]) == 2
