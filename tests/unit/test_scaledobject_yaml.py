"""scaled_object_from_yaml: KEDA's field names and defaults, and errors naming the field path and value."""

from pathlib import Path

import pytest
import yaml

from simulations.keda import (
    Fallback,
    ScaledObjectSpec,
    ScalingPolicy,
    load_scaled_object,
    scaled_object_from_yaml,
    triggers_from_yaml,
)
from simulations.keda.manifest import ManifestError
from simulations.keda.spec import default_scale_down, default_scale_up

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: llama}
spec:
  scaleTargetRef: {name: llama}
  triggers:
    - type: external
      metadata: {scalerAddress: "scaler:6000"}
"""

FULL = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: llama}
spec:
  scaleTargetRef: {name: llama}
  pollingInterval: 15
  cooldownPeriod: 600
  initialCooldownPeriod: 120
  minReplicaCount: 2
  idleReplicaCount: 0
  maxReplicaCount: 10
  fallback: {failureThreshold: 3, replicas: 2, behavior: currentReplicasIfHigher}
  advanced:
    restoreToOriginalReplicaCount: false
    horizontalPodAutoscalerConfig:
      name: llama-hpa
      behavior:
        scaleUp:
          stabilizationWindowSeconds: 30
          policies: [{type: Pods, value: 1, periodSeconds: 60}]
          tolerance: "0.05"
        scaleDown:
          selectPolicy: Min
          policies:
            - {type: Pods, value: 1, periodSeconds: 120}
            - {type: Percent, value: 10, periodSeconds: 60}
  triggers:
    - type: external-push
      metricType: Value
      useCachedMetrics: true
      metadata: {scalerAddress: "scaler:6000", policy: predictive}
"""


def test_defaults_are_kedas_and_kubernetes() -> None:
    so = scaled_object_from_yaml(yaml.safe_load(MINIMAL))
    assert so == ScaledObjectSpec()
    assert (so.polling_interval, so.cooldown_period, so.min_replica_count, so.max_replica_count) == (30, 300, 0, 100)
    assert so.behavior.scale_up == default_scale_up() and so.behavior.scale_down == default_scale_down()
    assert so.hpa_min_replicas == 1 and so.push is False and so.fallback is None


def test_full_manifest_with_per_field_behavior_defaults() -> None:
    so = scaled_object_from_yaml(FULL)   # YAML text is accepted too
    assert (so.polling_interval, so.cooldown_period, so.initial_cooldown_period) == (15, 600, 120)
    assert (so.min_replica_count, so.idle_replica_count, so.max_replica_count) == (2, 0, 10)
    assert so.fallback == Fallback(3, 2, "currentReplicasIfHigher")
    up, down = so.behavior.scale_up, so.behavior.scale_down
    assert (up.stabilization_window_seconds, up.policies, up.select_policy, up.tolerance) == \
        (30, (ScalingPolicy("Pods", 1, 60),), "Max", 0.05)
    # scaleDown gives policies and selectPolicy only: the window keeps its default 300, tolerance 0.1
    assert (down.stabilization_window_seconds, down.select_policy, down.tolerance) == (300, "Min", 0.1)
    assert down.policies == (ScalingPolicy("Pods", 1, 120), ScalingPolicy("Percent", 10, 60))
    assert so.push is True
    (trig,) = triggers_from_yaml(FULL)
    assert (trig.type, trig.metric_type, trig.use_cached_metrics, trig.metadata["policy"]) == \
        ("external-push", "Value", True, "predictive")


