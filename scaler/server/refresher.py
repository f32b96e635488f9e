"""The background refresh: sources -> enrichers -> ``decide`` -> the per-target cache.

RPCs never talk to Prometheus. This loop does, on its own threads:

1. Every pass it finds the targets that are *due* (``next_due <= now``; a new
   target is due at once). When one target of a source address is due, the
   others of that address due within half their ``refreshInterval`` come
   along, so targets sharing a Prometheus settle into one refresh per interval.
2. Each address is refreshed on a worker thread, at most one refresh in flight
   per address, so one slow Prometheus delays only its own targets. When
   enrichers are configured (they may do I/O per target: a Kubernetes GET, a
   range query), the targets of one fetch are enriched and decided in parallel
   on a second pool of the same size.
3. **Isolation.** The due targets of an address are split into *fetch groups*
   of compatible query parameters (:func:`fetch_groups`: same ``window``, same
   ``activationQuery``), and each group is one
   :meth:`~scaler.signals.SignalSource.fetch` call, whose queries the source
   shares between the group's targets. A group whose fetch fails in a way one
   target's parameters can cause (Prometheus rejects the query: HTTP 400, 413,
   414, 422; or the source raises something other than a ``SourceError``) is
   split in halves and fetched again, down to single targets, before any
   target's answer is touched (:meth:`Refresher.fetch_isolated`): only the
   target(s) that fail alone get the error, with their own error text, and
   they are fetched alone from then on (a solo target rejoins its group after
   a good refresh). Failures that are Prometheus' own (timeout, refused
   connection, 5xx) fail the group at once: retrying cannot help, and the
   text names Prometheus, not another target.
4. For each target the result is a :class:`~scaler.signals.Signals` (then
   every :class:`SignalEnricher` runs in order, then
   ``decide(signals, target.state, config, now)``; ``Decision.next_state`` is
   kept for the next refresh) or a :class:`~scaler.errors.SourceError`
   (remembered and counted by kind; the last good decision is kept).
5. **Budget.** A target's enrichers and ``decide()`` run under a CPU budget
   (``budget`` seconds of the worker thread's CPU, ``--refresh-budget``;
   :mod:`scaler.server.budget`). A target over it is cut off, logged, counted
   (``vllm_scaler_source_errors_total{source="refresh",kind="budget"}`` and
   ``vllm_scaler_refresh_cutoffs_total``), answers from its last good decision
   like any failed refresh, is refreshed after the rest of its batch from then
   on, and waits ``refreshInterval * 2**n`` (n: its cut-offs in a row, at most
   :data:`MAX_BACKOFF` intervals) before its next try. The other targets'
   refresh is not held up by more than one budget.
6. Targets not asked about for ``idle_eviction`` seconds are dropped.

:meth:`Refresher.lag` tells how late the refresh is (the server's health
turns ``NOT_SERVING`` when it is hopelessly behind; see ``app.py``).

Plugging in more signal sources: a :class:`SignalEnricher` adds to the
``Signals`` a fetch produced (e.g. the measured cold start from Kubernetes, or
demand history from Prometheus range queries). An enricher that raises a
``SourceError`` is counted (``vllm_scaler_source_errors_total{source=<its
name>}``) and logged; the decision then uses the signals without that
enrichment, since the primary signals are good. The source itself comes from a
``SourceFactory``: a callable from a Prometheus address to a ``SignalSource``,
called once per distinct address.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from ..config import PolicyConfig, TargetKey
from ..errors import (
    InternalSourceError,
    MissingResult,
    PolicyFailure,
    RefreshBudgetExceeded,
    SourceError,
    SourceHTTPError,
)
from ..policy import Decision, decide
from ..redact import redact, redact_text  # the one redaction of addresses (redact importable from here too)
from ..signals import Signals, SignalSource
from .budget import Budget, BudgetExceeded
from .targets import Outcome, Target, TargetId, TargetStore

log = logging.getLogger("scaler.server.refresh")
_T = TypeVar("_T")

SourceFactory = Callable[[str], SignalSource]
"""Prometheus address (``PolicyConfig.prometheus_address``) -> the source reading it."""


@runtime_checkable
class SignalEnricher(Protocol):
    """Adds signals a source does not read, before the policy sees them.

    ``enrich`` returns a new ``Signals`` (use ``dataclasses.replace``); it runs
    on a refresh worker thread, never on the RPC path, and may do I/O bounded by
    its own timeout. Raise a :class:`~scaler.errors.SourceError` on failure.
    """

    name: str

    def enrich(self, signals: Signals, config: PolicyConfig, now: float) -> Signals:
        ...


#: HTTP statuses by which Prometheus (or a proxy) refuses a query itself: one target's parameters can cause
#: them (a window it cannot parse, a regex it rejects, a query too large), so a shared fetch failing with one
#: is split to find the target(s) at fault.
QUERY_FAULT_STATUSES = frozenset({400, 413, 414, 422, 431})

#: Most refresh intervals a target cut off by its budget waits before its next try.
MAX_BACKOFF = 64


@dataclass(frozen=True)
class RefreshObserver:
    """Hooks the metrics module attaches to (fetch durations, budget cut-offs)."""

    fetch_seconds: Callable[[str, float], None] = lambda address, seconds: None
    cutoff: Callable[[], None] = lambda: None


class Refresher:
    """Runs the refresh loop described in the module docstring."""

    def __init__(self, store: TargetStore, source_factory: SourceFactory, *,
                 clock: Callable[[], float], perf: Callable[[], float] | None = None,
                 enrichers: Sequence[SignalEnricher] = (), workers: int = 4, idle_eviction: float = 600.0,
                 observer: RefreshObserver | None = None, budget: float | None = 1.0):
        self.store = store
        self._source_factory = source_factory
        self._clock = clock
        self._perf = perf or time.perf_counter
        self.enrichers = tuple(enrichers)
        self.idle_eviction = idle_eviction
        self._observer = observer or RefreshObserver()
        self._sources: dict[str, SignalSource] = {}
        self._sources_lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._in_flight_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._workers = max(1, workers)
        self._executor: ThreadPoolExecutor | None = None
        self._enrich_pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._budget = Budget(budget) if budget is not None else None
        self._solo: set[TargetId] = set()          # failed alone with a query fault: fetched alone
        self._cutoffs: dict[TargetId, int] = {}    # cut-offs in a row by the budget

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._budget is not None:
            self._budget.start()
        self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="refresh")
        if self.enrichers:
            self._enrich_pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="enrich")
        self._thread = threading.Thread(target=self._run, name="refresher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for pool in (self._executor, self._enrich_pool):
            if pool is not None:
                # In-flight fetches finish in their own time (bounded by the source's timeout); nothing waits.
                pool.shutdown(wait=False, cancel_futures=True)
        with self._sources_lock:
            for source in self._sources.values():
                _close(source)
            self._sources.clear()
        if self._budget is not None:
            self._budget.stop()

    def kick(self) -> None:
        """Wake the loop now (a new target was asked about)."""
        self._wake.set()

    # -- one pass, synchronous (the loop uses it; so do tests with a fake clock) ---------------
    def refresh_due(self, now: float | None = None) -> int:
        """Refresh every due target now, on the calling thread; returns how many targets were refreshed."""
        now = self._clock() if now is None else now
        self._evict(now)
        done = 0
        for address, targets in self.plan(now):
            self._refresh_address(address, targets, now)
            done += len(targets)
        return done

    def plan(self, now: float, *, skip: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, list[Target]]]:
        """Due targets grouped by source address; marks them not due until their next interval."""
        by_address: dict[str, list[Target]] = {}
        for t in self.store.targets():
            by_address.setdefault(t.config.prometheus_address, []).append(t)
        plan = []
        for address, targets in by_address.items():
            if address in skip or not any(t.next_due <= now for t in targets):
                continue
            batch = [t for t in targets if t.next_due <= now + t.config.refresh_interval / 2]
            for t in batch:
                t.next_due = now + t.config.refresh_interval
            # Targets cut off by their budget before go last: the others' refresh is done first.
            batch.sort(key=lambda t: t.id in self._cutoffs)
            plan.append((address, batch))
        return plan

    def lag(self, now: float) -> tuple[float, int]:
        """How late the refresh is: (the most any target is overdue, in s; targets overdue beyond maxStaleness).

        A target is overdue from its ``next_due`` (from its creation when never refreshed) until a refresh of
        it starts. One overdue by more than its ``maxStaleness`` answers ``UNAVAILABLE`` because of this
        process, not its source: the refresh is hopelessly behind (a stuck worker, a stalled loop, far more
        work than CPU).
        """
        worst, hopeless = 0.0, 0
        for t in self.store.targets():
            late = now - max(t.next_due, t.created_at)
            if late > 0:
                worst = max(worst, late)
                if late > t.config.max_staleness:
                    hopeless += 1
        return worst, hopeless

    def _evict(self, now: float) -> None:
        gone = self.store.evict_idle(now, self.idle_eviction)
        for t in gone:
            self._solo.discard(t.id)
            self._cutoffs.pop(t.id, None)
            log.info("target evicted: not asked about for %.0fs", self.idle_eviction,
                     extra={"fields": {"namespace": t.namespace, "scaledobject": t.scaled_object,
                                       "trigger": t.trigger}})
        if gone:
            live = {t.config.prometheus_address for t in self.store.targets()}
            with self._sources_lock:
                for address in [a for a in self._sources if a not in live]:
                    _close(self._sources.pop(address))

    # -- the background loop ------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            now = self._clock()
            try:
                self._evict(now)
                with self._in_flight_lock:
                    busy = set(self._in_flight)
                for address, targets in self.plan(now, skip=busy):
                    with self._in_flight_lock:
                        self._in_flight.add(address)
                    assert self._executor is not None
                    try:
                        self._executor.submit(self._refresh_in_worker, address, targets)
                    except RuntimeError:  # executor shut down: we are stopping
                        return
            except Exception:  # never let the loop die; the next pass retries
                log.exception("refresh loop pass failed")
            with self._in_flight_lock:
                busy = set(self._in_flight)  # their completion wakes the loop
            wait = min((t.next_due for t in self.store.targets() if t.config.prometheus_address not in busy),
                       default=now + 1.0) - now
            self._wake.wait(timeout=min(max(wait, 0.01), 1.0))

    def _refresh_in_worker(self, address: str, targets: list[Target]) -> None:
        try:
            self._refresh_address(address, targets, self._clock())
        except Exception:
            log.exception("refresh of %s failed", redact(address))
        finally:
            with self._in_flight_lock:
                self._in_flight.discard(address)
            self._wake.set()

    # -- one address ----------------------------------------------------------------------------
    def source_for(self, address: str) -> SignalSource:
        with self._sources_lock:
            source = self._sources.get(address)
            if source is None:
                source = self._sources[address] = self._source_factory(address)
            return source

    def _refresh_address(self, address: str, targets: list[Target], now: float) -> None:
        try:
            source = self.source_for(address)
        except Exception as exc:  # e.g. a credential file gone: fail these targets, visibly
            log.exception("cannot create the source for %s", redact(address))
            err = InternalSourceError(f"cannot create the source: {type(exc).__name__}: {exc}", source="factory")
            for t in targets:
                self.apply(t, err, now, source_name="factory")
            return
        name = getattr(source, "name", "source")
        for group in fetch_groups(targets, self._solo):
            batch: dict[TargetKey, Target] = {}
            for t in group:
                batch.setdefault(t.config.target_key, t)
            results = self.fetch_isolated(source, address, batch, now)
            work = []
            for t in group:
                key = t.config.target_key
                result = results.get(key)
                if result is None:
                    result = MissingResult(f"no result for {key}", source=name)
                work.append((t, result))
            self._apply_all(work, now, name)

    def fetch_isolated(self, source: SignalSource, address: str, batch: dict[TargetKey, Target],
                       now: float) -> dict[TargetKey, Signals | SourceError]:
        """One fetch for ``batch`` (compatible targets by ``target_key``); on a query fault, halves, recursively.

        Returns a result for every key of ``batch``. A query fault (see the module docstring) of a fetch of
        several targets is never given to them: the halves are fetched again, so it reaches only the targets
        that fail alone, and those are remembered as *solo* (fetched alone from then on).
        """
        started = self._perf()
        name = getattr(source, "name", "source")
        error: SourceError | None = None
        try:
            results = dict(source.fetch([t.config for t in batch.values()], now))
        except SourceError as exc:
            error = exc
        except Exception as exc:  # a bug in a source, or one target's value it cannot handle
            if len(batch) == 1 and next(iter(batch.values())).id not in self._solo:
                log.exception("source %s raised", name, extra={"fields": _labels(next(iter(batch.values())))})
            error = InternalSourceError(f"{type(exc).__name__}: {exc}", source=name)
        finally:
            self._observer.fetch_seconds(redact(address), self._perf() - started)
        if error is None:
            for t in batch.values():
                if t.id in self._solo and not isinstance(results.get(t.config.target_key), SourceError):
                    self._solo.discard(t.id)
            return results
        if not _query_fault(error):
            return {key: error for key in batch}
        if len(batch) == 1:
            self._solo.add(next(iter(batch.values())).id)
            return {key: error for key in batch}
        keys = list(batch)
        half = len(keys) // 2
        out = self.fetch_isolated(source, address, {k: batch[k] for k in keys[:half]}, now)
        out.update(self.fetch_isolated(source, address, {k: batch[k] for k in keys[half:]}, now))
        return out

    def _apply_all(self, work: list[tuple[Target, Signals | SourceError]], now: float, source_name: str) -> None:
        """Apply results; in parallel when enrichers (which may do I/O per target) run and the loop is started."""
        pool = self._enrich_pool
        if pool is None or not self.enrichers or len(work) < 2:
            for t, result in work:
                self.apply(t, result, now, source_name=source_name)
            return
        try:
            futures = [pool.submit(self.apply, t, result, now, source_name=source_name) for t, result in work]
        except RuntimeError:  # shutting down
            return
        for f in futures:
            try:
                f.result()
            except CancelledError:  # stop() cancelled it
                return

    def apply(self, target: Target, result: Signals | SourceError, now: float, *, source_name: str = "source") -> None:
        """Fold one fetch result into ``target``: enrich, decide (within the budget), store, log, notify."""
        try:
            if isinstance(result, SourceError):
                self._fail(target, result, now, source_name)
                return
            try:
                signals, decision = self._run_budgeted(lambda: self._decide(target, result, now))
            except BudgetExceeded as exc:
                if not self._stop.is_set():  # stop() cuts off whatever still runs: not the target's fault
                    self._cut_off(target, exc, now)
                return
            except _PolicyRaised as exc:
                self._fail(target, exc.error, now, "policy")
                return
            self._cutoffs.pop(target.id, None)
            previous = target.record_good(signals, decision, now)
            recovered = target.clear_error()
            if recovered is not None:
                log.info("source recovered", extra={"fields": {**_labels(target), "after": recovered.kind}})
            if _changed(previous, decision):
                _log_decision(target, decision, signals, now)
        finally:
            target.notify()

    def _run_budgeted(self, work: Callable[[], _T]) -> _T:
        return work() if self._budget is None else self._budget.run(work)

    def _decide(self, target: Target, signals: Signals, now: float) -> tuple[Signals, Decision]:
        for enricher in self.enrichers:
            signals = self._enrich(enricher, signals, target, now)
        try:
            return signals, decide(signals, target.state, target.config, now)
        except Exception as exc:
            log.exception("decide() failed", extra={"fields": _labels(target)})
            raise _PolicyRaised(PolicyFailure(f"{type(exc).__name__}: {exc}", source="policy")) from None

    def _cut_off(self, target: Target, exc: BudgetExceeded, now: float) -> None:
        n = self._cutoffs[target.id] = self._cutoffs.get(target.id, 0) + 1
        wait = target.config.refresh_interval * min(2 ** n, MAX_BACKOFF)
        target.next_due = max(target.next_due, now + wait)
        self._observer.cutoff()
        log.warning("refresh cut off: %s", exc, extra={"fields": {
            **_labels(target), "cutoffs_in_a_row": n, "next_try_in_s": round(wait, 1)}})
        self._fail(target, RefreshBudgetExceeded(str(exc), source="refresh"), now, "refresh")

    def _enrich(self, enricher: SignalEnricher, signals: Signals, target: Target, now: float) -> Signals:
        name = getattr(enricher, "name", type(enricher).__name__)
        try:
            return enricher.enrich(signals, target.config, now)
        except SourceError as exc:
            target.count_error(name, exc.kind)
            log.warning("enricher failed, deciding without it: %s", exc,
                        extra={"fields": {**_labels(target), "enricher": name, "kind": exc.kind}})
        except Exception:
            target.count_error(name, "internal")
            log.exception("enricher %s raised", name, extra={"fields": _labels(target)})
        return signals

    def _fail(self, target: Target, error: SourceError, now: float, source_name: str) -> None:
        _redact_error(error)
        previous = target.record_error(error, now, source=source_name)
        if previous is None or previous.kind != error.kind:
            good = target.good
            log.warning("source error: %s", error, extra={"fields": {
                **_labels(target), "kind": error.kind,
                "serving_last_good_for_s": None if good is None else
                max(0.0, round(good.at + target.config.max_staleness - now, 1))}})


def fetch_groups(targets: Sequence[Target], solo: set[TargetId] | frozenset[TargetId] = frozenset()) -> list[list[Target]]:
    """Targets of one address split into fetch calls whose shared queries suit every member.

    Compatible: the same ``window`` (the range of every shared rate and gauge query) and the same
    ``activationQuery`` (the one query a target adds; a slow or failing one then costs only the targets that
    asked for it). Targets in ``solo`` (they failed alone before) get a call of their own. Two triggers
    reading the same series in one group share its result (same ``target_key``, same fetch).
    """
    groups: dict[tuple[object, ...], list[Target]] = {}
    for t in targets:
        key = ("solo", t.id) if t.id in solo else ("shared", t.config.window, t.config.activation_query or "")
        groups.setdefault(key, []).append(t)
    return list(groups.values())


def _query_fault(error: SourceError) -> bool:
    """Could one target's parameters have caused this failure of a shared fetch?"""
    if isinstance(error, InternalSourceError):
        return True
    return isinstance(error, SourceHTTPError) and error.status in QUERY_FAULT_STATUSES


