"""Benchmark (not a test): the cost of one ``decide()`` call, per policy, on a simulated week's signals.

    python3 tests/benchmarks/bench_decide.py [--repeat N] [--trace NAME]

The signals are the ones ``decide`` sees in a closed-loop run of the predictive policy over the bundled
2024 week (aggregate fidelity, the simulated fleet's ``fleetModel``, 40,321 decisions, one per 15 s KEDA
poll): the run is done once, recording each snapshot and instant. Then each policy is timed alone on that
sequence, chaining its own state (``decision.next_state``), best of ``--repeat`` runs of CPU time. The
reactive policy is the baseline measured in the same run: it reads the same signals with no forecast, no
capacity model and no history, so ``predictive / reactive`` is what forecasting costs per decision.

Also printed: a digest of every decision (desired, active, dominant, terms, inputs, reasons); a speed change
to ``scaler/policy.py`` or ``scaler/forecast.py`` must leave it unchanged. No target here: the targets are
the simulator's (``bench_simulate.py``), of which ``decide`` is about half for the predictive policy.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import simulations.runner as runner
from scaler.policy import decide
from simulations.traces import load


def record(trace_name: str):
    """(settings, [(signals, now), ...]) of a predictive closed-loop run over ``trace_name``."""
    s = runner.Settings(fidelity="aggregate")
    s = replace(s, metadata=(("fleetModel", s.params.fleet_model().metadata()),))
    calls = []

    def recording(signals, state, config, now):
        calls.append((signals, now))
        return decide(signals, state, config, now)

    runner.decide = recording
    try:
        runner.run_policy("predictive", load(trace_name), s)
    finally:
        runner.decide = decide
    return s, calls


def chain(config, calls, digest: bool = False) -> str:
    state, h = None, hashlib.sha256()
    for signals, now in calls:
        d = decide(signals, state, config, now)
        state = d.next_state
        if digest:
            h.update(repr((d.desired, d.active, d.dominant, sorted(d.terms.items()), sorted(d.inputs.items()),
                           tuple(d.reasons))).encode())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per policy (default 3; the best is shown)")
    ap.add_argument("--trace", default="azure-2024-week")
    args = ap.parse_args()
    print(f"start {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores")
    s, calls = record(args.trace)
    print(f"recorded {len(calls):,} decisions of a predictive run over {args.trace}")
    per_call = {}
    for policy in ("reactive", "predictive"):
        config = runner.policy_config(policy, s)
        digest = chain(config, calls, digest=True)
        runs = []
        for _ in range(max(1, args.repeat)):
            t = time.process_time()
            chain(config, calls)
            runs.append(time.process_time() - t)
        per_call[policy] = min(runs) / len(calls)
        print(f"{policy:<10} {1e6 * per_call[policy]:6.1f} us per decision (best of {len(runs)}: "
              + ", ".join(f"{r:.2f}" for r in runs) + f" s CPU for {len(calls):,}); digest {digest}")
    print(f"predictive / reactive: {per_call['predictive'] / per_call['reactive']:.1f}x")


if __name__ == "__main__":
    main()
