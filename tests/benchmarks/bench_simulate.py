"""Speed of the simulator (prints figures; no timed assertions).

    python3 tests/benchmarks/bench_simulate.py [--quick] [--repeat N]

1. aggregate fidelity over the bundled 2024 week (60,481 ten-second bins), per policy (target <= 5 s each), and the
   predictive policy given the simulated fleet's parameters as ``fleetModel`` (what ``simulate`` does by default),
   then that run's simulator side alone (``decide()``'s answers replayed: the cost around the policy);
2. per-request fidelity over the 2023 conversation trace (19,366 requests), per policy (target <= 10 s each);
3. 50-point sweeps over the week (reactive, then predictive; aggregate) on 2 worker processes (target <= 2 min).
Baseline measured in the same run: the cost of reading the trace, and the fleet alone at a fixed replica count
(no controller), so the ratio shows what the control loop adds. The machine may be shared: every run of a
single-process figure is repeated ``--repeat`` times (default 2): the line shows the best run (the target
applies to it), then every run in order; the UTC time and the load average are printed at the start and the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from simulations.runner import POLICIES, Settings, build_fleet, run_policy
from simulations.traces import load


def timed(fn):
    """(wall seconds, result); ``timed.cpu`` = CPU seconds of this process and of its finished children
    (the sweep's workers), so a loaded machine shows as wall >> cpu."""
    t = time.perf_counter()
    c0 = os.times()
    out = fn()
    c1 = os.times()
    timed.cpu = (c1.user - c0.user) + (c1.system - c0.system) + (c1.children_user - c0.children_user) \
        + (c1.children_system - c0.children_system)
    return time.perf_counter() - t, out


def utc() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def repeated(fn, n: int):
    """``n`` runs of ``fn``: (best wall, its cpu, every (wall, cpu), last result)."""
    runs, out = [], None
    for _ in range(n):
        wall, out = timed(fn)
        runs.append((wall, timed.cpu))
    best = min(runs)
    return best[0], best[1], runs, out


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def fleet_only(trace, s, replicas):
    f = build_fleet(trace, s, replicas)
    t = trace.start
    while t < trace.start + trace.duration:
        t += s.tick
        f.advance_to(t)
    return f


def simulator_side(trace, s, n):
    """``repeated`` runs of the predictive policy with ``decide()`` replaced by the answers (desired, active) it
    gave in one recording run: what the simulator costs around the policy (fleet, signals, KEDA and HPA
    emulation, the run loop). The answers are replayed in order, so the run makes the same decisions."""
    from types import SimpleNamespace

    import simulations.runner as runner

    real = runner.decide
    answers: list[tuple[int, bool]] = []

    def recording(signals, state, config, now):
        d = real(signals, state, config, now)
        answers.append((d.desired, d.active))
        return d

    def replay():
        it = iter(answers)

        def replayed(signals, state, config, now):
            desired, active = next(it)
            return SimpleNamespace(desired=desired, active=active, next_state=None)

        runner.decide = replayed
        return run_policy("predictive", trace, s)

    try:
        runner.decide = recording
        run_policy("predictive", trace, s)
        return repeated(replay, n)
    finally:
        runner.decide = real


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the sweep")
    ap.add_argument("--repeat", type=int, default=2, help="runs per single-process figure (default 2)")
    args = ap.parse_args()
    n = max(1, args.repeat)
    print(f"start {utc()}: {load_average()}")
    tload, week = timed(lambda: load("azure-2024-week"))
    print(f"load azure-2024-week: {tload:.2f} s ({len(week.counts):,} bins)")
    s = Settings(fidelity="aggregate")
    tb, _ = timed(lambda: fleet_only(week, s, 20))
    print(f"baseline: aggregate fleet alone, 20 fixed replicas, 5 s ticks: {tb:.2f} s")
    for p in POLICIES:
        t, cpu, runs, r = repeated(lambda p=p: run_policy(p, week, s), n)
        extra = f"unavailable: {r.unavailable}" if r.outcome is None else f"{r.gpu_hours:.0f} GPU-h"
        print(f"aggregate week  {p:<20} {t:6.2f} s wall {cpu:6.2f} s cpu  ({t / tb:4.1f}x baseline; "
              f"target <= 5 s)  {extra}; runs (wall/cpu): " + ", ".join(f"{w:.2f}/{c:.2f}" for w, c in runs))
    # what `vllm-scaler simulate` runs by default: the predictive policy given the simulated fleet's parameters
    sc = replace(s, metadata=(("fleetModel", s.params.fleet_model().metadata()),))
    t, cpu, runs, r = repeated(lambda: run_policy("predictive", week, sc), n)
    print(f"aggregate week  {'predictive+fleetModel':<20} {t:6.2f} s wall {cpu:6.2f} s cpu  ({t / tb:4.1f}x baseline; "
          f"target <= 5 s)  {r.gpu_hours:.0f} GPU-h; runs (wall/cpu): " + ", ".join(f"{w:.2f}/{c:.2f}" for w, c in runs))
    # the simulator's share of that run: the same run with decide()'s answers replayed (recorded above)
    t, cpu, runs, r2 = simulator_side(week, sc, n)
    same = "same outcome" if r2.outcome == r.outcome else "OUTCOME DIFFERS"
    print(f"aggregate week  {'  simulator side':<20} {t:6.2f} s wall {cpu:6.2f} s cpu  (predictive+fleetModel with "
          f"decide() replayed: {same}); runs (wall/cpu): " + ", ".join(f"{w:.2f}/{c:.2f}" for w, c in runs))
    tload, conv = timed(lambda: load("azure-2023-conv"))
    print(f"load azure-2023-conv: {tload:.2f} s ({int(conv.requests):,} requests)")
    s = Settings(fidelity="request")
    tb, _ = timed(lambda: fleet_only(conv, s, 3))
    print(f"baseline: request fleet alone, 3 fixed replicas: {tb:.2f} s")
    for p in POLICIES:
        t, cpu, runs, r = repeated(lambda p=p: run_policy(p, conv, s), n)
        print(f"request conv    {p:<20} {t:6.2f} s wall {cpu:6.2f} s cpu  ({t / tb:4.1f}x baseline; "
              f"target <= 10 s); runs (wall/cpu): " + ", ".join(f"{w:.2f}/{c:.2f}" for w, c in runs))
    if args.quick:
        print(f"end {utc()}: {load_average()}")
        return
    from scaler.cli import main as cli_main

    sweeps = [
        ("reactive", ["queuePerReplica=1,2,5,10,20", "runningPerReplica=8,16,32,64,128", "kvCacheTarget=0.7,0.9"]),
        ("predictive", ["targetUtilization=0.5,0.6,0.7,0.8,0.9", "reactionLag=15,45,90,150,240",
                        "scaleToZeroAfter=300,900"]),
    ]
    for policy, grid in sweeps:
        argv = ["sweep", "--trace", "azure-2024-week", "--fidelity", "aggregate", "--policy", policy,
                "--jobs", "2"] + [x for g in grid for x in ("--grid", g)]
        t, rc = timed(lambda argv=argv: cli_main(argv))
        print(f"sweep {policy}: 50 points over the week, 2 processes: {t:.1f} s wall, {timed.cpu:.1f} s cpu "
              f"(workers included; target <= 120 s wall), exit {rc}; cores: {multiprocessing.cpu_count()}; "
              f"{load_average()}")
    print(f"end {utc()}: {load_average()}")


if __name__ == "__main__":
    main()
