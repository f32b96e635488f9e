"""``vllm-scaler record``, ``replay`` and ``calibrate``: the command lines of this package."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scaler.capacity import FleetModel
from scaler.config import parse_duration, parse_metadata
from scaler.errors import ConfigError, SourceError
from scaler.sources.prometheus import PrometheusSource
from simulations.cli import add_model_flags, model_params
from simulations.keda import metadata_from_scaled_object
from simulations.runner import parse_metadata_pairs

from .calibrate import calibrate, fitted_params
from .format import Recording
from .record import record
from .replay import replay, replay_config, replay_summary
from .testbed import load_for_calibration

DEFAULT_PROMETHEUS_URL = os.environ.get("VLLM_SCALER_PROMETHEUS_URL", "http://127.0.0.1:9090")


def parse_time(text: str, flag: str) -> float:
    """Unix seconds (``1700000000``) or ISO 8601 (``2026-11-22T10:00:00Z``; naive means UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{flag} {text!r}: not unix seconds or an ISO 8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _duration(text: str, flag: str) -> float:
    try:
        v = parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"{flag} {text!r}: {exc}") from None
    if v <= 0:
        raise ValueError(f"{flag} {text!r}: must be > 0")
    return v


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _run_record(args: argparse.Namespace) -> int:
    try:
        step = _duration(args.step, "--step")
        window = _duration(args.window, "--window")
        timeout = _duration(args.timeout, "--timeout")
        if args.end is not None:
            end = parse_time(args.end, "--end")
        else:
            end = time.time()  # the clock, read at the CLI edge
        if args.start is not None:
            if args.last is not None:
                raise ValueError("give --start or --last, not both")
            start = parse_time(args.start, "--start")
        elif args.last is not None:
            start = end - _duration(args.last, "--last")
        else:
            raise ValueError("give --start TIME or --last DURATION")
        if end < start:
            raise ValueError(f"--end ({end}) is before --start ({start})")
        md = {"deploymentName": args.deployment, "namespace": args.namespace}
        if args.model_name is not None:
            md["modelName"] = args.model_name
        try:
            parse_metadata(md, scaled_object=args.deployment, namespace=args.namespace)
        except ConfigError as exc:
            flags = {"deploymentName": "--deployment", "namespace": "--namespace", "modelName": "--model-name"}
            raise ValueError("; ".join(f"{flags.get(p.key, p.key)} {p.value!r}: {p.message}"
                                       for p in exc.problems)) from None
    except ValueError as exc:
        print(f"vllm-scaler record: {exc}", file=sys.stderr)
        return 2
    start, end = math.floor(start), math.floor(end)  # range queries take whole seconds
    source = PrometheusSource(args.prometheus_url, timeout=timeout)
    try:
        rec = record(source, namespace=args.namespace, deployment=args.deployment, model_name=args.model_name,
                     start=start, end=end, step=step, window=window)
    except SourceError as exc:
        print(f"vllm-scaler record: Prometheus {args.prometheus_url}: {exc} ({exc.kind})", file=sys.stderr)
        return 1
    rec.save(args.out)
    bad = sum(t.error is not None for t in rec.ticks)
    print(f"wrote {args.out}: {len(rec.ticks)} ticks every {step:g} s from {start} to {end} "
          f"({bad} without data); metric names {rec.header.metric_names}")
    return 0


