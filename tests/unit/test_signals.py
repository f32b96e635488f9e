"""Signals rejects what cannot be a measurement, naming the field (None stays "unknown")."""

from __future__ import annotations

import math
import typing

import pytest

from scaler.signals import NON_NEGATIVE, Signals

# Resolved annotations (not their spelling): an ``Optional[float]`` field would be listed here and fail the
# check below, which NON_NEGATIVE's string match would miss.
NUMBERS = [name for name, tp in typing.get_type_hints(Signals).items() if tp == (float | None)]


def test_every_optional_number_is_checked() -> None:
    assert NUMBERS and list(NUMBERS) == list(NON_NEGATIVE)


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
