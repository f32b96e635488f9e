"""Signals rejects what cannot be a measurement, naming the field (None stays "unknown")."""

from __future__ import annotations

import dataclasses
import math

import pytest

from scaler.signals import _NON_NEGATIVE, Signals

NUMBERS = [f.name for f in dataclasses.fields(Signals) if f.type in ("float | None",)]


def test_every_optional_number_is_checked() -> None:
    assert sorted(NUMBERS) == sorted(_NON_NEGATIVE)


@pytest.mark.parametrize("name", NUMBERS)
@pytest.mark.parametrize("bad", [-1.0, -1e-12, math.nan])
def test_negative_or_nan_is_rejected_by_name(name, bad) -> None:
    with pytest.raises(ValueError, match=rf"Signals\.{name} must be None \(unknown\) or a non-negative number"):
        Signals(observed_at=0.0, pods_reporting=1, **{name: bad})


@pytest.mark.parametrize("name", NUMBERS)
def test_zero_infinity_and_none_are_accepted(name) -> None:
    for ok in (0.0, 3, math.inf, None):
        assert getattr(Signals(observed_at=0.0, pods_reporting=1, **{name: ok}), name) == ok


def test_negative_pod_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="pods_reporting must be >= 0"):
        Signals(observed_at=0.0, pods_reporting=-1)
