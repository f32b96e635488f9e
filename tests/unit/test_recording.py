"""simulations.recording: file format, replay's "needed", calibration, command-line errors."""

from __future__ import annotations

import json
import re

import pytest

from scaler.cli import main
from scaler.config import parse_metadata
from simulations.recording import (
    Recording,
    RecordingError,
    RecordingHeader,
    Tick,
    calibrate,
    fitted_params,
    metadata_from_scaled_object,
    needed_replicas,
    parse_time,
    replay,
    replay_config,
)

HEADER = RecordingHeader(prometheus="http://127.0.0.1:9090", namespace="serving", deployment="chat",
                         model_name=None, start=1000.0, end=1150.0, step=15.0, window=60.0,
                         metric_names={"kv": "vllm:kv_cache_usage_perc"})


def _rec(ticks) -> Recording:
    return Recording(HEADER, tuple(ticks))


def test_file_round_trip_keeps_nulls_and_errors(tmp_path):
    rec = _rec([Tick.of(t=1000.0, pods_reporting=2, waiting=3.0, running=10.0, ttft_p95=None, replicas=2),
                Tick.of(t=1015.0, error="no_data: stale")])
    path = tmp_path / "r.jsonl"
    rec.save(path)
    back = Recording.load(path)
    assert back == rec
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["format"] == "vllm-scaler-recording"
    assert json.loads(lines[1])["ttft_p95"] is None


def test_starting_replicas_round_trip_and_reach_the_policy_and_old_files_read_them_as_unknown(tmp_path):
    loading = Tick.of(t=1000.0, pods_reporting=0, replicas=0, starting_replicas=2)
    rec = _rec([loading])
    rec.save(tmp_path / "r.jsonl")
    assert Recording.load(tmp_path / "r.jsonl") == rec
    sig = loading.signals
    assert (sig.pods_reporting, sig.starting_replicas, sig.waiting) == (0, 2, None)   # unknown, not zero
    head = json.dumps({"format": "vllm-scaler-recording", "version": 1, **HEADER.__dict__})
    (tmp_path / "old.jsonl").write_text(head + '\n{"t": 1000, "pods_reporting": 1, "waiting": 0}\n')
    assert Recording.load(tmp_path / "old.jsonl").ticks[0].signals.starting_replicas is None


@pytest.mark.parametrize("body,message", [
    ("", "empty file"),
    ('{"format": "other"}\n', "not a recording"),
    ('{"format": "vllm-scaler-recording", "version": 9}\n', "unsupported recording version 9"),
    ('{"format": "vllm-scaler-recording", "version": 1}\n', "header lacks"),
    ("HEADER\n{\"t\": 1, \"waiting\": -1}\n", ":2: field waiting must be null or a number >= 0, got -1"),
    ("HEADER\n{\"t\": 5}\n{\"t\": 5}\n", ":3: t=5 is not after the previous tick"),
    ("HEADER\n{\"t\": 5, \"wating\": 1}\n", ":2: unknown field(s) wating"),
    ("HEADER\nnot json\n", ":2: not JSON"),
])
def test_bad_files_name_file_line_and_field(tmp_path, body, message):
    head = json.dumps({"format": "vllm-scaler-recording", "version": 1, **HEADER.__dict__})
    path = tmp_path / "bad.jsonl"
    path.write_text(body.replace("HEADER", head))
    with pytest.raises(RecordingError) as e:
        Recording.load(path)
    assert str(path) in str(e.value) and message in str(e.value)


def _config(**md):
    return parse_metadata({"deploymentName": "chat", **md}, scaled_object="chat", namespace="serving")


def test_needed_worked_example():
    cfg = _config(ttftP95="2.5")
    tick = Tick.of(t=1.0, pods_reporting=2, waiting=0.0, running=20.0, ttft_p95=3.1, tpot_p95=0.05, replicas=2)
    assert needed_replicas(tick, cfg) == (3, True)
    ok = Tick.of(t=1.0, pods_reporting=2, waiting=0.0, running=20.0, ttft_p95=1.0, tpot_p95=0.05, replicas=2)
    assert needed_replicas(ok, cfg) == (1, False)           # requests in flight: at least one replica
    idle = Tick.of(t=1.0, pods_reporting=0, replicas=0)
    assert needed_replicas(idle, cfg) == (0, False)
    queued = Tick.of(t=1.0, pods_reporting=2, waiting=14.0, running=20.0, replicas=2)   # 14 > 6.7 * 2 (default q*)
    assert needed_replicas(queued, cfg) == (3, True)
    assert needed_replicas(Tick.of(t=1.0, error="no_data: x"), cfg) == (None, False)


