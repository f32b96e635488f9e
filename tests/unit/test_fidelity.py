"""The fidelity page (simulations/fidelity.py, docs/fidelity.md): the real side computed from the bundled testbed
CSV, and the page in the repository is what the generator writes (it cannot drift from the code or the data)."""

import pytest

from simulations import fidelity as F


@pytest.fixture(scope="module")
def snaps():
    return F.load_testbed()


def test_real_side_reads_the_testbed_as_its_readme_describes(snaps):
    assert len(snaps) == 1405
    bands = F.bands(snaps)
    assert list(bands) == ["< 8 req/s", "12-16 req/s", "16-20 req/s", "20-24 req/s", "24-28 req/s", "queue > 0"]
    # the README's table: TTFT about 1.5 x ITL + 5-6 ms below saturation, KV rising with the load, KV 1.00 queued
    kvs = [b.kv for b in bands.values()]
    assert kvs == sorted(kvs) and bands["queue > 0"].kv == pytest.approx(1.0, abs=0.01)
    for name in ("12-16 req/s", "16-20 req/s"):
        b = bands[name]
        assert b.ttft_ms == pytest.approx(1.5 * b.itl_ms + 5.5, abs=3)
    knee, n = F.knee(snaps)
    assert knee == pytest.approx(26, rel=0.05) and n > 20          # README: knee about 26 req/s
    growth, _ = F.kv_growth(snaps)
    assert 0.1 <= growth <= 0.2                                      # README: KV rises 0.1-0.2 per minute
    sat, _ = F.saturated(snaps)
    assert 19 <= sat <= 30                                           # README: 19-30 req/s, median about 23


def test_missing_cells_are_not_zero(tmp_path):
    head = ("run,ts,t,variant,replicas,pods,ttft_ms,itl_ms,arrival_rpm,in_tok,out_tok,waiting_sum,waiting_max,"
            "kv_mean,kv_max,kv_pods,q_pods\n")
    rows = ["r,x,0,v,1,1,20,10,,,,0,0,,,{},{}", "r,x,60,v,1,1,20,10,900,240,440,0,0,0.1,0.1,{},{}"]
    p = tmp_path / "c.csv"
    p.write_text(head + "\n".join(rows) + "\n")
    s = F.load_testbed(p)
    assert s[0].rate is None and s[0].kv_max is None and s[0].prompt is None
    assert [b.n for b in F.bands(s).values()] == [1]                 # the row without a rate is in no band


def test_scale_ups_read_created_to_serving():
    def snap(t, replicas, pods):
        return F.Snapshot("r", t, replicas, pods, 1.0, 20.0, 10.0, 0.1, 0.0, 240.0, 440.0)

    # 1 -> 3 at t=60: the 2nd pod serves at 120, the 3rd at 180; then 3 -> 4, removed at 300 before it served
    g = [snap(0, 1, 1), snap(60, 3, 1), snap(120, 3, 2), snap(180, 3, 3), snap(240, 4, 3), snap(300, 3, 3)]
    ups = F.scale_ups(g)
    assert [(u.new, u.delays, u.interval) for u in ups] == [(2, (60.0, 120.0), 60.0), (1, (None,), 60.0)]
    # where `replicas` never leads `pods`, there is nothing to read
    assert F.scale_ups([snap(0, 1, 1), snap(60, 2, 2)]) == []


def test_model_delays_are_read_at_the_reconcile_resolution():
    from simulations.fleet import ColdStartModel

    # a fixed 90-s cold start seen by 60-s reconciles: 60 s when created more than 30 s before one, else 120
    assert F.model_scale_up_delays(ColdStartModel.single(90.0), 1, 60.0) == pytest.approx([90.0])
    assert F.model_scale_up_delays(ColdStartModel.single(120.0), 1, 60.0) == pytest.approx([120.0])


def test_the_page_holds_the_real_side(snaps):
    page = F.PAGE.read_text().splitlines()
    for start, fragment in F.real_fragments(snaps):
        lines = [line for line in page if line.startswith(start)]
        assert lines, f"no row starting {start!r} on docs/fidelity.md: run python -m simulations.fidelity"
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}: run python -m simulations.fidelity"


def test_the_page_is_what_the_generator_writes():
    assert F.page(0) == F.PAGE.read_text(), "docs/fidelity.md is stale: run python -m simulations.fidelity"
