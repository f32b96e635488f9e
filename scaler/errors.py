"""The exception hierarchy of the scaler, in one place.

::

    ScalerError
    ├── ConfigError              bad ScaledObject trigger metadata (-> gRPC INVALID_ARGUMENT)
    │                            carries every problem at once, each naming key and value
    ├── SourceError              a signal source could not produce a Signals snapshot (``kind`` labels it)
    │   ├── NoDataError          the source answered, but holds no series for pods that exist
    │   │   ├── SeriesVanishedError   no series now, though the target had demand moments ago
    │   │   ├── WindowGapError        scrapes stopped, or the window still spans a failure after it
    │   │   └── ScrapeFailingError    no vLLM series, the pods' scrapes failing beyond ``max_loading``
    │   ├── SourceUnavailable    the source could not be asked
    │   │   ├── SourceTimeout
    │   │   ├── SourceConnectionError
    │   │   └── SourceHTTPError  (status code kept in ``status``)
    │   ├── ActivationQueryError the target's ``activationQuery`` was rejected or is not one number
    │   ├── MissingResult        the source returned no entry for a target it was asked about
    │   ├── InternalSourceError  the source raised something other than a SourceError (a bug)
    │   ├── PolicyFailure        ``decide()`` raised
    │   └── RefreshBudgetExceeded   enrichers and ``decide()`` overran the refresh budget
    ├── Unavailable              no answer may be given for a target now (-> gRPC UNAVAILABLE)
    └── TooManyTargets           a new target beyond ``maxTargets`` (-> gRPC RESOURCE_EXHAUSTED)

A ``SourceError`` is never read as zero: the server answers from the last good
decision while it is younger than ``maxStaleness`` and then fails the call with
``UNAVAILABLE`` (:class:`Unavailable`) so that KEDA's ``fallback`` applies. The
refresher records the last ``SourceError`` of each target and counts them by
``(source, kind)``; the sources (``scaler/sources/``) and the refresher
(``scaler/server/refresher.py``) raise them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .redact import MAX_MESSAGE, MAX_VALUE, truncate

if TYPE_CHECKING:   # signals.py imports this module
    from .signals import Signals


class ScalerError(Exception):
    """Base class of every error this package raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in the trigger metadata: the key, the value as given, and what is wrong."""

    key: str
    value: str | None
    message: str

    def __str__(self) -> str:
        # Key and value as given, each cut at MAX_VALUE characters: a 100 KB value gives a short line.
        shown = "<missing>" if self.value is None else repr(truncate(self.value, MAX_VALUE))
        return f"{truncate(self.key, MAX_VALUE)}={shown}: {truncate(self.message, MAX_VALUE * 4)}"


class ConfigError(ScalerError, ValueError):
    """Bad trigger metadata. ``problems`` lists every problem found, not only the first.

    The message names every problem while it fits :data:`~scaler.redact.MAX_MESSAGE` characters, then the
    keys of the rest (``... and 3 more: a, b, c``), and is never longer than that.
    """

    def __init__(self, problems: list[ConfigProblem] | tuple[ConfigProblem, ...]):
        self.problems = tuple(problems)
        super().__init__(_render(self.problems))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.problems)


def _render(problems: tuple[ConfigProblem, ...]) -> str:
    text = "invalid scaler metadata: "
    for i, p in enumerate(problems):
        line = ("" if i == 0 else "; ") + str(p)
        rest = problems[i + 1:]
        if len(text) + len(line) > MAX_MESSAGE - (40 if rest else 0):
            more = ", ".join(truncate(q.key, MAX_VALUE) for q in problems[i:])
            return truncate(f"{text}{'' if i == 0 else '; '}... and {len(problems) - i} more: {more}", MAX_MESSAGE)
        text += line
    return text


class SourceError(ScalerError):
    """A source failed to produce signals. ``kind`` is a short, stable label for metrics."""

    kind = "error"

    def __init__(self, message: str, *, source: str = "unknown"):
        self.source = source
        super().__init__(f"{source}: {message}")


class NoDataError(SourceError):
    """The source answered but has no usable series for pods that exist (e.g. scrape broken)."""

    kind = "no_data"


class SourceUnavailable(SourceError):
    """The source could not be asked at all."""

    kind = "unavailable"


class SourceTimeout(SourceUnavailable):
    kind = "timeout"


class SourceConnectionError(SourceUnavailable):
    kind = "connection"


class SourceHTTPError(SourceUnavailable):
    kind = "http"

    def __init__(self, message: str, *, status: int, source: str = "unknown"):
        self.status = status
        super().__init__(f"HTTP {status}: {message}", source=source)


class SeriesVanishedError(NoDataError):
    """The source answers with no series for a target that had demand above its activation threshold within
    ``scaleToZeroAfter`` (a Prometheus restarted with empty storage, a relabelling change, a recording rule
    gap): pods exist, their data does not. Not "zero replicas" (KEDA scales a target to zero only after it
    was idle that long)."""

    kind = "series_vanished"


class WindowGapError(NoDataError):
    """The target's scrapes stopped (its newest sample is older than its scrape interval allows), or the
    source answers again after a failure but the rate window still spans it: rates and the arrival estimate
    over such a window under-read, so none is used until a full window of data is back."""

    kind = "window_gap"


class ScrapeFailingError(NoDataError):
    """No pod exports vLLM series and the pods' scrapes have failed (``up == 0``) for longer than the
    source's ``max_loading``: a broken endpoint, not a model loading (pods failing for less are
    ``Signals.starting_replicas``). ``pods`` lists them, so a caller can tell this from other no-data.
    """

    def __init__(self, message: str, *, pods: tuple[str, ...], source: str = "prometheus"):
        self.pods = pods
        super().__init__(message, source=source)


class ActivationQueryError(SourceError):
    """The target's ``activationQuery`` could not be read: Prometheus rejected it, or its result is not one number.

    A typed error, not ``upstream_demand=None``: the activation query is what wakes (and keeps awake) a
    target whose vLLM pods export nothing, so an unreadable one must not look like "no upstream demand".
    The server answers from the last good decision within ``maxStaleness``, then ``UNAVAILABLE`` (KEDA's
    ``fallback``): never inactive because of it. ``signals`` keeps the vLLM snapshot read in the same
    refresh (``upstream_demand=None``), or None when that failed too, for a caller that can use it.
    """

    kind = "activation_query"

    def __init__(self, query: str, problem: str, *, signals: Signals | None = None, source: str = "prometheus"):
        self.query = query
        self.problem = problem
        self.signals = signals
        super().__init__(f"activationQuery={query!r}: {problem}", source=source)

    def for_target(self, signals: Signals | None) -> ActivationQueryError:
        """The same error carrying one target's vLLM snapshot."""
        return ActivationQueryError(self.query, self.problem, signals=signals, source=self.source)


class MissingResult(SourceError):
    """The source returned no entry for a target it was asked about."""

    kind = "missing"


class InternalSourceError(SourceError):
    """The source raised something other than a ``SourceError`` (a bug, logged with its traceback)."""

    kind = "internal"


class PolicyFailure(SourceError):
    """``decide`` raised: no decision this refresh (the last good one is kept)."""

    kind = "policy"


class RefreshBudgetExceeded(SourceError):
    """The target's enrichers and ``decide()`` used more than the refresh budget and were cut off."""

    kind = "budget"


class Unavailable(ScalerError):
    """No answer may be given for this target now (gRPC ``UNAVAILABLE``). ``cold``: no refresh finished yet."""

    def __init__(self, message: str, *, cold: bool = False):
        super().__init__(message)
        self.cold = cold


class TooManyTargets(ScalerError):
    """The store already holds ``max_targets`` live targets: a new one is refused (gRPC ``RESOURCE_EXHAUSTED``).
    Targets already served keep being answered; the refused one is admitted once idle ones are evicted."""