def test_replay_marks_ticks_where_the_policy_asks_too_few():
    # reactive policy with runningPerReplica=32: running 20 -> 1 replica, but the TTFT SLO was missed with 2 running
    cfg = _config(ttftP95="2.5", tpotP95="10", kvCacheTarget="1", minReplicas="0", policy="reactive")
    ticks = [Tick.of(t=1000.0 + 15 * i, pods_reporting=2, waiting=0.0, running=20.0, kv_cache_usage=0.1,
                  ttft_p95=3.0 if i == 2 else 1.0, tpot_p95=0.05, replicas=2) for i in range(4)]
    ticks.append(Tick.of(t=1060.0, error="no_data: stale"))
    rows = replay(_rec(ticks), cfg)
    assert [r.under for r in rows] == [False, False, False, False, False]   # latency term asks 2*3/2.5 -> 3
    assert rows[2].short and rows[2].needed == 3 and rows[2].desired >= 3
    assert rows[0].desired == 1 and rows[0].needed == 1
    assert rows[4].desired is None and "no_data" in rows[4].note
    # with a huge TTFT SLO the tick is not short; with the SLO at 2.5 but a policy capped at 2, it is under
    capped = replay(_rec(ticks[:4]), _config(ttftP95="2.5", maxReplicas="2"))
    assert [r.under for r in capped] == [False, False, True, False]


