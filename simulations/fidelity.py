"""The fidelity page (docs/fidelity.md): the simulated fleet against real vLLM, in one command.

    python -m simulations.fidelity [--out docs/fidelity.md] [--seed 0]

For each profile with real measurements bundled in the project (today: ``llama-3.1-8b-h100`` and the llm-d
testbed's ``simulations/data/vllm-testbed-h100/reconciles.csv``), the page puts the real side, computed here
from the CSV, next to the model's, computed by running the simulator's per-request engine
(:class:`~simulations.fleet.RequestFleet`, one replica) and its cold-start model
(:class:`~simulations.fleet.ColdStartModel` through :class:`~simulations.fleet.ReplicaSet`), with percent errors
``100 * (model - real) / real``.

**Snapshots: one methodology for both sides.** The testbed's rows are 1-minute snapshots of a fleet. The
model is cut into the same snapshots: every 60 s of simulated time gives completions per second over the
minute, mean TTFT of the first tokens in the minute, mean ITL (token-weighted: the decode time of the requests
that finished in the minute over their output tokens after the first), and the 1-minute max of KV usage and of
waiting requests, sampled every ``SAMPLE`` = 15 s as Prometheus scrapes a pod. A model request counts as waiting
once it has waited ``QUEUE_AGE`` = 1 s: in the model a request that has just arrived sits in the queue until the
next step (10-40 ms), where vLLM's gauge is read after its scheduler has taken the step's arrivals, so an
instantaneous count would see a queue at every load. The same functions then read both sides:

* **load bands** (the testbed README's table): single-pod snapshots (``pods == 1``) with traffic and no queue
  (``waiting_max == 0``), by completions per second: below 8, 12-16, 16-20, 20-24, 24-28; and the snapshots
  with a queue. Per band: snapshots, mean TTFT, mean ITL, KV = the median of the per-pod 1-minute max. The
  model runs each band at the band's mean rate, 12 minutes from an empty replica, the first 2 dropped; its
  queue row is the queued minutes of the overload run below. Every model run offers the testbed's one
  workload: Poisson arrivals, log-normal prompt and output sizes (CV 1, as ``vllm-scaler profile``'s default)
  with the means over every snapshot that logged them (a band's own means are biased: in a minute of rising
  load the short requests finish first);
* **knee**: the median completions/s of the snapshots with no queue and KV at 0.5 or more (a replica near its
  capacity, KV creeping up, no queue yet). The model's is the highest offered rate (to 0.25 req/s) that a
  replica sustains for 15 minutes without a queue;
* **overload onset**: KV growth per minute (the median rise of the 1-minute KV max between consecutive
  single-pod snapshots with no queue, at 25 req/s or more; the model's from its run at ``OVERLOAD_RATE``
  req/s offered to an empty replica) and, for the model, when the queue forms at that rate: ``queue_onset_s``
  of ``vllm-scaler profile --rate`` (:mod:`simulations.profile`) on the same workload, the median and range over
  ``ONSET_SEEDS`` seeds (the testbed README
  says 3-4 minutes; the CSV alone cannot, because the offered load is not logged);
* **saturated throughput**: the median completions/s of single-pod snapshots with a queue (and completions);
  the model's, of the queued minutes at ``SATURATED_RATE`` req/s offered;
* **cold start**: in the runs whose ``replicas`` counts pods before they serve (it rises a reconcile or more
  before ``pods``), each pod's delay from ``replicas`` rising to ``pods`` reaching it: pod created -> serving,
  at the reconcile interval's resolution (30 or 60 s), the part :mod:`simulations.fleet.lifecycle` models (the
  scale-up decision -> pod created is KEDA's and the HPA's, emulated in :mod:`simulations.keda`). The model
  replays each real scale-up (the same number of pods at once) through a :class:`ReplicaSet` and reads its
  delays at the same resolution, averaged over the instant of creation within the interval and over seeds.

Tests: ``tests/unit/test_fidelity.py`` (the real side on the bundled CSV; the page holds what the generator
computes).
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fleet import ColdStartModel, ModelParams, RequestFleet
from .fleet.lifecycle import ReplicaSet
from .profile import SizeDist, at_rate, poisson_arrivals

DATA = Path(__file__).resolve().parent / "data" / "vllm-testbed-h100"
TESTBED = DATA / "reconciles.csv"
PAGE = Path(__file__).resolve().parents[1] / "docs" / "fidelity.md"
PROFILES_WITH_DATA = {"llama-3.1-8b-h100": TESTBED}

BANDS = ((0.0, 8.0), (12.0, 16.0), (16.0, 20.0), (20.0, 24.0), (24.0, 28.0))
KNEE_KV = 0.5              # a snapshot "near capacity": no queue, KV 1-minute max at least this
GROWTH_RATE = 25.0         # KV growth is read between consecutive no-queue snapshots at this rate or more
OVERLOAD_RATE = 27.5       # offered to an empty model replica for the queue onset (the README's 27-28 req/s)
ONSET_SEEDS = 10           # seeds of the queue-onset runs (median and range reported)
SATURATED_RATE = 30.0      # offered for the model's saturated throughput
BAND_MINUTES, WARMUP_MINUTES, LONG_MINUTES = 12, 2, 15
SIZE_CV = 1.0              # spread of the model's request sizes (:func:`workload`)
SAMPLE = 15.0              # seconds between the model's KV / waiting samples (a Prometheus scrape interval)
QUEUE_AGE = 1.0            # a model request counts as waiting once it has waited this long (module docstring)


# -- the real side -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """One 1-minute snapshot (a testbed row, or a minute of the model). Times in ms as the testbed logs them."""

    run: str
    t: float
    replicas: int
    pods: int
    rate: float | None     # completions per second over the minute (None: not logged)
    ttft_ms: float         # 0 with no traffic
    itl_ms: float
    kv_max: float | None       # 1-minute max of KV usage (max over pods; None: not logged)
    waiting_max: float | None  # 1-minute max of waiting requests (max over pods; None: not logged)
    prompt: float | None   # mean prompt / output tokens over the minute (None where not logged)
    output: float | None


def load_testbed(path: Path = TESTBED) -> list[Snapshot]:
    """The testbed's rows, in file order (runs are contiguous, by time)."""
    def num(row: dict, col: str) -> float | None:
        v = row[col].strip()
        return float(v) if v else None

    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            # the rate's, KV's or queue's cell is empty in some rows (not logged: their TTFT shows traffic), so
            # None, never 0: such a row is left out of what needs the value
            rpm = num(row, "arrival_rpm")
            out.append(Snapshot(run=row["run"], t=float(row["t"]), replicas=int(row["replicas"]),
                                pods=int(row["pods"]), rate=None if rpm is None else rpm / 60.0,
                                ttft_ms=float(row["ttft_ms"]), itl_ms=float(row["itl_ms"]),
                                kv_max=num(row, "kv_max"), waiting_max=num(row, "waiting_max"),
                                prompt=num(row, "in_tok"), output=num(row, "out_tok")))
    return out


