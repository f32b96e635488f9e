"""Calibration round trip: a recording made from the simulated fleet at known parameters gives them back.

The fleet (simulations.fleet.RequestFleet, per-request continuous batching) serves Poisson load in phases from
light to near its knee; every 15 s a tick is written the way `vllm-scaler record` computes it from vLLM's
metrics over a 60 s window: TTFT mean over the requests whose first token came in the window, TPOT mean from
the inter-token gaps of the requests that finished in it (vLLM observes them per token, each request's mean
gap (O - 1) times, as simulations/fleet/metrics.py exports them), completion rate and mean sizes of those
requests, the waiting queue at the tick. calibrate() must recover alpha, beta, gamma within 5 %.
"""

import numpy as np
import pytest

from simulations.fleet import ColdStartModel, ModelParams, RequestFleet
from simulations.recording import Recording, RecordingHeader, Tick, calibrate

T0 = 1_700_000_000.0
STEP, WINDOW = 15.0, 60.0


def fleet_recording(params: ModelParams, phases, replicas: int, seed: int = 1) -> Recording:
    rng = np.random.default_rng(seed)
    arrivals, t = [], 0.0
    for duration, rate in phases:          # Poisson arrivals, `rate` req/s per replica for `duration` s
        n = rng.poisson(rate * replicas * duration)
        arrivals.append(t + np.sort(rng.uniform(0, duration, n)))
        t += duration
    arr = T0 + np.concatenate(arrivals)
    prompt = rng.integers(100, 400, arr.size)
    output = rng.integers(200, 700, arr.size)
    fleet = RequestFleet(arr, prompt, output, params=params, cold_start=ColdStartModel(100.0, 0.0), start=T0,
                         initial_replicas=replicas, request_timeout=3600.0)
    ticks = []
    now = T0 + STEP
    while now <= T0 + t:
        fleet.advance_to(now)
        req = fleet.req
        lo = now - WINDOW
        first_in = (req.first > lo) & (req.first <= now)
        done = (req.finish > lo) & (req.finish <= now)
        multi = done & (req.output > 1)
        gaps = (req.finish[multi] - req.first[multi]).sum() / (req.output[multi] - 1).sum() if multi.any() else None
        sig = fleet.signals(now, WINDOW)
        ticks.append(Tick.of(
            t=now, pods_reporting=replicas, replicas=replicas, waiting=sig.waiting, running=sig.running,
            completion_rate=done.sum() / WINDOW, arrival_rate=sig.arrival_rate,
            prompt_tokens_mean=float(req.prompt[done].mean()) if done.any() else None,
            output_tokens_mean=float(req.output[done].mean()) if done.any() else None,
            ttft_mean=float((req.first[first_in] - req.arrival[first_in]).mean()) if first_in.any() else None,
            tpot_mean=None if gaps is None else float(gaps)))
        now += STEP
    header = RecordingHeader(prometheus="", namespace="sim", deployment="vllm", model_name=None, start=T0 + STEP,
                             end=now - STEP, step=STEP, window=WINDOW)
    return Recording(header, tuple(ticks))


@pytest.mark.parametrize("params", [ModelParams(), ModelParams(alpha=0.012, beta=0.0002, gamma=0.00005,
                                                               max_num_seqs=256, kv_tokens=400_000, name="other")],
                         ids=["h100-profile", "slower"])
def test_round_trip_recovers_known_parameters(params):
    # load from light to about 85 % of the replica's compute bound 1 / (beta L + gamma P), two replicas
    cap = 1.0 / (params.beta * 450 + params.gamma * 250)
    phases = [(240.0, f * cap) for f in (0.1, 0.3, 0.5, 0.65, 0.75, 0.85)]
    fits = calibrate(fleet_recording(params, phases, replicas=2))
    got = {**fits["tpot"].coefficients, **fits["ttft"].coefficients}
    print({k: f"{v:.4g} (true {getattr(params, k):.4g})" for k, v in got.items()},
          {k: (f.r2, f.ticks) for k, f in fits.items()})
    for k in ("alpha", "beta", "gamma"):
        assert got[k] == pytest.approx(getattr(params, k), rel=0.05), k
    # ticks with a request waiting for the next step at the tick (common near the knee) are left out
    assert fits["tpot"].ticks >= 15 and fits["tpot"].r2 > 0.9
