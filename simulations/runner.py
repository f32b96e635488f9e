"""The closed loop: one trace, one fleet per policy, a virtual clock, side by side.

For every policy the runner builds a fresh fleet (same trace, same seed, same
settings) and a controller, then steps a virtual clock every ``tick`` seconds:
advance the fleet, let the controller set ``spec.replicas``, repeat. Policies:

* ``predictive`` / ``reactive``: ``scaler.policy.decide()`` -- the function the
  server calls -- on the fleet's :class:`~scaler.signals.Signals`, with the
  :class:`~scaler.config.PolicyConfig` that ``scaler.config.parse_metadata``
  builds from the trigger metadata (``scenarios/scaler-external.yaml`` plus
  ``--metadata``), wrapped as a KEDA external trigger (metric = desired
  replicas, target 1, ``AverageValue``; active = ``decision.active``) and fed to
  :class:`simulations.keda.KedaHpa`. Like the server, the decision is refreshed
  at most every ``refreshInterval`` and read from that cache by KEDA's polls and
  the HPA's syncs (it is computed when a read finds it older than that). With
  ``activationQuery`` in the metadata the signals carry the gateway's in-flight
  count as ``upstream_demand`` (the router metric such a query would read).
  If ``decide`` raises ``ValueError`` (a policy not implemented) the policy is
  reported unavailable with that message.
* ``keda-threshold`` (``-min0``): the seeds' ScaledObject
  (``scenarios/keda-threshold.yaml``) with KEDA's Prometheus trigger on
  ``avg(vllm:num_requests_waiting)`` (0 when no pod reports, as KEDA's
  ``ignoreNullValues`` default makes it).
* ``kpa``: :class:`simulations.kpa.KnativeKpa`, fed the in-flight requests
  (gateway/activator included) every tick, target concurrency ``--kpa-target`` (default: Knative's 70 % of
  what one replica of the profile holds within the SLO at the trace's mean sizes, :func:`simulations.kpa.target_for`).
* ``oracle``: executes :mod:`simulations.oracle`'s plan; its GPU-hours are the bound.

Tests: ``tests/unit/test_runner.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from scaler.config import ServerDefaults, parse_metadata
from scaler.policy import Decision, PolicyState, decide
from scaler.signals import Signals

from .fleet import AggregateFleet, ColdStartModel, FleetOutcome, ModelParams, RequestFleet
from .fleet.base import AfterIdle, FleetBase
from .oracle import OraclePlan
from .oracle import plan as oracle_plan
from .traces import Trace

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
POLICIES = ("predictive", "reactive", "keda-threshold", "keda-threshold-min0", "kpa", "oracle")
DEFAULT_POLICIES = ("predictive", "reactive", "keda-threshold", "kpa", "oracle")


@dataclass(frozen=True)
class Settings:
    """Everything a run depends on besides the trace (all reported in ``--json``'s ``settings``)."""

    fidelity: str = "request"
    slo_ttft: float = 2.5
    slo_tpot: float = 0.1
    cold_start: ColdStartModel = field(default_factory=ColdStartModel)
    params: ModelParams = field(default_factory=ModelParams)
    metadata: tuple[tuple[str, str], ...] = ()
    max_replicas: int = 50
    initial_replicas: int = 1
    request_timeout: float = 60.0
    tick: float = 15.0
    bin_seconds: float = 10.0
    keda_threshold: float = 5.0
    keda_activation: float = 2.0
    kpa_target: float | None = None   # None: simulations.kpa.target_for at the trace's sizes (with_kpa_target)
    kpa_scale_down_delay: float = 0.0   # Knative's scale-down-delay (default 0, as Knative's)
    seed: int = 0
    scaled_object: str | None = None   # a ScaledObject YAML for predictive/reactive (default scenarios/scaler-external.yaml)
    timeline_step: float = 60.0
    idle_gap: float = 60.0           # "first after idle": a gap of at least this long without arrivals ...
    idle_first_n: int = 10           # ... and the first this many requests after it (simulations.fleet.base.AfterIdle)

    def __post_init__(self) -> None:
        if self.fidelity not in ("request", "aggregate"):
            raise ValueError(f"--fidelity must be request or aggregate, got {self.fidelity!r}")
        for name in ("slo_ttft", "slo_tpot", "tick", "request_timeout", "keda_threshold", "kpa_target", "idle_gap"):
            v = getattr(self, name)
            if v is None and name == "kpa_target":
                continue
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name.replace('_', '-')} must be a finite number > 0, got {v!r}")
        if not (math.isfinite(self.kpa_scale_down_delay) and 0 <= self.kpa_scale_down_delay <= 3600):
            raise ValueError(f"kpa-scale-down-delay must be within 0-3600 s, got {self.kpa_scale_down_delay!r}")
        if self.idle_first_n < 1:
            raise ValueError(f"idle-first-n must be >= 1, got {self.idle_first_n!r}")
        if self.max_replicas < 1 or self.initial_replicas < 0 or self.initial_replicas > self.max_replicas:
            raise ValueError(f"need 0 <= initial replicas ({self.initial_replicas}) <= max replicas "
                             f"({self.max_replicas}) and max >= 1")

    def as_dict(self) -> dict:
        return {
            "fidelity": self.fidelity, "slo_ttft": self.slo_ttft, "slo_tpot": self.slo_tpot,
            "cold_start_median": self.cold_start.median, "cold_start_sigma": self.cold_start.sigma,
            "cold_start": self.cold_start.phases(),
            "model": {"name": self.params.name, "alpha": self.params.alpha, "beta": self.params.beta,
                      "gamma": self.params.gamma, "max_num_seqs": self.params.max_num_seqs,
                      "kv_tokens": self.params.kv_tokens, "max_batched_tokens": self.params.max_batched_tokens},
            "metadata": dict(self.metadata), "max_replicas": self.max_replicas,
            "initial_replicas": self.initial_replicas, "request_timeout": self.request_timeout, "tick": self.tick,
            "keda_threshold": self.keda_threshold, "keda_activation_threshold": self.keda_activation,
            "kpa_target_concurrency": self.kpa_target, "kpa_scale_down_delay": self.kpa_scale_down_delay,
            "seed": self.seed,
            "first_after_idle": {"gap_s": self.idle_gap, "first_n": self.idle_first_n},
            "scaled_object": self.scaled_object or str(SCENARIOS / "scaler-external.yaml"),
        }