@dataclass(frozen=True)
class Band:
    name: str
    n: int
    rate: float
    prompt: float
    output: float
    kv: float
    ttft_ms: float
    itl_ms: float


def _band(name: str, snaps: list[Snapshot], fallback_sizes: tuple[float, float]) -> Band | None:
    if not snaps:
        return None
    prompts = [s.prompt for s in snaps if s.prompt]
    outputs = [s.output for s in snaps if s.output]
    rates = [s.rate for s in snaps if s.rate is not None]
    return Band(name, len(snaps), statistics.fmean(rates) if rates else math.nan,
                statistics.fmean(prompts) if prompts else fallback_sizes[0],
                statistics.fmean(outputs) if outputs else fallback_sizes[1],
                statistics.median(s.kv_max for s in snaps if s.kv_max is not None),
                statistics.fmean(s.ttft_ms for s in snaps),
                statistics.fmean(s.itl_ms for s in snaps))


def band_name(lo: float, hi: float) -> str:
    return f"< {hi:g} req/s" if lo == 0 else f"{lo:g}-{hi:g} req/s"


def single_pod(snaps: list[Snapshot]) -> list[Snapshot]:
    return [s for s in snaps if s.pods == 1]


def sizes(snaps: list[Snapshot]) -> tuple[float, float]:
    """Mean prompt and output tokens over the snapshots that logged them."""
    return (statistics.fmean(s.prompt for s in snaps if s.prompt),
            statistics.fmean(s.output for s in snaps if s.output))


