"""``vllm-scaler profile``: capacity planning for one replica -- what ``vllm bench serve`` would report against it.

One replica of a profile (:mod:`simulations.fleet.profiles`; ``--model-profile NAME``, ``--model-param
NAME=VALUE`` on top) is driven by the per-request engine (:class:`simulations.fleet.engine.Engine`, vLLM V1's
scheduler with KV blocks and preemption) under one of three loads:

* ``--rate R [--duration S]``: Poisson arrivals at ``R`` req/s for ``S`` seconds (default 300), then every
  request is served to the end (``vllm bench serve --request-rate R``);
* ``--find-knee``: the highest rate whose P95 TTFT and P95 TPOT meet ``--slo-ttft`` / ``--slo-tpot`` with no
  growing queue, by bisection over ``--rate`` runs of ``--duration`` seconds (to 1 % of the rate);
* ``--burst N``: ``N`` requests at t = 0 (``--request-rate inf``).

Token sizes: ``--prompt-tokens`` and ``--output-tokens`` each ``N`` (fixed), ``uniform:LO:HI`` (integers,
both included) or ``lognormal:MEAN:CV`` (rounded, at least 1), or ``--trace FILE|NAME``: (prompt, output)
pairs drawn from a trace's requests (the bundled names of ``vllm-scaler simulate``).

Reported, as ``vllm bench serve`` computes them (seconds): ``completions_per_s`` = requests finished / (last
finish - first arrival); ``ttft_mean``, ``ttft_p95`` over requests; ``itl_mean`` = every inter-token gap's mean
= sum(last - first token) / sum(output - 1); ``tpot_p95`` = P95 over requests of (last - first token) /
(output - 1). The engine is sampled every second (``SAMPLE_S``) from the first arrival to the last finish:
``kv_usage_mean`` / ``kv_usage_max`` (``vllm:kv_cache_usage_perc``), ``waiting_max`` (requests in the waiting
queue, preempted ones included). ``queue_onset_s``: seconds from the first arrival to the start of the last
stretch in which the queue held requests at every sample up to the end of the arrivals, when that stretch lasts
at least ``ONSET_MIN_S`` and ends with at least ``ONSET_MIN_WAITING`` waiting (a queue that formed and kept
growing); null otherwise (always null for a burst, whose arrivals all come at once). ``preemptions``: the
engine's preemption events. Modes add ``knee`` (req/s), ``burst_makespan_s`` (first arrival to last finish)
and ``burst_throughput`` (N / makespan).

Worked example (``tests/unit/test_profile_cmd.py::test_burst_worked_example``): ``--burst 8 --prompt-tokens 32
--output-tokens 128`` on ``alpha = 0.01, beta = 0.001, gamma = 0.0001``: one step prefills the 8 prompts
(0.01 + 0.008 + 0.0256 = 0.0436 s) and emits each first token, 127 decode steps of 0.018 s follow: makespan
0.0436 + 2.286 = 2.3296 s, burst throughput 8 / 2.3296 = 3.434 req/s.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_S = 1.0             # engine sampling interval (KV usage, waiting), seconds
ONSET_MIN_S = 30.0         # a queue counts as growing when it held requests this long, to the end of arrivals
ONSET_MIN_WAITING = 10     # ... and ends with at least this many waiting
T0 = 1_000_000.0           # the engine's clock origin (unix-like seconds; only differences are reported)
# Default sizes: the llm-d testbed's ShareGPT means (simulations/data/vllm-testbed-h100/README.md), varied as a
# log-normal with CV 1 (output spread E[O^2]/E[O]^2 = 2, with which the H100 profile's KV was fitted)
DEFAULT_PROMPT, DEFAULT_OUTPUT = "lognormal:235:1", "lognormal:460:1"


# ---------------------------------------------------------------------------------------------------
# token sizes
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SizeDist:
    """A token-size distribution: ``fixed`` (a), ``uniform`` (a..b) or ``lognormal`` (mean a, CV b)."""

    kind: str
    a: float
    b: float = 0.0

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, int(self.a), dtype=np.int64)
        if self.kind == "uniform":
            return rng.integers(int(self.a), int(self.b) + 1, n)
        sigma2 = math.log(1.0 + self.b ** 2)
        mu = math.log(self.a) - sigma2 / 2
        return np.maximum(1, np.rint(rng.lognormal(mu, math.sqrt(sigma2), n))).astype(np.int64)

    def describe(self) -> str:
        return {"fixed": f"{int(self.a)}", "uniform": f"uniform {int(self.a)}-{int(self.b)}",
                "lognormal": f"lognormal mean {self.a:g} CV {self.b:g}"}[self.kind]


def parse_sizes(text: str, flag: str) -> SizeDist:
    """``N``, ``uniform:LO:HI`` or ``lognormal:MEAN:CV``; ValueError names ``flag``."""
    parts = text.split(":")
    try:
        if len(parts) == 1:
            n = int(parts[0])
            if n < 1:
                raise ValueError("must be >= 1")
            return SizeDist("fixed", n)
        kind, args = parts[0], parts[1:]
        if kind == "uniform" and len(args) == 2:
            lo, hi = int(args[0]), int(args[1])
            if not 1 <= lo <= hi:
                raise ValueError("need 1 <= LO <= HI")
            return SizeDist("uniform", lo, hi)
        if kind == "lognormal" and len(args) == 2:
            mean, cv = float(args[0]), float(args[1])
            if not (math.isfinite(mean) and mean >= 1 and math.isfinite(cv) and 0 <= cv <= 10):
                raise ValueError("need MEAN >= 1 and 0 <= CV <= 10")
            return SizeDist("lognormal", mean, cv)
        raise ValueError("expected N, uniform:LO:HI or lognormal:MEAN:CV")
    except ValueError as exc:
        raise ValueError(f"{flag} {text!r}: {exc}") from None


# ---------------------------------------------------------------------------------------------------
# one replica
# ---------------------------------------------------------------------------------------------------
def _p95(x: np.ndarray) -> float | None:
    return float(np.percentile(x, 95)) if x.size else None


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if x.size else None


def queue_onset(times: np.ndarray, waiting: np.ndarray, arrivals_end: float) -> float | None:
    """Start of the last stretch of samples (up to ``arrivals_end``) that all had a queue, when it lasts at
    least :data:`ONSET_MIN_S` and ends with at least :data:`ONSET_MIN_WAITING` waiting; else None."""
    m = times <= arrivals_end + 1e-9
    t, w = times[m], waiting[m]
    if t.size == 0 or w[-1] < ONSET_MIN_WAITING:
        return None
    empty = np.nonzero(w == 0)[0]
    first = empty[-1] + 1 if empty.size else 0
    if t[-1] - t[first] < ONSET_MIN_S:
        return None
    return float(t[first])


def run_replica(params, arrivals: np.ndarray, prompt: np.ndarray, output: np.ndarray) -> dict[str, Any]:
    """Serve the requests (``arrivals`` in seconds from 0, sorted) on one replica to the end; the report's
    keys are in the module docstring (``queue_onset_s`` over the arrivals' span)."""
    from simulations.fleet.engine import Engine, RequestTable

    req = RequestTable(T0 + np.asarray(arrivals, dtype=float), prompt, output)
    eng = Engine(params, req, 0, T0)
    n = len(req.arrival)
    samples_t: list[float] = []
    samples_kv: list[float] = []
    samples_w: list[int] = []
    next_sample = T0
    i = 0
    while i < n or not eng.idle:
        t_arr = req.A[i] if i < n else math.inf
        if next_sample <= t_arr:
            eng.advance_to(next_sample)
            samples_t.append(next_sample - T0)
            samples_kv.append(eng.kv_usage())
            samples_w.append(len(eng.waiting))
            next_sample += SAMPLE_S
            if i >= n and eng.idle:
                break
            continue
        eng.advance_to(t_arr)
        eng.enqueue(i, t_arr)
        i += 1
    done = np.isfinite(req.finish)
    first = req.first[done]
    fin = req.finish[done]
    o = req.output[done].astype(float)
    ttft = first - req.arrival[done]
    multi = o > 1
    gaps = (fin[multi] - first[multi])
    tpot = gaps / (o[multi] - 1)
    span = float(fin.max() - req.arrival.min()) if done.any() else None
    t = np.asarray(samples_t)
    w = np.asarray(samples_w, dtype=float)
    kv = np.asarray(samples_kv)
    return {
        "requests": n,
        "completed": int(done.sum()),
        "unserved": int(req.unserved.sum()),
        "completions_per_s": (done.sum() / span) if span else None,
        "ttft_mean": _mean(ttft), "ttft_p95": _p95(ttft),
        "itl_mean": float(gaps.sum() / (o[multi] - 1).sum()) if multi.any() else None,
        "tpot_p95": _p95(tpot),
        "kv_usage_mean": _mean(kv), "kv_usage_max": float(kv.max()) if kv.size else None,
        "waiting_max": int(w.max()) if w.size else 0,
        "queue_onset_s": queue_onset(t, w, float(arrivals[-1])) if n else None,
        "preemptions": int(eng.preemptions),
        "span_s": span,
    }


def poisson_arrivals(rate: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    n = rng.poisson(rate * duration)
    return np.sort(rng.uniform(0.0, duration, n))


Sizes = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


MAX_REQUESTS = 2_000_000   # one run's requests at most (rate x duration)
REPORT_KEYS = ("rate", "completions_per_s", "ttft_mean", "ttft_p95", "itl_mean", "tpot_p95", "kv_usage_mean",
               "kv_usage_max", "waiting_max", "queue_onset_s", "preemptions")


def at_rate(params, sizes: Sizes, rate: float, duration: float, seed: int) -> dict[str, Any]:
    """``--rate``: Poisson at ``rate`` req/s for ``duration`` s, every request served to the end."""
    if rate * duration > MAX_REQUESTS:
        raise ValueError(f"--rate x --duration = {rate * duration:.0f} requests: more than {MAX_REQUESTS:,} in one run")
    rng = np.random.default_rng(seed)
    arr = poisson_arrivals(rate, duration, rng)
    p, o = sizes(len(arr), rng)
    out = run_replica(params, arr, p, o)
    return {"rate": rate, **out}


def burst(params, sizes: Sizes, n: int, seed: int) -> dict[str, Any]:
    """``--burst N``: N requests at t = 0."""
    rng = np.random.default_rng(seed)
    p, o = sizes(n, rng)
    out = run_replica(params, np.zeros(n), p, o)
    out["queue_onset_s"] = None
    return {"rate": None, **out, "burst_makespan_s": out["span_s"],
            "burst_throughput": n / out["span_s"] if out["span_s"] else None}


def meets(report: dict[str, Any], slo_ttft: float, slo_tpot: float) -> bool:
    """P95 TTFT and P95 TPOT within the SLOs, every request served, and no growing queue."""
    return (report["queue_onset_s"] is None and report["unserved"] == 0 and report["ttft_p95"] is not None
            and report["ttft_p95"] <= slo_ttft and (report["tpot_p95"] or 0.0) <= slo_tpot)


def find_knee(params, sizes: Sizes, slo_ttft: float, slo_tpot: float, duration: float, seed: int,
              mean_sizes: tuple[float, float], on_probe: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """``--find-knee``: bisection for the highest rate that :func:`meets` the SLOs (relative tolerance 1 %).

    The upper bound starts at the least of three rates no replica sustains (mean sizes ``P``, ``L``): the
    compute bound ``1 / (beta L + gamma P)`` (a step grows without limit as sequences pile up), ``max_num_seqs /
    (L alpha)`` (every request needs ``L`` steps of at least ``alpha``) and ``kv_tokens / ((P + L/2) L alpha)``
    (what the cache holds at once, on average), and doubles while it still meets (at most 10 times).
    """
    P, L = mean_sizes
    L = max(1.0, L)
    bounds = [params.max_num_seqs / (L * params.alpha), params.kv_tokens / ((P + L / 2) * L * params.alpha)]
    if params.beta * L + params.gamma * P > 0:
        bounds.append(1.0 / (params.beta * L + params.gamma * P))
    hi = min(bounds)
    probes: list[dict] = []

    def probe(rate: float) -> dict:
        r = at_rate(params, sizes, rate, duration, seed)
        r["meets_slo"] = meets(r, slo_ttft, slo_tpot)
        probes.append(r)
        if on_probe:
            on_probe(r)
        return r

    for _ in range(10):
        if not probe(hi)["meets_slo"]:
            break
        hi *= 2
    lo, best = 0.0, None
    while hi - lo > 0.01 * hi:
        mid = (lo + hi) / 2
        r = probe(mid)
        if r["meets_slo"]:
            lo, best = mid, r
        else:
            hi = mid
    # no rate meets the SLOs: every reported number is null, the knee 0
    out = dict(best) if best is not None else {k: None for k in REPORT_KEYS}
    out["knee"] = lo if best is not None else 0.0
    out["probes"] = [{k: r[k] for k in ("rate", "meets_slo", "ttft_p95", "tpot_p95", "queue_onset_s",
                                         "completions_per_s")} for r in probes]
    return out


# ---------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------
COLUMNS = (("rate", "offered req/s", "{:.2f}"), ("completions_per_s", "done req/s", "{:.2f}"),
           ("ttft_mean", "TTFT mean", "{:.3f}"), ("ttft_p95", "TTFT P95", "{:.3f}"),
           ("itl_mean", "ITL mean", "{:.4f}"), ("tpot_p95", "TPOT P95", "{:.4f}"),
           ("kv_usage_mean", "KV mean", "{:.2f}"), ("kv_usage_max", "KV max", "{:.2f}"),
           ("waiting_max", "waiting max", "{}"), ("queue_onset_s", "queue onset s", "{:.0f}"),
           ("preemptions", "preempt", "{}"))


def table_row(r: dict) -> str:
    cells = []
    for key, head, fmt in COLUMNS:
        v = r.get(key)
        cells.append(f"{'-' if v is None else fmt.format(v):>{len(head)}}")
    return "  ".join(cells)


def table_head() -> str:
    return "  ".join(head for _, head, _ in COLUMNS)


def _positive(flag: str, v: float | None) -> None:
    if v is not None and not (math.isfinite(v) and v > 0):
        raise ValueError(f"{flag} must be a number > 0, got {v!r}")


def _sizes_from_args(args) -> tuple[Sizes, str, tuple[float, float]]:
    if args.trace is not None:
        if args.prompt_tokens is not None or args.output_tokens is not None:
            raise ValueError("--trace: give it or --prompt-tokens/--output-tokens, not both")
        from .traces import load

        pool = load(args.trace, seed=args.seed).tokens
        return (lambda n, rng: pool.draw(n, rng)), f"sizes drawn from {pool.source}", (
            float(pool.prompt.mean()), float(pool.output.mean()))
    ps = parse_sizes(args.prompt_tokens or DEFAULT_PROMPT, "--prompt-tokens")
    os_ = parse_sizes(args.output_tokens or DEFAULT_OUTPUT, "--output-tokens")
    big = 200_000
    means = tuple(float(d.sample(big, np.random.default_rng(0)).mean()) if d.kind != "fixed" else d.a
                  for d in (ps, os_))
    return ((lambda n, rng: (ps.sample(n, rng), os_.sample(n, rng))),
            f"prompt {ps.describe()}, output {os_.describe()} tokens", means)   # type: ignore[return-value]


def cmd_profile(args) -> int:
    from .cli import model_params
    from .fleet import profiles
    from .traces import TraceError

    if args.list:
        for name in profiles.names():
            prof = profiles.PROFILES[name]
            p = prof.params
            print(f"{name}  {prof.gpus}; alpha {p.alpha * 1e3:.3g} ms, beta {p.beta * 1e3:.3g} ms/seq, gamma "
                  f"{p.gamma * 1e3:.3g} ms/prompt token, kv_tokens {p.kv_tokens}, max_num_seqs {p.max_num_seqs}, "
                  f"max_batched_tokens {p.max_batched_tokens}; source: {prof.source}")
        return 0
    try:
        if sum(x is not None and x is not False for x in (args.rate, args.burst, args.find_knee or None)) != 1:
            raise ValueError("give one of --rate R, --find-knee, --burst N (or --list)")
        params = model_params(args)
        _positive("--rate", args.rate)
        _positive("--duration", args.duration)
        _positive("--slo-ttft", args.slo_ttft)
        _positive("--slo-tpot", args.slo_tpot)
        if args.burst is not None and not 1 <= args.burst <= MAX_REQUESTS:
            raise ValueError(f"--burst must be an integer from 1 to {MAX_REQUESTS:,}, got {args.burst}")
        if args.rate is not None and args.rate * args.duration > MAX_REQUESTS:
            raise ValueError(f"--rate {args.rate:g} x --duration {args.duration:g}: more than {MAX_REQUESTS:,} "
                             "requests in one run")
        if args.json is not None and (Path(args.json).is_dir() or not Path(args.json).resolve().parent.is_dir()):
            raise ValueError(f"--json {args.json!r}: not a file in an existing directory")
        sizes, sizes_doc, means = _sizes_from_args(args)
    except (ValueError, TraceError, OSError) as exc:
        print(f"vllm-scaler profile: {exc}", file=sys.stderr)
        return 2
    print(f"one replica of {params.name}: alpha {params.alpha:g} s, beta {params.beta:g} s/seq, gamma "
          f"{params.gamma:g} s/prompt token, kv_tokens {params.kv_tokens}, max_num_seqs {params.max_num_seqs}, "
          f"max_batched_tokens {params.max_batched_tokens}; {sizes_doc}")
    print(table_head())
    if args.find_knee:
        print(f"--find-knee: P95 TTFT <= {args.slo_ttft:g} s, P95 TPOT <= {args.slo_tpot:g} s, no growing queue; "
              f"{args.duration:g} s per probe")
        report = find_knee(params, sizes, args.slo_ttft, args.slo_tpot, args.duration, args.seed, means,
                           on_probe=lambda r: print(table_row(r) + ("  meets" if r["meets_slo"] else "  misses")))
        print(f"knee: {report['knee']:.2f} req/s" if report["rate"] is not None else
              "knee: none: no rate meets the SLOs (even a light load misses them)")
    elif args.burst is not None:
        report = burst(params, sizes, args.burst, args.seed)
        print(table_row(report))
        print(f"burst of {args.burst}: makespan {report['burst_makespan_s']:.2f} s, "
              f"{report['burst_throughput']:.2f} req/s")
    else:
        report = at_rate(params, sizes, args.rate, args.duration, args.seed)
        print(table_row(report))
    if report.get("unserved"):
        print(f"{report['unserved']} request(s) can never fit in the KV cache: rejected (unserved)")
    if args.json:
        doc = {"profile": params.name, "params": {k: getattr(params, k) for k in
                                                   ("alpha", "beta", "gamma", "kv_tokens", "max_num_seqs",
                                                    "max_batched_tokens", "block_size")},
               "workload": sizes_doc, "duration_s": args.duration if args.burst is None else None,
               "seed": args.seed, **report}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return 0


def register(subparsers) -> None:
    from .cli import add_model_flags

    p = subparsers.add_parser(
        "profile", help="capacity planning for one replica: what `vllm bench serve` would report against it",
        description="Drive one simulated replica of a model x GPU profile (vLLM V1 scheduling: KV blocks, "
                    "chunked prefill, preemption) with Poisson load (--rate), a search for the knee "
                    "(--find-knee) or a burst (--burst), and print what `vllm bench serve` would report.")
    p.add_argument("--list", action="store_true", help="print the profiles, one a line, name first")
    add_model_flags(p)
    p.add_argument("--prompt-tokens", default=None, metavar="N|uniform:LO:HI|lognormal:MEAN:CV",
                   help=f"prompt tokens per request (default {DEFAULT_PROMPT}: the llm-d testbed's ShareGPT mean)")
    p.add_argument("--output-tokens", default=None, metavar="N|uniform:LO:HI|lognormal:MEAN:CV",
                   help=f"output tokens per request (default {DEFAULT_OUTPUT}: the testbed's ShareGPT mean)")
    p.add_argument("--trace", default=None, metavar="FILE|NAME",
                   help="draw (prompt, output) pairs from this trace's requests instead")
    p.add_argument("--rate", type=float, default=None, metavar="R", help="Poisson arrivals at R req/s")
    p.add_argument("--duration", type=float, default=300.0, metavar="S",
                   help="seconds of arrivals for --rate and each --find-knee probe (default 300)")
    p.add_argument("--find-knee", action="store_true",
                   help="the highest rate meeting --slo-ttft/--slo-tpot (P95) with no growing queue")
    p.add_argument("--burst", type=int, default=None, metavar="N", help="N requests at t = 0")
    p.add_argument("--slo-ttft", type=float, default=2.5, metavar="S", help="P95 TTFT SLO, seconds (default 2.5)")
    p.add_argument("--slo-tpot", type=float, default=0.1, metavar="S", help="P95 TPOT SLO, seconds (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed of arrivals and sizes (default 0)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the report as JSON")
    p.set_defaults(func=cmd_profile)
