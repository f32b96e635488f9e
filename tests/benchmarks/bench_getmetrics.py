"""Benchmark (not a test): GetMetrics latency with 1,000 targets cached, next to a do-nothing servicer.

Run from the repository root::

    python -m tests.benchmarks.bench_getmetrics            # or: python tests/benchmarks/bench_getmetrics.py
    python -m tests.benchmarks.bench_getmetrics --frozen --duration 20 --rates 200,400,800

What it does, in one run:

* starts two servers (three with ``--frozen``), each in its own process, all the full
  :class:`~scaler.server.ScalerServer` (grpc.aio, health, reflection, /metrics): **scaler** with
  1,000 targets cached (parsed metadata,
  one refresh done through ``decide``, background refresh every 5 s still running), and
  **do-nothing**, the same server with :class:`~scaler.server.servicer.ConstantServicer` (same proto,
  returns a constant); with ``--frozen`` also **scaler-frozen**, the same cache without the
  background refresh, which tells the servicer's own cost from the refresh's interference;
* a client in this process (one grpc.aio channel, as KEDA keeps one connection per scaler
  address) sends GetMetrics **open-loop**: call *i* is sent at ``start + i / rate`` whether or not
  earlier calls have returned, cycling over the 1,000 targets with KEDA-shaped metadata;
  latency is measured from the send to the answer;
* at each rate (200 calls/s first, then higher until one is not sustained) the servers are
  measured in alternating slices (``--rounds``), so all see the same background noise of the
  machine; percentiles are over all calls of a server at that rate.

"Sustained" at a rate: every call answered OK, at >= 95 % of the rate, with p99 latency <= 25 ms.
A send lag p99 above 5 ms is starred: the client itself fell behind (a starved machine), and that
row measures the machine more than the servers. Targets (issue 2): p99 at 200 calls/s <= 5 ms,
and the scaler's p99 <= 1.5x the do-nothing servicer's p99.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import multiprocessing as mp
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc

from scaler._proto import externalscaler_pb2 as pb
from scaler._proto import externalscaler_pb2_grpc as pb_grpc

N_TARGETS = 1000
SERVERS = ("scaler", "do-nothing", "scaler-frozen")
NS = "bench"
SUSTAIN_SEND_LAG_P99 = 0.005
SUSTAIN_P99 = 0.025


def metadata(i: int) -> dict[str, str]:
    """What KEDA sends: the trigger's whole metadata map, scalerAddress included."""
    return {"scalerAddress": "vllm-scaler.vllm-scaler.svc:6000", "deploymentName": f"model-{i}",
            "maxReplicas": "20", "ttftP95": "2.5", "queuePerReplica": "4"}


# -- server processes -------------------------------------------------------------------------------
def _serve(kind: str, conn) -> None:
    from scaler.config import ServerDefaults
    from scaler.server import ScalerServer, ServerSettings
    from scaler.server.fake_source import ScriptedSource
    from scaler.server.servicer import ConstantServicer
    from scaler.signals import Signals

    source = ScriptedSource()
    for i in range(N_TARGETS):
        source.set(NS, f"model-{i}", Signals(observed_at=0.0, pods_reporting=1 + i % 8, waiting=float(i % 13),
                                             running=float(5 + i % 40), kv_cache_usage=(i % 90) / 100,
                                             ttft_p95=0.2 + (i % 30) / 10, tpot_p95=0.03 + (i % 10) / 100))
    settings = ServerSettings(host="127.0.0.1", port=0, metrics_port=0,
                              defaults=ServerDefaults(prometheus_url="http://127.0.0.1:9"))
    factory = ConstantServicer if kind == "do-nothing" else None
    scaler = kind.startswith("scaler")
    server = ScalerServer(settings, source_factory=lambda address: source, servicer_factory=factory,
                          background_refresh=False)
    server.start()
    if scaler:
        now = time.time()
        for i in range(N_TARGETS):
            server.store.resolve(f"so-{i}", NS, metadata(i), now)
        server.refresher.refresh_due(now)
        assert all(t.good is not None for t in server.store.targets()), "targets not cached"
        gc.collect()
        gc.freeze()  # as ScalerServer.start() does: this setup is start-up work, not serving
        if kind == "scaler":
            server.refresher.start()  # background refresh keeps running during the measurement, as in production
        else:  # "scaler-frozen": the same cache, no background refresh (isolates the servicer's own cost)
            for t in server.store.targets():
                t.config = dataclasses.replace(t.config, max_staleness=1e9)
    conn.send((server.port, len(server.store)))
    conn.recv()  # until told to stop
    server.stop(grace=1.0)


