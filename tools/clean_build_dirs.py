"""Remove the in-tree ``build/`` directories setuptools leaves in each plugin.

setuptools reuses object files from ``plugins/<name>/build`` across installs,
so a rebuild with other flags (e.g. sanitizers) or after a source change
could link stale objects. Every tox environment calls this before installing.
"""

import shutil
from pathlib import Path

root = Path(__file__).resolve().parents[1]
for build_dir in (root / "plugins").glob("*/build"):
    shutil.rmtree(build_dir, ignore_errors=True)
for egg in (root / "plugins").glob("*/src/*.egg-info"):
    shutil.rmtree(egg, ignore_errors=True)
