"""cffi build script for the xnnpack kernels (run by setuptools at install time).

quantplug's build helper is loaded by path, not imported: the isolated build
environment has neither torch nor quantplug installed, and the helper needs
neither. It comes from the source tree next to this plugin, or from an
installed quantplug when the plugin is built on its own.
"""

import importlib.util
import runpy
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # plugins/arm_xnnpack


def _build_helper() -> dict:
    tree = ROOT.parents[1] / "core" / "quantplug" / "build.py"
    spec = importlib.util.find_spec("quantplug")
    installed = [Path(p) / "build.py" for p in (spec.submodule_search_locations or [])] if spec else []
    for candidate in [tree, *installed]:
        if candidate.is_file():
            return runpy.run_path(str(candidate))
    raise RuntimeError("quantplug's build helper not found: build from the quantplug source tree "
                       "or install quantplug first and use pip install --no-build-isolation")


_version = runpy.run_path(str(HERE / "_version.py"))["__version__"]
ffi = _build_helper()["make_ffi"](
    "quantplug_arm_xnnpack._kernels",
    header=ROOT / "csrc" / "xnnpack_kernels.h",
    sources=sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.c")),
    version=_version,
)

if __name__ == "__main__":
    ffi.compile(verbose=True)
