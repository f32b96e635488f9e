"""Request traces for the simulator: real production traces, a documented generic format, named defaults.

Every loader returns a :class:`Trace`: either per-request (arrival instants and
token sizes) or counts per fixed bin (plus a :class:`TokenPool` for sizes).
Both views exist for every trace: :meth:`Trace.counts_view` bins requests (the
aggregate fidelity), :meth:`Trace.requests_view` places Poisson arrivals
uniformly inside each bin of a count trace, with sizes drawn from the pool
(the per-request fidelity).

Formats
-------
* **Azure 2023** (``AzureLLMInferenceTrace_{code,conv}.csv``): header
  ``TIMESTAMP,ContextTokens,GeneratedTokens``, one row per request, timestamps
  like ``2023-11-16 18:15:46.6805900`` (UTC).
* **Azure 2024 10-second counts** (``invocations_ten_second_Coding.csv``):
  header ``Time,TIMESTAMP``; the second column is the request count of the bin
  starting at ``Time``. No token sizes: they are drawn from the 2023 **code**
  trace (code with code) and every report says so (``Trace.notes``).
* **ServeGen** per-client 10-minute windows (no header):
  ``window_start_s, rate_rps, cv, iat_family, shape, scale``. Sampled as
  ServeGen does: ``round(rate * 600)`` inter-arrival times drawn from
  ``gamma(a=shape, scale=scale)`` or ``weibull_min(c=shape, scale=scale)``
  (numpy's generators), rescaled so the window holds them all. Rate 0 is an
  idle window. Token sizes from the 2023 **conversation** trace.
* **Generic CSV or JSONL** (``.csv``, ``.jsonl``/``.ndjson``), one request per row/line:
  ``timestamp`` (required: unix seconds, or ISO 8601 like ``2024-05-10T00:00:00Z``),
  ``prompt_tokens`` and ``output_tokens`` (optional, integers >= 0, both or
  neither; without them sizes come from the 2023 conversation trace, said in
  ``notes``). Or counts per bin: ``timestamp`` and ``count`` (bins evenly
  spaced). Rows need not be sorted. Errors name the file, line and column.

``rate_scale`` multiplies the demand: a count by ``x``; a request trace keeps
each request with probability ``x`` (``x < 1``) or adds ``floor(x)-1`` (+1 with
the fractional probability) copies, each placed uniformly between the request
and the next one, so the demand's shape is kept.

Named bundled traces (:data:`BUNDLED`), files under ``simulations/data/``.
Tests: ``tests/unit/test_traces.py``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"


class TraceError(ValueError):
    """A trace file could not be read; the message names the file, line and column."""


@dataclass(frozen=True)
class TokenPool:
    """Paired (prompt, output) token sizes to draw from, and where they came from."""

    prompt: np.ndarray
    output: np.ndarray
    source: str

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        idx = rng.integers(0, len(self.prompt), size=n)
        return self.prompt[idx], self.output[idx]


@dataclass(frozen=True)
class Trace:
    """A demand trace. ``kind`` is "requests" (arrivals + sizes) or "counts" (per-bin counts + a pool)."""

    name: str
    source: str
    kind: str
    start: float
    duration: float
    tokens: TokenPool
    arrivals: np.ndarray | None = None   # unix seconds, sorted
    prompt: np.ndarray | None = None
    output: np.ndarray | None = None
    counts: np.ndarray | None = None
    bin_seconds: float | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def requests(self) -> float:
        return float(len(self.arrivals)) if self.kind == "requests" else float(self.counts.sum())

    def counts_view(self, bin_seconds: float = 10.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(counts, mean prompt, mean output) per bin of ``bin_seconds`` from ``start``.

        A count trace is re-binned to ``bin_seconds`` whatever its own bin: the
        cumulative count is interpolated linearly at the new edges (requests
        spread uniformly inside each source bin), so whole multiples of the
        source bin sum exactly (six 10-s bins make a minute) and finer bins
        split evenly. Returning the source bins as they are made the oracle read
        each 10-second bin of the week as a minute (a plan six times too long,
        six times too few replicas per minute):
        ``tests/unit/test_traces.py::test_counts_view_rebins_count_traces``.
        """
        if self.kind == "counts":
            src = float(self.bin_seconds or bin_seconds)
            counts = self.counts.astype(float)
            if abs(src - bin_seconds) > 1e-9:
                cum = np.concatenate([[0.0], np.cumsum(counts)])
                nb = max(1, math.ceil(len(counts) * src / bin_seconds - 1e-9))
                edges = np.minimum(np.arange(nb + 1) * bin_seconds, len(counts) * src)
                counts = np.diff(np.interp(edges, src * np.arange(len(cum)), cum))
            n = len(counts)
            return (counts, np.full(n, float(self.tokens.prompt.mean())),
                    np.full(n, float(self.tokens.output.mean())))
        nb = max(1, math.ceil(self.duration / bin_seconds))
        idx = np.minimum(((self.arrivals - self.start) // bin_seconds).astype(np.int64), nb - 1)
        c = np.bincount(idx, minlength=nb).astype(float)
        ps = np.bincount(idx, weights=self.prompt, minlength=nb)
        os_ = np.bincount(idx, weights=self.output, minlength=nb)
        pm = np.where(c > 0, ps / np.maximum(c, 1), float(self.prompt.mean()) if len(self.prompt) else 0.0)
        om = np.where(c > 0, os_ / np.maximum(c, 1), float(self.output.mean()) if len(self.output) else 1.0)
        return c, pm, om

    def requests_view(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(arrivals, prompt, output); a count trace gets Poisson arrivals placed uniformly in each bin."""
        if self.kind == "requests":
            return self.arrivals, self.prompt, self.output
        n = rng.poisson(np.maximum(self.counts, 0.0))
        total = int(n.sum())
        starts = np.repeat(self.start + self.bin_seconds * np.arange(len(n)), n)
        arr = np.sort(starts + rng.random(total) * self.bin_seconds)
        p, o = self.tokens.draw(total, rng)
        return arr, p, o

    def scaled(self, x: float, rng: np.random.Generator) -> Trace:
        if not (math.isfinite(x) and x > 0):
            raise ValueError(f"--rate-scale must be a finite number > 0, got {x!r}")
        if x == 1:
            return self
        note = f"demand scaled by {x:g} (--rate-scale)"
        if self.kind == "counts":
            return replace(self, counts=self.counts * x, notes=self.notes + (note,))
        a, p, o = self.arrivals, self.prompt, self.output
        base = math.floor(x)
        copies = np.full(len(a), base) + (rng.random(len(a)) < (x - base))
        idx = np.repeat(np.arange(len(a)), copies)
        nxt = np.append(a[1:], a[-1] if len(a) else 0.0)
        gap = np.maximum(0.0, nxt - a)
        first = np.concatenate([[True], idx[1:] != idx[:-1]]) if len(idx) else np.zeros(0, bool)
        jitter = np.where(first, 0.0, rng.random(len(idx)) * gap[idx])
        new_a = a[idx] + jitter
        order = np.argsort(new_a, kind="stable")
        return replace(self, arrivals=new_a[order], prompt=p[idx][order], output=o[idx][order],
                       notes=self.notes + (note,))

    def sliced(self, duration: float, offset: float = 0.0) -> Trace:
        """The part of the trace in ``[start + offset, start + offset + duration)``."""
        if duration <= 0 or offset < 0:
            raise ValueError(f"--duration must be > 0 (got {duration!r}) and the offset >= 0 (got {offset!r})")
        lo, hi = self.start + offset, self.start + offset + duration
        if self.kind == "counts":
            b0 = int(offset // self.bin_seconds)
            b1 = max(b0 + 1, math.ceil((offset + duration) / self.bin_seconds))
            c = self.counts[b0:b1]
            return replace(self, counts=c, start=self.start + b0 * self.bin_seconds,
                           duration=len(c) * self.bin_seconds)
        m = (self.arrivals >= lo) & (self.arrivals < hi)
        return replace(self, arrivals=self.arrivals[m], prompt=self.prompt[m], output=self.output[m], start=lo,
                       duration=min(duration, self.duration - offset))


# --------------------------------------------------------------------------------------------------
def _err(path: Path | str, line: int, column: str, value: object, what: str) -> TraceError:
    return TraceError(f"{path}: line {line}, column {column!r}: {what} (got {value!r})")


def _parse_time(text: str, path, line: int, column: str) -> float:
    t = text.strip()
    try:
        return float(t)
    except ValueError:
        pass
    try:
        d = np.datetime64(t.rstrip("Zz").replace(" ", "T"), "ns")
    except ValueError:
        raise _err(path, line, column, text, "not a time (unix seconds or ISO 8601)") from None
    return d.astype("int64") / 1e9


def _int_field(text, path, line: int, column: str) -> int:
    try:
        v = int(str(text).strip())
    except (TypeError, ValueError):
        raise _err(path, line, column, text, "not an integer") from None
    if v < 0:
        raise _err(path, line, column, text, "must be >= 0")
    return v


def load_azure_2023(path: str | os.PathLike, name: str | None = None) -> Trace:
    path = Path(path)
    rows = _read_csv(path)
    header = rows[0] if rows else []
    want = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
    if [h.strip() for h in header] != want:
        raise _err(path, 1, "header", header, f"expected columns {want}")
    ts, p, o = [], [], []
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != 3:
            raise _err(path, i, "row", r, "expected 3 columns")
        ts.append(_parse_time(r[0], path, i, "TIMESTAMP"))
        p.append(_int_field(r[1], path, i, "ContextTokens"))
        o.append(_int_field(r[2], path, i, "GeneratedTokens"))
    return _request_trace(name or path.stem, str(path), np.array(ts), np.array(p), np.array(o),
                          TokenPool(np.array(p), np.array(o), path.name))


def _request_trace(name, source, ts, p, o, pool: TokenPool, notes=()) -> Trace:
    if len(ts) == 0:
        raise TraceError(f"{source}: no requests")
    order = np.argsort(ts, kind="stable")
    ts, p, o = ts[order], p[order].astype(np.int64), o[order].astype(np.int64)
    start = float(math.floor(ts[0]))
    return Trace(name=name, source=source, kind="requests", start=start, duration=float(ts[-1] - start) + 1e-6,
                 tokens=pool, arrivals=ts, prompt=p, output=o, notes=tuple(notes))


def load_azure_2024_counts(path: str | os.PathLike, pool: TokenPool, name: str | None = None) -> Trace:
    path = Path(path)
    rows = _read_csv(path)
    if not rows or [h.strip() for h in rows[0]] != ["Time", "TIMESTAMP"]:
        raise _err(path, 1, "header", rows[0] if rows else None, "expected columns ['Time', 'TIMESTAMP']")
    ts, c = [], []
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != 2:
            raise _err(path, i, "row", r, "expected 2 columns")
        ts.append(_parse_time(r[0], path, i, "Time"))
        c.append(_int_field(r[1], path, i, "TIMESTAMP"))
    return _count_trace(name or path.stem, path, np.array(ts), np.array(c, dtype=float), pool,
                        (f"token sizes drawn from {pool.source} (the trace has counts only)",))


def _count_trace(name, path, ts, counts, pool, notes) -> Trace:
    if len(ts) == 0:
        raise TraceError(f"{path}: no bins")
    order = np.argsort(ts, kind="stable")
    ts, counts = ts[order], counts[order]
    steps = np.diff(ts)
    step = float(np.median(steps)) if len(steps) else 10.0
    bad = np.nonzero(np.abs(steps - step) > 1e-6)[0]
    if len(steps) and (step <= 0 or bad.size):
        i = int(bad[0]) if bad.size else 0
        raise TraceError(f"{path}: bins must be evenly spaced and unique; the bin at {ts[i + 1]!r} follows "
                         f"{ts[i]!r} (expected a step of {step:g} s)")
    return Trace(name=name, source=str(path), kind="counts", start=float(ts[0]), duration=len(ts) * step,
                 tokens=pool, counts=counts, bin_seconds=step, notes=tuple(notes))


SERVEGEN_WINDOW = 600.0


def load_servegen(path: str | os.PathLike, pool: TokenPool, *, seed: int = 0, name: str | None = None,
                  start: float = 0.0) -> Trace:
    path = Path(path)
    rng = np.random.default_rng(seed)
    rows = _read_csv(path)
    out = []
    for i, r in enumerate(rows, start=1):
        if len(r) != 6:
            raise _err(path, i, "row", r, "expected 6 columns: window_start_s, rate_rps, cv, iat_family, shape, scale")
        w0 = _float_field(r[0], path, i, "window_start_s")
        rate = _float_field(r[1], path, i, "rate_rps")
        if rate <= 0:
            continue
        fam = r[3].strip().lower()
        shape = _float_field(r[4], path, i, "shape")
        scale = _float_field(r[5], path, i, "scale")
        n = int(round(rate * SERVEGEN_WINDOW))
        if n == 0:
            continue
        if shape <= 0 or scale <= 0:
            raise _err(path, i, "shape/scale", (r[4], r[5]), "must be > 0 in a window with traffic")
        if fam == "gamma":
            iat = rng.gamma(shape, scale, size=n + 1)
        elif fam == "weibull":
            iat = scale * rng.weibull(shape, size=n + 1)
        else:
            raise _err(path, i, "iat_family", r[3], "expected Gamma or Weibull")
        cum = np.cumsum(iat)
        total = cum[-1]
        if not (total > 0 and math.isfinite(total)):
            cum = np.arange(1, n + 2, dtype=float)
            total = cum[-1]
        out.append(start + w0 + SERVEGEN_WINDOW * cum[:-1] / total)
    if not rows:
        raise TraceError(f"{path}: no windows")
    last = max(_float_field(r[0], path, i + 1, "window_start_s") for i, r in enumerate(rows)) + SERVEGEN_WINDOW
    ts = np.concatenate(out) if out else np.zeros(0)
    ts.sort()
    p, o = pool.draw(len(ts), rng)
    notes = (f"arrivals sampled from ServeGen windows (seed {seed}); token sizes drawn from {pool.source}",)
    return Trace(name=name or path.stem, source=str(path), kind="requests", start=start,
                 duration=last, tokens=pool, arrivals=ts, prompt=p.astype(np.int64), output=o.astype(np.int64),
                 notes=notes)


def _float_field(text, path, line, column) -> float:
    try:
        v = float(str(text).strip())
    except ValueError:
        raise _err(path, line, column, text, "not a number") from None
    if not math.isfinite(v) or v < 0:
        raise _err(path, line, column, text, "must be a finite number >= 0")
    return v


def _read_csv(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="") as fh:
            return [r for r in csv.reader(fh) if r]
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None


def load_generic(path: str | os.PathLike, default_pool: TokenPool | None = None, name: str | None = None) -> Trace:
    """The generic CSV/JSONL schema (module docstring)."""
    path = Path(path)
    records: list[tuple[int, dict]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        try:
            fh = open(path)
        except OSError as exc:
            raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None
        with fh:
            for i, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TraceError(f"{path}: line {i}: not JSON ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise _err(path, i, "line", obj, "expected a JSON object")
                records.append((i, {k: ("" if v is None else str(v)) for k, v in obj.items()}))
    else:
        rows = _read_csv(path)
        if not rows:
            raise TraceError(f"{path}: empty file")
        header = [h.strip() for h in rows[0]]
        for i, r in enumerate(rows[1:], start=2):
            if len(r) != len(header):
                raise _err(path, i, "row", r, f"expected {len(header)} columns like the header {header}")
            records.append((i, dict(zip(header, r))))
    if not records:
        raise TraceError(f"{path}: no rows")
    cols = set(records[0][1])
    known = {"timestamp", "prompt_tokens", "output_tokens", "count"}
    unknown = cols - known
    if unknown:
        raise _err(path, records[0][0], sorted(unknown)[0], sorted(unknown),
                   f"unknown column (known: {', '.join(sorted(known))})")
    if "timestamp" not in cols:
        raise _err(path, records[0][0], "timestamp", None, "required column missing")
    ts = np.array([_parse_time(rec.get("timestamp", ""), path, i, "timestamp") for i, rec in records])
    if "count" in cols:
        if {"prompt_tokens", "output_tokens"} & cols:
            raise _err(path, records[0][0], "count", None, "a count trace has no per-request token columns")
        c = np.array([_float_field(rec.get("count", ""), path, i, "count") for i, rec in records])
        pool = default_pool or bundled_pool("azure-2023-conv")
        return _count_trace(name or path.stem, path, ts, c, pool,
                            (f"token sizes drawn from {pool.source} (the trace has counts only)",))
    has_p, has_o = "prompt_tokens" in cols, "output_tokens" in cols
    if has_p != has_o:
        missing = "output_tokens" if has_p else "prompt_tokens"
        raise _err(path, records[0][0], missing, None, "give both prompt_tokens and output_tokens, or neither")
    if has_p:
        p = np.array([_int_field(rec.get("prompt_tokens", ""), path, i, "prompt_tokens") for i, rec in records])
        o = np.array([_int_field(rec.get("output_tokens", ""), path, i, "output_tokens") for i, rec in records])
        return _request_trace(name or path.stem, str(path), ts, p, o, TokenPool(p, o, path.name))
    pool = default_pool or bundled_pool("azure-2023-conv")
    p, o = pool.draw(len(ts), np.random.default_rng(0))
    return _request_trace(name or path.stem, str(path), ts, p, o, pool,
                          (f"token sizes drawn from {pool.source} (the trace has none)",))


# --------------------------------------------------------------------------------------------------
BUNDLED: dict[str, str] = {
    "azure-2023-conv": "azure-llm-2023/AzureLLMInferenceTrace_conv.csv",
    "azure-2023-code": "azure-llm-2023/AzureLLMInferenceTrace_code.csv",
    "azure-2024-week": "azure-llm-2024-week/invocations_ten_second_Coding.csv",
    "servegen-143": "servegen-m-large/client-143.csv",
    "servegen-34": "servegen-m-large/client-34.csv",
    "servegen-12": "servegen-m-large/client-12.csv",
    "servegen-72": "servegen-m-large/client-72.csv",
}
BUNDLED_DOC = {
    "azure-2023-conv": "Azure LLM inference 2023, conversation: 19,366 requests over ~1 h, with token sizes",
    "azure-2023-code": "Azure LLM inference 2023, code: 8,819 requests over ~1 h, with token sizes",
    "azure-2024-week": "Azure LLM inference 2024, coding: 10-s counts over a week (60,481 bins); sizes from 2023 code",
    "servegen-143": "ServeGen m-large client 143: 14 days of 10-min windows (23 % idle); sizes from 2023 conv",
    "servegen-34": "ServeGen m-large client 34: 14 days of 10-min windows; sizes from 2023 conv",
    "servegen-12": "ServeGen m-large client 12: 14 days, idle 55 % of windows; sizes from 2023 conv",
    "servegen-72": "ServeGen m-large client 72: 14 days of 10-min windows; sizes from 2023 conv",
}
_POOLS: dict[str, TokenPool] = {}


def bundled_pool(name: str) -> TokenPool:
    """Token sizes of a bundled 2023 trace (``azure-2023-conv`` or ``azure-2023-code``)."""
    if name not in _POOLS:
        t = load_azure_2023(DATA / BUNDLED[name], name=name)
        _POOLS[name] = TokenPool(t.prompt, t.output, f"the Azure 2023 {name.rsplit('-', 1)[1]} trace")
    return _POOLS[name]


def load(name_or_path: str, *, seed: int = 0) -> Trace:
    """A bundled trace by name, or a file (format from its name and header)."""
    if name_or_path in BUNDLED:
        path = DATA / BUNDLED[name_or_path]
        if name_or_path.startswith("azure-2023"):
            return load_azure_2023(path, name=name_or_path)
        if name_or_path == "azure-2024-week":
            return load_azure_2024_counts(path, bundled_pool("azure-2023-code"), name=name_or_path)
        return load_servegen(path, bundled_pool("azure-2023-conv"), seed=seed, name=name_or_path)
    path = Path(name_or_path)
    if not path.exists():
        raise TraceError(f"{name_or_path}: no such file, and not a bundled trace "
                         f"(bundled: {', '.join(BUNDLED)})")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return load_generic(path)
    rows = _read_csv(path)
    head = [h.strip() for h in rows[0]] if rows else []
    if head == ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]:
        return load_azure_2023(path)
    if head == ["Time", "TIMESTAMP"]:
        return load_azure_2024_counts(path, bundled_pool("azure-2023-code"))
    if len(head) == 6 and head[3].strip().lower() in ("gamma", "weibull", ""):
        return load_servegen(path, bundled_pool("azure-2023-conv"), seed=seed)
    return load_generic(path)
