"""Knative's Knative Pod Autoscaler (KPA) for one revision, stepped by arithmetic time.

Sources (knative/serving):

* ``pkg/autoscaler/scaling/autoscaler.go`` ``Scale``::

      ready         = max(1, ready pods)
      max_up        = ceil(max_scale_up_rate * ready)            (rate 1000)
      max_down      = floor(ready / max_scale_down_rate)          (rate 2)
      dspc          = ceil(stable_concurrency / target)           (stable window, 60 s)
      dppc          = ceil(panic_concurrency / target)            (panic window, 6 s = 10 % of stable)
      stable_count  = clamp(dspc, max_down, max_up);  panic_count = clamp(dppc, max_down, max_up)
      over          = dppc / ready >= panic_threshold             (200 % -> 2.0)

  Panic starts (or is extended) whenever ``over``; it ends when not ``over`` and the last panic
  instant is more than one stable window old. In panic the count is max(stable_count,
  panic_count) and never below the highest count of the current panic (no scale-down).
  ``scale-down-delay`` (``scale_down_delay``, default 0 = off, as in Knative): the result is the
  highest count of the last ``scale_down_delay`` seconds (Knative's ``delayWindow``, a max over a
  time window of 2 s buckets; here exact times). Example (``test_kpa.py::test_scale_down_delay_holds_the_peak``):
  delay 60 s, 2 s ticks, count 8 at t = 100 then 2 from t = 102 -> 8 through t = 158, 2 at t = 160.
  Worked example (``test_kpa.py::test_panic_worked_example``): target 10, one ready pod, 6 s at
  50 in flight after 54 s at 0: stable average 5 -> dspc 1; panic average 50 -> dppc 5;
  5 / 1 >= 2 -> panic; max_up = 1000 -> desired 5.
* ``pkg/autoscaler/aggregation/bucketing.go`` ``WindowAverage`` (the default linear averaging):
  the mean of per-second buckets over the window, over the part of the window since the first
  sample. Here a sample covers the time since the previous one (the first covers one second), so
  one sample per second reproduces Knative's buckets exactly and coarser samples (e.g. 10 s
  aggregate bins) weigh by the time they cover; after the last sample its value holds (a gap is
  never read as zero demand).
* ``pkg/reconciler/autoscaling/kpa/scaler.go`` ``handleScaleToZero``: when the autoscaler wants 0
  (min scale 0), the revision keeps its pods for ``scale-to-zero-grace-period`` (30 s) and then
  goes to 0. With the stable window this is zero traffic for 60 s + 30 s.
* ``min-scale`` / ``max-scale`` bound the result (``kpa.go``); 0 ready pods with demand gives at
  least 1 pod (the activator pokes the autoscaler on the first request).

Target concurrency (``--kpa-target``; :func:`target_for`): a Knative operator sets the revision's
``containerConcurrency``-class figure (what one pod holds) and Knative's autoscaler aims at
``container-concurrency-target-percentage`` of it, 70 % by default. For a vLLM replica what one pod holds
within the SLO is the fleet model's ``n*`` (:func:`scaler.capacity.model_batch`: the running requests at
capacity within TTFT and TPOT, bounded by ``max_num_seqs`` and the KV cache), so the simulator's default
target is ``0.7 n*`` at the trace's mean token sizes on the simulated profile (at least 1). Worked example
(``tests/unit/test_planning_defaults.py::test_kpa_target_worked_example``), the default profile
(Llama-3.1-8B on one H100): ShareGPT-sized requests (235 / 460 tokens) n* = 594.2 (the KV cache binds),
target 416; the Azure 2024 coding week's sizes (2,048 / 27.9 tokens) n* = 56.7 (TPOT binds: every
prompt's prefill slows its batch's steps), target 39.7.

``record`` takes the revision's total in-flight requests (queued and running), ideally every
second; several samples at one instant are averaged. With no sample yet, ``desired`` holds the
current count (``max(ready_pods, min_scale)``; Knative's ``ErrNoData``: no decision), never reads zero.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

from scaler.capacity import FleetModel, model_batch

KNATIVE_TARGET_UTILIZATION = 0.7
"""Knative's ``container-concurrency-target-percentage`` default (70 %)."""


def target_for(model: FleetModel, *, prompt_tokens: float, output_tokens: float, slo_ttft: float,
               slo_tpot: float) -> float:
    """Target concurrency per pod: :data:`KNATIVE_TARGET_UTILIZATION` x ``n*`` (see the module docstring)."""
    n = model_batch(model, ttft_slo=slo_ttft, tpot_slo=slo_tpot, prompt_tokens=prompt_tokens,
                    output_tokens=output_tokens)
    return max(1.0, KNATIVE_TARGET_UTILIZATION * n)


