"""``calibrate``: fit the fleet model's ``alpha``, ``beta``, ``gamma`` (and ``kv_tokens``) to a recording.

Calibration (:func:`calibrate`)
-------------------------------
Fits the simulator's own step model (:mod:`simulations.fleet.model`): one step of a replica takes
``t = alpha + beta * n + gamma * prefill_tokens_in_step`` seconds. Only ticks whose whole window saw no queue
are used (``waiting == 0`` at every recorded tick in ``(t - window, t]``: below saturation, where the step
model's steady state holds). Per tick, per replica (``N`` replicas): ``lam = completion_rate / N`` (req/s; the
arrival rate when completions are unknown), ``P = prompt_tokens_mean``, ``L = output_tokens_mean``,
``t = tpot_mean`` (the mean inter-token latency is the step time).

1. ``gamma``: least squares through the origin of ``ttft_mean - 1.5 * t = gamma * P``, the step model's
   below-saturation TTFT ``1.5 t + gamma * p`` (half a step waiting for the next one, then the step that also
   prefills the request).
2. ``alpha, beta``: a replica receiving ``lam`` req/s prefills ``lam * t * P`` prompt tokens per step and runs
   ``n = lam * L * t`` sequences (Little's law), so ``t = alpha + beta * lam * L * t + gamma * lam * P * t``.
   The prefill share ``gamma * lam * P`` (from step 1, the window's rate and mean prompt) is subtracted,
   not counted twice: ``t = alpha / (1 - gamma * lam * P - beta * lam * L)``, fitted by least squares of the
   observed ``t`` (damped Gauss-Newton), started from the linear least squares (no intercept) of::

       1 / t = (1 - gamma * lam * P) / alpha - (beta / alpha) * lam * L

   on the columns ``1 - gamma*lam*P`` and ``lam*L`` (built from rates and sizes only; fitting ``t`` on
   ``n = lam*L*t``, which contains ``t`` itself, would bias ``beta`` upwards). The last step weighs the loaded
   ticks as their ITL does (``1/t`` gives the light ones the most weight) and so sets the knee where the data
   have it.
3. ``kv_tokens`` (when ``kv_cache_usage`` is recorded): least squares through the origin of
   ``kv_cache_usage = n * kappa / kv_tokens`` over ticks with usage in (0.02, 0.9), where ``kappa`` is the KV a
   running sequence holds on average, the fleet model's :func:`~simulations.fleet.model.kv_per_sequence`
   ``P + spread * L / 2 + block_size / 2``; ``spread = E[O^2] / E[O]^2`` of the output sizes is not in a
   recording (``--output-spread``, default 1: fixed sizes; about 2 for chat traffic with outputs as varied as
   ShareGPT's). Recorded usage is a peak or a mean depending on the source: check the result against vLLM's
   start-up log ("GPU KV cache size").

Each fit reports its R^2 (``alpha, beta``: of ``t`` predicted against ``t`` observed), RMSE and the ticks used.
Worked example (``tests/unit/test_recording.py::test_calibrate_recovers_known_parameters``): ticks
generated from the steady state of ``alpha = 0.02, beta = 0.0005, gamma = 0.0001`` are fitted back to 1e-9.
Round trip and real data: ``tests/unit/test_calibrate_fleet.py`` (a simulated fleet at known parameters) and
``tests/unit/test_calibrate_testbed.py`` (the bundled H100 testbed, via :func:`from_testbed_csv`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from simulations.fleet.model import ModelParams, kv_per_sequence

from .format import Recording, Tick


@dataclass(frozen=True)
class Fit:
    """A least-squares fit: coefficients, R^2, RMSE (seconds) and the number of ticks used."""

    coefficients: Mapping[str, float]
    r2: float | None
    rmse: float
    ticks: int


def _lstsq(columns: Sequence[npt.ArrayLike], y: npt.ArrayLike, names: Sequence[str], *,
           intercept: bool) -> Fit:
    """Least squares; R^2 is centred with an intercept, uncentred (about 0) through the origin, and None
    when the observed values do not vary (nothing to explain)."""
    X = np.column_stack([np.asarray(c, dtype=float) for c in columns])
    yv = np.asarray(y, dtype=float)
    coef, *_ = np.linalg.lstsq(X, yv, rcond=None)
    resid = yv - X @ coef
    ss_res = float(resid @ resid)
    ss_tot = float(((yv - yv.mean()) ** 2).sum()) if intercept else float(yv @ yv)
    r2 = None if ss_tot <= 1e-18 * max(1.0, float(yv @ yv)) else 1.0 - ss_res / ss_tot
    return Fit(dict(zip(names, (float(c) for c in coef))), r2, math.sqrt(ss_res / len(yv)), len(yv))


def _queue_free(recording: Recording) -> list[Tick]:
    """Ticks whose whole window saw no queue: ``waiting == 0`` at the tick and at every recorded tick in
    ``(t - window, t]`` (TTFT means over the window include queueing from anywhere in it)."""
    w = recording.header.window
    ticks = recording.ticks
    out = []
    for i, t in enumerate(ticks):
        j, ok = i, True
        while ok and j >= 0 and ticks[j].t > t.t - w:
            ok = ticks[j].error is None and ticks[j].signals.waiting == 0
            j -= 1
        # the window must be covered by recorded ticks (else a queue could hide before the first one)
        if ok and j >= 0:
            out.append(t)
    return out


def _per_replica(tick: Tick) -> tuple[float, float, float, float] | None:
    """``(lam, P, L, t)`` per replica of a tick (see the module docstring), or None when one is unknown."""
    s = tick.signals
    rate = s.completion_rate if s.completion_rate is not None else s.arrival_rate
    if (not tick.replicas or rate is None or rate <= 0 or tick.tpot_mean is None or tick.tpot_mean <= 0
            or not s.prompt_tokens_mean or not s.output_tokens_mean):
        return None
    return rate / tick.replicas, s.prompt_tokens_mean, s.output_tokens_mean, tick.tpot_mean


def _refine_in_t(alpha: float, beta: float, gamma: float, lam, P, L, t) -> tuple[float, float]:
    """Least squares of ``t`` itself against ``alpha / (1 - gamma lam P - beta lam L)``, by damped Gauss-Newton
    from the linear fit of ``1/t`` (module docstring). A step that would make a tick's denominator <= 0 or raise
    the squared error is halved; the start is kept when nothing improves it."""
    def sse(a: float, b: float) -> float:
        d = 1.0 - gamma * lam * P - b * lam * L
        return math.inf if (d <= 0).any() else float(((t - a / d) ** 2).sum())

    best = sse(alpha, beta)
    for _ in range(100):
        d = 1.0 - gamma * lam * P - beta * lam * L
        jac = np.column_stack([1.0 / d, alpha * lam * L / d ** 2])
        step, *_ = np.linalg.lstsq(jac, t - alpha / d, rcond=None)
        for _ in range(30):
            a, b = alpha + step[0], beta + step[1]
            e = sse(a, b)
            if e <= best:
                break
            step = step / 2
        else:
            break
        done = abs(step[0]) <= 1e-12 * abs(alpha) + 1e-15 and abs(step[1]) <= 1e-12 * abs(beta) + 1e-15
        alpha, beta, best = a, b, e
        if done or e == 0:
            break
    return alpha, beta


def calibrate(recording: Recording, *, min_ticks: int = 10, output_spread: float = 1.0, block_size: int = 16
              ) -> dict[str, Fit]:
    """Fit ``gamma``, then ``alpha, beta`` with the prefill share removed, then ``kv_tokens`` (module docstring).

    Returns ``{"ttft": gamma, "tpot": alpha and beta, "kv": kv_tokens}`` (``"kv"`` only when at least
    ``min_ticks`` ticks have a usable KV usage). Raises ``ValueError`` naming the missing fields when fewer than
    ``min_ticks`` ticks are usable.
    """
    quiet = [(tick, row) for tick in _queue_free(recording) if (row := _per_replica(tick)) is not None]
    need = ("replicas > 0, completion_rate (or arrival_rate) > 0, tpot_mean, prompt_tokens_mean and "
            "output_tokens_mean")
    prefill = [(row[1], tick.ttft_mean - 1.5 * row[3]) for tick, row in quiet if tick.ttft_mean is not None]
    if len(prefill) < min_ticks:
        raise ValueError(f"calibrate: only {len(prefill)} ticks with no queue over their window have {need} "
                         f"and ttft_mean (need --min-ticks {min_ticks})")
    fit_ttft = _lstsq([[p for p, _ in prefill]], [y for _, y in prefill], ("gamma",), intercept=False)
    gamma = fit_ttft.coefficients["gamma"]

    lam, P, L, t = (np.array(col, dtype=float) for col in zip(*(row for _, row in quiet)))
    inv = _lstsq([1.0 - gamma * lam * P, lam * L], 1.0 / t, ("inv_alpha", "minus_beta_over_alpha"),
                 intercept=False)
    c0, c1 = inv.coefficients["inv_alpha"], inv.coefficients["minus_beta_over_alpha"]
    alpha = 1.0 / c0 if c0 > 0 else math.nan
    beta = -c1 * alpha
    if math.isfinite(alpha):
        alpha, beta = _refine_in_t(alpha, beta, gamma, lam, P, L, t)
    pred = alpha / (1.0 - gamma * lam * P - beta * lam * L)
    ss_res = float(((t - pred) ** 2).sum())
    ss_tot = float(((t - t.mean()) ** 2).sum())
    fit_tpot = Fit({"alpha": alpha, "beta": beta}, None if ss_tot <= 0 else 1.0 - ss_res / ss_tot,
                   math.sqrt(ss_res / len(t)), len(t))
    fits = {"tpot": fit_tpot, "ttft": fit_ttft}

    shape = ModelParams(block_size=block_size)
    kv = [(usage, r[0] * r[2] * r[3] * kv_per_sequence(shape, r[1], r[2], output_spread))
          for tick, r in quiet
          if (usage := tick.signals.kv_cache_usage) is not None and 0.02 < usage < 0.9]
    if len(kv) >= min_ticks:
        # usage = tokens / K: least squares of usage on tokens through the origin gives 1/K
        f = _lstsq([[u for _, u in kv]], [k for k, _ in kv], ("inv_kv",), intercept=False)
        inv_kv = f.coefficients["inv_kv"]
        if inv_kv > 0:
            fits["kv"] = Fit({"kv_tokens": 1.0 / inv_kv}, f.r2, f.rmse, f.ticks)
    return fits


def fitted_params(fits: Mapping[str, Fit], name: str, base=None):
    """The fitted numbers as :class:`simulations.fleet.ModelParams` (other fields from ``base``, default
    ``ModelParams()``), or a plain dict and a note when the fleet model rejects the numbers."""
    values: dict[str, Any] = {"alpha": fits["tpot"].coefficients["alpha"], "beta": fits["tpot"].coefficients["beta"],
                              "gamma": fits["ttft"].coefficients["gamma"]}
    if "kv" in fits:
        values["kv_tokens"] = int(round(fits["kv"].coefficients["kv_tokens"]))
    try:
        return replace(base if base is not None else ModelParams(), name=name, **values), None
    except ValueError as exc:
        return values, f"not a valid ModelParams: {exc}"