@dataclass
class Timeline:
    t: list[float] = field(default_factory=list)
    arrival_rate: list[float] = field(default_factory=list)
    spec: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    ttft_p95: list[float] = field(default_factory=list)


@dataclass
class PolicyResult:
    name: str
    outcome: FleetOutcome | None = None
    gpu_hours: float | None = None
    unavailable: str | None = None
    timeline: Timeline = field(default_factory=Timeline)
    notes: tuple[str, ...] = ()


class PolicyUnavailable(Exception):
    """A policy cannot run (e.g. ``decide`` raised ValueError for a policy not implemented)."""


# --------------------------------------------------------------------------------------------------
def build_fleet(trace: Trace, s: Settings, initial: int) -> FleetBase:
    rng = np.random.default_rng(s.seed)
    if s.fidelity == "request":
        a, p, o = trace.requests_view(rng)
        return RequestFleet(a, p, o, params=s.params, cold_start=s.cold_start, start=trace.start,
                            initial_replicas=initial, seed=s.seed, request_timeout=s.request_timeout)
    counts, pm, om = trace.counts_view(s.bin_seconds)
    return AggregateFleet(counts, bin_seconds=s.bin_seconds, prompt_mean=pm, output_mean=om,
                          prompt_pool=trace.tokens.prompt, output_pool=trace.tokens.output, params=s.params, cold_start=s.cold_start,
                          start=trace.start, initial_replicas=initial, slo_ttft=s.slo_ttft, slo_tpot=s.slo_tpot,
                          seed=s.seed, request_timeout=s.request_timeout)


