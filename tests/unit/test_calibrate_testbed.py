"""Calibration on real measurements: the bundled llm-d H100 testbed (simulations/data/vllm-testbed-h100/).

The fit from the testbed's reconciles.csv (converted by simulations.recording.from_testbed_csv) must put the
knee within 15 % of the measured 26 req/s per replica and every load band's mean TTFT and ITL within 30 % of
the table in that folder's README; the default profile is that fit.
"""

import re
from pathlib import Path

import numpy as np
import pytest

import simulations
from scaler.cli import main
from simulations.fleet import ModelParams, profiles, steady_state
from simulations.fleet.model import knee
from simulations.recording import RecordingError, calibrate, fitted_params, from_testbed_csv

DATA = Path(simulations.__file__).parent / "data" / "vllm-testbed-h100"
KNEE = 26.0   # req/s per replica, the README's "Knee about 26 req/s per replica"
SPREAD = 2.0  # E[O^2]/E[O]^2 of ShareGPT-like outputs (log-normal, CV 1): not logged by the testbed


def readme_bands():
    """The README's table: {(lo, hi): (ttft_s, itl_s)} for the rate bands (not the `queue > 0` row)."""
    text = (DATA / "README.md").read_text(encoding="utf-8")
    bands = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*(<\s*8 req/s|\d+-\d+)\s*\|\s*\d+\s*\|\s*[\d.]+\s*\|\s*([\d,.]+)\s*\|\s*([\d.]+)\s*\|", line)
        if m:
            lo, hi = (0.0, 8.0) if m.group(1).startswith("<") else map(float, m.group(1).split("-"))
            bands[(lo, hi)] = (float(m.group(2).replace(",", "")) / 1000, float(m.group(3)) / 1000)
    return bands


@pytest.fixture(scope="module")
def fit():
    rec = from_testbed_csv(DATA / "reconciles.csv")
    fits = calibrate(rec, output_spread=SPREAD)
    params, note = fitted_params(fits, "testbed")
    assert note is None
    return rec, fits, params


def test_readme_table_is_read():
    bands = readme_bands()
    assert len(bands) == 5 and bands[(24.0, 28.0)] == (pytest.approx(0.061), pytest.approx(0.0376))


def test_fit_quality_is_reported(fit):
    _, fits, _ = fit
    assert fits["ttft"].ticks > 600 and fits["tpot"].ticks > 600 and fits["kv"].ticks > 600
    assert fits["ttft"].r2 > 0.7 and fits["tpot"].r2 > 0.4 and fits["kv"].r2 > 0.9


def test_knee_within_15_percent(fit):
    rec, _, params = fit
    quiet = [t for t in rec.ticks if t.signals.prompt_tokens_mean and t.signals.output_tokens_mean]
    P = np.mean([t.signals.prompt_tokens_mean for t in quiet])
    L = np.mean([t.signals.output_tokens_mean for t in quiet])
    assert 230 < P < 250 and 430 < L < 470
    lam = knee(params, P, L, SPREAD)
    assert abs(lam / KNEE - 1) <= 0.15, lam


def test_every_band_within_30_percent(fit):
    # At the testbed's ShareGPT sizes (the mean over every snapshot, as the README states them), each band's
    # mean completion rate through the step model's steady state. (With each band's own mean sizes instead, the
    # 24-28 req/s band's ITL is 40 % low: its snapshots have 400 output tokens on average, not 460.)
    rec, _, params = fit
    sized = [t for t in rec.ticks if t.signals.prompt_tokens_mean and t.signals.output_tokens_mean]
    P = np.mean([t.signals.prompt_tokens_mean for t in sized])
    L = np.mean([t.signals.output_tokens_mean for t in sized])
    for (lo, hi), (ttft, itl) in readme_bands().items():
        # the band's single-pod snapshots with traffic and no queue, as the README's table
        ticks = [t for t in rec.ticks if t.replicas == 1 and t.signals.waiting == 0 and t.tpot_mean and t.ttft_mean
                 and t.signals.completion_rate and lo <= t.signals.completion_rate < hi]
        rate = np.mean([t.signals.completion_rate for t in ticks])
        ss = steady_state(params, rate, P, L)
        model_ttft = 1.5 * ss.iteration + params.gamma * P      # simulations/fleet/model.py
        assert ss.iteration == pytest.approx(itl, rel=0.30), (lo, hi, rate, ss.iteration, itl)
        assert model_ttft == pytest.approx(ttft, rel=0.30), (lo, hi, rate, model_ttft, ttft)


def test_kv_fit_meets_the_memory_arithmetic(fit):
    # 80 GB x 0.9 minus 15 GiB of weights and 3-5 GiB of activations, at 128 KiB a token: 420,000-430,000 tokens
    _, fits, params = fit
    assert 0.9 * 420_000 < params.kv_tokens < 430_000
    # the fixed-size reading of the same data (spread 1) is far below: the spread matters
    rec, _, _ = fit
    assert calibrate(rec, output_spread=1.0)["kv"].coefficients["kv_tokens"] < 0.7 * params.kv_tokens


def test_default_profile_is_this_fit(fit):
    _, _, params = fit
    default = profiles.get(profiles.DEFAULT)
    assert default == ModelParams()
    for k in ("alpha", "beta", "gamma", "kv_tokens"):
        assert getattr(default, k) == pytest.approx(getattr(params, k), rel=0.01), k


def test_converter_maps_the_columns(fit):
    rec, _, _ = fit
    assert len(rec.ticks) == 1399                     # 1,405 rows, 6 repeated at run boundaries
    assert all(a.t < b.t for a, b in zip(rec.ticks, rec.ticks[1:]))
    busy = next(t for t in rec.ticks if t.tpot_mean and t.signals.output_tokens_mean and t.replicas == 1)
    assert busy.signals.running == pytest.approx(busy.signals.completion_rate * busy.signals.output_tokens_mean * busy.tpot_mean)
    idle = next(t for t in rec.ticks if t.signals.completion_rate == 0)
    assert idle.tpot_mean is None and idle.ttft_mean is None and idle.signals.completion_rate == 0   # 0 ms = no traffic


def test_converter_names_bad_cells(tmp_path):
    lines = (DATA / "reconciles.csv").read_text(encoding="utf-8").splitlines()[:3]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], lines[1], lines[2].replace(",0.0,0.0,0.0,,,", ",0.0,x,0.0,,,", 1)]) + "\n")
    with pytest.raises(RecordingError, match=r"bad.csv:3: column itl_ms: not a number: 'x'"):
        from_testbed_csv(bad)


def test_calibrate_command_reads_the_csv(capsys):
    assert main(["calibrate", str(DATA / "reconciles.csv"), "--output-spread", "2"]) == 0
    out = capsys.readouterr().out
    assert "prefill share removed" in out and "ticks" in out and "R^2" in out and "kv_tokens = 412975" in out
    assert main(["calibrate", str(DATA / "reconciles.csv"), "--output-spread", "0.5"]) == 2
    assert "--output-spread" in capsys.readouterr().err
