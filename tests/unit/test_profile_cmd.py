"""`vllm-scaler profile` (simulations/profile.py): every mode, the report's keys, the queue onset rule, bad flags."""

import json

import numpy as np
import pytest

from scaler.cli import main
from simulations.fleet import ModelParams, profiles
from simulations.profile import ONSET_MIN_S, ONSET_MIN_WAITING, find_knee, parse_sizes, queue_onset

KEYS = {"rate", "completions_per_s", "ttft_mean", "ttft_p95", "itl_mean", "tpot_p95", "kv_usage_mean",
        "kv_usage_max", "waiting_max", "queue_onset_s", "preemptions"}
SMALL = ["--model-param", "alpha=0.01", "--model-param", "beta=0.001", "--model-param", "gamma=0.0001",
         "--model-param", "kv_tokens=1000000"]


def run(tmp_path, capsys, *argv):
    out = tmp_path / "p.json"
    rc = main(["profile", *argv, "--json", str(out)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    return json.loads(out.read_text()), printed.out


def test_list_prints_every_profile_name_first(capsys):
    assert main(["profile", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == profiles.names()
    assert lines[0].startswith("llama-3.1-8b-h100 ") and "source:" in lines[0]


def test_burst_worked_example(tmp_path, capsys):
    # module docstring: one step prefills 8 x 32 tokens (0.01 + 8 x 0.001 + 256 x 0.0001 = 0.0436 s), then 127
    # decode steps of 0.018 s: makespan 2.3296 s
    doc, out = run(tmp_path, capsys, "--burst", "8", "--prompt-tokens", "32", "--output-tokens", "128", *SMALL)
    assert doc["burst_makespan_s"] == pytest.approx(0.0436 + 127 * 0.018)
    assert doc["burst_throughput"] == pytest.approx(8 / 2.3296)
    assert doc["ttft_mean"] == pytest.approx(0.0436) and doc["itl_mean"] == pytest.approx(0.018)
    assert doc["queue_onset_s"] is None and doc["rate"] is None and KEYS <= set(doc)
    assert "makespan 2.33 s" in out and "TTFT mean" in out


def test_rate_below_capacity(tmp_path, capsys):
    doc, out = run(tmp_path, capsys, "--rate", "10", "--duration", "120")
    assert KEYS <= set(doc) and doc["rate"] == 10 and doc["profile"] == "llama-3.1-8b-h100"
    assert doc["completions_per_s"] == pytest.approx(10, rel=0.1)
    assert doc["queue_onset_s"] is None and doc["preemptions"] == 0 and doc["kv_usage_max"] < 0.5
    assert doc["ttft_p95"] < 0.1 and doc["tpot_p95"] < 0.05 and doc["itl_mean"] < doc["tpot_p95"] * 1.5
    assert "10.00" in out.splitlines()[-1]


def test_overload_queue_onset_and_preemption(tmp_path, capsys):
    # well over the H100 replica's knee: the KV cache fills, requests are preempted, a queue forms and grows
    doc, _ = run(tmp_path, capsys, "--rate", "40", "--duration", "300")
    assert doc["queue_onset_s"] is not None and 0 < doc["queue_onset_s"] < 300
    assert doc["preemptions"] > 0 and doc["kv_usage_max"] > 0.95 and doc["waiting_max"] > 100
    assert doc["completions_per_s"] < 35


def test_sizes_distributions_and_trace(tmp_path, capsys):
    doc, _ = run(tmp_path, capsys, "--burst", "50", "--prompt-tokens", "uniform:100:300",
                 "--output-tokens", "lognormal:200:0.5")
    assert "uniform 100-300" in doc["workload"] and "lognormal mean 200 CV 0.5" in doc["workload"]
    doc, _ = run(tmp_path, capsys, "--burst", "50", "--trace", "azure-2023-conv")
    assert "drawn from" in doc["workload"] and doc["burst_throughput"] > 0
    rng = np.random.default_rng(0)
    x = parse_sizes("lognormal:200:0.5", "--prompt-tokens").sample(100_000, rng)
    assert x.mean() == pytest.approx(200, rel=0.01) and x.std() / x.mean() == pytest.approx(0.5, rel=0.03)
    u = parse_sizes("uniform:3:5", "--prompt-tokens").sample(1000, rng)
    assert set(u) == {3, 4, 5}


def test_find_knee_of_a_replica_with_a_known_capacity(tmp_path, capsys):
    # 4 sequences at most, 0.01 s a step whatever runs, 100 output tokens: a request holds a slot for 100 steps
    # (the prefill step emits its first token, 99 decode steps the rest), 1 s, so the replica serves at most
    # 4 req/s; the knee (P95 TTFT <= 2.5 s, no growing queue) lies below it
    doc, out = run(tmp_path, capsys, "--find-knee", "--duration", "600", "--prompt-tokens", "10",
                   "--output-tokens", "100", "--model-param", "alpha=0.01", "--model-param", "beta=0",
                   "--model-param", "gamma=0", "--model-param", "max_num_seqs=4")
    assert 2.5 < doc["knee"] < 4.0, doc["knee"]
    assert doc["ttft_p95"] <= 2.5 and doc["queue_onset_s"] is None and len(doc["probes"]) >= 5
    assert "knee: " in out and "meets" in out and "misses" in out


def test_find_knee_when_no_rate_meets_the_slo(tmp_path, capsys):
    # a TPOT SLO below one step's alpha: no rate meets it; the knee is 0 and every key is there (null)
    doc, out = run(tmp_path, capsys, "--find-knee", "--duration", "60", "--slo-tpot", "0.001")
    assert doc["knee"] == 0.0 and KEYS <= set(doc) and doc["ttft_mean"] is None
    assert "no rate meets the SLOs" in out


def test_find_knee_of_the_default_profile_near_the_testbed():
    # the testbed's knee is about 26 req/s per replica at ShareGPT sizes (simulations/data/vllm-testbed-h100),
    # here the command's default sizes (ShareGPT-like: the testbed's means, log-normal with CV 1)
    from simulations.profile import DEFAULT_OUTPUT, DEFAULT_PROMPT

    dp, do = parse_sizes(DEFAULT_PROMPT, "p"), parse_sizes(DEFAULT_OUTPUT, "o")
    sizes = lambda n, rng: (dp.sample(n, rng), do.sample(n, rng))  # noqa: E731
    r = find_knee(ModelParams(), sizes, 2.5, 0.1, 300.0, 0, (235.0, 460.0))
    assert abs(r["knee"] / 26 - 1) <= 0.15, r["knee"]


def test_queue_onset_rule():
    t = np.arange(0.0, 200.0)
    w = np.zeros_like(t)
    assert queue_onset(t, w, 199.0) is None
    w[100:] = np.arange(100) + 1                      # forms at 100 s and keeps growing
    assert queue_onset(t, w, 199.0) == 100.0
    blip = w.copy()
    blip[150] = 0                                     # it emptied at 150 s: the growing stretch starts after
    assert queue_onset(t, blip, 199.0) == 151.0
    short = np.zeros_like(t)
    short[-int(ONSET_MIN_S) + 1:] = 50                # not long enough
    assert queue_onset(t, short, 199.0) is None
    small = np.zeros_like(t)
    small[100:] = ONSET_MIN_WAITING - 1               # never more than a few waiting: not a growing queue
    assert queue_onset(t, small, 199.0) is None


@pytest.mark.parametrize("argv, flag", [
    (["--rate", "0"], "--rate"), (["--rate", "-2"], "--rate"), (["--rate", "x"], "--rate"),
    (["--rate", "5", "--duration", "0"], "--duration"), (["--burst", "0"], "--burst"),
    (["--burst", "5", "--prompt-tokens", "abc"], "--prompt-tokens"),
    (["--burst", "5", "--prompt-tokens", "uniform:5:2"], "--prompt-tokens"),
    (["--burst", "5", "--output-tokens", "lognormal:0:1"], "--output-tokens"),
    (["--burst", "5", "--model-profile", "nope"], "--model-profile"),
    (["--burst", "5", "--model-param", "alpha=-1"], "alpha"),
    (["--burst", "5", "--model-param", "alpha"], "--model-param"),
    (["--rate", "1", "--burst", "2"], "--rate"), ([], "--rate"),
    (["--burst", "5", "--trace", "azure-2023-conv", "--prompt-tokens", "5"], "--trace"),
    (["--burst", "5", "--trace", "/nonexistent.csv"], "nonexistent"),
    (["--find-knee", "--slo-ttft", "0"], "--slo-ttft"), (["--find-knee", "--slo-tpot", "-1"], "--slo-tpot"),
    (["--rate", "100000", "--duration", "100000"], "--rate"),
    (["--burst", "5", "--json", "/nonexistent-dir/p.json"], "--json"),
])
def test_bad_flags_exit_2_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as exc:          # argparse's own errors exit through SystemExit(2)
        raise SystemExit(main(["profile", *argv]))
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err