def _no_scrape(fleet: FleetBase, t: float) -> None:
    """The scrape of a run without one (never called: its interval is infinite)."""


class _SignalCache:
    """One ``signals()`` per instant, however many times KEDA reads it."""

    def __init__(self, fleet: FleetBase, window: float, upstream: bool = False, history: float = 0.0):
        self.fleet, self.window, self.upstream, self.history = fleet, window, upstream, history
        self._at: float | None = None
        self._sig: Signals | None = None

    def __call__(self, now: float):
        if self._at != now:
            self._sig = self.fleet.signals(now, self.window, upstream=self.upstream, history=self.history)
            self._at = now
        return self._sig


class DecideTrigger:
    """Our scaler as KEDA sees it: metric = ``decide().desired`` vs target 1 (AverageValue), active = ``.active``."""

    metric_type = "AverageValue"

    def __init__(self, config, signals: _SignalCache):
        self.config = config
        # every read at one instant returns the same cached decision (recomputed only once refreshInterval > 0
        # has passed): the HPA sync at a poll's instant may reuse the poll's read (simulations.keda.triggers)
        self.same_answer_within_instant = config.refresh_interval > 0
        self.refresh_interval = config.refresh_interval   # a frozen config: read once, not per read
        self.signals = signals
        self.state: PolicyState | None = None
        self.decision: Decision | None = None
        self.decided_at = -math.inf
        self.decisions = 0

    def _decision(self, now: float):
        if self.decision is None or now - self.decided_at >= self.refresh_interval:
            try:
                d = decide(self.signals(now), self.state, self.config, now)
            except ValueError as exc:
                raise PolicyUnavailable(str(exc)) from exc
            self.decision, self.state, self.decided_at = d, d.next_state, now
            self.decisions += 1
        return self.decision

    def target(self) -> float:
        return 1.0

    def metric(self, now: float) -> float:
        return float(self._decision(now).desired)

    def is_active(self, now: float) -> bool:
        return bool(self._decision(now).active)


_PARSED: dict[tuple[str, int, int], tuple] = {}   # (path, mtime ns, size) -> (ScaledObjectSpec, triggers)


def _load_scaled_object(path: str | Path, max_replicas: int):
    """The ScaledObject's spec (``maxReplicaCount`` = ``max_replicas``) and triggers from a YAML file.

    A file is parsed once while it is unchanged (same mtime and size): every run of a sweep reads the same
    two files twice (``policy_config`` and ``run_policy``); the results are frozen values."""
    from .keda import load_scaled_object

    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise ValueError(f"{p}: cannot read: {exc.strerror or exc}") from None
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    parsed = _PARSED.get(key)
    if parsed is None:
        so = load_scaled_object(p)
        parsed = _PARSED[key] = (so.spec, so.triggers)
    spec, trig = parsed
    return replace(spec, max_replica_count=max_replicas), trig


def policy_config(name: str, s: Settings):
    """The PolicyConfig ``decide`` gets: the ScaledObject's trigger metadata, then ``--metadata``, then policy."""
    _, trig = _load_scaled_object(s.scaled_object or SCENARIOS / "scaler-external.yaml", s.max_replicas)
    md = dict(trig[0].metadata) if trig else {}
    md.setdefault("maxReplicas", str(s.max_replicas))
    md.setdefault("ttftP95", f"{s.slo_ttft:g}")
    md.setdefault("tpotP95", f"{s.slo_tpot:g}")
    md.update(dict(s.metadata))
    md["policy"] = name
    return parse_metadata(md, scaled_object="vllm", namespace="default",
                          defaults=ServerDefaults(allow_activation_query=True))


