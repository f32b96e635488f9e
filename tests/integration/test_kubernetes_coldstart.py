"""Cold start measured from the Kubernetes API: recorded API-server responses served over a real loopback
HTTP server, read by the official ``kubernetes`` client pointed at it. No mocks."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client as k8s

from scaler.config import parse_metadata
from scaler.errors import SourceConnectionError, SourceHTTPError
from scaler.policy import decide
from scaler.signals import Signals
from scaler.sources.kubernetes import KubernetesColdStartReader, label_selector

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC).timestamp()

# GET /apis/apps/v1/namespaces/ml/deployments/llama, as a 1.32 API server answers it (trimmed of managedFields).
DEPLOYMENT = json.loads("""
{
  "kind": "Deployment",
  "apiVersion": "apps/v1",
  "metadata": {
    "name": "llama",
    "namespace": "ml",
    "uid": "5f0b3c2e-8a53-4d0e-9b3c-2f7a1c9e0d11",
    "resourceVersion": "918273",
    "generation": 14,
    "creationTimestamp": "2026-10-01T08:12:44Z",
    "labels": {"app": "llama"},
    "annotations": {"deployment.kubernetes.io/revision": "3"}
  },
  "spec": {
    "replicas": 5,
    "selector": {
      "matchLabels": {"app": "llama"},
      "matchExpressions": [{"key": "tier", "operator": "In", "values": ["serve"]}]
    },
    "template": {
      "metadata": {"creationTimestamp": null, "labels": {"app": "llama", "tier": "serve"}},
      "spec": {
        "containers": [{
          "name": "vllm",
          "image": "vllm/vllm-openai:v0.11.0",
          "args": ["--model", "meta-llama/Llama-3.1-8B-Instruct"],
          "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
          "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
          "readinessProbe": {"httpGet": {"path": "/health", "port": 8000, "scheme": "HTTP"},
                             "timeoutSeconds": 1, "periodSeconds": 5, "successThreshold": 1, "failureThreshold": 3},
          "terminationMessagePath": "/dev/termination-log",
          "terminationMessagePolicy": "File",
          "imagePullPolicy": "IfNotPresent"
        }],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "securityContext": {},
        "schedulerName": "default-scheduler"
      }
    },
    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
    "revisionHistoryLimit": 10,
    "progressDeadlineSeconds": 600
  },
  "status": {
    "observedGeneration": 14,
    "replicas": 5,
    "updatedReplicas": 5,
    "readyReplicas": 4,
    "availableReplicas": 4,
    "unavailableReplicas": 1,
    "conditions": [
      {"type": "Available", "status": "True", "lastUpdateTime": "2026-11-20T10:02:30Z",
       "lastTransitionTime": "2026-11-20T10:02:30Z", "reason": "MinimumReplicasAvailable",
       "message": "Deployment has minimum availability."},
      {"type": "Progressing", "status": "True", "lastUpdateTime": "2026-11-20T11:34:10Z",
       "lastTransitionTime": "2026-10-01T08:12:44Z", "reason": "NewReplicaSetAvailable",
       "message": "ReplicaSet \\"llama-7c9d8f6b5\\" has successfully progressed."}
    ]
  }
}
""")


def _pod(name, created, ready_at, *, restarts=0, ready=True):
    """One item of a PodList, as the API server returns it (items carry no kind/apiVersion)."""
    cond_ready = "True" if ready else "False"
    t_ready = ready_at or created
    return {
        "metadata": {
            "name": name, "generateName": "llama-7c9d8f6b5-", "namespace": "ml",
            "uid": f"0000-{name}", "resourceVersion": "918000", "creationTimestamp": created,
            "labels": {"app": "llama", "tier": "serve", "pod-template-hash": "7c9d8f6b5"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "llama-7c9d8f6b5",
                                 "uid": "rs-uid", "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
                            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                            "imagePullPolicy": "IfNotPresent"}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "nodeName": "gpu-node-3", "schedulerName": "default-scheduler", "priority": 0,
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": None,
                 "lastTransitionTime": created},
                {"type": "Initialized", "status": "True", "lastProbeTime": None, "lastTransitionTime": created},
                {"type": "Ready", "status": cond_ready, "lastProbeTime": None, "lastTransitionTime": t_ready},
                {"type": "ContainersReady", "status": cond_ready, "lastProbeTime": None,
                 "lastTransitionTime": t_ready},
                {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": created},
            ],
            "hostIP": "10.0.3.7", "podIP": "10.244.3.21", "startTime": created,
            "containerStatuses": [{
                "name": "vllm", "state": {"running": {"startedAt": created}}, "lastState": {},
                "ready": ready, "restartCount": restarts, "image": "docker.io/vllm/vllm-openai:v0.11.0",
                "imageID": "docker.io/vllm/vllm-openai@sha256:" + "ab" * 32,
                "containerID": "containerd://" + "cd" * 32, "started": True,
            }],
            "qosClass": "BestEffort",
        },
    }


# GET /api/v1/namespaces/ml/pods?labelSelector=app%3Dllama%2Ctier+in+%28serve%29
PODS = {
    "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "918300"},
    "items": [
        _pod("llama-7c9d8f6b5-a1b2c", "2026-11-20T10:00:00Z", "2026-11-20T10:02:30Z"),   # 150 s
        _pod("llama-7c9d8f6b5-d3e4f", "2026-11-20T10:30:00Z", "2026-11-20T10:33:00Z"),   # 180 s
        _pod("llama-7c9d8f6b5-g5h6i", "2026-11-20T11:00:00Z", "2026-11-20T11:02:00Z"),   # 120 s
        _pod("llama-7c9d8f6b5-j7k8l", "2026-11-20T11:30:00Z", "2026-11-20T11:34:10Z"),   # 250 s
        _pod("llama-7c9d8f6b5-m9n0p", "2026-11-20T09:00:00Z", "2026-11-20T11:50:00Z", restarts=1),  # restarted
        _pod("llama-7c9d8f6b5-q1r2s", "2026-11-20T11:58:00Z", None, ready=False),        # still loading
    ],
}

NOT_FOUND = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": 'deployments.apps "mistral" not found', "reason": "NotFound",
             "details": {"name": "mistral", "group": "apps", "kind": "deployments"}, "code": 404}
FORBIDDEN = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": 'pods is forbidden: User "system:serviceaccount:keda:vllm-scaler" cannot list resource '
                        '"pods" in API group "" in the namespace "locked"',
             "reason": "Forbidden", "details": {"kind": "pods"}, "code": 403}


class ApiServer:
    """A loopback HTTP server answering the recorded responses; records every request (method, path, query)."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def do_GET(self):
                url = urlsplit(self.path)
                q = parse_qs(url.query)
                outer.requests.append(("GET", url.path, q))
                if url.path == "/apis/apps/v1/namespaces/ml/deployments/llama":
                    return self._send(200, DEPLOYMENT)
                if url.path == "/apis/apps/v1/namespaces/locked/deployments/llama":
                    return self._send(200, {**DEPLOYMENT, "metadata": {**DEPLOYMENT["metadata"], "namespace": "locked"}})
                if url.path == "/api/v1/namespaces/ml/pods" and q.get("labelSelector") == ["app=llama,tier in (serve)"]:
                    return self._send(200, PODS)
                if url.path == "/api/v1/namespaces/locked/pods":
                    return self._send(403, FORBIDDEN)
                return self._send(404, NOT_FOUND)

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def api():
    with ApiServer() as server:
        conf = k8s.Configuration()
        conf.host = server.url
        with k8s.ApiClient(conf) as client:
            yield server, client


