"""scaler.frozen.new builds the same values as the dataclasses' constructors, for every class it serves."""

from __future__ import annotations

import dataclasses

import pytest

from scaler.capacity import Capacity, CapacityLearner
from scaler.forecast import Outlook
from scaler.frozen import new
from scaler.policy import Decision, PolicyState, Reasons


@pytest.mark.parametrize("cls, fields", [
    (PolicyState, {"desired": 3, "active": True, "last_demand_at": 10.0, "decided_at": 12.0,
                   "extra": {"raised_at": 5.0}}),
    (CapacityLearner, {"estimate": 2.5, "samples": 7, "pods": 3, "pods_since": 100.0, "mean_rate": 4.0,
                       "mean_running": 20.0}),
    (Capacity, {"per_replica": 4.2, "source": "model"}),
    (Outlook, {"peak_upper": 12.0, "peak_rate": 10.0, "rate_at_horizon": 9.5, "upper_at_horizon": 11.0}),
    (Decision, {"desired": 2, "active": False, "dominant": "min", "terms": {"forecast": 0.4},
                "reasons": Reasons(["why"]), "next_state": PolicyState(desired=2), "inputs": {"horizon_s": 225.0}}),
])
def test_new_equals_the_constructor(cls, fields) -> None:
    assert [f.name for f in dataclasses.fields(cls)] == list(fields), "new() callers pass every field in order"
    built, constructed = new(cls, fields), cls(**fields)
    assert built == constructed and repr(built) == repr(constructed)
    first = next(iter(fields))
    assert dataclasses.replace(built, **{first: fields[first]}) == constructed
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, first, None)