class Controller:
    """Sets the fleet's replica count at each tick."""

    tick: float = 5.0

    def step(self, now: float) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def initial(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError


class KedaController(Controller):
    def __init__(self, fleet: FleetBase, spec, triggers, start: float, initial: int, tick: float,
                 cache: _SignalCache | None = None):
        from .keda import KedaHpa

        self.fleet = fleet
        self.cache = cache
        self.keda = KedaHpa(spec, triggers, start=start, replicas=initial)
        self.tick = tick

    def step(self, now: float) -> None:
        n = self.keda.step(now, status_replicas=self.fleet.status_replicas(),
                           ready_replicas=self.fleet.ready_replicas())
        self.fleet.scale_to(n, now)


class KpaController(Controller):
    def __init__(self, fleet: FleetBase, s: Settings, tick: float):
        from .kpa import KnativeKpa

        self.fleet = fleet
        assert s.kpa_target is not None, "set by with_kpa_target"
        self.kpa = KnativeKpa(target_concurrency=s.kpa_target, min_scale=0, max_scale=s.max_replicas,
                              scale_down_delay=s.kpa_scale_down_delay)
        self.tick = tick

    def step(self, now: float) -> None:
        fleet, kpa = self.fleet, self.kpa
        kpa.record(now, fleet.in_flight())
        fleet.scale_to(kpa.desired(now, fleet.ready_replicas()), now)


class OracleController(Controller):
    def __init__(self, fleet: FleetBase, plan: OraclePlan, tick: float):
        self.fleet, self.plan, self.tick = fleet, plan, tick

    def step(self, now: float) -> None:
        self.fleet.scale_to(self.plan.desired(now), now)


# --------------------------------------------------------------------------------------------------
def with_kpa_target(s: Settings, trace: Trace) -> Settings:
    """``s`` with the kpa target resolved: as given, else :func:`simulations.kpa.target_for` on the simulated
    profile at the trace's mean token sizes."""
    if s.kpa_target is not None:
        return s
    from .kpa import target_for

    counts, prompt, output = trace.counts_view(s.bin_seconds)
    total = float(counts.sum())
    if total > 0:
        p, o = float((counts * prompt).sum()) / total, float((counts * output).sum()) / total
    else:
        p, o = float(prompt.mean()), float(output.mean())
    return replace(s, kpa_target=target_for(s.params.fleet_model(), prompt_tokens=p, output_tokens=o,
                                            slo_ttft=s.slo_ttft, slo_tpot=s.slo_tpot))


def run_policy(name: str, trace: Trace, s: Settings, *, progress: Callable[[float], None] | None = None,
               oracle: OraclePlan | None = None,
               scrape: tuple[float, Callable[[FleetBase, float], None]] | None = None) -> PolicyResult:
    """Simulate one policy over the whole trace.

    ``scrape = (interval, fn)`` calls ``fn(fleet, t)`` every ``interval`` seconds of virtual time (the
    OpenMetrics export uses it to snapshot every pod like a Prometheus scrape).
    """
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})")
    if name == "kpa":
        s = with_kpa_target(s, trace)
    start, end = trace.start, trace.start + trace.duration
    notes: list[str] = []
    initial = s.initial_replicas
    if name == "oracle":
        oracle = oracle or oracle_plan(trace, params=s.params, slo_ttft=s.slo_ttft, slo_tpot=s.slo_tpot,
                                       cold_start=s.cold_start.median, initial=s.initial_replicas,
                                       max_replicas=s.max_replicas)
        # The plan requested its first replicas before the trace starts (a cold start ahead of the minute that
        # needs them, paid in its bound): they are ready at the start. Starting the execution with only the
        # minute-0 count left the next minutes' replicas loading while their demand arrived.
        initial = oracle.desired(start)
        if oracle.infeasible_minutes:
            notes.append(f"{oracle.infeasible_minutes} minutes where no replica count meets the SLO in the model")
    fleet = build_fleet(trace, s, initial)
    if name in ("predictive", "reactive"):
        config = policy_config(name, s)
        spec, _ = _load_scaled_object(s.scaled_object or SCENARIOS / "scaler-external.yaml", s.max_replicas)
        cache = _SignalCache(fleet, config.window, upstream=config.activation_query is not None,
                             history=600.0 if name == "predictive" else 0.0)
        trig = DecideTrigger(config, cache)
        ctrl: Controller = KedaController(fleet, spec, [trig], start, initial, s.tick, cache)
    elif name.startswith("keda-threshold"):
        from .keda import ThresholdTrigger

        spec, _ = _load_scaled_object(SCENARIOS / "keda-threshold.yaml", s.max_replicas)
        if name.endswith("min0"):
            spec = replace(spec, min_replica_count=0)

        last = [math.nan, 0.0]   # (instant, value) of the latest query

        def avg_waiting(now: float) -> float:
            # only the waiting sum and the pod count: the rest of the signals is not read by this trigger.
            # GetMetrics and IsActive both run the query at the poll's instant: the fleet does not change
            # within one KedaHpa.step (scale_to comes after it), so the second read is the first's value.
            if now == last[0]:
                return last[1]
            waiting, pods = fleet.waiting_and_pods(now)
            v = (waiting or 0.0) / pods if pods else 0.0
            last[0], last[1] = now, v
            return v

        threshold = ThresholdTrigger(avg_waiting, threshold=s.keda_threshold,
                                     activation_threshold=s.keda_activation)
        # and the HPA sync at a poll's instant reads what the poll read (simulations.keda.triggers.Trigger)
        threshold.same_answer_within_instant = True
        ctrl = KedaController(fleet, spec, [threshold], start, initial, s.tick)
    elif name == "kpa":
        ctrl = KpaController(fleet, s, min(s.tick, 2.0))
    else:
        assert oracle is not None, "planned above"
        ctrl = OracleController(fleet, oracle, s.tick)

    result = PolicyResult(name)
    tl = result.timeline
    next_tl = start + s.timeline_step
    scrape_every, scrape_fn = scrape if scrape else (math.inf, _no_scrape)
    next_scrape = start + scrape_every
    t = start
    steps = max(1, int((end - start) / ctrl.tick))
    k = 0
    stop, tick = end - 1e-9, ctrl.tick
    advance, control = fleet.advance_to, ctrl.step   # bound once: the kpa's loop turns 302,400 times a week
    try:
        while t < stop:
            t += tick
            if t > end:
                t = end
            while next_scrape <= t:
                advance(next_scrape)
                scrape_fn(fleet, next_scrape)
                next_scrape += scrape_every
            advance(t)
            control(t)
            k += 1
            if t >= next_tl - 1e-9:
                ctrl_cache = getattr(ctrl, "cache", None)
                if ctrl_cache is not None and ctrl_cache.window == s.timeline_step:
                    # the signals KEDA just read at this instant (arrival rate and P95 TTFT do not depend on
                    # the demand history the predictive cache also carries)
                    sig = ctrl_cache(t)
                    rate, ttft_p95 = sig.arrival_rate, sig.ttft_p95
                else:
                    rate, ttft_p95 = fleet.rate_and_ttft_p95(t, s.timeline_step)
                tl.t.append(t)
                tl.arrival_rate.append(rate or 0.0)
                tl.spec.append(fleet.spec_replicas())
                tl.ready.append(fleet.ready_replicas())
                tl.ttft_p95.append(ttft_p95 if ttft_p95 is not None else math.nan)
                next_tl += s.timeline_step
            if progress is not None and k % 200 == 0:
                progress(min(1.0, k / steps))
    except PolicyUnavailable as exc:
        result.unavailable = str(exc)
        return result
    out = fleet.outcome(end, s.slo_ttft, s.slo_tpot, AfterIdle(s.idle_gap, s.idle_first_n))
    result.outcome = out
    result.gpu_hours = (oracle.gpu_seconds if name == "oracle" and oracle is not None else out.gpu_seconds) / 3600.0
    if name == "oracle":
        notes.append(f"executing the plan in the fleet used {out.gpu_seconds / 3600:.3f} GPU-hours")
    result.notes = tuple(notes)
    if progress is not None:
        progress(1.0)
    return result


