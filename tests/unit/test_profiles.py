"""Profiles of model x GPU (simulations/fleet/profiles.py): valid, the default is ModelParams(), overrides."""

import pytest

from simulations.fleet import ModelParams
from simulations.fleet import profiles


def test_default_profile_is_model_params_default():
    assert profiles.DEFAULT == "llama-3.1-8b-h100"
    assert profiles.get(profiles.DEFAULT) == ModelParams()
    assert ModelParams().name == profiles.DEFAULT


def test_every_profile_is_named_after_its_key_and_documented():
    assert profiles.names()[0] == profiles.DEFAULT
    for name in profiles.names():
        prof = profiles.PROFILES[name]
        assert prof.params.name == name
        assert prof.source and prof.method and prof.checked and prof.gpus


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown model profile 'llama-9b'.*llama-3.1-8b-h100"):
        profiles.get("llama-9b")


def test_resolve_applies_overrides_on_top_and_says_so():
    p = profiles.resolve(None, {"alpha": "0.01"})
    assert p.alpha == 0.01 and p.beta == ModelParams().beta
    assert p.name == "llama-3.1-8b-h100 with alpha=0.01"
    assert profiles.resolve("llama-3.1-8b-h100", {"name": "mine", "kv_tokens": "1000"}).name == "mine"
    assert profiles.resolve(None) == ModelParams()
    with pytest.raises(ValueError, match="alpah"):
        profiles.resolve(None, {"alpah": "1"})