def _run_replay(args: argparse.Namespace) -> int:
    try:
        rec = Recording.load(args.recording)
        metadata: dict[str, str] = {}
        so_name = None
        if args.scaled_object:
            try:
                metadata, so_name = metadata_from_scaled_object(args.scaled_object)
            except ValueError as exc:
                raise ValueError(f"--scaled-object {exc}") from None
        metadata.update(parse_metadata_pairs(args.metadata, "--metadata"))
        config = replay_config(rec, metadata, so_name)
    except ConfigError as exc:
        print(f"vllm-scaler replay: bad metadata: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"vllm-scaler replay: {exc}", file=sys.stderr)
        return 2
    rows = replay(rec, config)
    summary = replay_summary(rec, rows)
    print(f"replay of {args.recording} ({rec.header.namespace}/{rec.header.deployment}, policy {config.policy}), "
          "open loop: the recorded fleet did not react to these answers")
    shown = rows if args.all_ticks else [r for r in rows if r.under]
    if shown:
        print(f"{'t (UTC)':20} {'ran':>4} {'desired':>7} {'needed':>6} {'short':>5} {'under':>5}  dominant: terms; "
              "horizon, forecast, capacity / note")
        for r in shown:
            ts = datetime.fromtimestamp(r.t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
            why = f"{r.dominant}: {r.explain()}" if r.dominant else ""
            print(f"{ts:20} {_fmt(r.replicas):>4} {_fmt(r.desired):>7} {_fmt(r.needed):>6} {_fmt(r.short):>5} "
                  f"{_fmt(r.under):>5}  {why}{r.note}")
    for k, v in summary.items():
        print(f"{k:26} {_fmt(v)}")
    if args.json:
        doc = {"recording": str(args.recording), "metadata": metadata,
               "config": {k: v for k, v in asdict(config).items() if k != "keda_keys"},
               "summary": summary, "ticks": [asdict(r) for r in rows]}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return 0


def _run_calibrate(args: argparse.Namespace) -> int:
    try:
        base = model_params(args)
        if args.max_num_seqs is not None and args.max_num_seqs < 1:
            raise ValueError(f"--max-num-seqs must be >= 1, got {args.max_num_seqs}")
        if args.kv_tokens is not None and not (math.isfinite(args.kv_tokens) and args.kv_tokens >= 1):
            raise ValueError(f"--kv-tokens must be a number >= 1, got {args.kv_tokens}")
        rec = load_for_calibration(args.recording)
        if not (math.isfinite(args.output_spread) and 1.0 <= args.output_spread <= 100.0):
            raise ValueError(f"--output-spread must be from 1 to 100 (E[O^2]/E[O]^2), got {args.output_spread}")
        fits = calibrate(rec, min_ticks=args.min_ticks, output_spread=args.output_spread,
                         block_size=base.block_size)
    except ValueError as exc:
        print(f"vllm-scaler calibrate: {exc}", file=sys.stderr)
        return 2
    params, note = fitted_params(fits, f"calibrated from {Path(args.recording).name} on {base.name}", base)
    labels = {"ttft": "TTFT - 1.5 * TPOT = gamma * prompt_tokens",
              "tpot": "TPOT = alpha + beta * running + gamma * prefill tokens per step (prefill share removed)",
              "kv": f"KV usage = running * (prompt + {args.output_spread:g} * output/2 + block/2) / kv_tokens"}
    for key in ("ttft", "tpot", "kv"):
        if key not in fits:
            continue
        fit = fits[key]
        coefs = ", ".join(f"{k} = {v:.6g}" for k, v in fit.coefficients.items())
        print(f"{labels[key]}: {coefs}; R^2 = {_fmt(fit.r2, 4)}, RMSE = {fit.rmse:.4g} over {fit.ticks} ticks")
    if "kv" not in fits:
        print("kv_tokens not fitted (too few ticks with kv_cache_usage below 0.9 and no queue)")
    print(f"fitted: {params!r}")
    if note:
        print(f"note: {note}")
    keys = ("alpha", "beta", "gamma") + (("kv_tokens",) if "kv" in fits else ())
    values = params if isinstance(params, dict) else {k: getattr(params, k) for k in keys}
    print(f"simulate with: --model-profile {args.model_profile} "
          + " ".join(f"--model-param {k}={v:.6g}" for k, v in values.items()))
    max_num_seqs = args.max_num_seqs if args.max_num_seqs is not None else base.max_num_seqs
    kv_tokens = args.kv_tokens if args.kv_tokens is not None else values.get("kv_tokens")
    try:
        model = FleetModel(alpha=values["alpha"], beta=values["beta"], gamma=values["gamma"],
                           max_num_seqs=max_num_seqs, kv_tokens=kv_tokens)
    except ValueError as exc:
        print(f"no fleetModel metadata: {exc}")
    else:
        src = ("--max-num-seqs" if args.max_num_seqs is not None else f"profile {args.model_profile}")
        print(f'trigger metadata for the predictive policy: fleetModel: "{model.metadata()}"'
              f" (maxNumSeqs from {src}: vLLM's --max-num-seqs is not in the recording)")
        values = {**values, "fleetModel": model.metadata()}
    if args.json:
        doc = {"recording": str(args.recording), "profile": args.model_profile, "params": values,
               "fits": {k: asdict(f) for k, f in fits.items()}, "note": note}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return 0


def register(subparsers) -> None:
    """Add ``record``, ``replay`` and ``calibrate`` to the ``vllm-scaler`` command line."""
    p = subparsers.add_parser(
        "record", help="save a target's signals from Prometheus (range queries) to a recording file",
        description="Range-query Prometheus for one vLLM Deployment and write a recording (JSON Lines: a header, "
                    "then one line of Signals per step). Same PromQL and per-tick computation as the live scaler.")
    p.add_argument("--prometheus-url", default=DEFAULT_PROMETHEUS_URL,
                   help="Prometheus base URL (default: $VLLM_SCALER_PROMETHEUS_URL or %(default)s)")
    p.add_argument("--namespace", required=True, help="namespace of the vLLM pods")
    p.add_argument("--deployment", required=True, help="the vLLM Deployment; its ReplicaSets' pods are matched exactly "
                   "(scaler.sources.promql.pod_pattern)")
    p.add_argument("--model-name", default=None, help="only series with this model_name label (default: all)")
    p.add_argument("--start", default=None, help="first tick: unix seconds or ISO 8601 (UTC if no zone)")
    p.add_argument("--end", default=None, help="last tick: unix seconds or ISO 8601 (default: now)")
    p.add_argument("--last", default=None, help="instead of --start: this long before --end (e.g. 6h)")
    p.add_argument("--step", default="15s", help="tick spacing (default: %(default)s)")
    p.add_argument("--window", default="60s", help="rate/quantile window, as the trigger's `window` "
                                                   "(default: %(default)s)")
    p.add_argument("--timeout", default="30s", help="per-request timeout (default: %(default)s)")
    p.add_argument("--out", required=True, help="recording file to write (JSON Lines)")
    p.set_defaults(func=_run_record)

    p = subparsers.add_parser(
        "replay", help="open-loop replay of a recording through decide(): where would the policy have asked too few?",
        description="Feed every recorded tick through scaler.policy.decide() with the given trigger metadata, "
                    "against the replicas that actually ran, and mark ticks where the answer was below what was "
                    "needed (needed: replicas+1 when the recorded TTFT/TPOT P95 missed the SLO or the queue "
                    "exceeded queuePerReplica per replica; at least 1 with requests in flight).")
    p.add_argument("recording", help="a file written by `vllm-scaler record`")
    p.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                   help="a ScaledObject trigger metadata key (repeatable; overrides --scaled-object)")
    p.add_argument("--scaled-object", default=None, metavar="FILE.yaml",
                   help="take the metadata of the external trigger of this ScaledObject manifest")
    p.add_argument("--all-ticks", action="store_true", help="print every tick, not only the under-provisioned")
    p.add_argument("--json", default=None, metavar="OUT", help="write summary and every tick as JSON")
    p.set_defaults(func=_run_replay)

    p = subparsers.add_parser(
        "calibrate", help="fit the fleet model's alpha, beta, gamma (and kv_tokens) to a recording",
        description="Over ticks with no queue in their window: gamma from TTFT - 1.5 TPOT on mean prompt tokens; "
                    "alpha, beta from the step model's steady state with the prefill share of each step removed; "
                    "kv_tokens from KV usage against the tokens the running requests hold (docs/recording.md).")
    p.add_argument("recording", help="a file written by `vllm-scaler record`, or the testbed's reconciles.csv")
    p.add_argument("--min-ticks", type=int, default=10, help="fewest usable ticks per fit (default: %(default)s)")
    add_model_flags(p)
    p.add_argument("--max-num-seqs", type=int, default=None,
                   help="the Deployment's vLLM --max-num-seqs, for the fleetModel metadata (default: the profile's)")
    p.add_argument("--output-spread", type=float, default=1.0, metavar="X",
                   help="E[O^2]/E[O]^2 of the output sizes, for the kv_tokens fit (default 1: fixed sizes; about 2 "
                        "for chat traffic like ShareGPT)")
    p.add_argument("--kv-tokens", type=float, default=None,
                   help="KV-cache capacity in tokens per replica (vLLM logs it at start-up), for fleetModel "
                        "(default: the fitted one, when the recording has KV usage)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the fitted numbers and fit quality as JSON")
    p.set_defaults(func=_run_calibrate)
