"""PrometheusSource._screen: missing data after demand, stopped scrapes and the window after a failure are typed
NoDataErrors (held, then UNAVAILABLE), never zeros; a real scale to zero stays zero replicas. The same rules run
against a real Prometheus behind a fault proxy in tests/integration/test_fault_matrix.py."""

from __future__ import annotations

import pytest

from scaler.config import ServerDefaults, parse_metadata
from scaler.errors import NoDataError, SeriesVanishedError, SourceTimeout, WindowGapError
from scaler.signals import Signals
from scaler.sources.prometheus import STALE_INTERVALS, STALE_SLACK, PrometheusSource

T = 1_700_000_000.0
CFG = parse_metadata({"window": "60", "scaleToZeroAfter": "300", "activationThreshold": "1"},
                     scaled_object="llama", namespace="ml", defaults=ServerDefaults())


def serving(now, demand=10.0):
    return Signals(observed_at=now, pods_reporting=2, waiting=demand / 2, running=demand / 2)


def at_zero(now, last_demand_at=None):
    return Signals(observed_at=now, pods_reporting=0, last_demand_at=last_demand_at)


@pytest.fixture
def source():
    return PrometheusSource("http://127.0.0.1:9", timeout=1)


def test_series_vanishing_after_demand_is_not_zero_replicas(source):
    assert source._screen(CFG, serving(T), T, newest=T) == serving(T)
    out = source._screen(CFG, at_zero(T + 5), T + 5)
    assert isinstance(out, SeriesVanishedError) and isinstance(out, NoDataError) and out.kind == "series_vanished"
    assert "5 s ago" in str(out)
    # Still within scaleToZeroAfter of the last demand: still missing data.
    assert isinstance(source._screen(CFG, at_zero(T + 299), T + 299), SeriesVanishedError)
    # Prometheus' history alone (a scaler without that memory) says the same.
    fresh = PrometheusSource("http://127.0.0.1:9", timeout=1)
    assert isinstance(fresh._screen(CFG, at_zero(T + 5, T), T + 5, history_demand=True), SeriesVanishedError)


def test_scale_to_zero_after_an_idle_fleet_stays_zero_replicas(source):
    # Idle (demand 1 <= activationThreshold 1) before the pods went: what KEDA's scale to zero looks like.
    source._screen(CFG, serving(T, demand=1.0), T, newest=T)
    assert source._screen(CFG, at_zero(T + 5), T + 5) == at_zero(T + 5)
    # Demand long ago (beyond scaleToZeroAfter): zero replicas too.
    other = PrometheusSource("http://127.0.0.1:9", timeout=1)
    other._screen(CFG, serving(T), T, newest=T)
    assert other._screen(CFG, at_zero(T + 301), T + 301) == at_zero(T + 301)


def test_window_after_a_failure_is_held_until_a_full_window_of_data(source):
    source._screen(CFG, SourceTimeout("down", source="prometheus"), T)
    for dt in (5, 30, 59):   # data is back at T + 5: held until T + 5 + 60
        out = source._screen(CFG, serving(T + dt), T + dt, newest=T + dt)
        assert isinstance(out, WindowGapError), dt
    assert source._screen(CFG, serving(T + 65), T + 65, newest=T + 65) == serving(T + 65)


def test_stopped_scrapes_are_detected_from_the_learned_scrape_interval(source):
    # Samples every 15 s, read every 5 s: the interval is learned as 15 s.
    for k in range(6):
        now = T + 5 * k
        newest = T + 15 * (k // 3)
        assert source._screen(CFG, serving(now), now, newest=newest) == serving(now)
    last = T + 15
    ok = last + STALE_INTERVALS * 15 + STALE_SLACK    # the docstring's worked example: 24.5 s old is still fine
    assert source._screen(CFG, serving(ok), ok, newest=last) == serving(ok)
    out = source._screen(CFG, serving(ok + 1), ok + 1, newest=last)
    assert isinstance(out, WindowGapError) and "scrapes stopped" in str(out)


def test_no_interval_known_no_staleness_rule(source):
    """One newest-sample time seen: the interval is unknown, only build_signals' window freshness applies."""
    assert source._screen(CFG, serving(T + 50), T + 50, newest=T) == serving(T + 50)


def test_scale_to_zero_after_0_still_reads_vanished_series_as_missing_within_the_window(source):
    cfg0 = parse_metadata({"window": "60", "scaleToZeroAfter": "0"}, scaled_object="llama", namespace="ml",
                          defaults=ServerDefaults())
    source._screen(cfg0, serving(T), T, newest=T)
    assert isinstance(source._screen(cfg0, at_zero(T + 30), T + 30), SeriesVanishedError)
    assert source._screen(cfg0, at_zero(T + 61), T + 61) == at_zero(T + 61)