def cfg(**md):
    md.setdefault("policy", "predictive")
    return parse_metadata({k: str(v) for k, v in md.items()}, scaled_object="llama", namespace=md.pop("ns", "ml"))


def test_cold_start_from_recorded_pods(api) -> None:
    server, client = api
    reader = KubernetesColdStartReader(client, timeout=5)
    s = reader.enrich(Signals(observed_at=NOW, pods_reporting=4), cfg(), NOW)
    # Four clean samples 150, 180, 120, 250 s: P50 165, P90 at rank 2.7 of (120,150,180,250) = 229.
    assert s.cold_start.source == "kubernetes" and s.cold_start.samples == 4
    assert s.cold_start.p50 == pytest.approx(165) and s.cold_start.p90 == pytest.approx(229)
    assert (s.ready_replicas, s.starting_replicas) == (4, 1)
    # Only the two calls RBAC allows: get the Deployment, list its pods by its selector.
    assert [(m, p) for m, p, _ in server.requests] == [
        ("GET", "/apis/apps/v1/namespaces/ml/deployments/llama"), ("GET", "/api/v1/namespaces/ml/pods")]


def test_the_decision_reports_the_measured_cold_start(api) -> None:
    _, client = api
    c = cfg(capacityPerReplica=4)
    s = KubernetesColdStartReader(client).enrich(Signals(observed_at=NOW, pods_reporting=4, arrival_rate=6.0,
                                                         running=20, waiting=0), c, NOW)
    d = decide(s, None, c, NOW)
    assert d.inputs["cold_start_p90_s"] == pytest.approx(229) and d.inputs["horizon_s"] == pytest.approx(274)
    assert d.inputs["starting_replicas"] == 1
    assert any("from kubernetes, 4 samples" in r for r in d.reasons)


