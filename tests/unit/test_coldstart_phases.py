"""Cold start in phases (simulations/fleet/lifecycle.py): one pod's distribution, bursts that share the download
link, the worked example of the docstring, determinism, bad values, and the CLI flags."""

import math

import numpy as np
import pytest

from scaler.cli import main
from simulations.fleet import ColdStartModel
from simulations.fleet.lifecycle import ColdStartError, ReplicaSet

T0 = 1_000_000.0


def replica_set(model, seed=0, initial=0):
    return ReplicaSet(model, np.random.default_rng(seed), start=T0, initial=initial)


def cold_starts(rs):
    return [r.ready_at - r.requested_at for r in rs.replicas]


def test_one_pod_alone_is_its_phases_and_the_log_normal_engine_start():
    m = ColdStartModel()
    assert m.download_alone == pytest.approx(16.06 / 0.5)
    assert m.engine_median == pytest.approx(90 - 5 - 32.12)
    # one pod at a time, 1,000 s apart: never two on the link
    rs = replica_set(m, seed=3)
    for k in range(2000):
        rs.scale_to(k + 1, T0 + 1000 * k)
    got = np.array(cold_starts(rs))
    z = np.random.default_rng(3).standard_normal(2000)
    assert got == pytest.approx([m.at(x) for x in z], abs=1e-6)               # the deviates, in order
    assert got.min() > m.scheduling + m.download_alone
    assert np.median(got) == pytest.approx(m.median, rel=0.02)
    assert np.quantile(got, 0.9) == pytest.approx(m.signal().p90, rel=0.02)
    assert m.signal().p50 == m.median and m.signal().p90 == pytest.approx(
        m.median + m.engine_median * (math.exp(1.2815515655446004 * m.sigma) - 1))
    assert [r.downloaded_at - r.requested_at for r in rs.replicas[:3]] == pytest.approx([5 + 32.12] * 3)


def test_a_burst_finishes_later_than_one_pod():
    m = ColdStartModel(sigma=0.0)                 # fixed engine start: only the link differs
    last = {}
    for n in (1, 2, 3, 6):
        rs = replica_set(m)
        rs.scale_to(n, T0)
        last[n] = max(cold_starts(rs))
    assert last[1] == pytest.approx(90.0)
    assert last[2] == pytest.approx(90.0)        # two pods at 0.5 GB/s each fill the 1 GB/s link: no slower
    # three or more share 1 GB/s: all finish the download at n x 16.06 GB / 1 GB/s after scheduling
    assert last[3] == pytest.approx(5 + 3 * 16.06 + m.engine_median)
    assert last[6] == pytest.approx(5 + 6 * 16.06 + m.engine_median)
    assert last[6] - last[1] == pytest.approx(6 * 16.06 - 32.12)
    # with no shared limit every pod is the pod alone
    rs = replica_set(ColdStartModel(sigma=0.0, bandwidth=math.inf))
    rs.scale_to(6, T0)
    assert cold_starts(rs) == pytest.approx([90.0] * 6)


def test_bandwidth_sharing_worked_example():
    # The docstring's example: S 5 s, D 16 GB, link 1 GB/s, 0.5 GB/s per pod; engine start 10 s (sigma 0).
    m = ColdStartModel(median=5 + 32 + 10, sigma=0.0, scheduling=5, weights_gb=16, bandwidth=1.0, pod_bandwidth=0.5)
    rs = replica_set(m)
    rs.scale_to(1, T0)           # A
    assert rs.replicas[0].downloaded_at == pytest.approx(T0 + 37)   # planned alone
    rs.scale_to(3, T0 + 20)      # B and C join the link at 25, when A has 6 GB left
    a, b, c = rs.replicas
    assert a.downloaded_at == pytest.approx(T0 + 43)
    assert b.downloaded_at == pytest.approx(T0 + 63) and c.downloaded_at == pytest.approx(T0 + 63)
    assert [r.ready_at - T0 for r in rs.pending] == pytest.approx([53, 73, 73])
    rs.promote_due(T0 + 53)
    assert rs.count("ready") == 1 and rs.count("loading") == 2