def bands(snaps: list[Snapshot]) -> dict[str, Band]:
    """The README's table from single-pod snapshots: rate bands with traffic and no queue, then the queue row."""
    one = single_pod(snaps)
    fallback = sizes(snaps)
    out = {}
    for lo, hi in BANDS:
        sel = [s for s in one if s.waiting_max == 0 and s.kv_max is not None and s.rate and lo <= s.rate < hi]
        b = _band(band_name(lo, hi), sel, fallback)
        if b:
            out[b.name] = b
    q = _band("queue > 0", [s for s in one if s.waiting_max and s.kv_max is not None], fallback)
    if q:
        out[q.name] = q
    return out


def near_knee(snaps: list[Snapshot]) -> list[Snapshot]:
    """Single-pod snapshots with no queue and a KV 1-minute max of at least KNEE_KV."""
    return [s for s in single_pod(snaps) if s.waiting_max == 0 and s.kv_max is not None and s.kv_max >= KNEE_KV]


def knee(snaps: list[Snapshot]) -> tuple[float, int]:
    """Median completions/s of single-pod snapshots with no queue and KV >= KNEE_KV (and how many)."""
    sel = [s.rate for s in near_knee(snaps) if s.rate]
    return (statistics.median(sel) if sel else math.nan), len(sel)


def saturated(snaps: list[Snapshot]) -> tuple[float, int]:
    """Median completions/s of single-pod snapshots with a queue and completions (and how many)."""
    sel = [s.rate for s in single_pod(snaps) if s.waiting_max and s.rate]
    return (statistics.median(sel) if sel else math.nan), len(sel)


def kv_growth(snaps: list[Snapshot]) -> tuple[float, int]:
    """Median rise per minute of the KV 1-minute max between consecutive single-pod snapshots of one run with no
    queue and at least GROWTH_RATE req/s (and how many pairs)."""
    rises = []
    for a, b in zip(snaps, snaps[1:]):
        if a.run == b.run and a.pods == b.pods == 1 and a.waiting_max == b.waiting_max == 0 \
                and a.kv_max is not None and b.kv_max is not None and a.rate is not None and b.rate is not None and min(a.rate, b.rate) >= GROWTH_RATE \
                and b.t > a.t:
            rises.append((b.kv_max - a.kv_max) / ((b.t - a.t) / 60.0))
    return (statistics.median(rises) if rises else math.nan), len(rises)


@dataclass(frozen=True)
class ScaleUp:
    """A real scale-up: ``new`` pods appeared in ``replicas`` at once; ``delays`` (s) until ``pods`` counted each
    (None: it never served: removed again, or the run ended); ``interval`` the run's reconcile interval (s)."""

    run: str
    new: int
    delays: tuple[float | None, ...]
    interval: float


def scale_ups(snaps: list[Snapshot]) -> list[ScaleUp]:
    """Pod created -> serving from the runs whose ``replicas`` leads ``pods`` (counts pods before they serve)."""
    runs: dict[str, list[Snapshot]] = {}
    for s in snaps:
        runs.setdefault(s.run, []).append(s)
    out = []
    for run, g in runs.items():
        if not any(s.replicas > s.pods for s in g):
            continue    # here `replicas` counts serving pods only: no created -> serving delay to read
        interval = statistics.median(b.t - a.t for a, b in zip(g, g[1:]))
        for i in range(1, len(g)):
            before, now = g[i - 1], g[i]
            if now.replicas <= before.replicas:
                continue
            delays = []
            for j in range(max(before.replicas, before.pods) + 1, now.replicas + 1):
                d = None
                for later in g[i:]:
                    if later.replicas < j:
                        break
                    if later.pods >= j:
                        d = later.t - now.t
                        break
                delays.append(d)
            if delays:
                out.append(ScaleUp(run, len(delays), tuple(delays), round(interval / 30.0) * 30.0))
    return out


# -- the model side ------------------------------------------------------------------------------------------
def workload(prompt: float, output: float) -> Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]:
    """Prompt and output sizes for ``n`` requests: log-normal with these means and CV 1 (the spread of
    ``vllm-scaler profile``'s default sizes, with which the H100 profile's KV capacity was fitted)."""
    p, o = SizeDist("lognormal", prompt, SIZE_CV), SizeDist("lognormal", output, SIZE_CV)
    return lambda n, rng: (p.sample(n, rng), o.sample(n, rng))


