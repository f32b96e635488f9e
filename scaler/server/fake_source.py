"""A scripted, in-memory :class:`~scaler.signals.SignalSource` for tests, benchmarks and demos.

Holds one :class:`~scaler.signals.Signals` per ``(namespace, deployment)`` and
returns it, stamped with the fetch's ``now``, for every config asked about.
Its error hooks make it fail the way a real source does: ``fail_all`` raises
a :class:`~scaler.errors.SourceError` from ``fetch`` (the whole Prometheus is
down), ``fail_target`` returns one for a single target. A target with no
scripted signals gets a :class:`~scaler.errors.NoDataError`. ``delay``
makes each fetch take that long (a slow Prometheus). ``hook``, when set, is
called with the configs of every fetch before it answers and may raise
(e.g. an HTTP 400 whenever one given target is in the batch, as Prometheus
rejects a shared query one target's parameters broke) or block. ``calls``
records ``(now, configs)`` for every fetch, so tests can check query sharing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence

from ..config import PolicyConfig, TargetKey
from ..errors import NoDataError, SourceError
from ..signals import Signals


def _stamped(signals: Signals, now: float) -> Signals:
    """A copy observed at ``now`` (already validated: skips ``__post_init__``, cheap for 1,000 targets)."""
    copy = object.__new__(Signals)
    copy.__dict__.update(signals.__dict__)
    object.__setattr__(copy, "observed_at", now)
    return copy


class ScriptedSource:
    name = "scripted"

    def __init__(self, signals: Mapping[tuple[str, str], Signals] | None = None, *, delay: float = 0.0):
        self._signals: dict[tuple[str, str], Signals] = dict(signals or {})
        self._target_errors: dict[tuple[str, str], SourceError] = {}
        self._error: SourceError | None = None
        self.delay = delay
        self.hook: Callable[[Sequence[PolicyConfig]], None] | None = None
        self.calls: list[tuple[float, tuple[PolicyConfig, ...]]] = []
        self._lock = threading.Lock()

    def set(self, namespace: str, deployment: str, signals: Signals) -> None:
        with self._lock:
            self._signals[(namespace, deployment)] = signals

    def fail_all(self, error: SourceError | None) -> None:
        """Make every fetch raise ``error`` (``None`` heals)."""
        self._error = error

    def fail_target(self, namespace: str, deployment: str, error: SourceError | None) -> None:
        with self._lock:
            if error is None:
                self._target_errors.pop((namespace, deployment), None)
            else:
                self._target_errors[(namespace, deployment)] = error

    def fetch(self, targets: Sequence[PolicyConfig], now: float) -> Mapping[TargetKey, Signals | SourceError]:
        with self._lock:
            self.calls.append((now, tuple(targets)))
        if self.delay:
            time.sleep(self.delay)
        if self.hook is not None:
            self.hook(targets)
        if self._error is not None:
            raise self._error
        out: dict[TargetKey, Signals | SourceError] = {}
        with self._lock:
            for config in targets:
                key = (config.namespace, config.deployment)
                if key in self._target_errors:
                    out[config.target_key] = self._target_errors[key]
                elif key in self._signals:
                    out[config.target_key] = _stamped(self._signals[key], now)
                else:
                    out[config.target_key] = NoDataError(f"no series for {key[0]}/{key[1]}", source=self.name)
        return out
