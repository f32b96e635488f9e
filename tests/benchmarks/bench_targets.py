"""Benchmark (not a test): 1,000 targets with long names, real Prometheus, real `vllm-scaler serve`, KEDA's calls.

Run from the repository root::

    python -m tests.benchmarks.bench_targets                      # 1,000 targets, 60 s polled + 30 s quiet
    python -m tests.benchmarks.bench_targets --targets 200 --poll-seconds 30 --quiet-seconds 20

What it does:

* serves one vLLM pod per target (the full vLLM exposition of :mod:`simulations.exposition`, every
  family and bucket: about 115 series per pod) from one HTTP endpoint in this process, scraped every
  5 s by a real Prometheus (``honor_labels``: the ``namespace``/``pod`` labels are the pods' own, as
  Kubernetes service discovery sets them). Target *i* is Deployment ``<52-character name ending in
  i>`` in one of four namespaces, its pod ``<name>-<10 hex>-<5 chars>``, exporting
  ``waiting = i mod 17``, ``running = 3 + i mod 29`` and completions at its own rate, so each target's
  answer can be traced to its own pod;
* starts ``vllm-scaler serve`` as a subprocess with its defaults (predictive policy, demand history
  on, ``refreshInterval`` 5 s; no Kubernetes: ``--cold-start-source none``);
* calls it as KEDA does, over one gRPC channel: every target every 15 s (the HPA's sync period, random
  phase) ``GetMetricSpec``, ``GetMetrics``, ``IsActive``, each with KEDA's 3 s deadline; first a
  warm-up round (new targets: cold cache), then ``--poll-seconds`` of steady polling;
* then ``--quiet-seconds`` without calls, in which the scaler's CPU is its background refresh alone.

Printed: RPC outcomes and latency per phase; the scaler's CPU (fraction of one core, from
``/proc/<pid>/stat``) while polled and while quiet; data age (``vllm_scaler_data_age_seconds``
over all targets, sampled every 5 s from ``/metrics``: median and maximum), fetch durations; and
the check that every target was answered (``GetMetrics`` OK at least once) from its own pod (its
``vllm_scaler_signal`` waiting and running equal its pod's values). Figures, not assertions; a busy machine shows in the load
average printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from scaler._proto import externalscaler_pb2 as pb  # noqa: E402
from scaler._proto import externalscaler_pb2_grpc as pb_grpc  # noqa: E402
from scaler.testing.promserver import PrometheusServer, free_port, prometheus_available  # noqa: E402
from simulations.exposition import PodMetrics, render_text  # noqa: E402

NAMESPACES = ("inference-team-a", "inference-team-b", "inference-team-c", "inference-team-d")
KEDA_DEADLINE = 3.0
HPA_SYNC = 15.0
SCRAPE = 5.0
METRIC = "vllm-desired-replicas"


def name(i: int) -> str:
    """A 52-character Deployment name, unique per i, none a prefix of another."""
    return f"llama-3-1-70b-instruct-fp8-h100-tenant-{i:05d}-serving"


def namespace(i: int) -> str:
    return NAMESPACES[i % len(NAMESPACES)]


def pod(i: int) -> str:
    h = hashlib.sha256(str(i).encode()).hexdigest()
    return f"{name(i)}-{h[:10]}-{h[10:15]}"


def expected(i: int) -> tuple[float, float]:
    """(waiting, running) that target i's pod exports."""
    return float(i % 17), float(3 + i % 29)


class Pods:
    """Every target's pod, rendered on demand (at most once a second) as one /metrics page."""

    def __init__(self, n: int):
        self.pods = []
        for i in range(n):
            p = PodMetrics.new(pod(i), namespace(i), "meta-llama/Llama-3.1-70B-Instruct")
            p.waiting, p.running = (int(x) for x in expected(i))
            p.kv_cache_usage = (i * 7 % 90) / 100
            self.pods.append(p)
        self.rates = [0.5 + (i % 11) / 4 for i in range(n)]  # completions per second of target i
        self._last = 0.0
        self._text = b""
        self._lock = threading.Lock()

    def page(self) -> bytes:
        with self._lock:
            now = time.monotonic()
            if now - self._last >= 1.0:
                dt = 0.0 if not self._last else now - self._last
                for p, rate in zip(self.pods, self.rates):
                    n = int(rate * dt + random.random())
                    if n:
                        p.request_success_total["stop"] += n
                        p.ttft.observe(0.2 + random.random() * 0.4, n)
                        p.itl.observe(0.02 + random.random() * 0.02, n * 50)
                        p.e2e.observe(3.0, n)
                        p.request_prompt_tokens.observe(800, n)
                        p.request_generation_tokens.observe(200, n)
                self._text = render_text(self.pods).encode()
                self._last = now
            return self._text


