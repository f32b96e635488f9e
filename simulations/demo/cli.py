"""``vllm-scaler demo``: flags, and the loop's, the loadgen's or the pod's role."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from . import __doc__ as PACKAGE_DOC
from .check import check
from .cluster import serve_loadgen, serve_pod
from .run import run
from .story import DEPLOYMENT


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole loop on loopback: simulated vLLM pods, Prometheus, the scaler, KEDA+HPA emulation",
        description=PACKAGE_DOC.split("\n\n")[0] + " Needs Debian's `prometheus` on PATH. About a minute.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Prints each scaling event as it happens, then the checks. Exit status 0 when every check "
               "passed, 1 otherwise, 2 when a part is missing (e.g. no prometheus binary). See docs/deploy.md.")
    parser.add_argument("--policy", choices=("reactive", "predictive"), default="reactive",
                        help="the trigger's `policy` metadata key (default: reactive)")
    parser.add_argument("--peak", type=float, default=12.0, help="plateau traffic, requests/s (default: 12)")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the arrivals (default: 7)")
    parser.add_argument("--timeline", type=Path, default=None,
                        help="write the per-tick timeline and events as JSON to this file")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep Prometheus' TSDB and the scaler's log here (default: a temporary directory)")
    cluster = parser.add_argument_group(
        "in a cluster (tests/e2e/test_kind.py)",
        "--role loadgen runs the traffic and the fleet model for a real Deployment, following its Ready pods "
        "through the Kubernetes API; --role pod is a simulated vLLM container that serves /health (after "
        "--startup-delay) and its share of the loadgen's metrics on /metrics.")
    cluster.add_argument("--role", choices=("loop", "loadgen", "pod"), default="loop",
                         help="loop: the whole loop on loopback (default); loadgen or pod: see above")
    cluster.add_argument("--port", type=int, default=8000, help="HTTP port of the loadgen or pod (default: 8000)")
    cluster.add_argument("--loadgen-url", default="http://vllm-loadgen:8000",
                         help="pod: where the loadgen serves /pods/<name>/metrics (default: http://vllm-loadgen:8000)")
    cluster.add_argument("--startup-delay", type=float, default=10.0,
                         help="pod: seconds before /health answers 200, the simulated model load (default: 10)")
    cluster.add_argument("--namespace", default="llm", help="loadgen: namespace of the Deployment (default: llm)")
    cluster.add_argument("--deployment", default=DEPLOYMENT, help=f"loadgen: the Deployment (default: {DEPLOYMENT})")
    cluster.add_argument("--time-scale", type=float, default=10.0,
                         help="loadgen: stretch the story's phases by this factor, for the HPA's 15 s sync "
                              "(default: 10)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.peak <= 0 or not math.isfinite(args.peak):
        print(f"vllm-scaler demo: --peak={args.peak}: must be a positive number of requests/s", file=sys.stderr)
        return 2
    if args.role == "pod":
        return serve_pod(args.port, args.loadgen_url, args.startup_delay)
    if args.role == "loadgen":
        if not (args.time_scale > 0 and math.isfinite(args.time_scale)):
            print(f"vllm-scaler demo: --time-scale={args.time_scale}: must be a positive number", file=sys.stderr)
            return 2
        return serve_loadgen(args.port, args.namespace, args.deployment, args.time_scale, args.peak, args.seed)
    try:
        result = run(policy=args.policy, peak=args.peak, seed=args.seed, workdir=args.workdir,
                     progress=lambda s: print(s, flush=True))
    except RuntimeError as exc:
        print(f"vllm-scaler demo: {exc}", file=sys.stderr)
        return 2
    checks = check(result)
    print(f"\n{result.requests} requests; TTFT within {result.slo_ttft:g} s: "
          f"{result.ttft_ok:.1%}; GPU-seconds {result.gpu_seconds:.0f}")
    for c in checks:
        print(f"{'PASS' if c.ok else 'FAIL'}  {c.name}: {c.detail}")
    if args.timeline:
        args.timeline.write_text(json.dumps({
            "ticks": [dataclasses.asdict(k) for k in result.ticks], "events": result.events,
            "pushes": result.pushes, "checks": [dataclasses.asdict(c) for c in checks]}, default=str, indent=1))
    return 0 if all(c.ok for c in checks) else 1
