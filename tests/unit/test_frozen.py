"""scaler.frozen.fast_init builds the same instances as the dataclasses' generated __init__, class by class."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest

from scaler.capacity import Capacity, CapacityLearner
from scaler.forecast import Outlook
from scaler.frozen import fast_init
from scaler.policy import Decision, PolicyState, Reasons
from scaler.signals import ColdStart, Signals

COLD = ColdStart(p50=180.0, p90=232.5, source="simulation", samples=4)
CASES = [
    (Signals, (1.0, 3), {}),
    (Signals, (), {"observed_at": 5.0, "pods_reporting": 2, "waiting": 1.0, "running": 20.0, "kv_cache_usage": 0.3,
                   "ttft_p95": 0.5, "tpot_p95": 0.05, "completion_rate": 3.0, "arrival_rate": 3.1,
                   "prompt_tokens_mean": 1000.0, "output_tokens_mean": 200.0, "ready_replicas": 2,
                   "starting_replicas": 1, "upstream_demand": 4.0, "cold_start": COLD,
                   "demand_history": ((60.0, 2.0),), "metric_names": {"kv": "vllm:kv_cache_usage_perc"}}),
    (ColdStart, (10.0, 20.0, "metadata"), {}),
    (PolicyState, (), {}),
    (PolicyState, (3, True, 10.0, 12.0, {"raised_at": 5.0}), {}),
    (CapacityLearner, (), {"estimate": 2.5, "samples": 7}),
    (CapacityLearner, (2.5, 7, 3, 100.0, 4.0, 20.0), {}),
    (Capacity, (4.2, "model"), {}),
    (Outlook, (12.0, 10.0), {"rate_at_horizon": 9.5, "upper_at_horizon": 11.0}),
    (Decision, (2, False, "min", {"forecast": 0.4}, Reasons(["why"]), PolicyState(desired=2)), {}),
    (Decision, (2, False, "min", {}, (), PolicyState()), {"inputs": {"horizon_s": 225.0}}),
]


@pytest.mark.parametrize("cls, args, kwargs", CASES, ids=[c[0].__name__ for c in CASES])
def test_fast_init_builds_what_the_dataclass_init_builds(cls, args, kwargs) -> None:
    fast = cls(*args, **kwargs)
    plain = object.__new__(cls)
    cls._dataclass_init(plain, *args, **kwargs)
    assert fast.__dict__ == plain.__dict__ and list(fast.__dict__) == list(plain.__dict__)
    assert fast == plain and repr(fast) == repr(plain)
    factories = {f.name for f in dataclasses.fields(cls) if f.default_factory is not dataclasses.MISSING}

    def parameters(init):   # a default_factory field's default is a sentinel of each implementation's own
        return [(p.name, p.kind, p.annotation, "factory" if p.name in factories else p.default)
                for p in inspect.signature(init).parameters.values()]

    assert parameters(cls.__init__) == parameters(cls._dataclass_init)
    first = dataclasses.fields(cls)[0].name
    assert dataclasses.replace(fast, **{first: getattr(fast, first)}) == plain
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(fast, first, None)


def test_default_factories_give_each_instance_its_own_value() -> None:
    a, b = PolicyState(), PolicyState()
    assert a.extra == {} and a.extra is not b.extra


def test_post_init_still_validates() -> None:
    with pytest.raises(ValueError, match="Signals.waiting"):
        Signals(observed_at=0.0, pods_reporting=1, waiting=math.nan)


def test_missing_argument_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="pods_reporting"):
        Signals(observed_at=0.0)  # type: ignore[call-arg]


def test_only_frozen_dataclasses_without_init_vars_or_keyword_only_fields() -> None:
    @dataclasses.dataclass
    class Mutable:
        x: int

    @dataclasses.dataclass(frozen=True)
    class WithInitVar:
        x: int
        y: dataclasses.InitVar[int] = 0

        def __post_init__(self, y):
            pass

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class KwOnly:
        x: int

    for cls in (Mutable, WithInitVar, KwOnly):
        with pytest.raises(TypeError, match="fast_init"):
            fast_init(cls)
