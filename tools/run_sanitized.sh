#!/usr/bin/env bash
# Runs every plugin's tests against kernels built with QUANTPLUG_SANITIZE=address,undefined
# (the `sanitize` tox env builds them). One pytest process per plugin: each plugin's tests
# dir has its own conftest.py and same-named test modules.
#   usage: tools/run_sanitized.sh REPO_ROOT [extra pytest args]
set -euo pipefail
root="$1"; shift || true
asan="$(gcc -print-file-name=libasan.so)"
ubsan="$(gcc -print-file-name=libubsan.so)"
for lib in "$asan" "$ubsan"; do
  [ -e "$lib" ] || { echo "run_sanitized: $lib not found; install gcc's sanitizer runtimes (libasan, libubsan)" >&2; exit 1; }
done
python - <<'PY'
# Refuse to run against unsanitized kernels: that would pass without checking anything.
# (find_spec of a top-level package does not import it: importing an ASan-built module
# without the preloaded runtime would abort.)
import importlib.util, pathlib, sys
for mod in ("quantplug_fbgemm", "quantplug_x86_onednn", "quantplug_arm_xnnpack", "quantplug_qnnpack"):
    pkg = pathlib.Path(importlib.util.find_spec(mod).origin).parent
    libs = sorted(pkg.glob("_kernels*.so"))
    if not libs or b"__asan_init" not in libs[0].read_bytes():
        sys.exit(f"run_sanitized: {mod}'s kernels {libs} were not built with ASan "
                 f"(install the plugin with QUANTPLUG_SANITIZE=address,undefined)")
print("run_sanitized: all four plugins' kernels carry ASan instrumentation")
PY
status=0
for plugin in fbgemm x86_onednn arm_xnnpack qnnpack; do
  echo "== sanitized tests: $plugin"
  LD_PRELOAD="$asan $ubsan" python -m pytest "$root/plugins/$plugin/tests" -q -p no:cacheprovider \
    -k "not discovery" "$@" || status=$?
done
exit $status