def serve_pods(pods: Pods) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = pods.page()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(url: str) -> dict[tuple[str, str, str], float]:
    """{(metric, scaledobject, extra label value): value} of the scaler's /metrics, the families used here."""
    out = {}
    with urllib.request.urlopen(url, timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("#") or not line.startswith(("vllm_scaler_data_age_seconds{",
                                                            "vllm_scaler_signal{",
                                                            "vllm_scaler_desired_replicas{")):
                continue
            head, value = line.rsplit(" ", 1)
            metric, labels = head.split("{", 1)
            kv = dict(part.split("=", 1) for part in labels.rstrip("}").split('",') if "=" in part)
            kv = {k: v.strip('"') for k, v in kv.items()}
            out[(metric, kv["scaledobject"], kv.get("signal", ""))] = float(value)
    return out


class Keda:
    """KEDA's calls for every target over one channel, recording outcomes and latencies per phase."""

    def __init__(self, address: str, n: int):
        self.address = address
        self.n = n
        self.results: dict[str, list[tuple[str, str, float]]] = {}
        self.answers: dict[int, int] = {}

    async def poll(self, stub, i: int, phase: str) -> None:
        ref = pb.ScaledObjectRef(name=name(i), namespace=namespace(i), scalerMetadata={
            "scalerAddress": "vllm-scaler.vllm-scaler.svc.cluster.local:6000", "deploymentName": name(i)})
        out = self.results.setdefault(phase, [])
        for method, call in (("GetMetricSpec", lambda: stub.GetMetricSpec(ref, timeout=KEDA_DEADLINE)),
                             ("GetMetrics", lambda: stub.GetMetrics(
                                 pb.GetMetricsRequest(scaledObjectRef=ref, metricName=METRIC),
                                 timeout=KEDA_DEADLINE)),
                             ("IsActive", lambda: stub.IsActive(ref, timeout=KEDA_DEADLINE))):
            t0 = time.perf_counter()
            try:
                reply = await call()
                code = "OK"
                if method == "GetMetrics":
                    self.answers[i] = reply.metricValues[0].metricValue
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
            out.append((method, code, time.perf_counter() - t0))

    async def run(self, warmup: bool, seconds: float) -> None:
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            if warmup:  # KEDA starting with every ScaledObject at once, spread over one HPA sync
                await asyncio.gather(*(self._later(stub, i, random.uniform(0, HPA_SYNC), "warm-up")
                                       for i in range(self.n)))
            if seconds > 0:
                tasks = [asyncio.create_task(self._every(stub, i, seconds)) for i in range(self.n)]
                await asyncio.gather(*tasks)

    async def _later(self, stub, i, delay, phase):
        await asyncio.sleep(delay)
        await self.poll(stub, i, phase)

    async def _every(self, stub, i, seconds):
        end = time.monotonic() + seconds
        await asyncio.sleep(random.uniform(0, HPA_SYNC))
        while time.monotonic() < end:
            started = time.monotonic()
            await self.poll(stub, i, "steady")
            await asyncio.sleep(max(0.0, HPA_SYNC - (time.monotonic() - started)))


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def report_rpcs(keda: Keda) -> None:
    for phase, rows in keda.results.items():
        codes: dict[str, int] = {}
        for _, code, _ in rows:
            codes[code] = codes.get(code, 0) + 1
        lat = [s for _, code, s in rows if code == "OK"]
        print(f"  {phase:8s} {len(rows):6d} calls  outcomes {codes}  latency p50 {pct(lat, .5) * 1000:.1f} ms "
              f"p99 {pct(lat, .99) * 1000:.1f} ms max {max(lat, default=0) * 1000:.1f} ms "
              f"(over {KEDA_DEADLINE:g} s: {sum(1 for _, _, s in rows if s > KEDA_DEADLINE)})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--poll-seconds", type=float, default=60.0)
    ap.add_argument("--quiet-seconds", type=float, default=30.0)
    ap.add_argument("--scaler-args", default="", help="extra `vllm-scaler serve` flags, space-separated")
    ap.add_argument("--scaler-root", default=str(ROOT),
                    help="checkout whose `scaler` package serves (e.g. another branch's worktree, to compare)")
    args = ap.parse_args(argv)
    reason = prometheus_available()
    if reason:
        print(f"skipped: {reason}")
        return 0
    n = args.targets
    print(f"{n} targets, names {len(name(0))} characters, {len(NAMESPACES)} namespaces; "
          f"load average before: {os.getloadavg()}")
    pods = Pods(n)
    httpd = serve_pods(pods)
    prom = PrometheusServer(scrape_targets=[(f"127.0.0.1:{httpd.server_address[1]}", {})], scrape_interval=SCRAPE)
    prom.start()
    log = tempfile.NamedTemporaryFile(prefix="bench-targets-scaler-", suffix=".log", delete=False)
    scaler = None
    try:
        deadline = time.monotonic() + 60
        while True:  # two scrapes, so rates have data
            with urllib.request.urlopen(f"{prom.url}/api/v1/query?query=count(vllm:num_requests_waiting)",
                                        timeout=10) as r:
                body = r.read().decode()
            if f'"{n}"' in body:
                break
            assert time.monotonic() < deadline, body
            time.sleep(1)
        time.sleep(2 * SCRAPE)
        grpc_port, metrics_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "scaler", "serve", "--host", "127.0.0.1", "--grpc-port", str(grpc_port),
               "--metrics-port", str(metrics_port), "--prometheus-url", prom.url, "--cold-start-source", "none",
               *args.scaler_args.split()]
        scaler = subprocess.Popen(cmd, cwd=args.scaler_root, env={**os.environ, "PYTHONPATH": args.scaler_root},
                                  stdout=log,
                                  stderr=subprocess.STDOUT)
        time.sleep(3)
        print(f"scaler from {args.scaler_root}: {' '.join(cmd[2:])} (log {log.name})")
        keda = Keda(f"127.0.0.1:{grpc_port}", n)
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

        def phase(title, warmup, seconds, sample_every=5.0):
            ages_max, ages_med = [], []
            stop = threading.Event()

            def sampler():
                while not stop.wait(sample_every):
                    m = scrape(metrics_url)
                    ages = [v for (k, _, _), v in m.items() if k == "vllm_scaler_data_age_seconds"]
                    if len(ages) == n:
                        ages_max.append(max(ages))
                        ages_med.append(statistics.median(ages))

            th = threading.Thread(target=sampler, daemon=True)
            c0, t0 = cpu_seconds(scaler.pid), time.monotonic()
            th.start()
            if warmup or seconds:
                asyncio.run(keda.run(warmup, seconds))
            else:
                time.sleep(args.quiet_seconds)
            stop.set()
            th.join()
            c1, t1 = cpu_seconds(scaler.pid), time.monotonic()
            print(f"{title}: {t1 - t0:.0f} s, scaler CPU {(c1 - c0) / (t1 - t0):.2f} core; data age over all "
                  f"targets, {len(ages_max)} samples: median {statistics.median(ages_med) if ages_med else 'n/a'}"
                  f", max {max(ages_max) if ages_max else 'n/a'} s (each sample's max: "
                  f"{[round(a, 1) for a in ages_max]})")

        phase("warm-up round (every target's first calls)", True, 0.0)
        phase(f"polled every {HPA_SYNC:g} s", False, args.poll_seconds)
        phase("quiet (background refresh only)", False, 0.0)
        report_rpcs(keda)
        m = scrape(metrics_url)
        wrong, missing = [], 0
        for i in range(n):
            waiting = m.get(("vllm_scaler_signal", name(i), "waiting"))
            running = m.get(("vllm_scaler_signal", name(i), "running"))
            if waiting is None or i not in keda.answers:
                missing += 1
            elif (waiting, running) != expected(i):
                wrong.append((name(i), waiting, running, expected(i)))
        print(f"answered from their own pods: {n - missing - len(wrong)} of {n} (no answer: {missing}, "
              f"other pods' data: {len(wrong)}) {wrong[:3]}")
        with urllib.request.urlopen(metrics_url, timeout=30) as r:
            text = r.read().decode()
        fetch = {k: v for k, v in (line.rsplit(" ", 1) for line in text.splitlines()
                                   if line.startswith("vllm_scaler_source_fetch_duration_seconds_")
                                   and ("_sum" in line or "_count" in line))}
        s = sum(float(v) for k, v in fetch.items() if "_sum" in k)
        c = sum(float(v) for k, v in fetch.items() if "_count" in k)
        print(f"fetches: {c:.0f}, mean {s / max(c, 1):.3f} s; load average after: {os.getloadavg()}")
    finally:
        if scaler is not None:
            scaler.terminate()
            try:
                scaler.wait(20)
            except subprocess.TimeoutExpired:
                scaler.kill()
        prom.stop()
        httpd.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