def test_pod_list_is_cached_for_ttl_and_metadata_override_skips_it(api) -> None:
    server, client = api
    reader = KubernetesColdStartReader(client, ttl=300)
    sig = Signals(observed_at=NOW, pods_reporting=4)
    reader.enrich(sig, cfg(), NOW)
    reader.enrich(sig, cfg(), NOW + 100)
    assert sum(1 for _, p, _ in server.requests if p.endswith("/pods")) == 1
    reader.enrich(sig, cfg(), NOW + 301)
    assert sum(1 for _, p, _ in server.requests if p.endswith("/pods")) == 2
    server.requests.clear()
    s = reader.enrich(sig, cfg(coldStart=90), NOW + 1000)
    assert s.cold_start is None  # the override is applied by the policy; the pods were not listed
    assert [p for _, p, _ in server.requests] == ["/apis/apps/v1/namespaces/ml/deployments/llama"]


def test_missing_deployment_is_a_typed_404(api) -> None:
    _, client = api
    with pytest.raises(SourceHTTPError) as err:
        KubernetesColdStartReader(client).enrich(Signals(observed_at=NOW, pods_reporting=0),
                                                 cfg(deploymentName="mistral"), NOW)
    assert err.value.status == 404 and "mistral" in str(err.value)


def test_missing_rbac_is_a_typed_403() -> None:
    with ApiServer() as server:
        conf = k8s.Configuration()
        conf.host = server.url
        with k8s.ApiClient(conf) as client:
            with pytest.raises(SourceHTTPError) as err:
                KubernetesColdStartReader(client).enrich(
                    Signals(observed_at=NOW, pods_reporting=0),
                    parse_metadata({"policy": "predictive"}, scaled_object="llama", namespace="locked"), NOW)
    assert err.value.status == 403 and "forbidden" in str(err.value)


def test_api_server_down_is_a_connection_error() -> None:
    with ApiServer() as server:
        url = server.url
    conf = k8s.Configuration()
    conf.host = url
    conf.retries = 0
    with k8s.ApiClient(conf) as client:
        with pytest.raises(SourceConnectionError):
            KubernetesColdStartReader(client, timeout=2).enrich(Signals(observed_at=NOW, pods_reporting=0), cfg(), NOW)


@pytest.mark.parametrize(
    "selector, query",
    [
        pytest.param({"matchLabels": {"app": "llama", "tier": "serve"}}, "app=llama,tier=serve", id="labels"),
        pytest.param({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["b", "a"]}]},
                     "tier notin (a,b)", id="not-in"),
        pytest.param({"matchLabels": {"app": "x"}, "matchExpressions": [{"key": "gpu", "operator": "Exists"},
                                                                        {"key": "spot", "operator": "DoesNotExist"}]},
                     "app=x,gpu,!spot", id="exists"),
    ],
)
def test_label_selector(selector, query) -> None:
    # Deserialised by the official client, as a Deployment's spec.selector is.
    api = k8s.ApiClient()
    obj = api._ApiClient__deserialize(selector, "V1LabelSelector")
    assert label_selector(obj) == query


def test_empty_selector_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        label_selector(k8s.V1LabelSelector())
