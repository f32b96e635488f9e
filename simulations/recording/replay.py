"""``replay``: each recorded tick through :func:`scaler.policy.decide`, open loop.

The recorded fleet does not react to the answers; the ticks where the policy would have asked for fewer
replicas than were needed are marked.

Replay: "needed" (module-level :func:`needed_replicas`)
-------------------------------------------------------
A tick is **short** when the recorded fleet missed its targets with the replicas that ran (``N``):
observed ``ttft_p95 > ttftP95`` or ``tpot_p95 > tpotP95`` or ``waiting > queuePerReplica * N`` (the
``queuePerReplica`` in force at the tick's token sizes: :func:`scaler.policy.planning_targets`). Then at
least ``N + 1`` replicas were needed. Any tick with requests in the fleet (``waiting + running > 0``)
needed at least 1. So ``needed = max(N + 1 if short else 0, 1 if waiting + running > 0 else 0)`` -- a lower
bound, the most the recording can prove. A tick is marked **under** when ``desired < needed``.
Worked example (``tests/unit/test_recording.py::test_needed_worked_example``): ``N = 2``, ``ttft_p95 = 3.1 s``
over a 2.5 s SLO -> short -> needed 3; a policy answering 2 is under, 3 is not.

"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scaler.config import ServerDefaults, parse_metadata
from scaler.policy import TermsText, decide, planning_targets

from .format import Recording, Tick


@dataclass(frozen=True)
class ReplayTick:
    t: float
    replicas: int | None
    desired: int | None
    active: bool | None
    needed: int | None
    short: bool
    under: bool
    dominant: str | None
    note: str = ""
    terms: dict[str, float] = field(default_factory=dict)     # every term of the decision (replicas)
    inputs: dict[str, float] = field(default_factory=dict)    # forecast, horizon, cold start, capacity, ...
    reasons: tuple[str, ...] = ()                              # the decision's explanation, as the server logs it

    def explain(self) -> str:
        """One line: every term, then the forecast, horizon and cold start the decision used."""
        parts = [format(TermsText(self.terms))]
        i = self.inputs
        if "horizon_s" in i:
            parts.append(f"H={i['horizon_s']:.0f}s (cold start P90 {i['cold_start_p90_s']:.0f}s)")
        elif "cold_start_p90_s" in i:
            parts.append(f"cold start P90 {i['cold_start_p90_s']:.0f}s")
        if "forecast_peak_upper" in i:
            parts.append(f"forecast {i['forecast_rate']:.3g} req/s at H, peak upper {i['forecast_peak_upper']:.3g}")
        if "capacity_per_replica" in i:
            parts.append(f"capacity {i['capacity_per_replica']:.3g} req/s")
        return "; ".join(p for p in parts if p)


def needed_replicas(tick: Tick, config) -> tuple[int | None, bool]:
    """(needed lower bound, short?) for a recorded tick; ``(None, False)`` when the tick has no data.

    See the module docstring ("needed"): short = an SLO or the queue target missed with the replicas that ran.
    """
    if tick.error is not None:
        return None, False
    s = tick.signals
    n = tick.replicas or 0
    _, queue_target, _ = planning_targets(config, s.prompt_tokens_mean, s.output_tokens_mean)
    short = ((s.ttft_p95 is not None and s.ttft_p95 > config.ttft_p95)
             or (s.tpot_p95 is not None and s.tpot_p95 > config.tpot_p95)
             or (s.waiting is not None and s.waiting > queue_target * n))
    demand = s.demand
    return max(n + 1 if short else 0, 1 if demand > 0 else 0), short


def replay(recording: Recording, config) -> list[ReplayTick]:
    """Open-loop replay: ``decide()`` at every tick with data, state carried; ticks without data are skipped
    (the server would answer from its last decision, then fail) and noted."""
    state = None
    out = []
    for tick in recording.ticks:
        needed, short = needed_replicas(tick, config)
        if tick.error is not None:
            out.append(ReplayTick(tick.t, tick.replicas, None, None, None, False, False, None, note=tick.error[:80]))
            continue
        d = decide(tick.signals, state, config, tick.t)
        state = d.next_state
        out.append(ReplayTick(tick.t, tick.replicas, d.desired, d.active, needed, short,
                              needed is not None and d.desired < needed, d.dominant, terms=dict(d.terms),
                              inputs=dict(d.inputs), reasons=tuple(d.reasons)))
    return out


def replay_summary(recording: Recording, rows: Sequence[ReplayTick]) -> dict[str, Any]:
    step = recording.header.step
    with_data = [r for r in rows if r.desired is not None]
    return {
        "ticks": len(rows),
        "ticks_with_data": len(with_data),
        "ticks_without_data": len(rows) - len(with_data),
        "short_ticks": sum(r.short for r in with_data),
        "under_ticks": sum(r.under for r in with_data),
        "replica_hours_recorded": sum((r.replicas or 0) for r in with_data) * step / 3600,
        "replica_hours_policy": sum(r.desired or 0 for r in with_data) * step / 3600,
        "mean_replicas_recorded": (sum((r.replicas or 0) for r in with_data) / len(with_data)) if with_data else None,
        "mean_replicas_policy": (sum(r.desired or 0 for r in with_data) / len(with_data)) if with_data else None,
    }



def replay_config(recording: Recording, metadata: Mapping[str, str], scaled_object: str | None = None):
    """A :class:`~scaler.config.PolicyConfig` for the recording's target from trigger metadata."""
    h = recording.header
    md = dict(metadata)
    md.setdefault("deploymentName", h.deployment)
    if h.model_name is not None:
        md.setdefault("modelName", h.model_name)
    md.setdefault("window", f"{h.window:g}")
    return parse_metadata(md, scaled_object=scaled_object or h.deployment, namespace=h.namespace,
                          defaults=ServerDefaults(prometheus_url=h.prometheus or "http://127.0.0.1:9090"))

