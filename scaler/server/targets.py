"""What the server knows about each target: its parsed config, policy state and last answers.

A *target* is one distinct ``(ScaledObject name, namespace, trigger metadata)``
as KEDA sends it in ``ScaledObjectRef``. KEDA repeats the whole metadata map
with every call, so the map is parsed once (:class:`TargetStore` caches the
:class:`~scaler.config.PolicyConfig` or the :class:`~scaler.errors.ConfigError`
by content) and every later call with the same map is a dictionary lookup.

Each :class:`Target` carries, between background refreshes:

* ``state``: the :class:`~scaler.policy.PolicyState` that ``decide`` returned
  last time (``Decision.next_state``), passed back in on the next refresh;
* ``good``: the last decision computed from good signals, with its time;
* the last source error and a count of errors by ``SourceError.kind``.

Answering (:meth:`Target.current`) never waits and never invents a value:
the last good decision is served while it is at most ``maxStaleness`` seconds
old; after that, or before any good refresh, :class:`Unavailable` is raised
and the servicer answers gRPC ``UNAVAILABLE`` (so KEDA's ``fallback`` applies).
Missing data is never read as 0 replicas or "inactive".

Everything here takes ``now`` (unix seconds) as an argument; the clock is read
by the servicer and the refresher.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from ..config import MAX_METADATA, PolicyConfig, ServerDefaults, metadata_size, parse_metadata
from ..errors import ConfigError, SourceError, TooManyTargets, Unavailable
from ..policy import Decision, PolicyState
from ..signals import Signals

TargetId = tuple[str, str, tuple[tuple[str, str], ...]]
"""(ScaledObject name, namespace, sorted metadata items): what KEDA identifies a trigger by."""


def target_id(name: str, namespace: str, metadata: Mapping[str, str]) -> TargetId:
    return (name, namespace, tuple(sorted(metadata.items())))


def trigger_hash(tid: TargetId) -> str:
    """A short, stable label telling apart two triggers (or two edits) of one ScaledObject."""
    return hashlib.sha256(repr(tid[2]).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Outcome:
    """A decision computed from good signals at ``at`` (the refresh's ``now``, unix seconds)."""

    decision: Decision
    signals: Signals
    at: float


class Target:
    """One trigger's config and what the background refresh learned about it.

    What a refresh learns (``state``, ``good``, the errors, ``next_due``) is written only by the refresher
    (one refresh at a time per target) and read by RPC handlers and the metrics collector; every such field
    is replaced by a single assignment, so readers see a consistent value without locking.

    What the RPC side does with a target is written only through two methods, under the target's lock:
    :meth:`asked` (``last_asked``, which idle eviction reads) and :meth:`streaming` (``streams``, the open
    streams that keep it from eviction, and the stream's update listener).
    """

    def __init__(self, tid: TargetId, config: PolicyConfig, now: float, state: PolicyState | None = None):
        self.id = tid
        self.config = config
        self.trigger = trigger_hash(tid)
        self.state: PolicyState | None = state
        self.good: Outcome | None = None
        self.last_error: SourceError | None = None
        self.last_error_at: float | None = None
        self.error_counts: dict[tuple[str, str], int] = {}  # (source, kind) -> count
        self.refreshes = 0
        self.created_at = now
        self.last_asked = now
        self.next_due = float("-inf")  # never refreshed: due at once
        self.streams = 0
        self._listeners: set[Callable[[], None]] = set()
        self._lock = threading.Lock()

    # -- identity -----------------------------------------------------------------------------
    @property
    def namespace(self) -> str:
        return self.id[1]

    @property
    def scaled_object(self) -> str:
        return self.id[0]

    def __repr__(self) -> str:
        return f"Target({self.namespace}/{self.scaled_object} trigger={self.trigger})"

    # -- answering ------------------------------------------------------------------------------
    def current(self, now: float) -> Decision:
        """The decision to answer with at ``now``, or :class:`Unavailable` saying why there is none."""
        good = self.good
        if good is not None:
            age = now - good.at
            if age <= self.config.max_staleness:
                return good.decision
            raise Unavailable(
                f"{self.namespace}/{self.scaled_object}: last good decision is {age:.1f}s old, beyond "
                f"maxStaleness {self.config.max_staleness:g}s; last source error: {self._error_text()}")
        if self.last_error is not None:
            raise Unavailable(f"{self.namespace}/{self.scaled_object}: no decision yet; last source error: "
                              f"{self._error_text()}")
        raise Unavailable(f"{self.namespace}/{self.scaled_object}: no data yet, first refresh in progress",
                          cold=True)

    def _error_text(self) -> str:
        err = self.last_error
        return "none" if err is None else f"[{err.kind}] {err}"

    # -- written by the refresher -----------------------------------------------------------------
    def record_good(self, signals: Signals, decision: Decision, now: float) -> Outcome | None:
        """Store a decision from good signals; returns the previous good outcome (for change logs)."""
        previous = self.good
        self.state = decision.next_state
        self.good = Outcome(decision=decision, signals=signals, at=now)
        self.refreshes += 1
        return previous

    def record_error(self, error: SourceError, now: float, *, source: str) -> SourceError | None:
        """A refresh failed: keep the last good decision, remember the error. Returns the previous error."""
        previous = self.last_error
        self.last_error = error
        self.last_error_at = now
        self.count_error(source, error.kind)
        return previous

    def clear_error(self) -> SourceError | None:
        previous, self.last_error = self.last_error, None
        return previous

    def count_error(self, source: str, kind: str) -> None:
        with self._lock:
            key = (source, kind)
            self.error_counts[key] = self.error_counts.get(key, 0) + 1

    # -- what the RPC side writes ------------------------------------------------------------
    def asked(self, now: float) -> None:
        """An RPC asked about this target at ``now`` (``last_asked`` never moves back)."""
        with self._lock:
            self.last_asked = max(self.last_asked, now)

    @contextmanager
    def streaming(self, on_update: Callable[[], None] | None = None) -> Iterator[None]:
        """While open, one more stream holds this target (``streams``), and ``on_update`` listens."""
        with self._lock:
            self.streams += 1
            if on_update is not None:
                self._listeners.add(on_update)
        try:
            yield
        finally:
            with self._lock:
                self.streams -= 1
                if on_update is not None:
                    self._listeners.discard(on_update)

    # -- listeners (streams, cold-cache waiters) -----------------------------------------------
    def subscribe(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.add(callback)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.discard(callback)

    def notify(self) -> None:
        """Tell listeners that a refresh attempt finished (called from the refresher's thread)."""
        with self._lock:
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback()
            except RuntimeError:  # a listener whose event loop is closed (server shutting down)
                pass


class TargetStore:
    """Parse cache and the set of live targets, keyed by :data:`TargetId`.

    ``resolve`` is what every RPC calls first: a cached parse (bad metadata is
    cached too, as its :class:`ConfigError`), then the live target, created on
    first sight (unless ``max_targets`` live targets exist: :class:`TooManyTargets`)
    and marked as asked-about at ``now``. Targets not asked about
    for ``idle`` seconds (and holding no open stream) are dropped by
    :meth:`evict_idle` and stop being refreshed.

    When a ScaledObject's metadata is edited, the new trigger is a new target;
    it inherits the policy state of the same ScaledObject's most recent target
    reading the same series (same ``PolicyConfig.target_key``), so an edit of
    an SLO does not reset the scale-to-zero idle clock or a forecaster.
    """

    def __init__(self, defaults: ServerDefaults, *, max_parsed: int = 10_000, max_targets: int | None = None,
                 on_new_target: Callable[[Target], None] | None = None):
        self.defaults = defaults
        self._max_parsed = max_parsed
        self.max_targets = max_targets
        self.refused = 0          # new targets refused at max_targets (vllm_scaler_targets_refused_total)
        self._parsed: dict[TargetId, PolicyConfig | ConfigError] = {}
        self._targets: dict[TargetId, Target] = {}
        self._lock = threading.Lock()
        self._on_new_target = on_new_target

    def parse(self, tid: TargetId) -> PolicyConfig:
        """The config for ``tid``, parsed once; raises the (cached) :class:`ConfigError`."""
        cached = self._parsed.get(tid)
        if cached is None:
            try:
                cached = parse_metadata(dict(tid[2]), scaled_object=tid[0], namespace=tid[1],
                                        defaults=self.defaults)
            except ConfigError as exc:
                if metadata_size(dict(tid[2])) > MAX_METADATA:
                    raise   # refused for its size: not kept (the cache would hold the oversized map)
                cached = exc
            with self._lock:
                if len(self._parsed) >= self._max_parsed:
                    # Bounded memory against clients sending ever-new metadata: start over.
                    self._parsed.clear()
                self._parsed[tid] = cached
        if isinstance(cached, ConfigError):
            raise cached
        return cached

    def resolve(self, name: str, namespace: str, metadata: Mapping[str, str], now: float) -> Target:
        """The live target for a ``ScaledObjectRef``; raises :class:`ConfigError` for bad metadata and
        :class:`TooManyTargets` for a new target beyond ``max_targets``."""
        tid = target_id(name, namespace, metadata)
        config = self.parse(tid)
        created = None
        with self._lock:
            target = self._targets.get(tid)
            if target is None and self.max_targets is not None and len(self._targets) >= self.max_targets:
                self.refused += 1
                raise TooManyTargets(
                    f"{namespace}/{name}: this scaler already serves {len(self._targets)} targets, its "
                    "--max-targets; a new target is admitted once an idle one is evicted (--idle-eviction) or "
                    "the limit is raised")
            if target is None:
                target = created = Target(tid, config, now, state=self._inherited_state(tid, config))
                self._targets[tid] = target
            target.asked(now)
        if created is not None and self._on_new_target is not None:
            self._on_new_target(created)
        return target

    def _inherited_state(self, tid: TargetId, config: PolicyConfig) -> PolicyState | None:
        best: Target | None = None
        for other in self._targets.values():
            if other.id[:2] == tid[:2] and other.config.target_key == config.target_key and other.state is not None:
                if best is None or other.last_asked > best.last_asked:
                    best = other
        return None if best is None else best.state

    def targets(self) -> list[Target]:
        with self._lock:
            return list(self._targets.values())

    def __len__(self) -> int:
        return len(self._targets)

    def get(self, tid: TargetId) -> Target | None:
        return self._targets.get(tid)

    def evict_idle(self, now: float, idle: float) -> list[Target]:
        """Drop targets not asked about since ``now - idle`` and holding no open stream; returns them."""
        with self._lock:
            gone = [t for t in self._targets.values() if t.streams == 0 and now - t.last_asked > idle]
            for t in gone:
                del self._targets[t.id]
        return gone

    def add(self, targets: Iterable[Target]) -> None:
        """Insert ready-made targets (benchmarks and tests that prefill the cache)."""
        with self._lock:
            for t in targets:
                self._targets[t.id] = t
