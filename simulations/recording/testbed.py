"""The bundled testbed's measurements (``reconciles.csv``) as a :class:`~.format.Recording`.

Testbed measurements (:func:`from_testbed_csv`)
------------------------------------------------
``simulations/data/vllm-testbed-h100/reconciles.csv`` (one row per autoscaler reconcile, see its README)
becomes a recording: ``t``; ``replicas`` and ``pods_reporting`` = ``pods``; ``arrival_rate`` and
``completion_rate`` = ``arrival_rpm / 60`` (the CSV counts completions); ``ttft_mean``, ``tpot_mean`` =
``ttft_ms``, ``itl_ms`` / 1000 (null when 0: no traffic); ``prompt_tokens_mean``, ``output_tokens_mean`` =
``in_tok``, ``out_tok``; ``waiting`` = ``waiting_sum`` (the per-pod 1-minute maxima summed, so a zero means no
queue all minute); ``kv_cache_usage`` = ``kv_mean``; ``running`` (not logged) by Little's law
``rate * out_tok * itl``, null when a factor is unknown. Rows repeated at the boundary of two runs (same ``t``)
are kept once. The header's window is 60 s (the controller's queries), its step 30 s.
``vllm-scaler calibrate reconciles.csv`` reads such a file directly (recognised by its header line).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from .format import Recording, RecordingError, RecordingHeader, Tick

TESTBED_COLUMNS = ("run", "ts", "t", "variant", "replicas", "pods", "ttft_ms", "itl_ms", "arrival_rpm", "in_tok",
                   "out_tok", "waiting_sum", "waiting_max", "kv_mean", "kv_max", "kv_pods", "q_pods")


def is_testbed_csv(path: str | os.PathLike) -> bool:
    """True when the file's first line is the header of the testbed's ``reconciles.csv``."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().strip().split(",") == list(TESTBED_COLUMNS)
    except (OSError, UnicodeDecodeError):
        return False


def from_testbed_csv(path: str | os.PathLike) -> Recording:
    """The testbed's ``reconciles.csv`` as a :class:`Recording` (mapping: module docstring). Bad cells raise
    :class:`RecordingError` naming the file, the line and the column."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecordingError(f"{p}: cannot read: {exc.strerror or exc}") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or rows[0] != list(TESTBED_COLUMNS):
        raise RecordingError(f"{p}:1: not a testbed reconciles.csv (expected the header {','.join(TESTBED_COLUMNS)})")

    def num(i: int, row: dict, col: str, *, zero_is_none: bool = False) -> float | None:
        raw = row[col].strip()
        if raw == "":
            return None
        try:
            v = float(raw)
        except ValueError:
            raise RecordingError(f"{p}:{i}: column {col}: not a number: {raw!r}") from None
        if not math.isfinite(v) or v < 0:
            raise RecordingError(f"{p}:{i}: column {col}: must be a finite number >= 0, got {raw!r}")
        return None if zero_is_none and v == 0 else v

    by_t: dict[float, Tick] = {}
    variants = set()
    for i, cells in enumerate(rows[1:], start=2):
        if len(cells) != len(TESTBED_COLUMNS):
            raise RecordingError(f"{p}:{i}: expected {len(TESTBED_COLUMNS)} columns, got {len(cells)}")
        row = dict(zip(TESTBED_COLUMNS, cells))
        t = num(i, row, "t")
        if t is None:
            raise RecordingError(f"{p}:{i}: column t is empty")
        if t in by_t:            # the same reconcile logged by two consecutive runs
            continue
        variants.add(row["variant"])
        pods = int(num(i, row, "pods") or 0)
        rpm = num(i, row, "arrival_rpm")
        rate = None if rpm is None else rpm / 60.0
        ttft, itl = num(i, row, "ttft_ms", zero_is_none=True), num(i, row, "itl_ms", zero_is_none=True)
        out_tok = num(i, row, "out_tok")
        itl_s = None if itl is None else itl / 1000.0
        running = None if rate is None or out_tok is None or itl_s is None else rate * out_tok * itl_s
        if rate == 0:
            running = 0.0
        by_t[t] = Tick.of(t, pods_reporting=pods, replicas=pods, waiting=num(i, row, "waiting_sum"), running=running,
                       kv_cache_usage=num(i, row, "kv_mean"), completion_rate=rate, arrival_rate=rate,
                       prompt_tokens_mean=num(i, row, "in_tok"), output_tokens_mean=out_tok,
                       ttft_mean=None if ttft is None else ttft / 1000.0, tpot_mean=itl_s)
    ticks = tuple(by_t[t] for t in sorted(by_t))
    if not ticks:
        raise RecordingError(f"{p}: no rows")
    header = RecordingHeader(prometheus="", namespace="testbed", deployment=",".join(sorted(variants)),
                             model_name=None, start=ticks[0].t, end=ticks[-1].t, step=30.0, window=60.0,
                             metric_names={})
    return Recording(header, ticks)


def load_for_calibration(path: str | os.PathLike) -> Recording:
    """A recording file, or a testbed ``reconciles.csv`` (recognised by its header) converted on the fly."""
    return from_testbed_csv(path) if is_testbed_csv(path) else Recording.load(path)

