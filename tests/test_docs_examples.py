"""Every Python example in ``docs/*.md`` runs, and the generated backend table is current.

Fence conventions (the words after the language on the opening fence):

* `` ```python `` runs here, in the core-only environment too: only the core is needed.
* `` ```python requires=xnnpack,fbgemm `` runs when those backends are installed. When one is
  missing the block is skipped, unless ``QUANTPLUG_EXPECT_BACKENDS`` (set by tox's
  ``integration`` environment) lists it: then the missing backend is a failure, so the
  integration run never skips a doc example.
* `` ```python no-run:torchao `` (a "before" example of another library that is not installed
  here) is not run, and must not use quantplug.

Every block is self-contained (its own imports), runs in a fresh namespace in a temporary
working directory, with the plugin registry reset afterwards.
"""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import pytest

import quantplug
import quantplug.registry as registry

DOCS = Path(__file__).resolve().parent.parent / "docs"
_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
_EXPECTED = {n for n in os.environ.get("QUANTPLUG_EXPECT_BACKENDS", "").split(",") if n}


def _blocks():
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text()
        for m in _FENCE.finditer(text):
            words = m.group("info").split()
            if not words or words[0] != "python":
                continue
            line = text.count("\n", 0, m.start()) + 1
            yield path.name, line, words[1:], m.group("body")


BLOCKS = list(_blocks())


def _requires(words: list[str]) -> list[str]:
    for w in words:
        if w.startswith("requires="):
            return [n for n in w.removeprefix("requires=").split(",") if n]
    return []


def _installed(name: str) -> bool:
    try:
        quantplug.get_backend(name)
        return True
    except KeyError:
        return False


def test_docs_exist_and_have_examples():
    names = {p.name for p in DOCS.glob("*.md")}
    assert {"writing-a-backend.md", "backends.md", "numerics.md", "migration.md"} <= names
    runnable = [b for b in BLOCKS if not any(w.startswith("no-run") for w in b[2])]
    assert len(runnable) >= 15, "the docs should show (and test) real code"


@pytest.mark.parametrize("doc,line,words,body", BLOCKS, ids=[f"{b[0]}:{b[1]}" for b in BLOCKS])
def test_example_runs(doc, line, words, body, tmp_path, monkeypatch):
    if any(w.startswith("no-run") for w in words):
        assert "quantplug" not in body, f"{doc}:{line}: a quantplug example must run (remove no-run)"
        assert any(w.startswith("no-run:") and len(w) > len("no-run:") for w in words), \
            f"{doc}:{line}: say why it does not run, e.g. no-run:torchao"
        return
    unknown = [w for w in words if not w.startswith("requires=")]
    assert not unknown, f"{doc}:{line}: unknown fence words {unknown}"
    missing = [n for n in _requires(words) if not _installed(n)]
    if missing:
        expected = [n for n in missing if n in _EXPECTED]
        if expected:
            pytest.fail(f"{doc}:{line} needs {expected}, which QUANTPLUG_EXPECT_BACKENDS says are installed")
        pytest.skip(f"{doc}:{line} needs backend(s) {', '.join(missing)} (not installed here)")
    monkeypatch.chdir(tmp_path)
    code = compile(body, f"{DOCS / doc}:{line}", "exec")
    # A real module, so that dataclasses and pickling can find the classes a block defines.
    module = types.ModuleType(f"docs_{doc.replace('.', '_').replace('-', '_')}_{line}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    try:
        exec(code, module.__dict__)
    finally:
        registry.reset()


def test_every_hook_and_declaration_is_documented():
    from quantplug import hookspecs
    from quantplug.testing.capabilities import DECLARATIONS

    text = (DOCS / "writing-a-backend.md").read_text()
    hooks = [n for n in hookspecs.__all__ if n.startswith("quantplug_")]
    assert hooks and all(f"`{h}(" in text for h in hooks), [h for h in hooks if f"`{h}(" not in text]
    assert all(f"`{d}`" in text for d in DECLARATIONS), [d for d in DECLARATIONS if f"`{d}`" not in text]
    from quantplug.reference_kernels import ReferenceKernels

    contract = [m for m in ("pack_linear_weight", "linear", "linear_dynamic", "pack_conv2d_weight", "conv2d", "add")
                if callable(getattr(ReferenceKernels, m))]
    assert all(f"`{m}(" in text for m in contract), [m for m in contract if f"`{m}(" not in text]


def test_backend_table_is_generated_from_the_installed_backends():
    """docs/backends.md's table is ``quantplug backends --matrix`` of the full installation."""
    from quantplug.cli import MATRIX_BEGIN, MATRIX_END, format_backend_matrix

    text = (DOCS / "backends.md").read_text()
    start, end = text.index(MATRIX_BEGIN) + len(MATRIX_BEGIN), text.index(MATRIX_END)
    documented = text[start:end].strip()
    named = re.findall(r"^\| `([a-z0-9_]+)` \| `", documented, re.M)
    installed = sorted(b.name for b in quantplug.list_backends())
    if sorted(named) != installed:
        missing = sorted(set(named) - set(installed))
        if set(missing) & _EXPECTED:
            pytest.fail(f"backends {missing} are expected (QUANTPLUG_EXPECT_BACKENDS) but not installed")
        pytest.skip(f"the table documents {named}; installed here: {installed}")
    assert documented == format_backend_matrix(), (
        "docs/backends.md is out of date: run `quantplug backends --write-doc docs/backends.md`")


def test_write_doc_replaces_only_the_generated_section(tmp_path, capsys):
    from quantplug.cli import MATRIX_BEGIN, MATRIX_END, format_backend_matrix, main

    doc = tmp_path / "b.md"
    doc.write_text(f"intro\n{MATRIX_BEGIN}\nstale\n{MATRIX_END}\noutro\n")
    assert main(["backends", "--write-doc", str(doc)]) == 0
    assert doc.read_text() == f"intro\n{MATRIX_BEGIN}\n{format_backend_matrix()}\n{MATRIX_END}\noutro\n"
    assert main(["backends", "--write-doc", str(doc)]) == 0
    assert "already up to date" in capsys.readouterr().out
    assert main(["backends", "--matrix"]) == 0
    assert "| `reference` | `quantplug` |" in capsys.readouterr().out
    doc.write_text("no markers")
    assert main(["backends", "--write-doc", str(doc)]) == 2
    assert "BEGIN GENERATED" in capsys.readouterr().err and doc.read_text() == "no markers"
