"""`vllm-scaler simulate` / `sweep`: the --json schema, errors, the sweep's Pareto front."""

import json

import pytest

from scaler.cli import main
from simulations.cli import grid_points, pareto_front

KEYS = {"requests", "ttft_slo_attainment", "tpot_slo_attainment", "p95_ttft_window_attainment", "gpu_hours",
        "gpu_hours_vs_oracle", "cold_starts", "scale_events", "seconds_at_zero", "unserved_requests",
        "first_after_idle_requests", "first_after_idle_ttft_attainment", "first_after_idle_ttft_p50"}


def test_simulate_json_schema(tmp_path, capsys):
    out = tmp_path / "s.json"
    rc = main(["simulate", "--duration", "600", "--policy", "reactive", "--policy", "keda-threshold",
               "--policy", "oracle", "--json", str(out), "--plot", str(tmp_path / "p.png")])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert set(doc) == {"trace", "settings", "policies"}
    assert set(doc["policies"]) == {"reactive", "keda-threshold", "oracle"}
    for p in doc["policies"].values():
        assert set(p) == KEYS
    assert doc["settings"]["slo_ttft"] == 2.5
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert "keda-threshold" in capsys.readouterr().out


def test_initial_replicas_default_is_the_oracles_count_at_the_start(tmp_path, capsys):
    # Every policy starts on what the oracle's plan holds at the trace's start (2 on the conversation trace at
    # 6x its rate with the default cold start: oracle.replicas_at_start), not on one replica that the oracle
    # never has to wait for.
    import numpy as np

    from simulations.fleet import ColdStartModel, ModelParams
    from simulations.oracle import replicas_at_start
    from simulations.traces import load

    trace = load("azure-2023-conv", seed=0).sliced(300).scaled(6, np.random.default_rng(0))   # as cli._trace
    want = replicas_at_start(trace, params=ModelParams(), slo_ttft=2.5, slo_tpot=0.1,
                             cold_start=ColdStartModel().median, max_replicas=50)
    assert want == 2
    out = tmp_path / "s.json"
    base = ["simulate", "--duration", "300", "--rate-scale", "6", "--policy", "oracle"]
    assert main(base + ["--json", str(out)]) == 0
    assert json.loads(out.read_text())["settings"]["initial_replicas"] == want
    assert main(base + ["--initial-replicas", "3", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["settings"]["initial_replicas"] == 3
    for bad, needle in (("some", "expected a replica count or `auto`, got 'some'"), ("-1", "must be >= 0, got -1")):
        with pytest.raises(SystemExit) as exc:
            main(["simulate", "--initial-replicas", bad])
        assert exc.value.code == 2 and needle in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["--metadata", "queuePerReplica=abc"], "queuePerReplica"),
    (["--trace", "nope.csv"], "nope.csv"),
    (["--rate-scale", "0"], "--rate-scale"),
    (["--model-param", "alpha=-1"], "alpha"),
    (["--model-profile", "llama-9b"], "--model-profile"),
    (["--model-param", "alpha"], "--model-param"),
])
def test_simulate_bad_input_exit_2(argv, needle, capsys):
    assert main(["simulate", "--duration", "60"] + argv) == 2
    assert needle in capsys.readouterr().err


def test_pareto_front():
    pts = [(1.0, 0.5), (2.0, 0.9), (1.5, 0.4), (3.0, 0.9), (2.5, 0.95)]
    assert pareto_front(pts) == [0, 1, 4]


def test_grid_points():
    pts = grid_points("reactive", ["queuePerReplica=2,5", "runningPerReplica=16"])
    assert pts == [(("queuePerReplica", "2"), ("runningPerReplica", "16")),
                   (("queuePerReplica", "5"), ("runningPerReplica", "16"))]
    with pytest.raises(ValueError, match="threshold"):
        grid_points("keda-threshold", ["queuePerReplica=1"])


