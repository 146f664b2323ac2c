"""The plugins' build helper: cdef extraction and compiler flag choice, tested on its own."""

import pytest

from quantplug import build


def test_read_cdef_takes_only_marked_blocks(tmp_path):
    h = tmp_path / "k.h"
    h.write_text("#include <stdint.h>\n/* QP_CDEF_BEGIN */\nint f(int);\n/* QP_CDEF_END */\nstatic int g(void);\n")
    assert build.read_cdef(h).strip() == "int f(int);"


def test_read_cdef_requires_markers(tmp_path):
    h = tmp_path / "k.h"
    h.write_text("int f(int);\n")
    with pytest.raises(ValueError, match="QP_CDEF_BEGIN"):
        build.read_cdef(h)


def test_flags_are_portable_baselines():
    x86 = build.compiler_flags("x86_64", env={})
    arm = build.compiler_flags("aarch64", env={})
    assert not any("native" in f for f in x86 + arm)
    assert not any(f.startswith("-mavx") for f in x86)  # SIMD comes from target attributes
    assert "-march=armv8-a" in arm


def test_env_overrides():
    flags = build.compiler_flags("x86_64", env={"QUANTPLUG_SANITIZE": "address,undefined", "QUANTPLUG_CFLAGS": "-DX=1", "QUANTPLUG_OPT": "-O1"})
    assert "-fsanitize=address,undefined" in flags and "-DX=1" in flags and "-O1" in flags
    with pytest.raises(ValueError, match="unsupported sanitizers"):
        build.compiler_flags("x86_64", env={"QUANTPLUG_SANITIZE": "thread"})


def test_shared_headers_ship_with_the_package():
    import quantplug
    from pathlib import Path

    inc = Path(quantplug.get_include())
    assert (inc / "quantplug" / "qp_runtime.h").is_file() and (inc / "quantplug" / "qp_requant.h").is_file()
    for src in build.runtime_sources():
        assert Path(src).is_file()
