"""Demand forecast: the request arrival rate at ``now + H``, with an upper prediction bound.

Why this method
---------------
The policy must ask for a replica one cold start (minutes) before the demand
arrives. Over a horizon of a few minutes the arrival rate of an LLM service is
dominated by two things: its current level and slope (a ramp), and, for
services with human users, the daily cycle (the same ramp happened yesterday at
this time). Holt's linear trend captures the first with two smoothing constants
and O(1) work per minute; an additive daily seasonal term, taken from the
previous day once a day of history exists, captures the second, which is what
wakes a Deployment at zero ahead of a predictable morning ramp. An upper bound
from recent one-step residuals turns noise into headroom. ARIMA or Prophet
(Dynamo's predictors) are heavier and need refits; this one is a pure fold over
minute buckets, so its state is rebuilt exactly from a Prometheus range query
(see "Determinism" below).

Symbols and units
-----------------
==========  ==================================================================  ==========
``Δ``       bucket width, :data:`STEP` = 60                                      s
``m``       buckets per day, :data:`SEASON` = 1440                               buckets
``y_k``     mean arrival rate observed in minute bucket ``k``                    requests/s
``ℓ, b``    Holt level and trend (per bucket)                                    req/s, req/s per bucket
``Y(j)``    yesterday's smoothed rate: mean of ``y_i`` for ``i`` in ``j ± w``    req/s
            among buckets folded exactly one day before (undefined when none)
``D(h)``    yesterday's change over the same ``h`` buckets:                      req/s
            ``Y(k + h - m) - Y(k - m)``, 0 while undefined (so the seasonal
            part switches on by itself once a day of history exists)
``α, β``    level and trend smoothing (:class:`ForecastParams`)                  1
``σ²``      EWMA (weight ``w``) of squared one-step errors                       (req/s)²
``z``       upper-bound quantile of the standard normal (1.2816: P90)            1
``h``       buckets ahead of the last folded bucket ``k``                        buckets
==========  ==================================================================  ==========

Forecast ``h`` buckets ahead, and its upper bound (Holt's h-step variance,
Hyndman et al., "Forecasting with Exponential Smoothing", class 1)::

    F(h) = max(0, ℓ + max(h b, D(h)))
    U(h) = F(h) + z σ sqrt(1 + (h - 1)(α² + α β h + β² h (2h - 1) / 6))

Update, for each closed bucket ``k+1`` with value ``y``::

    e    = y - F(1)                              one-step error
    ℓ'   = α y + (1 - α)(ℓ + b)
    b'   = β (ℓ' - ℓ) + (1 - β) b
    σ²'  = (1 - w) σ² + w e²,   w = max(ρ, 1/n) for the n-th error

``w`` starts the EWMA as the plain mean of the first ``1/ρ`` squared errors
(bias-corrected): with the EWMA from the first error on, that one error (often
the largest: the forecaster starts with no trend) set the bound for the next
``1/ρ`` = 20 minutes; on the 2023 conversation trace it held σ at twice the
minute-to-minute noise for half the hour
(``tests/unit/test_forecast.py::test_residual_variance_is_the_mean_of_the_first_errors``).

The change ahead is the larger of two predictions: today's trend continued
(``h b``: an unexpected surge) and what happened over the same minutes yesterday
(``D(h)``: the morning ramp, traffic returning after the night). Taking the
larger errs towards capacity; it never double-counts a daily ramp, which both
see. A textbook additive Holt-Winters season was tried first: with a fast level
(α = 0.3 per minute) the level absorbs a ramp within minutes and the seasonal
index keeps only a transient, so it predicted a returning ramp at a fraction of
its size; yesterday's observed change does not have that problem.

Waking from zero uses one more seasonal read: yesterday's peak rate over
``[now - J, now + H + J]`` (:meth:`DemandForecaster.yesterday_peak`, ``J`` =
``wake_jitter`` = 30 buckets). A Deployment at zero has a level of 0 and so does
yesterday's *change* when yesterday the traffic was already flowing at this
hour; what predicts the return is that traffic was there yesterday around this
time. The jitter covers day-to-day drift of the return time (ServeGen client 12
returns at 02:40-03:00 on consecutive days).

A gap of ``g`` missing buckets advances the level by the trend (``ℓ += g b``);
a gap longer than :data:`MAX_GAP` buckets also zeroes the trend, so an outage
of the data does not extrapolate a ramp for hours. Mean prompt and output token
sizes are forecast as their EWMA level (weight ``ρ_tok``): they are far steadier
than the rate.

Worked example (pinned by ``tests/unit/test_forecast.py::test_worked_example``):
α = 0.5, β = 0.5, no seasonal history, buckets 0, 1, 2 with rates 10, 12, 14:
after bucket 0: ℓ = 10, b = 0; bucket 1: F(1) = 10, e = 2, ℓ = 11, b = 0.5;
bucket 2: F(1) = 11.5, e = 2.5, ℓ = 12.75, b = 1.125. F(3) = 12.75 + 3 × 1.125 =
16.125 req/s. With ρ = 0.5: σ² = 5.125 (the first error is taken whole: 4, then
0.5 × 4 + 0.5 × 6.25 = 5.125), and U(3) = 16.125 + 1.2816 × sqrt(5.125) ×
sqrt(1 + 2 × (0.25 + 0.75 + 0.25 × 3 × 5 / 6)) = 16.125 + 1.2816 × 2.2638 ×
2.0616 = 22.106 req/s. (``F(h)`` is read at ``t = (k + 0.5 + h) Δ``: bucket
times are their middles.)

Determinism
-----------
The state is a fold over minute buckets in order, nothing else: two
forecasters given the same bucket sequence hold bit-identical state, whether
fed one observation at a time or warm-started from a range query
(:meth:`DemandForecaster.extend`). That is what lets a restarted scaler, or a
second scaler replica, reach the same decision from the same Prometheus data
(``tests/unit/test_forecast.py::test_incremental_and_warm_start_agree``). A
forecaster warm-started from the last day and a bit agrees with one running for
longer to within ``(1-α)^n`` for the level and the trend (n buckets folded),
exactly for the seasonal term, which only ever reads the previous day's values,
and within ``(1-ρ)^(n-m)`` for the residual variance (its first day had no
seasonal term, so different errors)
(``tests/unit/test_forecast.py::test_restart_from_one_day_agrees_with_a_long_runner``).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, MutableSequence, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast

from .frozen import fast_init

STEP = 60.0
SEASON = 1440
MAX_GAP = 10
MAX_LOOKAHEAD = SEASON * STEP
"""Longest look-ahead read (s): one day. Further out the forecast repeats the daily season; the cap bounds
the work of :meth:`DemandForecaster.outlook` (at most 1,442 points) and of
:meth:`DemandForecaster.yesterday_peak` whatever horizon a caller passes."""
# Past rates kept: one day plus two hours, so that yesterday's window around "now" is not yet overwritten.
RING = SEASON + 120
MAX_OBSERVED_RATE = 1e12   # req/s: observations above are capped (:meth:`DemandForecaster.observe`)
Z_P90 = 1.2815515655446004


@dataclass(frozen=True)
class ForecastParams:
    """Smoothing constants (see the module docstring). Defaults were chosen on the bundled traces."""

    alpha: float = 0.3
    beta: float = 0.05
    residual_weight: float = 0.05
    season_window: int = 3
    z: float = Z_P90
    token_weight: float = 0.1
    wake_jitter: int = 30
    # memo of (round(h), _spread(alpha, beta, h)) by h (DemandForecaster.outlook): not a parameter, not compared
    _spreads: dict[float, tuple[int, float]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "residual_weight", "token_weight"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise ValueError(f"ForecastParams.{name} must be in (0, 1], got {v!r}")
        if not 0 <= self.wake_jitter <= 60:
            raise ValueError(f"ForecastParams.wake_jitter must be 0..60 buckets, got {self.wake_jitter!r}")
        if not 0 <= self.season_window <= 30 or self.z < 0:
            raise ValueError("ForecastParams.season_window and z must be >= 0")


@dataclass(frozen=True)
class ForecastPoint:
    """The forecast at ``at`` (unix s): point ``rate`` and ``upper`` bound (req/s), ``ahead`` buckets out."""

    at: float
    rate: float
    upper: float
    ahead: float


def bucket_of(t: float) -> int:
    """Minute bucket holding time ``t`` (unix s): ``floor(t / Δ)``."""
    return int(math.floor(t / STEP))


# DemandForecaster's memo: Y(j) by bucket j (int keys), yesterday_peak by ("peak", lo, hi); None is a value.
_Memo = dict[int | tuple[str, int, int], float | None]


@dataclass(frozen=True)
class DemandForecaster:
    """Forecaster state, immutable: every method returns a new state (``decide`` stays pure).

    ``season`` / ``season_at``: per slot ``k mod RING``, the rate ``y_k`` and the bucket ``k`` it was
    written for (-1: never); the last day and two hours of buckets. They are ``array('d')`` / ``array('q')``
    (doubles and 64-bit ints: the same values a tuple would hold), never written after the state is built:
    a fold copies the ring (one ``memcpy`` of 12 KB) and sets one slot, where copying a 1,560-item tuple
    cost a tenth of a decision. ``unbroken_from``: the first bucket of the latest run of buckets folded
    without a gap (derived from the buckets, so not part of equality): where yesterday's window lies
    inside it, every bucket of the window is held and :meth:`yesterday_peak` reads a slice. ``pending_*``: the bucket still being filled by live observations.
    """

    params: ForecastParams = field(default_factory=ForecastParams)
    last_bucket: int | None = None
    first_bucket: int | None = None
    level: float = 0.0
    trend: float = 0.0
    variance: float = 0.0
    folded: int = 0
    season: Sequence[float] = ()
    season_at: Sequence[int] = ()
    pending_bucket: int | None = None
    pending_sum: float = 0.0
    pending_count: int = 0
    prompt_tokens: float | None = None
    output_tokens: float | None = None
    unbroken_from: int | None = field(default=None, compare=False)
    # Derived values (yesterday's smoothed rates, yesterday's peaks) memoised: a pure function of
    # ``params`` and the season ring, so not part of equality; a state with a new ring gets an empty memo,
    # states sharing a ring share it (_evolve).
    _memo: _Memo = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def _evolve(self, **changes: object) -> DemandForecaster:
        """``dataclasses.replace`` without its per-call introspection (this runs several times per decision).
        The memo is shared while the season ring is unchanged (token levels, pending bucket, level and
        trend do not enter it) and starts empty when the ring changes, unless the caller passes the
        entries still true of the new ring (a fold: :meth:`_memo_after_fold`)."""
        new = object.__new__(DemandForecaster)
        d = new.__dict__
        d.update(self.__dict__)
        d.update(changes)
        if "_memo" not in changes and ("season" in changes or "season_at" in changes or "params" in changes):
            d["_memo"] = {}
        return new

    def _memo_after_fold(self, bucket: int, evicted: int) -> _Memo:
        """The memoised ``Y(j)`` still true once ``bucket`` is written to its slot, which held ``evicted``.

        ``Y(j)`` reads the slots of buckets ``j - w .. j + w``, each counted when the slot holds that bucket.
        Writing ``bucket`` changes one slot: the only buckets whose "held" status changes are ``bucket`` (now
        held) and ``evicted`` (no longer held), so ``Y(j)`` is unchanged unless one of them is within ``w``
        of ``j``. Kept: those entries, for ``j >= bucket - m`` (what later reads ask for: the next fold reads
        ``Y(bucket - m)`` on, the forecast ``Y(bucket - m)`` and later; with ``RING - m = 120 > w`` this bound
        already excludes every ``j`` near ``evicted <= bucket - RING``); peak entries are dropped. Each read
        then computes only the newest ``Y`` instead of all of them
        (``tests/unit/test_forecast.py::test_memo_carried_through_a_fold_is_what_the_new_ring_gives``)."""
        w = self.params.season_window
        keep: _Memo = {}
        for j, v in self._memo.items():
            if type(j) is int and j >= bucket - SEASON and not (j - w <= bucket <= j + w) \
                    and not (j - w <= evicted <= j + w):
                keep[j] = v
        return keep

    # ---- building the state -------------------------------------------------------------------
    @classmethod
    def warm_start(cls, history: Iterable[tuple[float, float]],
                   params: ForecastParams | None = None) -> DemandForecaster:
        """A forecaster folded from ``(t, rate)`` points (e.g. a 1-minute-step range query), oldest first."""
        return cls(params=params or ForecastParams()).extend(history)

    def extend(self, history: Iterable[tuple[float, float]]) -> DemandForecaster:
        """Fold history points newer than the last folded bucket, in order (one point per bucket)."""
        points = history if isinstance(history, (list, tuple)) else list(history)
        start = 0
        if self.last_bucket is not None:  # skip what is already folded (callers pass the whole window)
            start = len(points)
            while start > 0 and bucket_of(points[start - 1][0]) > self.last_bucket:
                start -= 1
        fc = self
        for t, rate in points[start:]:
            if 0.0 <= rate < math.inf:     # NaN, negative or infinite points are gaps (as history.py reads them)
                fc = fc.fold(bucket_of(t), rate)
        return fc

    def observe(self, now: float, rate: float, *, prompt_tokens: float | None = None,
                output_tokens: float | None = None) -> DemandForecaster:
        """Add a live observation (req/s at ``now``). Observations of one minute are averaged into its
        bucket, which is folded when the first observation of a later minute arrives."""
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"arrival rate must be a finite non-negative number, got {rate!r}")
        # a finite but absurd rate (1e308) would overflow the minute's running sum to inf: cap it at a rate
        # no service sees, so the sum of any number of observations stays finite (pinned by
        # tests/unit/test_forecast.py::test_observe_caps_absurd_rates)
        rate = min(rate, MAX_OBSERVED_RATE)
        fc = self.observe_tokens(prompt_tokens, output_tokens)
        b = bucket_of(now)
        if fc.pending_bucket is None or (fc.last_bucket is not None and b <= fc.last_bucket):
            if fc.last_bucket is not None and b <= fc.last_bucket:
                return fc  # a bucket already folded (e.g. from history): nothing to add
            return fc._evolve(pending_bucket=b, pending_sum=rate, pending_count=1)
        if b == fc.pending_bucket:
            return fc._evolve(pending_sum=fc.pending_sum + rate, pending_count=fc.pending_count + 1)
        if b < fc.pending_bucket:
            return fc  # out of order: ignore
        closed = fc.fold(fc.pending_bucket, fc.pending_sum / fc.pending_count)
        return closed._evolve(pending_bucket=b, pending_sum=rate, pending_count=1)

    def observe_tokens(self, prompt: float | None, output: float | None) -> DemandForecaster:
        """Update the EWMA levels of the mean prompt and output token sizes (None: not observed)."""
        w = self.params.token_weight
        p, o = self.prompt_tokens, self.output_tokens
        if prompt is not None and math.isfinite(prompt):
            p = prompt if p is None else (1 - w) * p + w * prompt
        if output is not None and math.isfinite(output):
            o = output if o is None else (1 - w) * o + w * output
        if p is self.prompt_tokens and o is self.output_tokens:
            return self
        return self._evolve(prompt_tokens=p, output_tokens=o)

    def fold(self, bucket: int, y: float) -> DemandForecaster:
        """Fold one closed bucket's mean rate ``y`` (see the update equations). Older buckets are ignored."""
        if not math.isfinite(y) or y < 0:
            raise ValueError(f"bucket rate must be a finite non-negative number, got {y!r}")
        p = self.params
        if self.last_bucket is not None and bucket <= self.last_bucket:
            return self
        season = self.season or _EMPTY_SEASON
        season_at = self.season_at or _EMPTY_SEASON_AT
        slot = bucket % RING
        stored: dict[str, object] = dict(season=_set(season, slot, y), season_at=_set(season_at, slot, bucket))
        if self.pending_bucket is not None and self.pending_bucket <= bucket:
            stored.update(pending_bucket=None, pending_sum=0.0, pending_count=0)
        if self.last_bucket is None:
            return self._evolve(last_bucket=bucket, first_bucket=bucket, level=y, trend=0.0, variance=0.0,
                                folded=1, unbroken_from=bucket, **stored)
        gap = bucket - self.last_bucket - 1
        if gap > 0:
            stored["unbroken_from"] = bucket
        base = self
        if gap > MAX_GAP:
            base = self._evolve(trend=0.0)
        elif gap > 0:
            base = self._evolve(level=max(0.0, self.level + gap * self.trend))
        k = bucket - 1  # the forecast for `bucket` is one step after the (virtual) previous bucket
        predicted = max(0.0, base.level + max(base.trend, base._seasonal_change(k, 1)))
        err = y - predicted
        level = p.alpha * y + (1 - p.alpha) * (base.level + base.trend)
        trend = p.beta * (level - base.level) + (1 - p.beta) * base.trend
        w = max(p.residual_weight, 1.0 / self.folded)  # the n-th error (n = folded): mean until n = 1/ρ
        variance = (1 - w) * self.variance + w * err * err
        return self._evolve(last_bucket=bucket, level=level, trend=trend, variance=variance,
                            folded=self.folded + 1, _memo=self._memo_after_fold(bucket, season_at[slot]),
                            **stored)

    # ---- reading it ---------------------------------------------------------------------------
    def _yesterday(self, j: int) -> float | None:
        """Y(j): mean of the rates folded for buckets ``j - w .. j + w`` (j is already a day back); None
        when none of them was folded."""
        if not self.season:
            return None
        memo = self._memo
        if j in memo:  # int keys: Y(j); tuple keys: yesterday_peak
            return memo[j]
        w = self.params.season_window
        total, n = 0.0, 0
        for i in range(j - w, j + w + 1):
            if self.season_at[i % RING] == i:
                total += self.season[i % RING]
                n += 1
        memo[j] = value = total / n if n else None
        return value

    def _seasonal_change(self, k: int, h: int) -> float:
        """D(h) = Y(k + h - m) - Y(k - m); 0 when either is undefined."""
        then, later = self._yesterday(k - SEASON), self._yesterday(k + h - SEASON)
        if then is None or later is None:
            return 0.0
        return later - then

    def yesterday_peak(self, now: float, horizon: float) -> float | None:
        """Wake-up signal: the largest rate folded one day before ``[now - J, now + horizon + J]`` (J =
        ``wake_jitter`` buckets); None when none of those buckets was folded (less than a day of history)."""
        if not self.season:
            return None
        if not horizon <= MAX_LOOKAHEAD:
            horizon = MAX_LOOKAHEAD
        j = self.params.wake_jitter
        lo = bucket_of(now) - SEASON - j
        hi = bucket_of(now + horizon) - SEASON + j
        key = ("peak", lo, hi)
        memo = self._memo
        if key in memo:     # None is a value: "no bucket folded"
            return memo[key]
        season, season_at = self.season, self.season_at
        # max over the buckets i in [lo, hi] still held in the ring (season_at[i mod RING] == i), walked as
        # contiguous runs of slots (at most two: the range may wrap around the ring), in increasing i; a
        # later run's max replaces the earlier one only when larger, as max() over the whole range does
        best = None
        last, unbroken = self.last_bucket, self.unbroken_from
        every_held = (unbroken is not None and last is not None and unbroken <= lo and hi <= last
                      and lo > last - RING)   # in the gap-free run, not yet overwritten: all held
        i = lo
        while i <= hi:
            s0 = i % RING
            n = min(hi - i + 1, RING - s0)
            if every_held:
                run = season[s0:s0 + n]
            else:
                run = [v for v, at, want in zip(season[s0:s0 + n], season_at[s0:s0 + n], range(i, i + n))
                       if at == want]
            if run:
                top = max(run)
                if best is None or top > best:
                    best = top
            i += n
        self._memo[key] = best
        return best

    @property
    def has_season(self) -> bool:
        """True once a day of history exists (yesterday's change can contribute)."""
        return (self.first_bucket is not None and self.last_bucket is not None
                and self.last_bucket - self.first_bucket >= SEASON)

    @property
    def ready(self) -> bool:
        """At least one bucket folded."""
        return self.last_bucket is not None

    def at(self, t: float) -> ForecastPoint:
        """Forecast at time ``t`` (unix s). ``h`` counts buckets from the middle of the last folded one,
        at least 1. Requires :attr:`ready`."""
        rate, upper, h = self._point(t, self._then())
        return ForecastPoint(at=t, rate=rate, upper=upper, ahead=h)

    def _then(self) -> float | None:
        """Y(k - m) for the last folded bucket k (raises when nothing is folded)."""
        if self.last_bucket is None:
            raise ValueError("forecaster has no data yet")
        return self._yesterday(self.last_bucket - SEASON)

    def _point(self, t: float, then: float | None, sd: float | None = None) -> tuple[float, float, float]:
        """(F, U, h) at time ``t``: the forecast equations of the module docstring, ``then`` = Y(k - m),
        ``sd`` = z σ when the caller has it (a path reads it once)."""
        p = self.params
        last = self.last_bucket
        assert last is not None, "callers check that a bucket was folded"
        h = (t - (last + 0.5) * STEP) / STEP
        if h < 1.0:
            h = 1.0
        change = 0.0
        if then is not None:
            later = self._yesterday(last + max(1, round(h)) - SEASON)
            if later is not None:
                change = later - then
        ahead = h * self.trend
        point = self.level + (ahead if ahead > change else change)
        if point < 0.0:
            point = 0.0
        spread = _spread(p.alpha, p.beta, h)
        if sd is None:
            sd = p.z * math.sqrt(self.variance)
        return point, point + sd * spread, h

    @staticmethod
    def _times(now: float, horizon: float) -> list[float]:
        steps = int(math.floor(horizon / STEP))
        times = [now + i * STEP for i in range(steps + 1)]
        if now + horizon > times[-1]:
            times.append(now + horizon)
        return times

    def path(self, now: float, horizon: float) -> tuple[ForecastPoint, ...]:
        """Forecasts at ``now, now + Δ, ...`` up to and including ``now + horizon``."""
        then = self._then()  # read once for the whole path
        out = []
        for t in self._times(now, horizon):
            rate, upper, h = self._point(t, then)
            out.append(ForecastPoint(at=t, rate=rate, upper=upper, ahead=h))
        return tuple(out)

    def outlook(self, now: float, window: float, horizon: float) -> Outlook:
        """What a decision reads from the forecast, in one pass over :meth:`path` ``(now, window)``: the
        largest upper bound over the window, the largest point forecast up to ``now + horizon``, and the
        forecast at ``now + horizon``. Same numbers as reading :meth:`path` and :meth:`at`, without
        building the points (``tests/unit/test_forecast.py::test_outlook_matches_path_and_at``).

        This runs at every decision, so :meth:`_point` is inlined here with its loop invariants hoisted;
        every float operation is the one :meth:`_point` does, in the same order (``a * b * h`` is
        ``(a * b) * h``), so the numbers are bit-identical to it. The spread factor
        ``sqrt(1 + (h - 1)(...))`` and ``round(h)`` depend on ``h`` and the parameters alone, and a steady
        decision pace meets the same few ``h`` again and again: they are memoised per parameters
        (``ForecastParams._spreads``, :func:`_spread`)."""
        last = self.last_bucket
        if last is None:
            raise ValueError("forecaster has no data yet")
        if not window <= MAX_LOOKAHEAD:    # bounded work whatever the caller's window (NaN included)
            window = MAX_LOOKAHEAD
        if not horizon <= window:
            horizon = window
        memo, yesterday = self._memo, self._yesterday
        j = last - SEASON                      # then = _then() = Y(k - m), read through the memo
        then = memo[j] if j in memo else yesterday(j)
        p = self.params
        sd = p.z * math.sqrt(self.variance)
        spreads = p._spreads
        mid = (last + 0.5) * STEP
        level, trend = self.level, self.trend
        peak_upper = peak_rate = -math.inf
        limit = now + horizon + 1e-9
        t_h = now + horizon
        at_h = None
        # the instants of path(now, window): now + i Δ for i = 0 .. floor(window / Δ), then now + window
        steps = int(math.floor(window / STEP))
        t_end = now + window
        i = 0
        while True:
            if i <= steps:
                t = now + i * STEP
            elif i == steps + 1 and t_end > now + steps * STEP:
                t = t_end
            else:
                break
            i += 1
            h = (t - mid) / STEP
            if h < 1.0:
                h = 1.0
            per_h = spreads.get(h)
            if per_h is None:
                if len(spreads) >= _SPREADS_MAX:   # a server's decisions come at arbitrary instants
                    spreads.clear()
                per_h = spreads[h] = (round(h), _spread(p.alpha, p.beta, h))
            rounded, spread = per_h
            change = 0.0
            if then is not None:
                j = last + rounded - SEASON      # _point's max(1, round(h)): h >= 1 here, so round(h) >= 1
                later = memo[j] if j in memo else yesterday(j)
                if later is not None:
                    change = later - then
            ahead = h * trend
            rate = level + (ahead if ahead > change else change)
            if rate < 0.0:
                rate = 0.0
            upper = rate + sd * spread   # h = 1: spread is sqrt(1 + 0 * (...)) = 1.0 exactly, sd * 1.0 = sd
            if upper > peak_upper:
                peak_upper = upper
            if t <= limit and rate > peak_rate:
                peak_rate = rate
            if t == t_h:
                at_h = (rate, upper)
        rate_h, upper_h = at_h if at_h is not None else self._point(t_h, then, sd)[:2]
        return Outlook(peak_upper, peak_rate, rate_h, upper_h)


