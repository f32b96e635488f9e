"""Cold start: which pods count, percentiles, and the override/measured/default choice."""

import pytest

from scaler.coldstart import DEFAULT_COLD_START, PodStart, percentile, resolve_cold_start, summarize
from scaler.signals import ColdStart

NOW = 1_700_000_000.0


def test_percentiles_worked_example() -> None:
    pods = [PodStart(f"p{i}", NOW - 3600 * (i + 1), NOW - 3600 * (i + 1) + s)
            for i, s in enumerate([100, 120, 140, 160, 400])]
    cs = summarize(pods, now=NOW, source="kubernetes")
    assert (cs.p50, cs.p90, cs.samples, cs.source) == (140, pytest.approx(304), 5, "kubernetes")


@pytest.mark.parametrize(
    "pod, kept",
    [
        pytest.param(PodStart("ok", NOW - 600, NOW - 400), True, id="ready-recent"),
        pytest.param(PodStart("loading", NOW - 100, None), False, id="not-ready"),
        pytest.param(PodStart("restarted", NOW - 600, NOW - 30, restarts=1), False, id="restarted"),
        pytest.param(PodStart("old", NOW - 8 * 86400, NOW - 8 * 86400 + 200), False, id="older-than-lookback"),
        pytest.param(PodStart("clock-skew", NOW - 600, NOW - 700), False, id="negative"),
    ],
)
def test_which_pods_count(pod, kept) -> None:
    assert (summarize([pod], now=NOW, source="kubernetes") is not None) == kept


def test_most_recent_max_pods_only() -> None:
    pods = [PodStart(f"p{i}", NOW - 1000 * i, NOW - 1000 * i + (50 if i < 3 else 500)) for i in range(10)]
    cs = summarize(pods, now=NOW, source="kubernetes", max_pods=3)
    assert (cs.samples, cs.p90) == (3, 50)


def test_resolution_order() -> None:
    measured = ColdStart(p50=90, p90=150, source="kubernetes", samples=4)
    assert resolve_cold_start(240.0, measured) == ColdStart(240, 240, "metadata", 0)
    assert resolve_cold_start(None, measured) is measured
    assert resolve_cold_start(None, None) == ColdStart(DEFAULT_COLD_START, DEFAULT_COLD_START, "default", 0)


def test_percentile_matches_numpy() -> None:
    np = pytest.importorskip("numpy")
    xs = [3.0, 1.0, 7.5, 2.2, 9.9, 4.4]
    for q in (0, 10, 50, 90, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