@dataclass
class RunResult:
    trace: Trace
    settings: Settings
    policies: dict[str, PolicyResult]
    oracle: OraclePlan

    def summary(self) -> dict:
        """The ``--json`` document."""
        oracle_h = self.oracle.gpu_seconds / 3600.0
        pols: dict[str, dict[str, Any]] = {}
        for name, r in self.policies.items():
            if r.outcome is None:
                pols[name] = {"unavailable": r.unavailable}
                continue
            o = r.outcome
            req = o.requests
            pols[name] = {
                "requests": int(round(req)),
                "ttft_slo_attainment": (o.ttft_ok / req) if req else None,
                "tpot_slo_attainment": (o.tpot_ok / req) if req else None,
                "p95_ttft_window_attainment": o.window_attainment,
                "gpu_hours": r.gpu_hours,
                "gpu_hours_vs_oracle": (r.gpu_hours / oracle_h) if oracle_h > 0 and r.gpu_hours is not None else None,
                "cold_starts": o.cold_starts,
                "scale_events": o.scale_events,
                "seconds_at_zero": o.seconds_at_zero,
                "unserved_requests": int(round(o.unserved)),
                "first_after_idle_requests": o.after_idle_requests,
                "first_after_idle_ttft_attainment": (o.after_idle_ttft_ok / o.after_idle_requests
                                                     if o.after_idle_requests > 0 else None),
                "first_after_idle_ttft_p50": _finite_or_none(o.after_idle_ttft_p50),
            }
        return {"trace": {"name": self.trace.name, "source": self.trace.source, "kind": self.trace.kind,
                          "start": self.trace.start, "duration_s": self.trace.duration,
                          "requests": int(round(self.trace.requests)), "notes": list(self.trace.notes)},
                "settings": self.settings.as_dict(), "policies": pols}


