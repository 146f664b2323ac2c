"""Specs validate themselves: bad ranges, missing axes and bad scales fail at construction."""

import pytest
import torch

from quantplug.specs import (
    INT4,
    DerivedQuantizationSpec,
    FixedQParamsQuantizationSpec,
    QuantizationSpec,
)


def _obs():
    return None


def test_range_defaults_to_dtype():
    spec = QuantizationSpec(torch.uint8, observer_or_fake_quant_ctr=_obs)
    assert spec.range == (0, 255)
    assert QuantizationSpec(INT4, observer_or_fake_quant_ctr=_obs).range == (-8, 7)


@pytest.mark.parametrize("kwargs,match", [
    (dict(dtype=torch.int8, quant_min=5, quant_max=1), "quant_min 5 > quant_max 1"),
    (dict(dtype=torch.uint8, quant_min=-1, quant_max=255), "outside the torch.uint8 range"),
    (dict(dtype=torch.int8, qscheme=torch.per_channel_symmetric), "needs ch_axis"),
    (dict(dtype=torch.int8, group_size=0), "group_size must be positive"),
    (dict(dtype=torch.bool), "unsupported dtype"),
    (dict(dtype=torch.int8, per_row=True), "per_row applies to dynamic"),
])
def test_bad_specs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantizationSpec(observer_or_fake_quant_ctr=_obs, **kwargs)


def test_static_spec_needs_observer():
    with pytest.raises(ValueError, match="observer_or_fake_quant_ctr is required"):
        QuantizationSpec(torch.int8)
    QuantizationSpec(torch.int8, is_dynamic=True)  # dynamic qparams come at run time


def test_fixed_qparams_rejects_non_positive_scale():
    with pytest.raises(ValueError, match="scale must be > 0"):
        FixedQParamsQuantizationSpec(torch.uint8, scale=0.0, zero_point=0)


def test_specs_are_hashable_and_compare_by_value():
    a = QuantizationSpec(torch.int8, observer_or_fake_quant_ctr=_obs, qscheme=torch.per_tensor_symmetric)
    b = QuantizationSpec(torch.int8, observer_or_fake_quant_ctr=_obs, qscheme=torch.per_tensor_symmetric)
    assert a == b and hash(a) == hash(b) and a.is_symmetric and not a.is_per_channel


def test_derived_spec_freezes_its_sources():
    spec = DerivedQuantizationSpec(derived_from=[], derive_qparams_fn=lambda obs: None, dtype=torch.int32)
    assert spec.derived_from == ()