class _PolicyRaised(Exception):
    def __init__(self, error: PolicyFailure):
        self.error = error


def _redact_error(error: SourceError) -> None:
    """Credentials written into an address never reach the target's error text (logs, gRPC messages)."""
    if error.args and isinstance(error.args[0], str):
        clean = redact_text(error.args[0])
        if clean != error.args[0]:
            error.args = (clean,) + error.args[1:]


def _close(source: SignalSource) -> None:
    close = getattr(source, "close", None)
    if callable(close):
        try:
            close()
        except Exception:
            log.exception("closing source failed")


def _labels(target: Target) -> dict[str, str]:
    return {"namespace": target.namespace, "scaledobject": target.scaled_object, "trigger": target.trigger}


def _changed(previous: Outcome | None, decision: Decision) -> bool:
    if previous is None:
        return True
    p = previous.decision
    return (p.desired, p.active, p.dominant) != (decision.desired, decision.active, decision.dominant)


def _log_decision(target: Target, decision: Decision, signals: Signals, now: float) -> None:
    log.info("decision changed: desired=%d active=%s driven by %s", decision.desired, decision.active,
             decision.dominant, extra={"fields": {
                 **_labels(target), "desired": decision.desired, "active": decision.active,
                 "dominant": decision.dominant, "reasons": list(decision.reasons),
                 "terms": {k: round(v, 4) for k, v in decision.terms.items()},
                 "pods_reporting": signals.pods_reporting, "data_age_s": round(now - signals.observed_at, 3)}})