class KnativeKpa:
    """Knative's KPA decision for one revision (see the module docstring)."""

    def __init__(self, *, target_concurrency: float, stable_window: float = 60.0, panic_window: float = 6.0,
                 panic_threshold: float = 2.0, max_scale_up_rate: float = 1000.0, max_scale_down_rate: float = 2.0,
                 scale_to_zero_grace: float = 30.0, min_scale: int = 0, max_scale: int = 100,
                 scale_down_delay: float = 0.0):
        checks = {
            "target_concurrency": target_concurrency > 0,
            "stable_window": stable_window >= 1,
            "panic_window": 1 <= panic_window <= stable_window,
            "panic_threshold": panic_threshold > 1,
            "max_scale_up_rate": max_scale_up_rate > 1,
            "max_scale_down_rate": max_scale_down_rate > 1,
            "scale_to_zero_grace": scale_to_zero_grace >= 0,
            "min_scale": min_scale >= 0,
            "max_scale": max_scale >= max(1, min_scale),
            "scale_down_delay": 0 <= scale_down_delay <= 3600,
        }
        values = dict(target_concurrency=target_concurrency, stable_window=stable_window, panic_window=panic_window,
                      panic_threshold=panic_threshold, max_scale_up_rate=max_scale_up_rate,
                      max_scale_down_rate=max_scale_down_rate, scale_to_zero_grace=scale_to_zero_grace,
                      min_scale=min_scale, max_scale=max_scale, scale_down_delay=scale_down_delay)
        bad = [f"{k}={values[k]!r}" for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid KPA settings: " + ", ".join(bad) +
                             " (need target > 0, 1 <= panic <= stable window, rates > 1, 0 <= min <= max, "
                             "0 <= scale_down_delay <= 3600 s)")
        self.target = float(target_concurrency)
        self.stable_window = float(stable_window)
        self.panic_window = float(panic_window)
        self.panic_threshold = float(panic_threshold)
        self.max_up_rate = float(max_scale_up_rate)
        self.max_down_rate = float(max_scale_down_rate)
        self.grace = float(scale_to_zero_grace)
        self.min_scale = int(min_scale)
        self.max_scale = int(max_scale)
        self.scale_down_delay = float(scale_down_delay)
        self._delay: deque[tuple[float, int]] = deque()   # (time, count), counts strictly decreasing
        self._t: list[float] = []      # sample times
        self._v: list[float] = []      # concurrency over (previous sample, this sample]
        self._cum: list[float] = []    # integral of concurrency from the origin to each sample time
        self._origin = 0.0
        self._n_last = 1
        self.panic_time: float | None = None
        self.max_panic_pods = 0
        self._zero_since: float | None = None
        self._last: int | None = None

    def record(self, now: float, concurrency: float) -> None:
        """A sample of the revision's total in-flight requests, covering the time since the previous sample.

        Samples must not go back in time. The first sample covers the second before it.
        """
        if not (concurrency >= 0 and math.isfinite(concurrency)):
            raise ValueError(f"concurrency={concurrency!r}: must be a finite number >= 0")
        now = float(now)
        v = float(concurrency)
        t = self._t
        if not t:
            self._t, self._v, self._cum = [now], [v], [v * 1.0]
            self._origin = now - 1.0
            return
        last = t[-1]
        if now < last:
            raise ValueError(f"now={now!r}: samples must not go back in time (last sample at {last!r})")
        if now == last:
            # several samples for one instant: their mean
            self._n_last += 1
            prev_cum = self._cum[-2] if len(self._cum) > 1 else 0.0
            span = (now - self._t[-2]) if len(self._t) > 1 else 1.0
            self._v[-1] += (v - self._v[-1]) / self._n_last
            self._cum[-1] = prev_cum + self._v[-1] * span
            return
        self._n_last = 1
        t.append(now)
        self._v.append(v)
        cum = self._cum
        cum.append(cum[-1] + v * (now - last))
        if len(t) > 8192:
            keep = bisect.bisect_left(self._t, now - self.stable_window - 2.0)
            if keep > 1:
                self._origin = self._t[keep - 1]
                del self._t[:keep], self._v[:keep], self._cum[:keep]
                # re-base: cum[i] is now the integral from the new origin
                base_v, base_t = self._v[0], self._t[0]
                offset = self._cum[0] - base_v * (base_t - self._origin)
                self._cum = [c - offset for c in self._cum]

    def _integral(self, x: float) -> float:
        """Integral of the concurrency from the origin to ``x`` (the last sample holds after it)."""
        t, v, cum = self._t, self._v, self._cum
        if x >= t[-1]:
            return cum[-1] + v[-1] * (x - t[-1])
        j = bisect.bisect_left(t, x)
        return cum[j] - v[j] * (t[j] - x)

    def window_average(self, now: float, window: float) -> float:
        """Mean concurrency over ``(now - window, now]`` (only the part since the first sample)."""
        if not self._t:
            raise LookupError("no concurrency recorded yet")
        lo = max(now - window, self._origin)
        if now <= lo:
            return self._v[-1]
        return (self._integral(now) - self._integral(lo)) / (now - lo)

    def window_averages(self, now: float) -> tuple[float, float]:
        """``(window_average(now, stable_window), window_average(now, panic_window))``: the integral up to
        ``now`` is computed once for both (the same numbers, half the bisections; every decision needs
        both). Pinned by ``test_kpa.py::test_both_window_averages_equal_the_single_ones``."""
        if not self._t:
            raise LookupError("no concurrency recorded yet")
        origin, last_v = self._origin, self._v[-1]
        lo_s = now - self.stable_window
        if lo_s < origin:
            lo_s = origin
        lo_p = now - self.panic_window
        if lo_p < origin:
            lo_p = origin
        t, v, cum = self._t, self._v, self._cum
        last_t = t[-1]
        if now >= last_t:   # _integral(now) after the last sample (every decision of a run): inlined
            i_now = cum[-1] + last_v * (now - last_t)
        else:
            i_now = self._integral(now) if (now > lo_s or now > lo_p) else 0.0
        if now <= lo_s:
            stable = last_v
        elif lo_s >= last_t:
            stable = (i_now - (cum[-1] + last_v * (lo_s - last_t))) / (now - lo_s)
        else:               # _integral(lo_s) inside the samples, inlined
            j = bisect.bisect_left(t, lo_s)
            stable = (i_now - (cum[j] - v[j] * (t[j] - lo_s))) / (now - lo_s)
        if now <= lo_p:
            panic = last_v
        elif lo_p >= last_t:
            panic = (i_now - (cum[-1] + last_v * (lo_p - last_t))) / (now - lo_p)
        else:
            j = bisect.bisect_left(t, lo_p)
            panic = (i_now - (cum[j] - v[j] * (t[j] - lo_p))) / (now - lo_p)
        return stable, panic

    def desired(self, now: float, ready_pods: int) -> int:
        """The pod count the KPA asks for at ``now`` given ``ready_pods`` ready pods.

        Window averages -> :meth:`scale` (``autoscaler.go``) -> ``max_scale`` / ``min_scale`` -> the
        scale-to-zero grace period (``kpa/scaler.go``).
        """
        if not self._t:
            # ErrNoData: no decision; keep what runs (never read as zero demand)
            return self._last if self._last is not None else max(int(ready_pods), self.min_scale)
        stable, panic = self.window_averages(now)
        want = min(self.scale(now, stable, panic, ready_pods), self.max_scale)
        if want == 0 and self.min_scale == 0:
            if self._zero_since is None:
                self._zero_since = now
            if now - self._zero_since < self.grace:
                return self._last if self._last else max(int(ready_pods), 0)   # grace: keep the pods
            self._last = 0
            return 0
        self._zero_since = None
        want = max(want, self.min_scale)
        self._last = want
        return want

    def scale(self, now: float, stable: float, panic: float, ready_pods: int) -> int:
        """``autoscaler.go`` ``Scale`` on observed stable and panic concurrency (see the module docstring)."""
        ready = float(ready_pods)
        if ready < 1.0:
            ready = 1.0
        max_up = math.ceil(self.max_up_rate * ready)
        max_down = math.floor(ready / self.max_down_rate)
        dspc = math.ceil(stable / self.target)
        dppc = math.ceil(panic / self.target)
        # clamp(x, max_down, max_up) = min(max(x, max_down), max_up), on ints (comparisons, not calls: hot path)
        stable_count = max_up if dspc > max_up or max_down > max_up else (dspc if dspc > max_down else max_down)
        panic_count = max_up if dppc > max_up or max_down > max_up else (dppc if dppc > max_down else max_down)
        over = dppc / ready >= self.panic_threshold
        if over:
            self.panic_time = now
        elif self.panic_time is not None and self.panic_time + self.stable_window < now:
            self.panic_time = None
            self.max_panic_pods = 0
        want = stable_count
        if self.panic_time is not None:
            want = max(want, panic_count)
            if want > self.max_panic_pods:
                self.max_panic_pods = want
            else:
                want = self.max_panic_pods
        if self.scale_down_delay > 0:
            want = self._delayed(now, want)
        return want

    def _delayed(self, now: float, want: int) -> int:
        """The highest count recorded in ``(now - scale_down_delay, now]`` (Knative's ``delayWindow``).

        A monotonic deque: a count hides every earlier one that is not higher, so the front is the max.
        """
        d = self._delay
        while d and d[-1][1] <= want:
            d.pop()
        d.append((now, want))
        while d[0][0] <= now - self.scale_down_delay:
            d.popleft()
        return d[0][1]

    @property
    def panicking(self) -> bool:
        return self.panic_time is not None
