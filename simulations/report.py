"""Reports of a run: the side-by-side table, the ``--json`` document, the plot, the progress bar."""

from __future__ import annotations

import json
import math
import sys
from typing import TextIO

from tqdm import tqdm

from .runner import RunResult

COLUMNS = (
    ("policy", "{}"), ("requests", "{:d}"), ("TTFT ok", "{:.1%}"), ("TPOT ok", "{:.1%}"), ("P95 win", "{:.1%}"),
    ("GPU-h", "{:.2f}"), ("vs oracle", "{:.2f}x"), ("cold", "{:d}"), ("scale", "{:d}"), ("at zero s", "{:.0f}"),
    ("unserved", "{:d}"),
)
KEYS = ("requests", "ttft_slo_attainment", "tpot_slo_attainment", "p95_ttft_window_attainment", "gpu_hours",
        "gpu_hours_vs_oracle", "cold_starts", "scale_events", "seconds_at_zero", "unserved_requests")
# Shown when some policy spends time at zero: how the first requests after an idle gap fare.
IDLE_COLUMNS = [("idle TTFT ok", "{:.1%}"), ("idle P50 s", "{:.2f}")]
IDLE_KEYS = ["first_after_idle_ttft_attainment", "first_after_idle_ttft_p50"]


def table(result: RunResult) -> str:
    """The side-by-side table (one row per policy), with the trace and its notes above."""
    doc = result.summary()
    tr = doc["trace"]
    s = result.settings
    lines = [f"trace {tr['name']} ({tr['kind']}, {tr['requests']:,} requests over {tr['duration_s'] / 3600:.2f} h; "
             f"{tr['source']})"]
    for n in tr["notes"]:
        lines.append(f"  note: {n}")
    lines.append(f"fidelity {s.fidelity}; SLO P95 TTFT {s.slo_ttft:g} s, TPOT {s.slo_tpot:g} s; cold start "
                 f"{s.cold_start.describe()}; model {s.params.name}")
    columns, keys = list(COLUMNS), list(KEYS)
    if any(p.get("seconds_at_zero") for p in doc["policies"].values()):
        columns += IDLE_COLUMNS
        keys += IDLE_KEYS
    rows = [[c for c, _ in columns]]
    for name, p in doc["policies"].items():
        if "unavailable" in p:
            rows.append([name, f"unavailable: {p['unavailable']}"])
            continue
        row = [name]
        for (_, fmt), key in zip(columns[1:], keys):
            v = p[key]
            row.append("-" if v is None else v if isinstance(v, str) else fmt.format(v))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows if len(r) > i and len(r) == len(columns)) for i in range(len(columns))]
    for r in rows:
        if len(r) != len(columns):
            lines.append(f"{r[0]:<{widths[0]}}  {r[1]}")
        else:
            lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    for name, p in result.policies.items():
        for n in p.notes:
            lines.append(f"  {name}: {n}")
    lines.append("TTFT/TPOT ok: requests within the SLO; P95 win: 1-minute windows whose P95 TTFT is within the SLO; "
                 "vs oracle: GPU-hours / the oracle's lower bound.")
    if len(columns) > len(COLUMNS):
        lines.append(f"idle TTFT ok / P50: the first {s.idle_first_n} requests after each gap of >= {s.idle_gap:g} s "
                     f"without arrivals: share within the TTFT SLO, median TTFT.")
    return "\n".join(lines)


def write_json(result: RunResult, out: TextIO) -> None:
    json.dump(result.summary(), out, indent=2, default=_jsonable)
    out.write("\n")


def _jsonable(x):
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def plot(result: RunResult, path: str) -> None:
    """Demand, each policy's replicas (spec), and P95 TTFT per minute against the SLO."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    t0 = result.trace.start
    first = next((r for r in result.policies.values() if r.timeline.t), None)
    if first is not None:
        h = [(t - t0) / 3600 for t in first.timeline.t]
        axes[0].plot(h, first.timeline.arrival_rate, color="black", lw=1)
    axes[0].set_ylabel("demand (req/s)")
    for name, r in result.policies.items():
        if not r.timeline.t:
            continue
        h = [(t - t0) / 3600 for t in r.timeline.t]
        axes[1].step(h, r.timeline.spec, where="post", label=name, lw=1)
        axes[2].plot(h, [x if not math.isnan(x) else None for x in r.timeline.ttft_p95], label=name, lw=1)
    axes[1].set_ylabel("replicas (spec)")
    axes[1].legend(loc="upper right", fontsize=8)
    axes[2].axhline(result.settings.slo_ttft, color="red", ls="--", lw=1, label="SLO")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("P95 TTFT per minute (s)")
    axes[2].set_xlabel("hours from trace start")
    axes[2].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"{result.trace.name}: {result.settings.fidelity} fidelity")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class ProgressBar:
    """One tqdm bar per label (a policy's run) on stderr, ``progress(label, fraction)`` with ``fraction`` 0..1;
    silent unless enabled (``enabled=None``: when the stream is a TTY; ``--progress`` passes True)."""

    STEPS = 1000   # the bar counts thousandths of the run

    def __init__(self, enabled: bool | None = None, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._bar: tqdm | None = None
        self._label: str | None = None

    def __call__(self, label: str, fraction: float) -> None:
        if not self.enabled:
            return
        if self._bar is None or label != self._label:
            self.close()
            self._bar = tqdm(total=self.STEPS, desc=f"{label:<22}", file=self.stream, leave=True, ascii=" #",
                             bar_format="{desc} [{bar:30}] {percentage:3.0f}%")
            self._label = label
        n = int(self.STEPS * max(0.0, min(1.0, fraction)))
        if n > self._bar.n:
            self._bar.update(n - self._bar.n)
        if fraction >= 1.0:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