def test_a_loading_pod_removed_gives_its_share_back():
    m = ColdStartModel(median=5 + 32 + 10, sigma=0.0, scheduling=5, weights_gb=16, bandwidth=1.0, pod_bandwidth=0.5)
    rs = replica_set(m)
    rs.scale_to(4, T0)           # four at 0.25 GB/s from t = 5: done at 5 + 64 = 69 if nothing changes
    assert [r.downloaded_at - T0 for r in rs.replicas] == pytest.approx([69] * 4)
    rs.scale_to(2, T0 + 25)      # 5 GB each done; the two youngest go; the others then get 0.5 GB/s: 11 GB in 22 s
    assert [r.phase for r in rs.replicas] == ["loading", "loading", "gone", "gone"]
    assert [r.downloaded_at - T0 for r in rs.replicas[:2]] == pytest.approx([47, 47])
    assert [r.ready_at - T0 for r in rs.pending] == pytest.approx([57, 57])


def test_engine_deviates_come_in_batches_and_are_the_single_draws():
    m = ColdStartModel()
    rs = replica_set(m, seed=11)
    rs.scale_to(1500, T0)        # more than one batch of 1,024
    z = np.random.default_rng(11).standard_normal(1500)
    assert [r.ready_at - r.downloaded_at for r in rs.replicas] == pytest.approx([m.engine_start(x) for x in z],
                                                                                abs=1e-6)


def test_seeded_and_deterministic():
    def run(seed):
        rs = replica_set(ColdStartModel(), seed=seed, initial=2)
        for t, n in ((0, 5), (30, 8), (60, 6), (200, 12), (400, 3)):
            rs.promote_due(T0 + t)
            rs.scale_to(n, T0 + t)
        return [(r.requested_at, r.ready_at, r.phase) for r in rs.replicas]

    assert run(5) == run(5)
    assert run(5) != run(6)


@pytest.mark.parametrize("kw,field", [
    ({"median": -1}, "median"), ({"median": math.inf}, "median"), ({"sigma": -0.1}, "sigma"),
    ({"sigma": 5}, "sigma"), ({"scheduling": math.nan}, "scheduling"), ({"image_gb": -1}, "image_gb"),
    ({"weights_gb": 1e9}, "weights_gb"), ({"bandwidth": 0}, "bandwidth"), ({"pod_bandwidth": -2}, "pod_bandwidth"),
    ({"bandwidth": math.nan}, "bandwidth"), ({"median": 30}, "median"),
])
def test_bad_values_name_the_parameter(kw, field):
    with pytest.raises(ColdStartError) as exc:
        ColdStartModel(**kw)
    assert exc.value.field == field and field in str(exc.value)


def test_describe_names_the_phases_that_apply():
    assert ColdStartModel().describe() == ("median 90 s alone (sigma 0.25; 16.06 GB at 0.5 GB/s per pod, "
                                           "1 GB/s shared)")
    assert ColdStartModel(bandwidth=math.inf).describe().endswith("0.5 GB/s per pod, not shared)")
    assert ColdStartModel.single(180.0, 0.2).describe() == "median 180 s (sigma 0.2)"


def test_single_is_the_independent_log_normal():
    m = ColdStartModel.single(180.0, 0.2)
    assert not m.shared and m.engine_median == 180.0
    assert m.signal().p90 == pytest.approx(180 * math.exp(1.2815515655446004 * 0.2))
    rs = replica_set(ColdStartModel.single(50.0))
    rs.scale_to(20, T0)
    assert cold_starts(rs) == [50.0] * 20


@pytest.mark.parametrize("flag,value", [
    ("--cold-start", "20"), ("--cold-start-sigma", "-1"), ("--cold-start-scheduling", "inf"),
    ("--cold-start-image-gb", "-3"), ("--cold-start-weights-gb", "nan"), ("--cold-start-bandwidth", "0"),
    ("--cold-start-pod-bandwidth", "-0.5"),
])
def test_cli_bad_cold_start_flags_exit_2_naming_the_flag(flag, value, capsys):
    assert main(["simulate", "--duration", "60", "--policy", "oracle", flag, value]) == 2
    assert capsys.readouterr().err.startswith(f"vllm-scaler: error: {flag}: ")


def test_cli_cold_start_flags_reach_the_settings(tmp_path):
    import json

    out = tmp_path / "s.json"
    assert main(["simulate", "--duration", "120", "--policy", "oracle", "--cold-start", "150",
                 "--cold-start-image-gb", "10", "--cold-start-bandwidth", "2", "--json", str(out)]) == 0
    cs = json.loads(out.read_text())["settings"]["cold_start"]
    assert cs["median"] == 150 and cs["image_gb"] == 10 and cs["bandwidth"] == 2
    assert cs["engine_median"] == pytest.approx(150 - 5 - 26.06 / 0.5)
