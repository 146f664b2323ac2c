"""The README's Python blocks run as written (with every plugin installed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_blocks():
    assert BLOCKS, "README.md lost its quick start"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, capsys):
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    if "explain(" in BLOCKS[index]:
        # the quick start promises int8 kernels: explain must name a backend kernel
        assert "xnnpack" in out, out