def run(trace: Trace, policies: Sequence[str], s: Settings, *,
        progress: Callable[[str, float], None] | None = None,
        scrape: tuple[float, Callable[[FleetBase, float], None]] | None = None) -> RunResult:
    """Every policy on the same trace and settings; the oracle's plan is computed once.

    ``scrape`` applies to the first policy only (see :func:`run_policy`)."""
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policy {unknown[0]!r} (known: {', '.join(POLICIES)})")
    if "kpa" in policies:
        s = with_kpa_target(s, trace)      # reported in the settings
    plan = oracle_plan(trace, params=s.params, slo_ttft=s.slo_ttft, slo_tpot=s.slo_tpot,
                       cold_start=s.cold_start.median, initial=s.initial_replicas, max_replicas=s.max_replicas)
    results: dict[str, PolicyResult] = {}
    for name in policies:
        cb = (lambda f, _n=name: progress(_n, f)) if progress else None
        results[name] = run_policy(name, trace, s, progress=cb, oracle=plan,
                                   scrape=scrape if name == policies[0] else None)
    return RunResult(trace, s, results, plan)


def _finite_or_none(x: float | None) -> float | str | None:
    """JSON has no infinity: a median TTFT of unserved requests is reported as the string "unserved"."""
    if x is None:
        return None
    return float(x) if math.isfinite(x) else "unserved"


def parse_metadata_pairs(pairs: Sequence[str], flag: str = "--metadata") -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` command-line items (trigger metadata) as ``(key, value)`` pairs, in order (a later key
    overrides an earlier one once put in a dict). The key is stripped, the value kept as given (it may hold
    ``=``). ``ValueError`` naming ``flag`` and the item when there is no ``=`` or no key.
    Every ``--metadata`` flag (``simulate``, ``sweep``, ``replay``) is read here."""
    out = []
    for item in pairs:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        out.append((k.strip(), v))
    return tuple(out)


def check_metadata(s: Settings, policies: Sequence[str]) -> None:
    """Fail early (ConfigError naming the key) on metadata decide() would reject."""
    for name in policies:
        if name in ("predictive", "reactive"):
            policy_config(name, s)

