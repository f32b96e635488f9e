"""End to end in a kind cluster: KEDA (helm), Prometheus, a simulated vLLM Deployment, the scaler: 0 -> 1 -> N -> 0.

Skipped, with the reason printed, unless `docker` (with a reachable daemon), `kind`, `kubectl` and `helm` are
all available, and nothing here runs on the development machines of this project (no Docker engine). It
downloads KEDA's chart and the Prometheus image, so it needs network access.

What it does (about 15 minutes):

1. ``kind create cluster`` (name ``vllm-scaler-e2e``; ``VLLM_SCALER_E2E_KEEP=1`` keeps it afterwards);
2. ``docker build`` the repository's Dockerfile as ``vllm-scaler:e2e`` and ``kind load`` it;
3. ``helm install keda kedacore/keda`` (version ``VLLM_SCALER_E2E_KEDA_VERSION``, default below);
4. ``kubectl apply -k tests/e2e/manifests``: the scaler from deploy/base (one replica), its RBAC, a Prometheus
   discovering pods, the simulated vLLM Deployment at zero replicas (the scaler's image running
   ``vllm-scaler demo --role pod``), the loadgen (``--role loadgen``: traffic and the fleet model, following
   the Deployment's Ready pods), and an ``external-push`` ScaledObject;
5. watches the Deployment's ``spec.replicas`` while the loadgen plays its story (trickle, ramp, plateau, ramp
   down, idle, stretched 10x for the HPA's 15 s sync) and asserts the sequence 0 -> 1 -> N (N >= 2) -> 0.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = Path(__file__).with_name("manifests")
CLUSTER = "vllm-scaler-e2e"
IMAGE = "vllm-scaler:e2e"
KEDA_VERSION = os.environ.get("VLLM_SCALER_E2E_KEDA_VERSION", "2.20.2")
STORY_TIMEOUT = 15 * 60


def missing_tools() -> str | None:
    """Why this cannot run here, or None."""
    missing = [t for t in ("docker", "kind", "kubectl", "helm") if shutil.which(t) is None]
    if missing:
        return f"e2e needs {', '.join(missing)} on PATH (kind: https://kind.sigs.k8s.io, helm: https://helm.sh)"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker info failed: {exc}"
    if info.returncode != 0:
        return f"no reachable Docker daemon (docker info: {info.stderr.strip().splitlines()[-1:]})"
    return None


def sh(*cmd: str, timeout: float = 600, check: bool = True) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


@pytest.fixture(scope="module")
def cluster():
    reason = missing_tools()
    if reason:
        print(f"\nSKIP tests/e2e/test_kind.py: {reason}")
        pytest.skip(reason)
    context = f"kind-{CLUSTER}"
    sh("kind", "create", "cluster", "--name", CLUSTER, "--wait", "180s", timeout=900)
    try:
        sh("docker", "build", "-t", IMAGE, ".", timeout=1800)
        sh("kind", "load", "docker-image", IMAGE, "--name", CLUSTER, timeout=600)
        sh("helm", "repo", "add", "kedacore", "https://kedacore.github.io/charts", "--force-update")
        sh("helm", "repo", "update", "kedacore")
        sh("helm", "install", "keda", "kedacore/keda", "--kube-context", context, "--namespace", "keda",
           "--create-namespace", "--version", KEDA_VERSION, "--wait", "--timeout", "10m", timeout=900)
        yield context
    finally:
        if os.environ.get("VLLM_SCALER_E2E_KEEP") != "1":
            sh("kind", "delete", "cluster", "--name", CLUSTER, check=False, timeout=300)


def kubectl(context: str, *args: str, timeout: float = 300) -> str:
    return sh("kubectl", "--context", context, *args, timeout=timeout)


def test_zero_to_one_to_n_to_zero(cluster: str) -> None:
    ctx = cluster
    kubectl(ctx, "apply", "-k", str(MANIFESTS))
    kubectl(ctx, "-n", "vllm-scaler", "rollout", "status", "deploy/vllm-scaler", "--timeout=300s")
    kubectl(ctx, "-n", "monitoring", "rollout", "status", "deploy/prometheus", "--timeout=300s")
    kubectl(ctx, "-n", "llm", "wait", "--for=condition=Ready", "scaledobject/llama-3-8b", "--timeout=300s")

    seen: list[tuple[float, int]] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < STORY_TIMEOUT:
        out = kubectl(ctx, "-n", "llm", "get", "deploy/llama-3-8b", "-o", "json")
        replicas = int(json.loads(out)["spec"].get("replicas", 0))
        if not seen or seen[-1][1] != replicas:
            seen.append((round(time.monotonic() - t0), replicas))
            print(f"t={seen[-1][0]:4d}s replicas={replicas}", flush=True)
        peak = max(r for _, r in seen)
        if peak >= 2 and replicas == 0:
            break
        time.sleep(2)

    counts = [r for _, r in seen]
    assert counts[0] == 0, f"the Deployment should start at zero: {seen}"
    first_up = next((r for r in counts if r > 0), None)
    assert first_up == 1, f"KEDA wakes a Deployment at zero to max(minReplicaCount, 1) = 1: {seen}"
    peak_at = counts.index(max(counts))
    assert max(counts) >= 2, f"the ramp should scale beyond one replica: {seen}"
    assert counts[-1] == 0 and len(counts) - 1 > peak_at, f"back to zero after the story: {seen}"
    events = kubectl(ctx, "-n", "llm", "get", "events", "--field-selector",
                     "involvedObject.kind=ScaledObject", "-o", "name")
    print(events)