@dataclass(frozen=True)
class Run:
    server: str
    rate: float
    calls: int
    p50: float
    p99: float
    max: float
    errors: int
    send_lag_p99: float
    achieved: float

    @property
    def sustained(self) -> bool:
        return self.errors == 0 and self.p99 <= SUSTAIN_P99 and self.achieved >= 0.95 * self.rate

    @property
    def client_kept_pace(self) -> bool:
        """False: the client itself was late sending (a starved machine); the row measures the machine."""
        return self.send_lag_p99 <= SUSTAIN_SEND_LAG_P99


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


@dataclass
class _Samples:
    lat: list[float]
    lag: list[float]
    errors: int = 0
    calls: int = 0
    elapsed: float = 0.0


async def _slice(stub, requests, rate: float, duration: float, acc: _Samples, offset: int) -> None:
    """Open loop for ``duration`` seconds: call i at start + i / rate, never waiting for earlier answers."""
    loop = asyncio.get_running_loop()
    n = max(1, int(rate * duration))

    async def one(req) -> None:
        sent = loop.time()
        try:
            await stub.GetMetrics(req, timeout=5)
            acc.lat.append(loop.time() - sent)
        except grpc.RpcError:
            acc.errors += 1

    start = loop.time() + 0.02
    tasks = []
    for i in range(n):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        acc.lag.append(max(0.0, loop.time() - due))
        tasks.append(asyncio.create_task(one(requests[(offset + i) % len(requests)])))
    await asyncio.gather(*tasks)
    acc.calls += n
    acc.elapsed += loop.time() - start


def _run(server: str, rate: float, acc: _Samples) -> Run:
    return Run(server, rate, acc.calls, _pct(acc.lat, 0.50), _pct(acc.lat, 0.99), max(acc.lat, default=float("nan")),
               acc.errors, _pct(acc.lag, 0.99), acc.calls / acc.elapsed if acc.elapsed else 0.0)


async def _client(ports: dict[str, int], rates: list[float], duration: float, rounds: int,
                  repeat: int) -> list[Run]:
    requests = [pb.GetMetricsRequest(scaledObjectRef=pb.ScaledObjectRef(name=f"so-{i}", namespace=NS,
                                                                        scalerMetadata=metadata(i)),
                                     metricName="vllm-desired-replicas") for i in range(N_TARGETS)]
    channels = {k: grpc.aio.insecure_channel(f"127.0.0.1:{p}") for k, p in ports.items()}
    stubs = {k: pb_grpc.ExternalScalerStub(c) for k, c in channels.items()}
    runs: list[Run] = []
    try:
        for stub in stubs.values():  # warm-up: every target once, closed loop
            for req in requests:
                await stub.GetMetrics(req, timeout=5)
        alive = list(stubs)
        steps = [rates[0]] * repeat + rates[1:]  # the headline rate several times: its figures are medians
        for step, rate in enumerate(steps):
            # Interleave the servers in short slices so that all see the same machine noise.
            acc = {name: _Samples([], []) for name in alive}
            for r in range(rounds):
                for name in alive:
                    await _slice(stubs[name], requests, rate, duration / rounds, acc[name], r * 7919)
            for name in list(alive):
                run = _run(name, rate, acc[name])
                runs.append(run)
                print(_row(run), flush=True)
                if not run.sustained and step >= repeat - 1:
                    alive.remove(name)
            if not alive:
                break
    finally:
        for c in channels.values():
            await c.close()
    return runs


HEADER = (f"{'rate/s':>7}  {'server':<13} {'calls':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'errors':>6} "
          f"{'lag p99 ms':>10} {'achieved/s':>10}  sustained")  # lag marked * when the client fell behind


