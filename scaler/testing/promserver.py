"""A real Prometheus on loopback for tests and demos: Debian's ``prometheus`` 2.42 with a temporary TSDB.

Why a real one: PromQL semantics (``rate`` extrapolation, ``histogram_quantile``,
lookback, staleness) are what the scaler depends on; a fake would only repeat
our own assumptions. Two ways to give it data:

* **Backfill**: write OpenMetrics (``simulations.exposition.write_openmetrics``),
  turn it into TSDB blocks with :func:`load_openmetrics` (``promtool tsdb
  create-blocks-from openmetrics``), then start a :class:`PrometheusServer` on
  that directory. Query with explicit evaluation times inside the loaded data.
  The retention is set to 100 years so blocks with old timestamps are not
  deleted at start-up.
* **Scrape**: pass ``scrape_targets`` (``("127.0.0.1:PORT", {"label": "value"})``);
  the generated config scrapes them every ``scrape_interval`` seconds with
  ``honor_labels: true`` so the ``namespace``/``pod`` labels a simulated pod
  exports are kept as Kubernetes service discovery would set them.

Usage::

    reason = prometheus_available()          # None when usable; tests skip with the reason
    load_openmetrics(text, tsdb_dir)
    with PrometheusServer(tsdb_dir=tsdb_dir) as prom:
        PrometheusConnect(prom.url).custom_query("up", params={"time": t})

``stop()`` terminates the process (SIGTERM, then SIGKILL after 10 s) and removes
the temporary directory it created (never a ``tsdb_dir`` it was given).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

PROMETHEUS = "prometheus"
PROMTOOL = "promtool"


def prometheus_available() -> str | None:
    """``None`` when both ``prometheus`` and ``promtool`` are on PATH, else why not (a skip reason)."""
    missing = [b for b in (PROMETHEUS, PROMTOOL) if shutil.which(b) is None]
    if missing:
        return (f"{' and '.join(missing)} not found on PATH (Debian: apt-get install prometheus; "
                "tests/run.sh installs it)")
    return None


def load_openmetrics(text_or_path: str | os.PathLike[str], tsdb_dir: str | os.PathLike[str], *, timeout: float = 120) -> None:
    """Create TSDB blocks in ``tsdb_dir`` from OpenMetrics text (a string holding ``# EOF``) or a file path.

    Raises ``RuntimeError`` with promtool's output when promtool rejects the input.
    """
    tsdb = Path(tsdb_dir)
    tsdb.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    if isinstance(text_or_path, str) and "\n" in text_or_path:
        fd, name = tempfile.mkstemp(suffix=".om", prefix="openmetrics-")
        with os.fdopen(fd, "w") as f:
            f.write(text_or_path)
        tmp = path = Path(name)
    else:
        path = Path(text_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"OpenMetrics file not found: {path}")
    try:
        proc = subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(path), str(tsdb)],
                              capture_output=True, text=True, timeout=timeout)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"promtool tsdb create-blocks-from openmetrics {path} failed "
                           f"(exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _yaml_str(s: str) -> str:
    """A YAML scalar for any string: JSON strings are valid YAML flow scalars."""
    return json.dumps(s)


def scrape_config(targets: Sequence[tuple[str, Mapping[str, str]]], scrape_interval: float) -> str:
    """The prometheus.yml for ``targets`` (address, extra target labels), one static config each."""
    interval = f"{max(int(round(scrape_interval * 1000)), 100)}ms"
    lines = ["global:", f"  scrape_interval: {interval}", f"  evaluation_interval: {interval}"]
    if targets:
        lines += ["scrape_configs:", "  - job_name: vllm", "    honor_labels: true",
                  f"    scrape_interval: {interval}", f"    scrape_timeout: {interval}", "    static_configs:"]
        for address, labels in targets:
            lines.append(f"      - targets: [{_yaml_str(address)}]")
            if labels:
                lines.append("        labels:")
                lines += [f"          {k}: {_yaml_str(v)}" for k, v in labels.items()]
    return "\n".join(lines) + "\n"


class PrometheusServer:
    """A real Prometheus on ``127.0.0.1:<free port>`` with a temporary (or given) TSDB; a context manager."""

    def __init__(self, *, tsdb_dir: str | os.PathLike[str] | None = None,
                 scrape_targets: Sequence[tuple[str, Mapping[str, str]]] = (), scrape_interval: float = 1.0,
                 extra_args: Sequence[str] = ()):
        self._given_tsdb = Path(tsdb_dir) if tsdb_dir is not None else None
        self.scrape_targets = tuple(scrape_targets)
        self.scrape_interval = scrape_interval
        self.extra_args = tuple(extra_args)
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("PrometheusServer not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return None if self._workdir is None else self._workdir / "prometheus.log"

    def start(self, timeout: float = 20) -> None:
        """Start and wait until ``/-/ready`` answers 200 (raises ``RuntimeError`` with the log tail if not)."""
        reason = prometheus_available()
        if reason:
            raise RuntimeError(reason)
        if self._proc is not None:
            raise RuntimeError("PrometheusServer already started")
        self._workdir = Path(tempfile.mkdtemp(prefix="vllm-scaler-prom-"))
        tsdb = self._given_tsdb or (self._workdir / "data")
        tsdb.mkdir(parents=True, exist_ok=True)
        config = self._workdir / "prometheus.yml"
        config.write_text(scrape_config(self.scrape_targets, self.scrape_interval))
        deadline = time.monotonic() + timeout
        last_error = ""
        for _attempt in range(3):  # the free port may be taken between probe and bind: retry
            self.port = free_port()
            self._log = open(self._workdir / "prometheus.log", "ab")
            self._proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tsdb}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=100y",
                 "--log.level=warn", *self.extra_args],
                stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    last_error = f"exited with {self._proc.returncode}"
                    break
                try:
                    with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                        if r.status == 200:
                            return
                except (urllib.error.URLError, OSError) as exc:
                    last_error = str(exc)
                time.sleep(0.1)
            else:
                break
            self._reap()
        tail = self._log_tail()
        self.stop()
        raise RuntimeError(f"Prometheus did not become ready within {timeout} s ({last_error}); log:\n{tail}")

    def _log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])  # type: ignore[union-attr]
        except OSError:
            return "<no log>"

    def _reap(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=10)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        """Stop the process and remove the temporary directory (idempotent)."""
        self._reap()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