def _spread(a: float, b: float, h: float) -> float:
    """Holt's h-step standard-error factor ``sqrt(1 + (h - 1)(α² + α β h + β² h (2h - 1) / 6))``, with
    the float operations of :meth:`DemandForecaster._point`, in its order."""
    return math.sqrt(1 + (h - 1) * (a * a + a * b * h + b * b * h * (2 * h - 1) / 6))


# ForecastParams._spreads holds at most this many h: a simulator's steady pace meets a few dozen; a server's
# arbitrary instants would grow it without end
_SPREADS_MAX = 4096


@fast_init
@dataclass(frozen=True)
class Outlook:
    """The forecast as a decision reads it (req/s): see :meth:`DemandForecaster.outlook`."""

    peak_upper: float
    peak_rate: float
    rate_at_horizon: float
    upper_at_horizon: float


_EMPTY_SEASON = array("d", [0.0]) * RING
_EMPTY_SEASON_AT = array("q", [-1]) * RING


_N = TypeVar("_N", int, float)


def _set(ring: Sequence[_N], i: int, v: _N) -> Sequence[_N]:
    """A copy of ``ring`` with slot ``i`` set to ``v`` (the original is never written)."""
    out = cast(MutableSequence[_N], ring[:])   # ring: an array (the empty ring or a copy made here)
    out[i] = v
    return out