def model_snapshots(params: ModelParams, rate: float, prompt: float, output: float, minutes: int,
                    seed: int) -> list[Snapshot]:
    """One replica from empty, Poisson arrivals at ``rate`` req/s with :func:`workload` sizes, cut into
    1-minute snapshots (module docstring). The same arrivals and sizes as ``vllm-scaler profile --rate`` with
    this seed and duration."""
    rng = np.random.default_rng(seed)
    span = minutes * 60.0
    arr = poisson_arrivals(rate, span, rng)
    p, o = workload(prompt, output)(len(arr), rng)
    f = RequestFleet(arr, p, o, params=params, cold_start=ColdStartModel.single(0.0), start=0.0,
                     initial_replicas=1)
    engine = f.engines[0]
    kv, wait = [], []
    for k in range(1, int(span / SAMPLE) + 1):
        t = k * SAMPLE
        f.advance_to(t)
        kv.append(engine.kv_usage())
        wait.append(sum(1 for rid in engine.waiting if f.req.A[rid] <= t - QUEUE_AGE))
    req = f.req
    first, finish, arrival, out_tok = req.first, req.finish, req.arrival, req.output
    per = int(60 / SAMPLE)
    snaps = []
    for m in range(minutes):
        lo, hi = m * 60.0, (m + 1) * 60.0
        done = (finish >= lo) & (finish < hi)
        firsts = (first >= lo) & (first < hi)
        dec = done & (out_tok > 1)
        itl = float((finish[dec] - first[dec]).sum() / (out_tok[dec] - 1).sum()) if dec.any() else 0.0
        ttft = float((first[firsts] - arrival[firsts]).mean()) if firsts.any() else 0.0
        snaps.append(Snapshot(run="model", t=hi, replicas=1, pods=1, rate=float(done.sum()) / 60.0,
                              ttft_ms=ttft * 1000, itl_ms=itl * 1000, kv_max=max(kv[m * per:(m + 1) * per]),
                              waiting_max=float(max(wait[m * per:(m + 1) * per])), prompt=prompt, output=output))
    return snaps


def model_knee(params: ModelParams, prompt: float, output: float, seed: int, lo: float = 5.0,
               hi: float = 60.0) -> float:
    """Highest offered rate (bisection to 0.25 req/s) at which one replica runs LONG_MINUTES with no queue."""
    def holds(rate: float) -> bool:
        return all(s.waiting_max == 0 for s in model_snapshots(params, rate, prompt, output, LONG_MINUTES, seed))

    while hi - lo > 0.25:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if holds(mid) else (lo, mid)
    return lo


def model_scale_up_delays(cold: ColdStartModel, new: int, interval: float, seeds: int = 20,
                          offsets: int = 8) -> list[float]:
    """Mean observed delay of each pod of a scale-up of ``new`` pods at once (sorted), read like the testbed's:
    a pod created ``u`` before a reconcile (u uniform over the interval) and Ready after ``T`` is counted at the
    first reconcile at or after it: ``interval * ceil((T - u) / interval)`` after the one that saw it created."""
    sums = np.zeros(new)
    for seed in range(seeds):
        rs = ReplicaSet(cold, np.random.default_rng(seed), start=0.0, initial=0)
        rs.scale_to(new, 0.0)
        T = sorted(r.ready_at - r.requested_at for r in rs.replicas)
        for k in range(offsets):
            u = (k + 0.5) / offsets * interval
            sums += [interval * math.ceil((t - u) / interval - 1e-9) for t in T]
    return list(sums / (seeds * offsets))


# -- the page ------------------------------------------------------------------------------------------------
def pct(model: float, real: float) -> str:
    """``100 * (model - real) / real``, signed, whole percent."""
    if real == 0 or not (math.isfinite(model) and math.isfinite(real)):
        return "n/a"
    return f"{100.0 * (model - real) / real:+.0f} %"


def fmt(v: float | None, spec: str) -> str:
    """A figure, or ``-`` when there is none (no such snapshot)."""
    return "-" if v is None or not math.isfinite(v) else f"{v:{spec}}"


