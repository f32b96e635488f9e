"""``vllm-scaler simulate`` and ``vllm-scaler sweep`` (registered by scaler/cli.py).

``simulate`` runs several policies side by side on one trace and prints the
table (``--json``/``--plot`` for files). With no arguments it runs the bundled
Azure 2023 conversation trace through every default policy in a few seconds.
``sweep`` runs one policy over a grid of parameters on both cores and prints
the Pareto front (TTFT SLO attainment against GPU-hours) and the trigger
metadata of the chosen point, ready to paste into a ScaledObject.
Flags and defaults: docs/simulation.md. Tests: ``tests/unit/test_cli_simulate.py``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import sys
from dataclasses import replace

import numpy as np

from scaler.errors import ConfigError

from . import report
from .fleet import ColdStartModel, ModelParams
from .fleet.lifecycle import ColdStartError
from .oracle import replicas_at_start
from .runner import DEFAULT_POLICIES, POLICIES, Settings, check_metadata, parse_metadata_pairs, run, run_policy
from .traces import BUNDLED, BUNDLED_DOC, TraceError, load

DEFAULT_TRACE = "azure-2023-conv"
REQUEST_MODE_LIMIT = 2_000_000
_CS = ColdStartModel()
# Cold start in phases (simulations/fleet/lifecycle.py, ColdStartModel; defaults: the H100 testbed):
# field -> (flag, metavar, help).
_CS_FLAGS = {
    "median": ("--cold-start", "S", "median cold start of one pod alone (created -> Ready), seconds"),
    "sigma": ("--cold-start-sigma", "X", "log-normal spread of the engine-start phase (0 = fixed)"),
    "scheduling": ("--cold-start-scheduling", "S", "cold start phase 1: scheduling, container creation, seconds"),
    "image_gb": ("--cold-start-image-gb", "GB", "cold start phase 2: image to pull, GB (0: cached on the node)"),
    "weights_gb": ("--cold-start-weights-gb", "GB", "cold start phase 2: weights to download, GB"),
    "bandwidth": ("--cold-start-bandwidth", "GB/S", "the download link the loading pods share, GB/s (inf: none)"),
    "pod_bandwidth": ("--cold-start-pod-bandwidth", "GB/S", "the most one pod downloads at, GB/s"),
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trace", default=DEFAULT_TRACE, metavar="FILE|NAME",
                   help=f"a trace file or a bundled name ({', '.join(BUNDLED)}); default {DEFAULT_TRACE}")
    p.add_argument("--slo-ttft", type=float, default=2.5, metavar="S", help="P95 TTFT SLO, seconds (default 2.5)")
    p.add_argument("--slo-tpot", type=float, default=0.1, metavar="S", help="P95 TPOT SLO, seconds (default 0.1)")
    for field, (flag, metavar, text) in _CS_FLAGS.items():
        default = getattr(_CS, field)
        p.add_argument(flag, type=float, default=default, metavar=metavar, help=f"{text} (default {default:g})")
    p.add_argument("--rate-scale", type=float, default=1.0, metavar="X", help="multiply the demand (default 1)")
    p.add_argument("--fidelity", choices=("request", "aggregate"), default=None,
                   help="per-request events or the aggregate fluid model (default: request for request traces "
                        f"up to {REQUEST_MODE_LIMIT:,} requests, else aggregate)")
    p.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                   help="trigger metadata for predictive/reactive (scaler/config.py keys), repeatable")
    p.add_argument("--uncalibrated", action="store_true",
                   help="do not hand the predictive policy the simulated fleet's parameters as `fleetModel` (by "
                        "default it gets them, as `vllm-scaler calibrate` fits them from a recording, unless "
                        "--metadata sets fleetModel or capacityPerReplica)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="simulate only the first S seconds")
    p.add_argument("--max-replicas", type=int, default=50, help="maxReplicaCount/maxReplicas of every policy (50)")
    p.add_argument("--initial-replicas", type=_initial_replicas, default="auto", metavar="N|auto",
                   help="ready replicas at the start; `auto` (default): what the oracle's plan holds at the "
                        "trace's start, the same for every policy (a trace cut out of a serving day starts on a "
                        "fleet sized for it)")
    p.add_argument("--request-timeout", type=float, default=60.0, metavar="S",
                   help="a request held with no ready replica this long is unserved (default 60)")
    add_model_flags(p)
    p.add_argument("--kpa-target", type=float, default=32.0, help="kpa: target concurrency per pod (default 32)")
    p.add_argument("--kpa-scale-down-delay", type=float, default=0.0, metavar="S",
                   help="kpa: Knative's scale-down-delay, 0-3600 s (default 0, Knative's default)")
    p.add_argument("--keda-threshold", type=float, default=5.0,
                   help="keda-threshold: avg waiting per pod target (default 5)")
    p.add_argument("--scaled-object", default=None, metavar="YAML",
                   help="ScaledObject manifest for predictive/reactive (default simulations/scenarios/"
                        "scaler-external.yaml)")
    p.add_argument("--seed", type=int, default=0, help="random seed (cold starts, sampling; default 0)")
    p.add_argument("--progress", action="store_true", help="show a progress bar on stderr even when not a TTY")
    p.add_argument("--idle-gap", type=float, default=60.0, metavar="S",
                   help="first-after-idle outcome: a gap of at least S seconds without arrivals (default 60: the "
                        "default scaleToZeroAfter 300 s / 5)")
    p.add_argument("--idle-first-n", type=int, default=10, metavar="N",
                   help="first-after-idle outcome: the first N requests after each gap (default 10)")


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """``--model-profile NAME`` and ``--model-param NAME=VALUE`` (simulate, sweep, calibrate, profile)."""
    from .fleet import profiles

    p.add_argument("--model-profile", default=profiles.DEFAULT, metavar="NAME",
                   help=f"the replica's model x GPU profile ({', '.join(profiles.names())}; default "
                        f"{profiles.DEFAULT}; sources: `vllm-scaler profile --list`)")
    p.add_argument("--model-param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a number of the profile: alpha, beta, gamma (s), max_num_seqs, kv_tokens, "
                        "max_batched_tokens, name; repeatable")


def model_params(args) -> ModelParams:
    """The :class:`ModelParams` the flags of :func:`add_model_flags` ask for; ValueError names the bad flag."""
    from .fleet import profiles

    overrides = {}
    for item in args.model_param:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise ValueError(f"--model-param {item!r}: expected NAME=VALUE")
        overrides[k.strip()] = v
    try:
        profiles.get(args.model_profile)
    except ValueError as exc:
        raise ValueError(f"--model-profile: {exc}") from None
    try:
        return profiles.resolve(args.model_profile, overrides)
    except ValueError as exc:
        raise ValueError(f"--model-param: {exc}") from None


def register(subparsers) -> None:
    bundled = "\n".join(f"  {k:<16} {v}" for k, v in BUNDLED_DOC.items())
    sim = subparsers.add_parser(
        "simulate", help="replay a trace through several policies side by side",
        description="Simulate a vLLM fleet under several scaling policies on one trace and compare SLO "
                    "attainment with GPU-hours (against the oracle's lower bound).\n\nBundled traces:\n" + bundled,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(sim)
    sim.add_argument("--policy", action="append", default=None, choices=POLICIES,
                     help=f"policy to run, repeatable (default: {' '.join(DEFAULT_POLICIES)})")
    sim.add_argument("--json", default=None, metavar="OUT", help="write the summary as JSON")
    sim.add_argument("--plot", default=None, metavar="OUT.png", help="plot demand, replicas and P95 TTFT")
    sim.add_argument("--openmetrics", default=None, metavar="OUT",
                     help="write the first policy's pods as vLLM metrics in OpenMetrics (for `promtool tsdb "
                          "create-blocks-from openmetrics`), one frame per --scrape-interval")
    sim.add_argument("--scrape-interval", type=float, default=15.0, metavar="S",
                     help="OpenMetrics frame interval, seconds (default 15)")
    sim.add_argument("--metric-names", choices=("v1", "v0"), default="v1",
                     help="vLLM metric names in the OpenMetrics export (default v1)")
    sim.set_defaults(func=cmd_simulate)

    sw = subparsers.add_parser(
        "sweep", help="explore a grid of policy parameters; print the Pareto front",
        description="Run one policy over a grid of parameters (both cores), print the Pareto front of TTFT SLO "
                    "attainment against GPU-hours, and the trigger metadata of the chosen point.\n\n"
                    "--grid KEY=V1,V2,... takes trigger metadata keys (predictive/reactive) or `threshold` "
                    "(keda-threshold's avg waiting target); the grid is their product.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(sw)
    sw.add_argument("--policy", default="predictive", choices=("predictive", "reactive", "keda-threshold"),
                    help="policy to sweep (default predictive)")
    sw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                    help="parameter values to try, repeatable (default: a built-in grid per policy)")
    sw.add_argument("--target-attainment", type=float, default=0.95,
                    help="choose the cheapest point with at least this TTFT SLO attainment (default 0.95)")
    sw.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default 2)")
    sw.add_argument("--json", default=None, metavar="OUT", help="write every point as JSON")
    sw.set_defaults(func=cmd_sweep)


def _initial_replicas(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a replica count or `auto`, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def _cold_start(args) -> ColdStartModel:
    try:
        return ColdStartModel(**{f: getattr(args, v[0][2:].replace("-", "_")) for f, v in _CS_FLAGS.items()})
    except ColdStartError as exc:
        raise ValueError(f"{_CS_FLAGS[exc.field][0]}: {exc}") from None


def _settings(args, fidelity: str, trace) -> Settings:
    params = model_params(args)
    metadata = parse_metadata_pairs(args.metadata)
    if not args.uncalibrated and not {k for k, _ in metadata} & {"fleetModel", "capacityPerReplica"}:
        # What a calibrated deployment passes (docs/predictive.md): the fleet model of the fleet being simulated.
        metadata = (("fleetModel", params.fleet_model().metadata()),) + metadata
    initial = args.initial_replicas
    if initial == "auto":
        initial = replicas_at_start(trace, params=params, slo_ttft=args.slo_ttft, slo_tpot=args.slo_tpot,
                                    cold_start=args.cold_start, max_replicas=args.max_replicas)
    return Settings(
        fidelity=fidelity, slo_ttft=args.slo_ttft, slo_tpot=args.slo_tpot,
        cold_start=_cold_start(args), params=params,
        metadata=metadata, max_replicas=args.max_replicas,
        initial_replicas=initial, request_timeout=args.request_timeout,
        keda_threshold=args.keda_threshold, kpa_target=args.kpa_target, kpa_scale_down_delay=args.kpa_scale_down_delay,
        seed=args.seed,
        scaled_object=args.scaled_object, idle_gap=args.idle_gap, idle_first_n=args.idle_first_n)


def _trace(args):
    tr = load(args.trace, seed=args.seed)
    if args.duration is not None:
        tr = tr.sliced(args.duration)
    tr = tr.scaled(args.rate_scale, np.random.default_rng(args.seed))
    fid = args.fidelity
    if fid is None:
        fid = "request" if tr.kind == "requests" and tr.requests <= REQUEST_MODE_LIMIT else "aggregate"
    return tr, fid


def _fail(msg: str) -> int:
    print(f"vllm-scaler: error: {msg}", file=sys.stderr)
    return 2


def cmd_simulate(args) -> int:
    try:
        tr, fid = _trace(args)
        s = _settings(args, fid, tr)
        policies = args.policy or list(DEFAULT_POLICIES)
        check_metadata(s, [p for p in policies if p in ("predictive", "reactive")])
    except (TraceError, ConfigError, ValueError, OSError) as exc:
        return _fail(str(exc))
    bar = report.ProgressBar(True if args.progress else None)
    if args.openmetrics:
        if not args.scrape_interval > 0:
            return _fail(f"--scrape-interval must be > 0, got {args.scrape_interval!r}")
        from .exposition import write_openmetrics
        from .fleet.metrics import pod_metrics

        frames: list = []
        scrape = (args.scrape_interval,
                  lambda fleet, t: frames.append((t, pod_metrics(fleet, t, names=args.metric_names))))
        result = run(tr, policies, s, progress=bar, scrape=scrape)
        with open(args.openmetrics, "w") as fh:
            write_openmetrics(frames, fh, names=args.metric_names)
    else:
        result = run(tr, policies, s, progress=bar)
    print(report.table(result))
    given = dict(s.metadata).get("fleetModel")
    if given and not any(k == "fleetModel" for k, _ in parse_metadata_pairs(args.metadata)) and (
            "predictive" in policies):
        print(f"predictive: given the simulated fleet's parameters, fleetModel={given} (as `vllm-scaler calibrate` "
              "fits them; --uncalibrated to run without)")
    if args.json:
        with open(args.json, "w") as fh:
            report.write_json(result, fh)
    if args.plot:
        report.plot(result, args.plot)
    return 0


# -- sweep ------------------------------------------------------------------------------------------
DEFAULT_GRIDS = {
    "predictive": {"targetUtilization": ["0.5", "0.6", "0.7", "0.8", "0.9"], "reactionLag": ["15", "45"],
                   "scaleToZeroAfter": ["300", "900"]},
    "reactive": {"queuePerReplica": ["2", "5", "10"], "runningPerReplica": ["16", "32", "64"]},
    "keda-threshold": {"threshold": ["1", "2", "3", "5", "8", "12"]},
}

_WORKER: dict = {}


def _worker_init(args_dict: dict) -> None:
    args = argparse.Namespace(**args_dict)
    tr, fid = _trace(args)
    _WORKER["trace"], _WORKER["settings"], _WORKER["policy"] = tr, _settings(args, fid, tr), args.policy


def _sweep_point(point: tuple[tuple[str, str], ...]) -> tuple[tuple[tuple[str, str], ...], dict | None, str | None]:
    tr, s, policy = _WORKER["trace"], _WORKER["settings"], _WORKER["policy"]
    pt = dict(point)
    if policy == "keda-threshold":
        s = replace(s, keda_threshold=float(pt["threshold"]))
    else:
        s = replace(s, metadata=s.metadata + tuple(pt.items()))
    try:
        r = run_policy(policy, tr, s)
    except (ConfigError, ValueError) as exc:
        return point, None, str(exc)
    if r.outcome is None:
        return point, None, r.unavailable
    o = r.outcome
    return point, {"gpu_hours": r.gpu_hours, "ttft_slo_attainment": o.ttft_ok / o.requests if o.requests else None,
                   "tpot_slo_attainment": o.tpot_ok / o.requests if o.requests else None,
                   "p95_ttft_window_attainment": o.window_attainment, "cold_starts": o.cold_starts,
                   "unserved_requests": o.unserved}, None


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (lower GPU-hours and higher attainment both better), by GPU-hours."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -1.0
    for i in order:
        if points[i][1] > best + 1e-12:
            front.append(i)
            best = points[i][1]
    return front


def grid_points(policy: str, grid_args: list[str]) -> list[tuple[tuple[str, str], ...]]:
    grid = {}
    for g in grid_args:
        if "=" not in g:
            raise ValueError(f"--grid {g!r}: expected KEY=V1,V2,...")
        k, v = g.split("=", 1)
        vals = [x.strip() for x in v.split(",") if x.strip()]
        if not vals:
            raise ValueError(f"--grid {g!r}: no values")
        if policy == "keda-threshold" and k != "threshold":
            raise ValueError(f"--grid {k}: keda-threshold sweeps only `threshold`")
        grid[k.strip()] = vals
    if not grid:
        grid = DEFAULT_GRIDS[policy]
    keys = sorted(grid)
    return [tuple(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def cmd_sweep(args) -> int:
    try:
        points = grid_points(args.policy, args.grid)
        tr, fid = _trace(args)
        s = _settings(args, fid, tr)
        if args.policy != "keda-threshold":
            for pt in points:
                check_metadata(replace(s, metadata=s.metadata + pt), [args.policy])
        else:
            for pt in points:
                float(dict(pt)["threshold"])
    except (TraceError, ConfigError, ValueError, OSError) as exc:
        return _fail(str(exc))
    bar = report.ProgressBar(True if args.progress else None)
    results = []
    args_dict = dict(vars(args))
    args_dict.pop("func", None)
    jobs = max(1, args.jobs)
    # The trace and settings just built are what _worker_init would build again: this process and forked
    # workers use them as they are (no second parse of the trace per worker); spawned workers rebuild them.
    _WORKER["trace"], _WORKER["settings"], _WORKER["policy"] = tr, s, args.policy
    if jobs == 1:
        for i, pt in enumerate(points):
            results.append(_sweep_point(pt))
            bar("sweep", (i + 1) / len(points))
    else:
        method = "fork" if sys.platform != "win32" else "spawn"
        ctx = multiprocessing.get_context(method)
        init = (None, ()) if method == "fork" else (_worker_init, (args_dict,))
        with ctx.Pool(jobs, initializer=init[0], initargs=init[1]) as pool:
            for i, res in enumerate(pool.imap_unordered(_sweep_point, points)):
                results.append(res)
                bar("sweep", (i + 1) / len(points))
        # in grid order, as with one job: the report, the JSON and the choice among equal points do not depend
        # on which worker finished first
        order = {pt: k for k, pt in enumerate(points)}
        results.sort(key=lambda res: order[res[0]])
    ok = [(pt, r) for pt, r, err in results if r is not None]
    errors = [(pt, err) for pt, r, err in results if r is None]
    print(f"sweep {args.policy} on {tr.name} ({fid} fidelity): {len(points)} points, {len(errors)} failed")
    for pt, err in errors:
        print(f"  {dict(pt)}: {err}")
    if not ok:
        return 1
    pts = [(r["gpu_hours"], r["ttft_slo_attainment"] or 0.0) for _, r in ok]
    front = pareto_front(pts)
    print("Pareto front (GPU-hours vs TTFT SLO attainment):")
    print(f"  {'GPU-h':>8}  {'TTFT ok':>8}  {'TPOT ok':>8}  {'P95 win':>8}  parameters")
    for i in front:
        pt, r = ok[i]
        win = r["p95_ttft_window_attainment"]
        print(f"  {r['gpu_hours']:8.2f}  {r['ttft_slo_attainment']:8.1%}  {r['tpot_slo_attainment']:8.1%}  "
              f"{(win if win is not None else float('nan')):8.1%}  "
              + ", ".join(f"{k}={v}" for k, v in pt))
    good = [i for i in front if (ok[i][1]["ttft_slo_attainment"] or 0) >= args.target_attainment]
    chosen = good[0] if good else front[-1]
    pt, r = ok[chosen]
    why = (f"the cheapest point with TTFT attainment >= {args.target_attainment:.0%}" if good
           else f"no point reaches {args.target_attainment:.0%}: the best attainment")
    print(f"\nchosen ({why}): {r['gpu_hours']:.2f} GPU-h, TTFT ok {r['ttft_slo_attainment']:.1%}")
    print(scaled_object_snippet(args.policy, dict(pt), s))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"trace": tr.name, "policy": args.policy, "settings": s.as_dict(),
                       "points": [{"parameters": dict(pt), **r} for pt, r in ok],
                       "failed": [{"parameters": dict(pt), "error": e} for pt, e in errors],
                       "pareto": [dict(ok[i][0]) for i in front], "chosen": dict(pt)}, fh, indent=2)
    return 0


def scaled_object_snippet(policy: str, point: dict, s: Settings) -> str:
    """The ``triggers:`` block of a ScaledObject for the chosen point."""
    if policy == "keda-threshold":
        return ("  triggers:\n    - type: prometheus\n      metadata:\n"
                "        serverAddress: http://prometheus.monitoring:9090\n"
                "        query: avg(vllm:num_requests_waiting)\n"
                f"        threshold: \"{point['threshold']}\"\n"
                f"        activationThreshold: \"{s.keda_activation:g}\"")
    md = {"policy": policy, "maxReplicas": str(s.max_replicas), "ttftP95": f"{s.slo_ttft:g}",
          "tpotP95": f"{s.slo_tpot:g}"}
    md.update(dict(s.metadata))
    md.update(point)
    lines = ["  triggers:", "    - type: external", "      metricType: AverageValue", "      metadata:",
             "        scalerAddress: vllm-scaler.vllm-scaler.svc.cluster.local:6000"]
    lines += [f"        {k}: \"{v}\"" for k, v in md.items()]
    return "\n".join(lines)
