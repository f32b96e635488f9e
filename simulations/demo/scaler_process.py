"""``vllm-scaler serve`` as a subprocess of the demo."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc

from scaler.server.client import ExternalScalerClient

from .story import REPO


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScalerProcess:
    """`vllm-scaler serve` as a subprocess (``python -m scaler serve``), configured through VLLM_SCALER_*."""

    def __init__(self, prometheus_url: str, log_path: Path):
        self.grpc_port, self.metrics_port = free_port(), free_port()
        env = {**os.environ,
               "VLLM_SCALER_HOST": "127.0.0.1", "VLLM_SCALER_GRPC_PORT": str(self.grpc_port),
               "VLLM_SCALER_METRICS_PORT": str(self.metrics_port), "VLLM_SCALER_PROMETHEUS_URL": prometheus_url,
               "VLLM_SCALER_PROMETHEUS_TIMEOUT": "1s", "VLLM_SCALER_ALLOW_ACTIVATION_QUERY": "true",
               "VLLM_SCALER_LOG_FORMAT": "text", "VLLM_SCALER_GRACE_PERIOD": "1s",
               # No Kubernetes here: the cold start is the trigger's coldStart key (the simulated one).
               "VLLM_SCALER_COLD_START_SOURCE": "none",
               "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "scaler", "serve"], env=env, cwd=REPO,
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.address = f"127.0.0.1:{self.grpc_port}"

    def wait_serving(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as ch:
            client = ExternalScalerClient(ch, deadline=1.0)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if client.serving():
                    return
                time.sleep(0.1)
        raise RuntimeError(f"vllm-scaler serve did not become SERVING in {timeout} s; log:\n{self.log_tail()}")

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
            return r.read().decode()

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode
