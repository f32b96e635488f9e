"""Regenerate the protobuf/gRPC stubs from ``proto/externalscaler.proto``.

The stubs are committed so that a plain ``pip install .`` works without a
build hook; ``tests/unit/test_proto_stubs.py`` regenerates them into a
temporary directory and fails when the committed files differ, so they can
never drift from the ``.proto`` file.

Usage::

    python -m scaler._proto.generate            # rewrite scaler/_proto/*_pb2*.py
    python -m scaler._proto.generate --out DIR  # write elsewhere (the test does)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PROTO_NAME = "externalscaler.proto"
REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "proto"
OUT_DIR = Path(__file__).resolve().parent
GENERATED = ("externalscaler_pb2.py", "externalscaler_pb2.pyi", "externalscaler_pb2_grpc.py")


def generate(out_dir: Path, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Run protoc (from grpcio-tools) and make the gRPC module's import relative."""
    from grpc_tools import protoc  # imported lazily: a build/dev dependency only

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(proto_dir / PROTO_NAME),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}: {' '.join(args)}")
    grpc_file = out_dir / "externalscaler_pb2_grpc.py"
    text = grpc_file.read_text()
    # protoc emits a top-level import; inside a package it must be relative.
    text = re.sub(r"^import externalscaler_pb2 as", "from . import externalscaler_pb2 as", text, flags=re.M)
    grpc_file.write_text(text)
    return [out_dir / name for name in GENERATED]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory (default: %(default)s)")
    ns = parser.parse_args(argv)
    for path in generate(ns.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
