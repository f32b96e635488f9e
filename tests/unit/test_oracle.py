"""The oracle's lower bound."""

import numpy as np
import pytest

from simulations.fleet import ModelParams
from simulations.oracle import layered_bound, plan
from simulations.traces import load


def test_layered_bound_worked_example():
    total, hold = layered_bound(np.array([1, 1, 0, 0, 0, 2]), 60.0, 120.0)
    assert total == 600.0
    assert sorted(hold) == [(-120.0, 120.0), (180.0, 360.0), (180.0, 360.0)]


def test_short_gaps_keep_the_replica_and_warm_start_is_free():
    total, _ = layered_bound(np.array([1, 0, 1]), 60.0, 120.0)
    assert total == 120 + 60 + 60 + 60          # gap of 60 s < cold start: kept
    warm, _ = layered_bound(np.array([1, 0, 1]), 60.0, 120.0, initial=1)
    assert warm == 180.0


def test_plan_is_below_any_fixed_fleet_meeting_the_slo():
    tr = load("azure-2023-conv").sliced(1800)
    p = plan(tr, params=ModelParams(), slo_ttft=2.5, slo_tpot=0.1, cold_start=180.0, initial=1)
    assert p.replicas.max() >= 2
    # holding the peak count all along costs more
    assert p.gpu_seconds <= p.replicas.max() * tr.duration + 180 * p.replicas.max()
    for m in range(len(p.replicas)):
        assert p.desired(tr.start + 60 * m + 30) >= p.replicas[m]     # the plan holds what each minute needs
