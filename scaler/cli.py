"""``vllm-scaler``: one entry point, one subcommand per job.

Each subcommand lives in the module that owns it and exposes
``register(subparsers) -> None``; the registered parser sets ``func`` to a
callable taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module that registers it (imported lazily so `serve` never pulls in matplotlib)
COMMANDS: dict[str, str] = {
    "serve": "scaler.server.cli",
    "simulate": "simulations.cli",
    "sweep": "simulations.cli",
    "record": "simulations.recording.cli",
    "replay": "simulations.recording.cli",
    "calibrate": "simulations.recording.cli",
    "profile": "simulations.profile",
    "demo": "simulations.demo.cli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vllm-scaler",
        description="Predictive KEDA external scaler for vLLM, and the replay/simulation tools to tune it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    seen: set[str] = set()
    for name, module in COMMANDS.items():
        if only is not None and name != only:
            continue
        if module in seen:
            continue
        seen.add(module)
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the module of the chosen subcommand (fast start, fewer dependencies).
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