def cell(real: float, model: float | None, fmt: str) -> str:
    """``real / model (error)``; the model ``-`` when it has no such snapshot."""
    if model is None:
        return f"{real:{fmt}} / -"
    return f"{real:{fmt}} / {model:{fmt}} ({pct(model, real)})"


def band_row_start(b: Band) -> str:
    return f"| {b.name} | {b.n} | {b.rate:.1f} | {b.prompt:.0f} / {b.output:.0f} |"


COLD_GROUPS = (("1 pod", 1, 1), ("2-3 pods, the last", 2, 3), ("4-6 pods, the last", 4, 6),
               ("7+ pods, the last", 7, 10 ** 6))


def cold_groups(ups: list[ScaleUp]) -> list[tuple[str, list[ScaleUp], list[float]]]:
    """Scale-ups by size, each with its observed delay: the pod's (one pod), or the last pod that served."""
    rows = []
    for label, lo, hi in COLD_GROUPS:
        sel = [u for u in ups if lo <= u.new <= hi and any(d is not None for d in u.delays)]
        if sel:
            rows.append((label, sel, [max(d for d in u.delays if d is not None) for u in sel]))
    return rows


def cold_row_start(label: str, delays: list[float]) -> str:
    return f"| {label} | {len(delays)} | {', '.join(f'{d:.0f}' for d in sorted(delays))} | " \
           f"{statistics.fmean(delays):.0f} |"


def real_fragments(snaps: list[Snapshot]) -> list[tuple[str, str]]:
    """(start of a table row, a real-side figure that row holds), for every real figure on the page: what
    ``tests/unit/test_fidelity.py`` checks against docs/fidelity.md."""
    out = []
    for b in bands(snaps).values():
        start = band_row_start(b)
        out += [(start, start), (start, f"| {b.ttft_ms:,.1f} / "), (start, f"| {b.itl_ms:.1f} / "),
                (start, f"| {b.kv:.2f} / ")]
    for label, (value, n) in (("| knee", knee(snaps)), ("| KV growth", kv_growth(snaps)),
                              ("| saturated", saturated(snaps))):
        out.append((label, f"| {fmt(value, '+.3f' if label == '| KV growth' else '.1f')} | "))
        out.append((label, f"(real: {n} "))
    for label, _, delays in cold_groups(scale_ups(snaps)):
        out.append((f"| {label} |", cold_row_start(label, delays)))
    return out


