"""The background refresh: sources -> enrichers -> ``decide`` -> the per-target cache.

RPCs never talk to Prometheus. This loop does, on its own threads:

1. Every pass it finds the targets that are *due* (``next_due <= now``; a new
   target is due at once). When one target of a source address is due, the
   others of that address due within half their ``refreshInterval`` come
   along, so targets sharing a Prometheus settle into one
   :meth:`~scaler.signals.SignalSource.fetch` call per interval (the source
   shares its queries between them).
2. Each address is fetched on a worker thread, at most one fetch in flight per
   address, so one slow Prometheus delays only its own targets. When enrichers
   are configured (they may do I/O per target: a Kubernetes GET, a range
   query), the targets of one fetch are enriched and decided in parallel on a
   second pool of the same size.
3. For each target the result is a :class:`~scaler.signals.Signals` (then
   every :class:`SignalEnricher` runs in order, then
   ``decide(signals, target.state, config, now)``; ``Decision.next_state`` is
   kept for the next refresh) or a :class:`~scaler.errors.SourceError`
   (remembered and counted by kind; the last good decision is kept).
4. Targets not asked about for ``idle_eviction`` seconds are dropped.

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
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, runtime_checkable

from ..config import PolicyConfig
from ..errors import SourceError
from ..policy import Decision, decide
from ..redact import redact  # the one redaction of addresses (also importable from here, as before)
from ..signals import SignalSource, Signals
from .targets import Outcome, Target, TargetStore

log = logging.getLogger("scaler.server.refresh")

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


class PolicyFailure(SourceError):
    """``decide`` raised: no decision this refresh (the last good one is kept)."""

    kind = "policy"


class MissingResult(SourceError):
    """The source returned no entry for a target it was asked about."""

    kind = "missing"


class InternalSourceError(SourceError):
    """The source raised something other than a ``SourceError`` (a bug, logged with its traceback)."""

    kind = "internal"


@dataclass(frozen=True)
class RefreshObserver:
    """Hooks the metrics module attaches to (fetch durations)."""

    fetch_seconds: Callable[[str, float], None] = lambda address, seconds: None


class Refresher:
    """Runs the refresh loop described in the module docstring."""

    def __init__(self, store: TargetStore, source_factory: SourceFactory, *,
                 clock: Callable[[], float], perf: Callable[[], float] | None = None,
                 enrichers: Sequence[SignalEnricher] = (), workers: int = 4, idle_eviction: float = 600.0,
                 observer: RefreshObserver | None = None):
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

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
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
            plan.append((address, batch))
        return plan

    def _evict(self, now: float) -> None:
        gone = self.store.evict_idle(now, self.idle_eviction)
        for t in gone:
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
        for batch in _batches(targets):
            configs = [t.config for t in batch.values()]
            started = self._perf()
            try:
                results = dict(source.fetch(configs, now))
            except SourceError as exc:
                results = {key: exc for key in batch}
            except Exception as exc:  # a bug in a source: log it, fail these targets safely
                log.exception("source %s raised", getattr(source, "name", type(source).__name__))
                err = InternalSourceError(f"{type(exc).__name__}: {exc}", source=getattr(source, "name", "source"))
                results = {key: err for key in batch}
            self._observer.fetch_seconds(redact(address), self._perf() - started)
            name = getattr(source, "name", "source")
            work = []
            for t in targets:
                key = t.config.target_key
                if key not in batch or not _same_fetch(batch[key].config, t.config):
                    continue
                result = results.get(key)
                if result is None:
                    result = MissingResult(f"no result for {key}", source=name)
                work.append((t, result))
            self._apply_all(work, now, name)

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
        """Fold one fetch result into ``target``: enrich, decide, store, log changes, notify listeners."""
        try:
            if isinstance(result, SourceError):
                self._fail(target, result, now, source_name)
                return
            signals = result
            for enricher in self.enrichers:
                signals = self._enrich(enricher, signals, target, now)
            try:
                decision = decide(signals, target.state, target.config, now)
            except Exception as exc:
                log.exception("decide() failed", extra={"fields": _labels(target)})
                self._fail(target, PolicyFailure(f"{type(exc).__name__}: {exc}", source="policy"), now, "policy")
                return
            previous = target.record_good(signals, decision, now)
            recovered = target.clear_error()
            if recovered is not None:
                log.info("source recovered", extra={"fields": {**_labels(target), "after": recovered.kind}})
            if _changed(previous, decision):
                _log_decision(target, decision, signals, now)
        finally:
            target.notify()

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
        previous = target.record_error(error, now, source=source_name)
        if previous is None or previous.kind != error.kind:
            good = target.good
            log.warning("source error: %s", error, extra={"fields": {
                **_labels(target), "kind": error.kind,
                "serving_last_good_for_s": None if good is None else
                max(0.0, round(good.at + target.config.max_staleness - now, 1))}})


def _batches(targets: list[Target]) -> list[dict[tuple, Target]]:
    """Split targets into fetch calls: one config per ``target_key`` per call.

    Two triggers reading the same series (same ``target_key``) share a result
    when their configs fetch the same way (same window and activation query);
    otherwise the second goes into another call, so neither is answered from
    the other's query.
    """
    batches: list[dict[tuple, Target]] = []
    for t in targets:
        key = t.config.target_key
        for batch in batches:
            if key not in batch or _same_fetch(batch[key].config, t.config):
                batch.setdefault(key, t)
                break
        else:
            batches.append({key: t})
    return batches


def _same_fetch(a: PolicyConfig, b: PolicyConfig) -> bool:
    return (a.target_key, a.window, a.activation_query) == (b.target_key, b.window, b.activation_query)


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
