"""One replica under vLLM's V1 scheduler on the testbed's workload (prints figures; no assertions).

    python3 tests/benchmarks/bench_scheduler.py [--rate 27.5] [--duration 600] [--seeds 6] [--saturated 40]
                                                 [--model-param NAME=VALUE ...]

Workload: the H100 testbed's (``vllm bench serve`` with ShareGPT: Poisson arrivals, about 235 prompt and 460
output tokens per request). Sizes: the bundled Azure 2023 conversation trace's prompt and output sizes,
resampled and rescaled to those means (prompt x 235 / 1155, output x 460 / 211), so the spread is a real
trace's (coefficient of variation 0.96 prompt, 0.77 output), not a fixed size.

Prints, for ``--rate`` offered to one empty replica (per-request engine and aggregate fluid): KV usage,
running, waiting, completions and preemptions minute by minute, and the queue's onset (:func:`onset`; real
testbed at 27-28 req/s: 3-4 minutes), over ``--seeds`` workloads (the onset is near-critical: it varies from
one sample of the workload to the next); then a replica offered
``--saturated`` req/s (far past its knee): throughput under preemption (real: 19-30 req/s, median ~23).
Also the engine's speed (simulated requests per CPU second).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from simulations.fleet import AggregateFleet, ColdStartModel, ModelParams, RequestFleet
from simulations.traces import load

PROMPT_MEAN, OUTPUT_MEAN = 235.0, 460.0
T0 = 1_000_000.0


def testbed_workload(rate: float, duration: float, seed: int):
    """(arrival offsets s, prompt tokens, output tokens): Poisson at ``rate``, sizes as the module docstring."""
    conv = load("azure-2023-conv")
    p_src, o_src = np.asarray(conv.prompt, float), np.asarray(conv.output, float)
    rng = np.random.default_rng(seed)
    n = rng.poisson(rate * duration)
    arr = np.sort(rng.uniform(0.0, duration, n))
    pick = rng.integers(0, len(p_src), n)
    prompt = np.maximum(1, np.round(p_src[pick] * PROMPT_MEAN / p_src.mean())).astype(int)
    output = np.maximum(1, np.round(o_src[pick] * OUTPUT_MEAN / o_src.mean())).astype(int)
    return arr, prompt, output


QUEUE = 10   # requests: more than the arrivals that wait for the next step (1-3 at these rates)


def onset(times, waiting) -> float | None:
    """First sample time from which more than ``QUEUE`` requests wait at every later sample (None if fewer wait
    at the end): the queue has formed and does not drain."""
    if not len(waiting) or waiting[-1] <= QUEUE:
        return None
    k = len(waiting) - 1
    while k > 0 and waiting[k - 1] > QUEUE:
        k -= 1
    return float(times[k])


def run_engine(params: ModelParams, rate: float, duration: float, seed: int, step: float = 10.0):
    arr, prompt, output = testbed_workload(rate, duration, seed)
    f = RequestFleet(T0 + arr, prompt, output, params=params, cold_start=ColdStartModel.single(1.0), start=T0,
                     initial_replicas=1)
    e = f.engines[0]
    rows = []
    c0 = time.process_time()
    for t in np.arange(step, duration + step / 2, step):
        f.advance_to(T0 + t)
        rows.append((t, e.kv_usage(), len(e.running), len(e.waiting), e.n_done, e.preemptions))
    cpu = time.process_time() - c0
    return np.array(rows), cpu, len(arr), prompt, output


def run_aggregate(params: ModelParams, rate: float, duration: float, prompt, output, step: float = 10.0):
    nb = int(duration // 10)
    g = AggregateFleet(np.full(nb, rate * 10.0), bin_seconds=10.0, prompt_mean=float(np.mean(prompt)),
                       output_mean=float(np.mean(output)), prompt_pool=prompt, output_pool=output, params=params,
                       cold_start=ColdStartModel.single(1.0), start=T0, initial_replicas=1, slo_ttft=1e9,
                       slo_tpot=1e9)
    rows = []
    for t in np.arange(step, duration + step / 2, step):
        s = g.signals(T0 + t, step)
        rows.append((t, s.kv_cache_usage, s.running, s.waiting, s.completion_rate, g.preemptions))
    return np.array(rows, dtype=float)


def per_minute(rows, duration):
    """Minute by minute: (minute, KV at its end, running, waiting, completions/s, preemptions/s)."""
    out = []
    for m in range(1, int(duration // 60) + 1):
        k = np.searchsorted(rows[:, 0], 60.0 * m - 1e-9)
        k0 = np.searchsorted(rows[:, 0], 60.0 * (m - 1) - 1e-9) if m > 1 else -1
        done = rows[k, 4] - (rows[k0, 4] if k0 >= 0 else 0.0)
        pre = rows[k, 5] - (rows[k0, 5] if k0 >= 0 else 0.0)
        out.append((m, rows[k, 1], rows[k, 2], rows[k, 3], done / 60.0, pre / 60.0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=27.5)
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--seeds", type=int, default=6, help="workloads (seeds 1..N); the first is shown in full")
    ap.add_argument("--saturated", type=float, default=40.0)
    ap.add_argument("--model-param", action="append", default=[], metavar="NAME=VALUE")
    args = ap.parse_args()
    params = ModelParams().with_overrides(dict(kv.split("=", 1) for kv in args.model_param))
    print(f"model: {params}")
    for rate in (args.rate, args.saturated):
        rows, cpu, n, prompt, output = run_engine(params, rate, args.duration, 1)
        print(f"\n{rate:g} req/s offered to one empty replica for {args.duration:g} s: {n:,} requests "
              f"(prompt mean {prompt.mean():.0f}, output mean {output.mean():.0f}); engine "
              f"{cpu:.2f} s CPU ({n / max(cpu, 1e-9):,.0f} requests per CPU second)")
        agg = run_aggregate(params, rate, args.duration, prompt, output)
        print("minute | engine: KV  running waiting done/s preempt/s | aggregate: KV  running waiting admitted/s")
        ag_done = {}
        for m in range(1, int(args.duration // 60) + 1):
            sl = (agg[:, 0] > 60 * (m - 1)) & (agg[:, 0] <= 60 * m)
            ag_done[m] = (agg[sl, 4].mean(), agg[sl][-1])
        for m, kv, run, wait, done, pre in per_minute(rows, args.duration):
            a = ag_done[m][1]
            print(f"{m:6d} | {kv:11.3f} {run:7.0f} {wait:7.0f} {done:6.1f} {pre:9.2f} | {a[1]:13.3f} {a[2]:7.0f} "
                  f"{a[3]:7.0f} {ag_done[m][0]:6.1f}")
        ons = [onset(rows[:, 0], rows[:, 3])]
        for seed in range(2, args.seeds + 1):
            r2 = run_engine(params, rate, args.duration, seed)[0]
            ons.append(onset(r2[:, 0], r2[:, 3]))
        on_a = onset(agg[:, 0], agg[:, 3])
        fmt = lambda x: "never" if x is None else f"{x:.0f} s"   # noqa: E731
        print(f"queue onset (more than {QUEUE} waiting from then on): engine, seeds 1-{args.seeds}: "
              + ", ".join(fmt(x) for x in ons) + f"; aggregate {fmt(on_a)}")
        kv_e = rows[5::6, 1][:4]
        kv_a = agg[5::6, 1][:4]
        print("KV growth per minute, minutes 1-4: engine (seed 1) "
              + ", ".join(f"{b - a:+.3f}" for a, b in zip([0.0] + list(kv_e[:3]), kv_e))
              + "; aggregate " + ", ".join(f"{b - a:+.3f}" for a, b in zip([0.0] + list(kv_a[:3]), kv_a)))
        last = rows[:, 0] > args.duration / 2
        done_rate = (rows[last][-1, 4] - rows[last][0, 4]) / (rows[last][-1, 0] - rows[last][0, 0])
        pre_rate = (rows[last][-1, 5] - rows[last][0, 5]) / (rows[last][-1, 0] - rows[last][0, 0])
        print(f"second half: engine {done_rate:.2f} completions/s, {pre_rate:.2f} preemptions/s; aggregate "
              f"{np.nanmean(agg[last, 4]):.2f} admitted/s, {(agg[-1, 5] - agg[last][0, 5]) / (agg[-1, 0] - agg[last][0, 0]):.2f} "
              f"preemptions/s")


if __name__ == "__main__":
    main()