def test_sweep_prints_front_and_snippet(capsys):
    rc = main(["sweep", "--policy", "keda-threshold", "--grid", "threshold=2,8", "--duration", "600",
               "--jobs", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and "query: avg(vllm:num_requests_waiting)" in out and "threshold:" in out


def test_sweep_on_two_workers_reports_in_grid_order_as_one_worker(tmp_path, capsys):
    """Two worker processes finish in any order; the JSON lists the points in grid order with the results a
    single process computes (the report does not depend on which worker finished first)."""
    docs = []
    for jobs in ("2", "1"):
        out = tmp_path / f"sweep{jobs}.json"
        rc = main(["sweep", "--policy", "keda-threshold", "--grid", "threshold=9,1,4,2", "--duration", "600",
                   "--jobs", jobs, "--json", str(out)])
        assert rc == 0
        docs.append(json.loads(out.read_text()))
    capsys.readouterr()
    assert [p["parameters"]["threshold"] for p in docs[0]["points"]] == ["9", "1", "4", "2"]
    assert docs[0]["points"] == docs[1]["points"] and docs[0]["chosen"] == docs[1]["chosen"]


@pytest.mark.parametrize("fidelity", ["request", "aggregate"])
def test_first_after_idle_outcome_in_table_and_json(tmp_path, capsys, fidelity):
    """Two bursts 20 minutes apart: keda-threshold-min0 scales to zero in the gap (cooldown 300 s) and never
    wakes (KEDA reads no pod as 0), so the 10 requests after the gap are all missed; the oracle holds a replica
    ready for them. The table shows the outcome because a policy spent time at zero."""
    rows = ["timestamp,prompt_tokens,output_tokens"]
    rows += [f"{1700000000 + i * 2},200,50" for i in range(60)]            # 2 minutes of traffic
    rows += [f"{1700000000 + 1320 + i * 2},200,50" for i in range(30)]     # after a 20-minute gap
    trace = tmp_path / "t.csv"
    trace.write_text("\n".join(rows) + "\n")
    out = tmp_path / "s.json"
    rc = main(["simulate", "--trace", str(trace), "--fidelity", fidelity, "--policy", "keda-threshold-min0",
               "--policy", "oracle", "--cold-start-sigma", "0", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "idle TTFT ok" in text and "first 10 requests after each gap of >= 60 s" in text
    doc = json.loads(out.read_text())
    zero, oracle = doc["policies"]["keda-threshold-min0"], doc["policies"]["oracle"]
    assert zero["seconds_at_zero"] > 0
    assert zero["first_after_idle_requests"] == pytest.approx(10) == oracle["first_after_idle_requests"]
    assert zero["first_after_idle_ttft_attainment"] == 0.0 and zero["first_after_idle_ttft_p50"] == "unserved"
    assert oracle["first_after_idle_ttft_attainment"] == 1.0 and oracle["first_after_idle_ttft_p50"] < 2.5
    assert doc["settings"]["first_after_idle"] == {"gap_s": 60.0, "first_n": 10}


def test_table_has_no_idle_columns_without_time_at_zero(capsys):
    assert main(["simulate", "--duration", "300", "--policy", "keda-threshold"]) == 0
    assert "idle TTFT ok" not in capsys.readouterr().out


def test_kpa_scale_down_delay_reaches_knative_and_damps_flapping(tmp_path, capsys):
    """--kpa-scale-down-delay is Knative's scale-down-delay: with it the kpa baseline flaps less."""
    docs = {}
    for delay in ("0", "600"):
        out = tmp_path / f"kpa{delay}.json"
        assert main(["simulate", "--trace", "azure-2024-week", "--fidelity", "aggregate", "--duration", "21600",
                     "--policy", "kpa", "--kpa-scale-down-delay", delay, "--json", str(out)]) == 0
        docs[delay] = json.loads(out.read_text())
    assert docs["600"]["settings"]["kpa_scale_down_delay"] == 600.0
    assert docs["600"]["policies"]["kpa"]["cold_starts"] < docs["0"]["policies"]["kpa"]["cold_starts"]
    capsys.readouterr()
    assert main(["simulate", "--policy", "kpa", "--kpa-scale-down-delay", "5000"]) != 0
    assert "kpa-scale-down-delay" in capsys.readouterr().err


def test_predictive_gets_the_simulated_fleet_model_unless_told_otherwise(tmp_path, capsys):
    from scaler.capacity import FleetModel
    from simulations.fleet import ModelParams

    m = ModelParams()
    want = FleetModel(alpha=m.alpha, beta=m.beta, gamma=m.gamma, max_num_seqs=m.max_num_seqs,
                      kv_tokens=m.kv_tokens).metadata()
    out = tmp_path / "s.json"
    base = ["simulate", "--duration", "120", "--policy", "predictive", "--json", str(out)]
    assert main(base) == 0
    assert json.loads(out.read_text())["settings"]["metadata"]["fleetModel"] == want
    assert "given the simulated fleet's parameters, fleetModel=" + want in capsys.readouterr().out
    assert main(base + ["--uncalibrated"]) == 0
    assert "fleetModel" not in json.loads(out.read_text())["settings"]["metadata"]
    assert main(base + ["--metadata", "capacityPerReplica=3"]) == 0
    assert json.loads(out.read_text())["settings"]["metadata"] == {"capacityPerReplica": "3"}
    assert main(base + ["--model-param", "alpha=0.03"]) == 0     # the model simulated is the model given
    assert json.loads(out.read_text())["settings"]["metadata"]["fleetModel"].startswith("alpha=0.03,")


def test_model_profile_picks_the_replica_and_overrides_go_on_top(tmp_path):
    from simulations.fleet import profiles

    out = tmp_path / "s.json"
    base = ["simulate", "--duration", "120", "--policy", "predictive", "--json", str(out)]
    assert main(base + ["--model-profile", "llama-3.1-8b-a100-80gb"]) == 0
    s = json.loads(out.read_text())["settings"]
    a100 = profiles.get("llama-3.1-8b-a100-80gb")
    fm = s["metadata"]["fleetModel"]
    assert fm.startswith(f"alpha={a100.alpha:g},") and "maxNumSeqs=256" in fm
    assert main(base + ["--model-profile", "llama-3.1-8b-a100-80gb", "--model-param", "alpha=0.02"]) == 0
    assert json.loads(out.read_text())["settings"]["metadata"]["fleetModel"].startswith(f"alpha=0.02,beta={a100.beta:g},")
    pts = tmp_path / "w.json"
    assert main(["sweep", "--duration", "60", "--policy", "keda-threshold", "--grid", "threshold=5", "--jobs", "1",
                 "--model-profile", "llama-3-70b-h100-tp4", "--json", str(pts)]) == 0
    assert json.loads(pts.read_text())["settings"]["model"]["name"] == "llama-3-70b-h100-tp4"
