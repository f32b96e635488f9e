"""The exception hierarchy of the scaler, in one place.

::

    ScalerError
    ├── ConfigError              bad ScaledObject trigger metadata (-> gRPC INVALID_ARGUMENT)
    │                            carries every problem at once, each naming key and value
    └── SourceError              a signal source could not produce a Signals snapshot
        ├── NoDataError          the source answered, but holds no series for pods that exist
        │   ├── SeriesVanishedError   no series now, though the target had demand moments ago
        │   └── WindowGapError        scrapes stopped, or the window still spans a failure after it
        └── SourceUnavailable    the source could not be asked
            ├── SourceTimeout
            ├── SourceConnectionError
            └── SourceHTTPError  (status code kept in ``status``)

A ``SourceError`` is never read as zero: the server answers from the last good
decision while it is younger than ``maxStaleness`` and then fails the call with
``UNAVAILABLE`` so that KEDA's ``fallback`` applies.
"""

from __future__ import annotations

from dataclasses import dataclass

from .redact import MAX_MESSAGE, MAX_VALUE, truncate


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