def render(profile: str, params: ModelParams, cold: ColdStartModel, snaps: list[Snapshot], seed: int) -> str:
    """One profile's section of the page."""
    lines = [f"## {profile}", "",
             f"Model: `{params.name}`: alpha {params.alpha * 1000:.2f} ms, beta {params.beta * 1000:.4f} ms per "
             f"sequence, gamma {params.gamma * 1000:.4f} ms per prompt token, kv_tokens {params.kv_tokens:,}, "
             f"max_num_seqs {params.max_num_seqs}, max_batched_tokens {params.max_batched_tokens}. Real: "
             f"`simulations/data/vllm-testbed-h100/reconciles.csv`, {len(snaps):,} snapshots.", ""]
    ksizes = sizes(snaps)
    over = model_snapshots(params, OVERLOAD_RATE, *ksizes, LONG_MINUTES, seed)
    # the onset as `vllm-scaler profile --rate` reports it (simulations/profile.py: the same arrivals and sizes)
    # over ONSET_SEEDS seeds: one Poisson run's onset swings by minutes near the knee (a queue that forms and clears)
    onsets = [at_rate(params, workload(*ksizes), OVERLOAD_RATE, LONG_MINUTES * 60.0, seed + i)["queue_onset_s"]
              for i in range(ONSET_SEEDS)]
    formed = sorted(o for o in onsets if o is not None)
    onset_text = ("never" if not formed else
                  f"{float(np.median(formed)):.0f} (median of {len(formed)}/{ONSET_SEEDS} seeds; "
                  f"range {formed[0]:.0f}-{formed[-1]:.0f})")

    lines += ["### Load bands (single-pod snapshots)", "",
              "Each cell: real / model (error). The model's band: the minutes with no queue of a run at the band's "
              f"real rate ({ksizes[0]:.0f} / {ksizes[1]:.0f} tokens: module docstring); `-`: it had none.", "",
              "| band | snapshots | req/s | real prompt / output tokens | TTFT ms | ITL ms | KV (1-min max, median) |",
              "|---|---|---|---|---|---|---|"]
    for b in bands(snaps).values():
        if b.name == "queue > 0":
            msnap = [s for s in over
                     if s.waiting_max is not None and s.waiting_max > 0 and s.rate is not None and s.rate > 0]
        else:
            msnap = [s for s in model_snapshots(params, b.rate, *ksizes, BAND_MINUTES, seed)[WARMUP_MINUTES:]
                     if s.waiting_max == 0]      # as the real band: minutes with no queue
        mb = _band(b.name, msnap, (b.prompt, b.output))
        lines.append(f"{band_row_start(b)} {cell(b.ttft_ms, mb.ttft_ms if mb else None, ',.1f')} | "
                     f"{cell(b.itl_ms, mb.itl_ms if mb else None, '.1f')} | {cell(b.kv, mb.kv if mb else None, '.2f')} |")
    lines += ["", f"The model's `queue > 0` row: the minutes with a queue of the overload run ({OVERLOAD_RATE:g} "
              f"req/s offered to an empty replica for {LONG_MINUTES} minutes, {ksizes[0]:.0f} / {ksizes[1]:.0f} "
              "tokens). Its TTFT depends on how long the overload lasts, in the model as on the testbed.", ""]

    k, kn = knee(snaps)
    g, gn = kv_growth(snaps)
    sat, sn = saturated(snaps)
    mk = model_knee(params, *ksizes, seed)
    mg, mgn = kv_growth(over)
    ms, msn = saturated(model_snapshots(params, SATURATED_RATE, *ksizes, LONG_MINUTES, seed))
    lines += ["### Knee, overload onset, saturated throughput", "",
              "| figure | real | model | error | how |", "|---|---|---|---|---|",
              f"| knee (req/s per replica) | {fmt(k, '.1f')} | {mk:.2f} | {pct(mk, k)} | median completions/s (real: {kn} "
              f"single-pod snapshots with no queue and KV >= {KNEE_KV:g}); model: the highest rate a replica "
              f"sustains {LONG_MINUTES} min without a queue ({ksizes[0]:.0f} / {ksizes[1]:.0f} tokens) |",
              f"| KV growth near the knee (per minute) | {fmt(g, '+.3f')} | {fmt(mg, '+.3f')} | {pct(mg, g)} | median rise of the "
              f"1-minute KV max between consecutive minutes with no queue at >= {GROWTH_RATE:g} req/s (real: {gn} "
              f"pairs; model: {mgn} pairs of the {OVERLOAD_RATE:g} req/s run) |",
              f"| queue onset at {OVERLOAD_RATE:g} req/s offered (s) | 180-240 | "
              f"{onset_text} | - | model: `queue_onset_s` of `vllm-scaler profile "
              f"--rate {OVERLOAD_RATE:g} --duration {LONG_MINUTES * 60} --seed N` (simulations/profile.py), seeds "
              f"{seed}-{seed + ONSET_SEEDS - 1}, on the same "
              "workload; real: the testbed README's 3-4 minutes (not in the CSV: it does not log the offered "
              "load) |",
              f"| saturated throughput (req/s) | {fmt(sat, '.1f')} | {fmt(ms, '.1f')} | {pct(ms, sat)} | median completions/s of "
              f"snapshots with a queue (real: {sn} single-pod snapshots; model: {msn} minutes at "
              f"{SATURATED_RATE:g} req/s offered) |", ""]

    ups = scale_ups(snaps)
    lines += ["### Cold start: pod created -> serving", "",
              f"Real: {len(ups)} scale-ups in the runs whose `replicas` counts pods before they serve: each pod's "
              "delay from `replicas` rising to `pods` counting it (pod created -> serving), at the reconcile "
              "interval's resolution (30 or 60 s). Model: the default `ColdStartModel` (median "
              f"{cold.median:g} s for a pod alone, sigma {cold.sigma:g}; scheduling {cold.scheduling:g} s; "
              f"{cold.download_gb:g} GB at {cold.pod_bandwidth:g} GB/s per pod over a {cold.bandwidth:g} GB/s "
              "link shared by the pods that download together), each real scale-up replayed with as many pods "
              "at once and read at the same resolution (mean over the creation instant within the interval and "
              "20 seeds). Bursts: the last pod that served.", "",
              "The testbed README's figures count from the scale-up decision (one pod: 120-180 s; the last pod "
              "of bursts of 2-6: 180 s to 8 minutes): they add the controller's 30-60 s reconcile and the HPA, "
              "and for the longest bursts pods asked for over several reconciles. In the simulator that part is "
              "the policy's tick and the emulated KEDA and HPA (`simulations/keda/`), not the cold-start model; "
              "the rows of 7+ pods are the testbed's cluster running out of GPUs (most of those pods never "
              "served), which the model leaves out (below).", "",
              "| scale-up | events | real delays (s) | real mean | model mean | error |", "|---|---|---|---|---|---|"]
    cache: dict[tuple[int, float], list[float]] = {}
    for label, sel, delays in cold_groups(ups):
        model = []
        for u in sel:
            key = (u.new, u.interval)
            if key not in cache:
                cache[key] = model_scale_up_delays(cold, u.new, u.interval)
            model.append(cache[key][sum(d is not None for d in u.delays) - 1])
        m = statistics.fmean(model)
        lines.append(f"{cold_row_start(label, delays)} {m:.0f} | {pct(m, statistics.fmean(delays))} |")
    lines.append("")
    return "\n".join(lines)