def test_tolerance_as_milli_quantity() -> None:
    doc = yaml.safe_load(MINIMAL)
    doc["spec"]["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"tolerance": "50m"}}}}
    assert scaled_object_from_yaml(doc).behavior.scale_down.tolerance == pytest.approx(0.05)


def with_spec(**fields):
    doc = yaml.safe_load(MINIMAL)
    doc["spec"].update(fields)
    return doc


@pytest.mark.parametrize(
    "doc, message",
    [
        pytest.param(with_spec(pollingIntervall=15), "spec.pollingIntervall=15: unknown field", id="typo-unknown"),
        pytest.param(with_spec(pollingInterval="15"), "spec.pollingInterval='15': must be an integer",
                     id="string-int"),
        pytest.param(with_spec(pollingInterval=0), "spec.pollingInterval=0: must be in [1, inf]", id="zero-poll"),
        pytest.param(with_spec(minReplicaCount=5, maxReplicaCount=3),
                     "spec.minReplicaCount=5: must be <= spec.maxReplicaCount (3)", id="min-over-max"),
        pytest.param(with_spec(minReplicaCount=1, idleReplicaCount=1),
                     "spec.idleReplicaCount=1: must be < spec.minReplicaCount (1)", id="idle-not-below-min"),
        pytest.param(with_spec(fallback={"replicas": 2}), "spec.fallback.failureThreshold=None: required",
                     id="fallback-missing-threshold"),
        pytest.param(with_spec(fallback={"failureThreshold": 3, "replicas": 2, "behavior": "sticky"}),
                     "spec.fallback.behavior='sticky': must be one of", id="fallback-bad-behavior"),
        pytest.param(with_spec(advanced={"scalingModifiers": {"formula": "a+b"}}),
                     "spec.advanced.scalingModifiers=", id="scaling-modifiers-not-modelled"),
        pytest.param(with_spec(advanced={"horizontalPodAutoscalerConfig": {"behavior": {"scaleUp": {
            "policies": [{"type": "Pod", "value": 1, "periodSeconds": 15}]}}}}),
            "spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleUp.policies[0].type='Pod'",
            id="bad-policy-type"),
        pytest.param(with_spec(advanced={"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {
            "stabilizationWindowSeconds": 4000}}}}),
            "behavior.scaleDown.stabilizationWindowSeconds=4000: must be in [0, 3600]", id="window-too-long"),
        pytest.param(with_spec(advanced={"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 2000}]}}}}),
            "policies[0].periodSeconds=2000: must be in [1, 1800]", id="period-too-long"),
        pytest.param(with_spec(triggers=[{"type": "kafka", "metadata": {}}]),
                     "spec.triggers[0].type='kafka': not modelled", id="unsupported-trigger"),
        pytest.param(with_spec(triggers=[{"type": "external", "metadata": {"scalerAddress": "a:1"},
                                          "metricType": "Utilization"}]),
                     "spec.triggers[0].metricType='Utilization'", id="bad-metric-type"),
        pytest.param(with_spec(triggers=[{"type": "external", "metadata": {}}]),
                     "spec.triggers[0].metadata.scalerAddress=None: required", id="external-needs-address"),
        pytest.param(with_spec(triggers=[{"type": "external", "metadata": {"scalerAddress": "a:1", "n": 5}}]),
                     "spec.triggers[0].metadata.n=5: must be a string", id="metadata-not-string"),
        pytest.param(with_spec(triggers=[{"type": "prometheus", "metadata": {"serverAddress": "http://p",
                                                                              "query": "q", "threshold": "x"}}]),
                     "spec.triggers[0].metadata.threshold='x': must be a number", id="prometheus-threshold"),
        pytest.param(with_spec(triggers=[]), "spec.triggers=[]: at least one trigger", id="no-triggers"),
        pytest.param({"apiVersion": "keda.sh/v1", "kind": "ScaledObject", "spec": {}},
                     "apiVersion='keda.sh/v1'", id="api-version"),
        pytest.param("- just\n- a list\n", "<document>=", id="not-a-mapping"),
        pytest.param(with_spec(scaleTargetRef={"kind": "Deployment"}), "spec.scaleTargetRef.name=None: required",
                     id="scale-target-needs-a-name"),
    ],
)
def test_invalid_fields_are_named(doc, message) -> None:
    with pytest.raises(ManifestError) as err:
        scaled_object_from_yaml(doc)
    assert message in str(err.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ManifestError) as err:
        scaled_object_from_yaml(with_spec(pollingInterval=-1, cooldownPeriod="5m", bogus=1))
    assert [p.split("=")[0] for p in err.value.problems] == \
        ["spec.bogus", "spec.pollingInterval", "spec.cooldownPeriod"]


def test_prometheus_trigger_seeds_scaledobject() -> None:
    doc = with_spec(pollingInterval=15, minReplicaCount=1, triggers=[{
        "type": "prometheus",
        "metadata": {"serverAddress": "http://prometheus:9090", "query": "avg(vllm:num_requests_waiting)",
                     "threshold": "5", "activationThreshold": "2"}}])
    (trig,) = triggers_from_yaml(doc)
    assert (trig.type, float(trig.metadata["threshold"]), float(trig.metadata["activationThreshold"])) == \
        ("prometheus", 5.0, 2.0)
    assert scaled_object_from_yaml(doc).push is False


EXAMPLES = sorted((REPO / "deploy" / "examples").glob("*/scaledobject*.yaml"))


@pytest.mark.skipif(not EXAMPLES, reason="no deploy/examples/*/scaledobject*.yaml in this checkout")
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_repository_examples_parse(path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "ScaledObject"]
    assert docs, f"{path}: no ScaledObject"
    for d in docs:
        so = scaled_object_from_yaml(d)
        types = {t.type for t in triggers_from_yaml(d)}
        assert so.push == ("external-push" in types)
        assert so.max_replica_count >= max(so.min_replica_count, 1)


def test_load_scaled_object_reads_the_scaled_object_document_of_a_file(tmp_path) -> None:
    """The one file reader (simulate/sweep --scaled-object, replay --scaled-object, the demo)."""
    path = tmp_path / "so.yaml"
    path.write_text("kind: TriggerAuthentication\nmetadata: {name: tls}\n---\n" + FULL)
    so = load_scaled_object(path)
    assert so.name == "llama" and so.spec == scaled_object_from_yaml(FULL)
    assert so.triggers == triggers_from_yaml(FULL)
    path.write_text(MINIMAL.replace("kind: ScaledObject\n", ""))     # one document without a kind: taken
    assert load_scaled_object(path).spec == scaled_object_from_yaml(MINIMAL)
    path.write_text(MINIMAL.replace("scaler:6000", "scaler:6000\", maxReplicas: 8, x: \"1"))
    with pytest.raises(ManifestError, match=f"^{path}: invalid ScaledObject: "
                                            r"spec.triggers\[0\].metadata.maxReplicas=8: must be a string"):
        load_scaled_object(path)
    with pytest.raises(ValueError, match=f"^{tmp_path / 'none.yaml'}: cannot read"):
        load_scaled_object(tmp_path / "none.yaml")


def test_simulate_names_the_scaled_object_file_it_cannot_use(tmp_path, capsys) -> None:
    from scaler.cli import main

    path = tmp_path / "so.yaml"
    path.write_text(MINIMAL.replace("scalerAddress", "scalerAdress"))
    assert main(["simulate", "--scaled-object", str(path)]) == 2
    assert f"{path}: invalid ScaledObject: spec.triggers[0].metadata.scalerAddress" in capsys.readouterr().err