def test_replay_output_explains_each_decision(tmp_path, capsys):
    # Each replayed tick carries the decision's terms, inputs and reasons (the server's log line), and the
    # printed line shows the terms, the horizon with its cold start, the forecast and the capacity.
    from scaler.policy import decide

    cfg = _config(policy="predictive", capacityPerReplica="4", coldStart="180")
    ticks = [Tick.of(t=1000.0 + 15 * i, pods_reporting=2, waiting=12.0, running=40.0, kv_cache_usage=0.3,
                  ttft_p95=1.0, tpot_p95=0.05, completion_rate=6.0, replicas=2) for i in range(6)]
    rows = replay(_rec(ticks), cfg)
    first = decide(ticks[0].signals, None, cfg, ticks[0].t)
    assert rows[0].terms == dict(first.terms) and rows[0].reasons == tuple(first.reasons)
    assert set(rows[-1].terms) >= {"forecast", "backlog", "latency", "kv"}
    line = rows[-1].explain()
    assert "H=225s (cold start P90 180s)" in line and "forecast " in line and "capacity 4 req/s" in line
    path = tmp_path / "r.jsonl"
    _rec(ticks).save(path)
    out = tmp_path / "replay.json"
    assert main(["replay", str(path), "--metadata", "capacityPerReplica=4", "--metadata", "coldStart=180",
                 "--all-ticks", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "H=225s (cold start P90 180s)" in printed
    doc = json.loads(out.read_text())
    assert doc["ticks"][-1]["reasons"][0].startswith("desired=") and "forecast" in doc["ticks"][-1]["terms"]


def _steady_ticks(alpha, beta, gamma, n=30, kv_tokens=None):
    """Ticks at the step model's steady state (simulations/fleet/model.py): rate lam per replica, prompt P,
    output L -> t = alpha / (1 - lam (beta L + gamma P)), TTFT = 1.5 t + gamma P, running n = lam L t."""
    ticks = []
    for i in range(n):
        lam, replicas = 0.5 + 0.3 * (i % 10), 1 + i % 3
        P, L = 200.0 + 10 * i, 100.0 + 20 * (i % 7)
        t = alpha / (1 - lam * (beta * L + gamma * P))
        kv = None if kv_tokens is None else lam * L * t * (P + L / 2 + 8) / kv_tokens   # kappa, block_size 16
        ticks.append(Tick.of(t=15.0 * i, pods_reporting=replicas, replicas=replicas, waiting=0.0,
                          running=lam * L * t * replicas, completion_rate=lam * replicas, arrival_rate=lam * replicas,
                          tpot_mean=t, prompt_tokens_mean=P, output_tokens_mean=L, ttft_mean=1.5 * t + gamma * P,
                          kv_cache_usage=kv))
    return ticks


def test_calibrate_recovers_known_parameters():
    alpha, beta, gamma = 0.02, 0.0005, 0.0001
    fits = calibrate(_rec(_steady_ticks(alpha, beta, gamma, kv_tokens=50_000)))
    assert fits["tpot"].coefficients["alpha"] == pytest.approx(alpha, abs=1e-9)
    assert fits["tpot"].coefficients["beta"] == pytest.approx(beta, abs=1e-9)
    assert fits["ttft"].coefficients["gamma"] == pytest.approx(gamma, abs=1e-9)
    assert fits["kv"].coefficients["kv_tokens"] == pytest.approx(50_000, rel=1e-9)
    # the first ticks have no recorded tick a whole window (60 s) before them (a queue could hide there): 26 used
    assert fits["tpot"].r2 == pytest.approx(1.0) and fits["tpot"].ticks == 26
    params, note = fitted_params(fits, "test")
    if note is None:   # simulations.fleet present: a real ModelParams
        assert params.alpha == pytest.approx(alpha) and params.name == "test" and params.kv_tokens == 50_000
    else:
        assert params["alpha"] == pytest.approx(alpha)


def test_calibrate_does_not_count_prefill_twice():
    # The old fit (TPOT = alpha + beta * n) put the prefill share into alpha and beta, and the simulator then
    # added gamma * prefill on top. Ticks with a large prefill share: the old line's slope is far off.
    import numpy as np

    alpha, beta, gamma = 0.007, 0.00005, 0.0001
    ticks = _steady_ticks(alpha, beta, gamma)
    n = np.array([t.signals.running / t.replicas for t in ticks[1:]])
    y = np.array([t.tpot_mean for t in ticks[1:]])
    old_beta = np.polyfit(n, y, 1)[0]
    assert old_beta > 1.5 * beta                       # what the old calibration reported
    assert calibrate(_rec(ticks))["tpot"].coefficients["beta"] == pytest.approx(beta, rel=1e-9)


def test_calibrate_prints_the_fleet_model_metadata_to_paste(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    _rec(_steady_ticks(0.02, 0.0005, 0.0001)).save(path)
    assert main(["calibrate", str(path), "--max-num-seqs", "64", "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert 'fleetModel: "alpha=0.02,beta=0.0005,gamma=0.0001,maxNumSeqs=64"' in out
    assert "R^2 = 1.0000" in out and "over 26 ticks" in out        # every fit prints its R^2 and ticks
    assert "kv_tokens not fitted" in out
    doc = json.loads((tmp_path / "c.json").read_text())
    cfg = parse_metadata({"fleetModel": doc["params"]["fleetModel"]}, scaled_object="a", namespace="b")
    assert cfg.fleet_model.max_num_seqs == 64 and cfg.fleet_model.alpha == pytest.approx(0.02)
    # without --max-num-seqs the profile's own (vLLM's default on the profile's GPU) goes into fleetModel
    assert main(["calibrate", str(path), "--model-profile", "llama-3.1-8b-h100"]) == 0
    assert "maxNumSeqs=1024" in capsys.readouterr().out


def test_calibrate_bad_flags_exit_2_naming_the_flag(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    _rec(_steady_ticks(0.02, 0.0005, 0.0001)).save(path)
    for flags, word in ((["--model-profile", "nope"], "--model-profile"), (["--model-param", "alpah=1"], "alpah"),
                        (["--max-num-seqs", "0"], "--max-num-seqs"), (["--kv-tokens", "0"], "--kv-tokens")):
        assert main(["calibrate", str(path), *flags]) == 2
        assert word in capsys.readouterr().err


def test_calibrate_says_what_is_missing():
    with pytest.raises(ValueError, match="only 0 ticks with no queue over their window have replicas > 0"):
        calibrate(_rec([Tick.of(t=1.0, replicas=1, running=3.0)]))


def test_scaled_object_yaml_gives_external_trigger_metadata(tmp_path):
    path = tmp_path / "so.yaml"
    # a TriggerAuthentication beside it, as in deploy/examples: the ScaledObject document is the one read
    path.write_text("""
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: tls}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: chat}
spec:
  scaleTargetRef: {name: chat}
  triggers:
    - type: external
      metadata: {scalerAddress: "vllm-scaler:9090", ttftP95: "1.0", maxReplicas: "8"}
""")
    md, name = metadata_from_scaled_object(path)
    assert name == "chat" and md == {"scalerAddress": "vllm-scaler:9090", "ttftP95": "1.0", "maxReplicas": "8"}
    cfg = replay_config(_rec([]), md, name)
    assert cfg.ttft_p95 == 1.0 and cfg.max_replicas == 8 and cfg.namespace == "serving" and cfg.window == 60
    path.write_text("kind: ScaledObject\nspec:\n  scaleTargetRef: {name: chat}\n  triggers: [{type: prometheus, "
                    "metadata: {serverAddress: 'http://p:9090', query: 'up', threshold: '1'}}]\n")
    with pytest.raises(ValueError, match="no trigger of type external"):
        metadata_from_scaled_object(path)


@pytest.mark.parametrize("text, names", [
    # KEDA's trigger metadata is map[string]string: the API server refuses an unquoted number
    ("kind: ScaledObject\nspec: {scaleTargetRef: {name: c}, triggers: [{type: external, metadata: "
     "{scalerAddress: 's:9090', maxReplicas: 8}}]}\n", "spec.triggers[0].metadata.maxReplicas=8"),
    ("kind: ScaledObject\nspec: {scaleTargetRef: {name: c}, triggers: [{type: external, metadata: [1]}]}\n",
     "spec.triggers[0].metadata=[1]"),
    ("kind: Deployment\n", "no document of kind ScaledObject"),
    ("spec: [\n", "not YAML"),
])
def test_scaled_object_errors_name_the_file_and_the_item(tmp_path, capsys, text, names):
    path = tmp_path / "so.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(names)) as exc:
        metadata_from_scaled_object(path)
    assert str(exc.value).startswith(str(path))
    rec = tmp_path / "r.jsonl"
    _rec([]).save(rec)
    assert main(["replay", str(rec), "--scaled-object", str(path)]) == 2
    assert f"--scaled-object {path}" in capsys.readouterr().err


def test_parse_time_accepts_unix_and_iso():
    assert parse_time("1700000000", "--start") == 1_700_000_000
    assert parse_time("2023-11-14T22:13:20Z", "--start") == 1_700_000_000
    with pytest.raises(ValueError, match="--end 'yesterday'"):
        parse_time("yesterday", "--end")


def test_cli_errors_name_the_flag(tmp_path, capsys):
    assert main(["record", "--namespace", "Bad_NS", "--deployment", "chat", "--last", "1h",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--namespace 'Bad_NS'" in capsys.readouterr().err
    assert main(["record", "--namespace", "ns", "--deployment", "chat", "--out", str(tmp_path / "x")]) == 2
    assert "--start TIME or --last DURATION" in capsys.readouterr().err
    assert main(["record", "--namespace", "ns", "--deployment", "chat", "--last", "1h", "--step", "0",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--step '0'" in capsys.readouterr().err
    rec = tmp_path / "r.jsonl"
    _rec([Tick.of(t=1.0)]).save(rec)
    assert main(["replay", str(rec), "--metadata", "ttftP95"]) == 2
    assert "--metadata 'ttftP95': expected KEY=VALUE" in capsys.readouterr().err
    assert main(["replay", str(rec), "--metadata", " =1"]) == 2     # no key: named, not passed on as ""
    assert "--metadata ' =1': expected KEY=VALUE" in capsys.readouterr().err
    assert main(["replay", str(rec), "--metadata", "ttftP95=-1"]) == 2
    assert "ttftP95='-1'" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: cannot read recording" in capsys.readouterr().err


def test_record_reports_an_unreachable_prometheus(tmp_path, capsys):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rc = main(["record", "--prometheus-url", f"http://127.0.0.1:{port}", "--namespace", "ns", "--deployment", "chat",
               "--start", "1700000000", "--end", "1700000600", "--timeout", "1s", "--out", str(tmp_path / "x")])
    assert rc == 1 and "(connection)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_tick_lines_hold_the_signals_vllm_aggregates_in_field_order() -> None:
    """A tick line's keys are t, pods_reporting, Signals' vLLM aggregates (field order), then the tick's own."""
    from scaler.signals import VLLM_AGGREGATES
    from simulations.recording.format import COLUMNS

    assert COLUMNS[2:2 + len(VLLM_AGGREGATES)] == VLLM_AGGREGATES and "waiting" in VLLM_AGGREGATES
    tick = Tick.of(t=5.0, pods_reporting=1, waiting=2.0, replicas=1, replicas_spec=2, ttft_mean=0.5)
    assert list(tick.row()) == list(COLUMNS)
    assert (tick.t, tick.replicas, tick.signals.ready_replicas, tick.signals.waiting) == (5.0, 1, 1, 2.0)
    assert Tick.of(**tick.row()) == tick
    with pytest.raises(TypeError, match="unknown field.*upstream_demand"):
        Tick.of(t=5.0, upstream_demand=1.0)      # a Signals field the format does not hold