HEAD = """# Fidelity: the simulated fleet against real vLLM

Generated by `python -m simulations.fidelity` (this page, every number on it; the method is in that module's
docstring, `simulations/fidelity.py`). Real: the bundled copy of the llm-d testbed's measurements
(`simulations/data/vllm-testbed-h100/`, Apache-2.0, from `WheelyMcBones/inferno-autoscaler-fork`; its README
says how they were taken). Model: the simulator's per-request engine (`simulations/fleet/engine.py`) for one
replica of the profile, and its cold-start model (`simulations/fleet/lifecycle.py`). Errors are
`100 x (model - real) / real`.
"""

LEFT_OUT = """## What the model still leaves out

- **Request sizes**: the model draws log-normal prompt and output sizes (CV 1) with the testbed's mean sizes;
  the testbed replayed ShareGPT V3 conversations, whose own size distribution (and its tail of long outputs,
  which hold KV longer) is not in the data.
- **The client**: each `vllm bench serve` job capped its in-flight requests at 512, so excess demand waited in
  the client, unseen by `num_requests_waiting` and TTFT. The model offers Poisson arrivals with no cap: its
  queue and TTFT under overload grow without that bound.
- **Snapshot noise**: the real bands average fleet-level 1-minute means taken by an autoscaler at 30-60 s
  intervals, some straddling a load change; the model's are steady minutes of one Poisson run per band.
- **Prefix caching, speculative decoding, CUDA-graph batch sizes**: not modelled; a step costs
  `alpha + beta * sequences + gamma * prefill tokens` whatever the batch's shape.
- **Cold start**: no cluster capacity (every pod is scheduled: no Pending for want of a GPU, no node
  autoscaler), so the testbed's bursts of 7-10 pods, of which only some ever served, are not reproduced; one
  shared link per Deployment (not per node or per registry mirror); the image is taken as cached on the node.
  The scaler's measured cold start (`ColdStartModel.signal()`) is that of a pod starting alone: the
  Kubernetes reader in production would also see the burst delays. The testbed's figures resolve only to its
  30-60 s reconcile interval, and "serving" there is "has 1-minute metrics", a scrape later than Ready.
- **Profiles without real data here**: only the profiles listed above have measurements bundled in the
  project; the others are checked against their published figures in `simulations/fleet/profiles.py`.
"""


def page(seed: int = 0) -> str:
    from .fleet import profiles

    parts = [HEAD]
    for name, path in PROFILES_WITH_DATA.items():
        parts.append(render(name, profiles.get(name), ColdStartModel(), load_testbed(path), seed))
    parts.append(LEFT_OUT)
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simulations.fidelity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(PAGE), help=f"the page to write (default {PAGE.relative_to(PAGE.parents[1])})")
    ap.add_argument("--seed", type=int, default=0, help="seed of the model's runs (default 0)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    text = page(args.seed)
    Path(args.out).write_text(text)
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
