"""The recording file format: :class:`Recording` (a header and :class:`Tick` rows), read and written.

Recording file format (JSON Lines, UTF-8; ``docs/recording.md``)
------------------------------------------------------------------
Line 1, the header::

    {"format": "vllm-scaler-recording", "version": 1, "prometheus": URL, "namespace": NS,
     "deployment": DEP, "model_name": M|null, "start": T0, "end": T1, "step": S, "window": W,
     "metric_names": {"kv": ..., "itl": ...}}

then one line per tick (``t`` unix seconds, increasing; ``null`` = unknown, never 0 for unknown), its keys in
the order of :data:`COLUMNS`::

    {"t": ..., "pods_reporting": int, <the vLLM aggregates of Signals>, "ttft_mean": .., "tpot_mean": ..,
     "replicas": int|null, "replicas_spec": int|null, "starting_replicas": int|null, "error": null|"no_data: ..."}

The vLLM aggregates are the fields of :class:`scaler.signals.Signals` listed in
:data:`scaler.signals.VLLM_AGGREGATES` (``waiting`` ... ``output_tokens_mean``), by their field names and
in field order; ``t`` is the snapshot's ``observed_at``. ``ttft_mean`` / ``tpot_mean`` are mean latencies
(seconds) for calibration. ``replicas`` are the pods that served (vLLM series fresh at ``t``; the
snapshot's ``ready_replicas``); ``replicas_spec`` is the Deployment's ``spec.replicas`` from
kube-state-metrics when Prometheus has it; ``starting_replicas`` the pods scraped but not serving metrics
(``up == 0``: loading, or broken for less than the source's ``max_loading``), null when there are none
(absent in recordings made before it existed: read as null). A tick whose data was missing or stale
carries ``error`` and null signals.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TextIO, cast

from scaler.signals import VLLM_AGGREGATES, Signals

FORMAT = "vllm-scaler-recording"
VERSION = 1

#: The keys of a tick line, in the order written.
COLUMNS: tuple[str, ...] = ("t", "pods_reporting", *VLLM_AGGREGATES, "ttft_mean", "tpot_mean", "replicas",
                            "replicas_spec", "starting_replicas", "error")


class RecordingError(ValueError):
    """A recording file that can not be read: names the file, the line and what is wrong."""


@dataclass(frozen=True)
class RecordingHeader:
    prometheus: str
    namespace: str
    deployment: str
    model_name: str | None
    start: float
    end: float
    step: float
    window: float
    metric_names: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Tick:
    """One recorded instant: the :class:`~scaler.signals.Signals` the live source would have produced at ``t``
    (``observed_at``; ``ready_replicas`` = the replicas that served), mean latencies (None = unknown), the
    Deployment's ``spec.replicas`` and the error that left the signals unknown.

    Build one from a tick line's keys with :meth:`of`; :meth:`row` gives them back.
    """

    signals: Signals
    ttft_mean: float | None = None
    tpot_mean: float | None = None
    replicas_spec: int | None = None
    error: str | None = None

    @classmethod
    def of(cls, t: float, *, pods_reporting: int = 0, replicas: int | None = None,
           starting_replicas: int | None = None, ttft_mean: float | None = None, tpot_mean: float | None = None,
           replicas_spec: int | None = None, error: str | None = None, **aggregates: float | None) -> Tick:
        """A tick from the keys of a tick line (:data:`COLUMNS`); ``aggregates`` are Signals' vLLM aggregates."""
        unknown = sorted(set(aggregates) - set(VLLM_AGGREGATES))
        if unknown:
            raise TypeError(f"Tick.of: unknown field(s) {', '.join(unknown)}")
        return cls(Signals(observed_at=t, pods_reporting=pods_reporting, ready_replicas=replicas,
                           starting_replicas=starting_replicas, **cast(dict[str, Any], aggregates)),  # checked above
                   ttft_mean, tpot_mean, replicas_spec, error)

    @property
    def t(self) -> float:
        return self.signals.observed_at

    @property
    def replicas(self) -> int | None:
        """The replicas that served at ``t``."""
        return self.signals.ready_replicas

    def row(self) -> dict[str, Any]:
        """The tick line's keys and values, in :data:`COLUMNS` order."""
        s = self.signals
        return {"t": s.observed_at, "pods_reporting": s.pods_reporting,
                **{name: getattr(s, name) for name in VLLM_AGGREGATES},
                "ttft_mean": self.ttft_mean, "tpot_mean": self.tpot_mean, "replicas": s.ready_replicas,
                "replicas_spec": self.replicas_spec, "starting_replicas": s.starting_replicas, "error": self.error}


@dataclass(frozen=True)
class Recording:
    header: RecordingHeader
    ticks: tuple[Tick, ...]

    def demand(self) -> list[tuple[float, float | None, float | None, float | None]]:
        """The recorded demand for closed-loop simulation: ``(t, arrival req/s, prompt mean, output mean)``
        per tick, oldest first; ``None`` where the tick had no data (a gap, not zero demand)."""
        return [(t.t, t.signals.arrival_rate, t.signals.prompt_tokens_mean, t.signals.output_tokens_mean)
                for t in self.ticks]

    def write(self, out: TextIO) -> None:
        out.write(json.dumps({"format": FORMAT, "version": VERSION, **asdict(self.header)}, sort_keys=False) + "\n")
        for tick in self.ticks:
            out.write(json.dumps(tick.row()) + "\n")

    def save(self, path: str | os.PathLike) -> None:
        tmp = Path(f"{path}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            self.write(f)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recording:
        """Read a recording; every problem names the file, the line and the field."""
        p = Path(path)
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise RecordingError(f"{p}: cannot read recording: {exc.strerror or exc}") from None
        if not lines:
            raise RecordingError(f"{p}: empty file, not a recording")
        head = _json_line(p, 1, lines[0])
        if head.get("format") != FORMAT:
            raise RecordingError(f"{p}:1: not a recording (format is {head.get('format')!r}, expected {FORMAT!r})")
        if head.get("version") != VERSION:
            raise RecordingError(f"{p}:1: unsupported recording version {head.get('version')!r} (expected {VERSION})")
        hf = {f.name for f in fields(RecordingHeader)}
        missing = sorted(hf - set(head) - {"metric_names"})
        if missing:
            raise RecordingError(f"{p}:1: header lacks {', '.join(missing)}")
        header = RecordingHeader(**{k: head[k] for k in hf if k in head})
        ticks, last = [], -math.inf
        for i, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            row = _json_line(p, i, line)
            unknown = sorted(set(row) - set(COLUMNS))
            if unknown:
                raise RecordingError(f"{p}:{i}: unknown field(s) {', '.join(unknown)}")
            if not isinstance(row.get("t"), (int, float)):
                raise RecordingError(f"{p}:{i}: field t must be unix seconds, got {row.get('t')!r}")
            if row["t"] <= last:
                raise RecordingError(f"{p}:{i}: t={row['t']!r} is not after the previous tick ({last!r})")
            last = row["t"]
            for k, v in row.items():
                if k in ("t", "error"):
                    continue
                if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0
                                      or math.isnan(v)):
                    raise RecordingError(f"{p}:{i}: field {k} must be null or a number >= 0, got {v!r}")
            ticks.append(Tick.of(**row))
        return cls(header, tuple(ticks))


def _json_line(p: Path, i: int, line: str) -> dict:
    try:
        v = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordingError(f"{p}:{i}: not JSON: {exc.msg}") from None
    if not isinstance(v, dict):
        raise RecordingError(f"{p}:{i}: expected a JSON object, got {type(v).__name__}")
    return v