def _row(r: Run) -> str:
    return (f"{r.rate:7.0f}  {r.server:<13} {r.calls:6d} {r.p50 * 1e3:7.3f} {r.p99 * 1e3:7.3f} {r.max * 1e3:7.2f} "
            f"{r.errors:6d} {r.send_lag_p99 * 1e3:9.3f}{' ' if r.client_kept_pace else '*'} {r.achieved:10.1f}  "
            f"{'yes' if r.sustained else 'no'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0,
                    help="seconds per server and rate (default 10: 2,000 calls at 200 calls/s)")
    ap.add_argument("--frozen", action="store_true",
                    help="also measure 'scaler-frozen': the same 1,000 cached targets without the background "
                         "refresh, to tell the servicer's own cost from the refresh's interference")
    ap.add_argument("--rounds", type=int, default=10,
                    help="slices per rate, alternating between the servers (default 10)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="measure the headline (first) rate this many times and report medians (default 3)")
    ap.add_argument("--rates", default="200,300,400,600,800,1200,1600,2400,3200",
                    help="comma-separated calls/s, rising; the first is the headline rate (default 200,300,...,3200)")
    args = ap.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]

    ctx = mp.get_context("spawn")
    procs, pipes, ports = [], {}, {}
    try:
        for kind in SERVERS[:2] + (("scaler-frozen",) if args.frozen else ()):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_serve, args=(kind, child), daemon=True)
            p.start()
            procs.append(p)
            pipes[kind] = parent
            if not parent.poll(120):
                raise RuntimeError(f"{kind} server did not start")
            ports[kind], cached = parent.recv()
            print(f"{kind}: 127.0.0.1:{ports[kind]}, {cached} targets cached", flush=True)
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, Python "
              f"{sys.version.split()[0]}, grpcio {grpc.__version__}; "
              f"{args.duration:g} s per server and rate in {args.rounds} alternating slices, open loop, one channel", flush=True)
        print(HEADER, flush=True)
        runs = asyncio.run(_client(ports, rates, args.duration, args.rounds, max(1, args.repeat)))
    finally:
        for conn in pipes.values():
            try:
                conn.send("stop")
            except (BrokenPipeError, OSError):
                pass
        for p in procs:
            p.join(15)
            if p.is_alive():
                p.terminate()
                p.join(5)

    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    head = {name: [r for r in runs if r.server == name and r.rate == rates[0]] for name in ports}
    if head.get("scaler") and head.get("do-nothing"):
        s_p99 = statistics.median(r.p99 for r in head["scaler"])
        d_p99 = statistics.median(r.p99 for r in head["do-nothing"])
        ratios = [a.p99 / b.p99 for a, b in zip(head["scaler"], head["do-nothing"])]
        ratio = statistics.median(ratios)
        print(f"at {rates[0]:g} calls/s, median of {len(ratios)}: scaler p99 {s_p99 * 1e3:.3f} ms (target <= 5 ms: "
              f"{'met' if s_p99 <= 0.005 else 'MISSED'}), do-nothing p99 {d_p99 * 1e3:.3f} ms, p99 ratio "
              f"{ratio:.2f} (target <= 1.5: {'met' if ratio <= 1.5 else 'MISSED'}; each: "
              + ", ".join(f"{x:.2f}" for x in ratios) + ")")
        for name in ports:
            print(f"  {name}: p50 {statistics.median(r.p50 for r in head[name]) * 1e3:.3f} ms, "
                  f"p99 {statistics.median(r.p99 for r in head[name]) * 1e3:.3f} ms (medians)")
    for name in ports:
        ok = [r for r in runs if r.server == name and r.sustained]
        best = max(ok, key=lambda r: r.rate, default=None)
        print(f"highest sustained rate, {name}: "
              + ("none" if best is None else f"{best.rate:g} calls/s (p50 {best.p50 * 1e3:.3f} ms, "
                                             f"p99 {best.p99 * 1e3:.3f} ms)"))
    starved = [r for r in runs if not r.client_kept_pace]
    if starved:
        print(f"note: the client fell behind (send lag p99 > {SUSTAIN_SEND_LAG_P99 * 1e3:g} ms) in {len(starved)} of "
              f"{len(runs)} rows: the machine was short of CPU; compare servers within a rate, not across runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
