"""The manifests under deploy/: they render, they validate, and they say what docs/deploy.md says they say.

- every kustomization renders with the real kustomize (``kubectl kustomize``), offline;
- every rendered built-in object validates against Kubernetes' JSON schema of a pinned version
  (:data:`K8S_VERSION`, strict: unknown fields fail) with ``kubernetes-validate``, which bundles the schemas;
- every custom resource (KEDA, cert-manager, Prometheus Operator) validates against the field trees of
  ``crd_fields.yaml`` (sources cited there), through ``crd_schema.py``;
- the example ScaledObjects' trigger metadata parses with the scaler's own parser and yields the documented
  defaults of ``scaler.config.KEYS``;
- the scaler's Deployment has the security posture, probes, RBAC and wiring the docs promise.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import crd_schema
import pytest
from deploy_render import DEPLOY, NO_RENDERER, REPO, components, find, kustomizations, render, renderer

from scaler.config import KEYS, ServerDefaults, parse_metadata

# Kubernetes minor version the manifests are validated against (kubernetes-validate ships 1.25 ... 1.37).
# 1.32: the oldest minor still in upstream support when this was written, and kubectl's here.
K8S_VERSION = "1.32"

pytestmark = pytest.mark.skipif(renderer() is None, reason=NO_RENDERER)

KUSTOMIZATIONS = kustomizations()
IDS = [str(p.relative_to(DEPLOY)) for p in KUSTOMIZATIONS]


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {str(p.relative_to(DEPLOY)): render(p) for p in KUSTOMIZATIONS}


def test_the_expected_kustomizations_exist() -> None:
    # A deleted or renamed directory must be a deliberate change of this list and of docs/deploy.md.
    assert set(IDS) == {
        "base", "rbac/namespaced", "rbac/cluster",
        "overlays/tls-cert-manager", "overlays/tls-secret", "overlays/prometheus-bearer-token",
        "examples/vllm", "examples/scaledobject-external", "examples/scaledobject-external-push",
        "monitoring",
    }
    assert [str(p.relative_to(DEPLOY)) for p in components()] == ["components/tls"]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=IDS)
def test_every_kustomization_renders(directory: Path) -> None:
    objects = render(directory)
    assert objects, f"{rel(directory)} renders to nothing"
    for obj in objects:
        assert obj.get("apiVersion") and obj.get("kind") and obj.get("metadata", {}).get("name"), obj


# ---------------------------------------------------------------------------------------------- schemas
BUILTIN_GROUPS = ("v1", "apps/v1", "policy/v1", "rbac.authorization.k8s.io/v1", "autoscaling/v2")


def _kubernetes_validate():
    return pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate (bundled Kubernetes JSON schemas) is not installed: "
               "pip install 'kubernetes-validate==1.37.0'")


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=IDS)
def test_builtin_objects_validate_against_kubernetes_schema(directory: Path) -> None:
    kv = _kubernetes_validate()
    checked = 0
    for obj in render(directory):
        if obj["apiVersion"] not in BUILTIN_GROUPS:
            continue
        try:
            kv.validate(obj, K8S_VERSION, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{rel(directory)}: {obj['kind']}/{obj['metadata']['name']} at {path}: {exc.message}")
        checked += 1
    custom = [o for o in render(directory) if o["apiVersion"] not in BUILTIN_GROUPS]
    assert checked + len(custom) == len(render(directory))


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=IDS)
def test_custom_resources_validate_against_crd_fields(directory: Path) -> None:
    kinds = crd_schema.load_kinds()
    for obj in render(directory):
        if obj["apiVersion"] in BUILTIN_GROUPS:
            continue
        key = crd_schema.kind_key(obj)
        assert key in kinds, f"{rel(directory)}: no field tree for {key} in tests/deploy/crd_fields.yaml"
        problems = crd_schema.validate(obj, kinds)
        assert not problems, f"{rel(directory)} {obj['kind']}/{obj['metadata']['name']}:\n" + "\n".join(problems)


def test_kubernetes_schema_check_rejects_a_misspelt_field() -> None:
    kv = _kubernetes_validate()
    deployment = copy.deepcopy(find(render(DEPLOY / "base"), "Deployment", "vllm-scaler"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True  # capital S: wrong
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize(("mutate", "expected"), [
    pytest.param(lambda so: so["spec"].__setitem__("cooldownPeriods", 300), "spec.cooldownPeriods: unknown field",
                 id="unknown-field"),
    pytest.param(lambda so: so["spec"]["scaleTargetRef"].pop("name"), "spec.scaleTargetRef.name: required",
                 id="missing-required"),
    pytest.param(lambda so: so["spec"]["triggers"][0]["metadata"].__setitem__("maxReplicas", 10),
                 "spec.triggers[0].metadata: expected map", id="unquoted-metadata-number"),
    pytest.param(lambda so: so["spec"].__setitem__("pollingInterval", "15"), "spec.pollingInterval: expected integer",
                 id="wrong-type"),
    pytest.param(lambda so: so["spec"]["triggers"][0].__setitem__("metricType", "Average"),
                 "spec.triggers[0].metricType: 'Average' is not one of", id="bad-enum"),
    pytest.param(lambda so: so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
                 ["policies"][0].__setitem__("tolerance", "0.05"),
                 "policies[0].tolerance: unknown field", id="tolerance-on-a-policy"),
])
def test_crd_schema_rejects(mutate, expected: str) -> None:
    kinds = crd_schema.load_kinds()
    so = copy.deepcopy(find(render(DEPLOY / "examples/scaledobject-external"), "ScaledObject"))
    assert crd_schema.validate(so, kinds) == []
    mutate(so)
    problems = crd_schema.validate(so, kinds)
    assert any(expected in p for p in problems), problems


def test_crd_schema_accepts_the_documented_tolerance_field() -> None:
    kinds = crd_schema.load_kinds()
    so = copy.deepcopy(find(render(DEPLOY / "examples/scaledobject-external"), "ScaledObject"))
    so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleUp"]["tolerance"] = "0.01"
    assert crd_schema.validate(so, kinds) == []


# ------------------------------------------------------------------------ example ScaledObjects' metadata
SCALED_OBJECT_EXAMPLES = ["examples/scaledobject-external", "examples/scaledobject-external-push"]
# Keys an example sets on purpose to something other than the KEYS default, with the reason.
SITE_SPECIFIC = {"deploymentName": "llama-3-8b", "modelName": "llama-3-8b"}   # the example vLLM Deployment
OVERRIDES = {
    "examples/scaledobject-external": {"policy": "reactive"},   # shows the reactive policy (default: predictive)
    "examples/scaledobject-external-push": {"policy": "predictive"},   # shows the predictive policy's keys
}


def _trigger(directory: str) -> tuple[dict[str, Any], dict[str, Any]]:
    so = find(render(DEPLOY / directory), "ScaledObject")
    (trigger,) = so["spec"]["triggers"]
    return so, trigger


@pytest.mark.parametrize("directory", SCALED_OBJECT_EXAMPLES)
def test_example_metadata_parses_to_the_documented_defaults(directory: str) -> None:
    so, trigger = _trigger(directory)
    metadata = trigger["metadata"]
    server = ServerDefaults()
    cfg = parse_metadata(metadata, scaled_object=so["metadata"]["name"], namespace=so["metadata"]["namespace"],
                         defaults=server)
    overrides = {**SITE_SPECIFIC, **OVERRIDES[directory]}
    for key in KEYS:
        got = getattr(cfg, key.attr)
        if key.name in overrides:
            assert metadata[key.name] == overrides[key.name], key.name
            continue
        if key.default is not None:
            assert got == key.default, f"{directory}: {key.name}={metadata.get(key.name)!r} parses to {got!r}, " \
                                       f"but the documented default is {key.default!r}"
        elif key.name == "prometheusAddress":
            assert got == server.prometheus_url, "prometheusAddress must be left to the server's default"
        elif key.name == "namespace":
            assert got == so["metadata"]["namespace"], "namespace must be left to the ScaledObject's own"
        else:
            assert got is None, f"{key.name} has no default and the example should leave it unset"
    # Nothing the example spells out is ignored: every key is a scaler key or one KEDA reads itself.
    assert {k for k, _ in cfg.keda_keys} == {"scalerAddress"}
    assert set(metadata) - {"scalerAddress"} <= {k.name for k in KEYS}


@pytest.mark.parametrize("directory", SCALED_OBJECT_EXAMPLES)
def test_example_scaled_object_matches_what_the_docs_promise(directory: str) -> None:
    so, trigger = _trigger(directory)
    spec = so["spec"]
    assert trigger["metricType"] == "AverageValue"            # N against a target of 1; fallback requires it
    assert spec["minReplicaCount"] == 0 and spec["cooldownPeriod"] > 0       # scale to zero, after a cooldown
    assert spec["maxReplicaCount"] == int(trigger["metadata"]["maxReplicas"])
    assert spec["fallback"]["failureThreshold"] >= 1 and spec["fallback"]["replicas"] >= 1
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["policies"] and behavior["scaleDown"]["policies"]
    text = (DEPLOY / directory / "scaledobject.yaml").read_text()
    assert "10 %" in text and "HPAConfigurableTolerance" in text and "tolerance" in text
    # The scaler address is the headless Service of deploy/base, on its gRPC port.
    base = render(DEPLOY / "base")
    service = find(base, "Service", "vllm-scaler")
    host, port = trigger["metadata"]["scalerAddress"].rsplit(":", 1)
    assert host == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    assert int(port) in {p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"}
    # ... and it targets the example vLLM Deployment in its own namespace.
    vllm = find(render(DEPLOY / "examples/vllm"), "Deployment")
    assert spec["scaleTargetRef"]["name"] == vllm["metadata"]["name"]
    assert so["metadata"]["namespace"] == vllm["metadata"]["namespace"]


def test_push_example_uses_mutual_tls_from_the_cert_manager_overlay() -> None:
    objects = render(DEPLOY / "examples/scaledobject-external-push")
    so, auth = find(objects, "ScaledObject"), find(objects, "TriggerAuthentication")
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "external-push"
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert set(refs) == {"caCert", "tlsClientCert", "tlsClientKey"}
    client = find(render(DEPLOY / "overlays/tls-cert-manager"), "Certificate", "vllm-scaler-keda-client")
    assert {name for name, _ in refs.values()} == {client["spec"]["secretName"]}
    assert client["metadata"]["namespace"] == auth["metadata"]["namespace"]
    assert "client auth" in client["spec"]["usages"]


def test_external_example_is_read_by_the_keda_emulator() -> None:
    if importlib.util.find_spec("simulations.keda") is None:
        pytest.skip("simulations.keda (the KEDA + HPA emulator) is not in this tree yet")
    from simulations.keda import scaled_object_from_yaml

    so, _ = _trigger("examples/scaledobject-external")
    spec = scaled_object_from_yaml(so)
    assert (spec.min_replica_count, spec.max_replica_count) == (0, 10)
    assert spec.polling_interval == 15 and spec.cooldown_period == 600
    assert spec.fallback is not None and (spec.fallback.failure_threshold, spec.fallback.replicas) == (3, 2)
    assert spec.behavior.scale_down.stabilization_window_seconds == 300


# ------------------------------------------------------------------------------------- the scaler's pods
def _scaler(directory: str = "base") -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    objects = render(DEPLOY / directory)
    deployment = find(objects, "Deployment", "vllm-scaler")
    return objects, deployment, deployment["spec"]["template"]["spec"]["containers"][0]


def test_scaler_deployment_is_hardened_and_probed() -> None:
    objects, deployment, container = _scaler()
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == grpc_port, probe
    assert container["args"] == ["serve"]
    # Settings come from the one generated ConfigMap.
    config = find(objects, "ConfigMap", "vllm-scaler-config")
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    assert all(k.startswith("VLLM_SCALER_") for k in config["data"])
    metrics_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    assert int(config["data"]["VLLM_SCALER_GRPC_PORT"]) == grpc_port
    assert int(config["data"]["VLLM_SCALER_METRICS_PORT"]) == metrics_port


def test_headless_service_and_pdb_select_the_scaler_pods() -> None:
    objects, deployment, container = _scaler()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = find(objects, "Service", "vllm-scaler")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= labels.items()
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in named
        assert port["port"] == named[port["targetPort"]]
    pdb = find(objects, "PodDisruptionBudget", "vllm-scaler")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] == 1 < deployment["spec"]["replicas"]


@pytest.mark.parametrize("directory", ["rbac/namespaced", "rbac/cluster"])
def test_rbac_is_least_privilege_and_binds_the_scaler_account(directory: str) -> None:
    objects = render(DEPLOY / directory)
    role = next(o for o in objects if o["kind"] in ("Role", "ClusterRole"))
    binding = next(o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding"))
    rules = {(g, r, tuple(rule["verbs"])) for rule in role["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert rules == {("", "pods", ("get", "list", "watch")), ("apps", "deployments", ("get",))}
    sa = find(render(DEPLOY / "base"), "ServiceAccount", "vllm-scaler")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": sa["metadata"]["namespace"]}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role["kind"],
                                  "name": role["metadata"]["name"]}
    if directory == "rbac/namespaced":
        vllm = find(render(DEPLOY / "examples/vllm"), "Deployment")
        assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == vllm["metadata"]["namespace"]


@pytest.mark.parametrize("directory", ["overlays/tls-cert-manager", "overlays/tls-secret"])
def test_tls_overlays_mount_the_certificate_and_probe_in_plaintext(directory: str) -> None:
    objects, deployment, container = _scaler(directory)
    config = find(objects, "ConfigMap", "vllm-scaler-config")["data"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
    assert mount["readOnly"] is True and volume["secret"]["secretName"] == "vllm-scaler-tls"
    for key in ("VLLM_SCALER_TLS_CERT", "VLLM_SCALER_TLS_KEY", "VLLM_SCALER_TLS_CLIENT_CA"):
        assert config[key].startswith(mount["mountPath"] + "/"), key
    health = int(config["VLLM_SCALER_HEALTH_PORT"])
    assert health in {p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == health, probe
    if directory == "overlays/tls-cert-manager":
        server = find(objects, "Certificate", "vllm-scaler-server")
        assert server["spec"]["secretName"] == "vllm-scaler-tls"
        assert "vllm-scaler.vllm-scaler.svc.cluster.local" in server["spec"]["dnsNames"]


def test_bearer_token_overlay_mounts_the_token_file() -> None:
    objects, deployment, container = _scaler("overlays/prometheus-bearer-token")
    config = find(objects, "ConfigMap", "vllm-scaler-config")["data"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "prometheus-token")
    assert config["VLLM_SCALER_PROMETHEUS_BEARER_TOKEN_FILE"].startswith(mount["mountPath"] + "/")
    assert config["VLLM_SCALER_PROMETHEUS_URL"].startswith("https://")


# ----------------------------------------------------------------------------------- the vLLM example
def test_vllm_example_carries_the_lessons() -> None:
    objects = render(DEPLOY / "examples/vllm")
    deployment = find(objects, "Deployment")
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "replicas" not in spec, "KEDA owns the replica count; re-applying must not reset it"
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert 120 <= pod["terminationGracePeriodSeconds"] <= 180
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health", probe
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    pvc = find(objects, "PersistentVolumeClaim")
    assert any(v.get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"]
               for v in volumes.values())
    service, monitor = find(objects, "Service"), find(objects, "PodMonitor")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port_names = {p["name"] for p in container["ports"]}
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= port_names


# ------------------------------------------------------------------ ConfigMap <-> `vllm-scaler serve` settings
OVERLAY_ONLY = {  # settings that only an overlay sets, and which one
    "VLLM_SCALER_TLS_CERT": "overlays/tls-secret", "VLLM_SCALER_TLS_KEY": "overlays/tls-secret",
    "VLLM_SCALER_TLS_CLIENT_CA": "overlays/tls-secret", "VLLM_SCALER_HEALTH_PORT": "overlays/tls-secret",
    "VLLM_SCALER_PROMETHEUS_BEARER_TOKEN_FILE": "overlays/prometheus-bearer-token",
    "VLLM_SCALER_PROMETHEUS_CA_FILE": "overlays/prometheus-bearer-token",
}
SCALER_DIRS = ["base", "overlays/tls-cert-manager", "overlays/tls-secret", "overlays/prometheus-bearer-token"]


def _server_settings():
    if importlib.util.find_spec("scaler.server.cli") is None:
        pytest.skip("scaler.server.cli (`vllm-scaler serve`) is not in this tree yet")
    from scaler.server import cli

    return cli


def test_every_server_setting_is_in_the_configmap_or_an_overlay() -> None:
    cli = _server_settings()
    envs = {s.env for s in cli.SETTINGS}
    base = find(render(DEPLOY / "base"), "ConfigMap", "vllm-scaler-config")["data"]
    assert set(base) | set(OVERLAY_ONLY) == envs, "ConfigMap keys and `vllm-scaler serve` settings differ"
    assert not set(base) & set(OVERLAY_ONLY)
    for env, directory in OVERLAY_ONLY.items():
        assert env in find(render(DEPLOY / directory), "ConfigMap", "vllm-scaler-config")["data"], (env, directory)


@pytest.mark.parametrize("directory", SCALER_DIRS)
def test_configmap_values_parse_with_the_server_parser(directory: str) -> None:
    import argparse

    cli = _server_settings()
    objects, deployment, container = _scaler(directory)
    data = find(objects, "ConfigMap", "vllm-scaler-config")["data"]
    unset = argparse.Namespace(**{s.dest: None for s in cli.SETTINGS})
    values = cli.resolve(unset, environ=data)      # raises ValueError naming the variable and the value
    assert values["grpc_port"] == next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    assert values["metrics_port"] == next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert values["grace_period"] < grace, "the server's shutdown grace must end before the kubelet's SIGKILL"
    if values["health_port"] is not None:
        assert values["health_port"] in {p["containerPort"] for p in container["ports"]}


def test_probes_ask_for_services_the_server_reports() -> None:
    if importlib.util.find_spec("scaler.server.servicer") is None:
        pytest.skip("scaler.server.servicer is not in this tree yet")
    from scaler.server.servicer import SERVICE_NAME

    for directory in SCALER_DIRS:
        _, _, container = _scaler(directory)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["grpc"].get("service", "") in ("", SERVICE_NAME), (directory, probe)


# --------------------------------------------------------------- tests/e2e/manifests (kind; never run here)
E2E = REPO / "tests" / "e2e" / "manifests"


def test_e2e_manifests_render_and_validate() -> None:
    kv = _kubernetes_validate()
    kinds = crd_schema.load_kinds()
    objects = render(E2E)
    for obj in objects:
        if obj["apiVersion"] in BUILTIN_GROUPS:
            kv.validate(obj, K8S_VERSION, strict=True)
        else:
            assert crd_schema.validate(obj, kinds) == [], obj["metadata"]["name"]
    images = {c["image"] for o in objects if o["kind"] == "Deployment"
              for c in o["spec"]["template"]["spec"]["containers"]}
    assert "vllm-scaler:e2e" in images and not any(i.startswith("ghcr.io/example") for i in images)


def test_e2e_scaled_object_parses_with_the_server_settings_it_runs_with() -> None:
    objects = render(E2E)
    so = find(objects, "ScaledObject")
    config = find(objects, "ConfigMap", "vllm-scaler-config")["data"]
    allow = config["VLLM_SCALER_ALLOW_ACTIVATION_QUERY"] == "true"
    (trigger,) = so["spec"]["triggers"]
    cfg = parse_metadata(trigger["metadata"], scaled_object=so["metadata"]["name"],
                         namespace=so["metadata"]["namespace"],
                         defaults=ServerDefaults(prometheus_url=config["VLLM_SCALER_PROMETHEUS_URL"],
                                                 allow_activation_query=allow))
    assert cfg.activation_query and cfg.max_replicas == so["spec"]["maxReplicaCount"]
    sim = find(objects, "Deployment", "llama-3-8b")
    assert sim["spec"]["replicas"] == 0 and so["spec"]["minReplicaCount"] == 0


def test_docs_describe_every_kustomization() -> None:
    docs = (REPO / "docs" / "deploy.md").read_text()
    for directory in IDS + [str(p.relative_to(DEPLOY)) for p in components()]:
        assert f"deploy/{directory}" in docs, f"docs/deploy.md does not mention deploy/{directory}"


def test_docs_list_every_server_setting() -> None:
    cli = _server_settings()
    docs = (REPO / "docs" / "deploy.md").read_text()
    missing = [s.env for s in cli.SETTINGS if f"`{s.env}`" not in docs]
    assert not missing, f"docs/deploy.md's settings table lacks {missing}"
