"""The committed stubs are exactly what grpcio-tools generates from proto/externalscaler.proto."""

from pathlib import Path

from scaler._proto import externalscaler_pb2 as pb
from scaler._proto.generate import GENERATED, OUT_DIR, generate


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    for path in fresh:
        committed = OUT_DIR / path.name
        assert committed.read_text() == path.read_text(), (
            f"{committed} is out of date: run `python -m scaler._proto.generate`")
    assert sorted(p.name for p in fresh) == sorted(GENERATED)


def test_wire_field_numbers_match_keda() -> None:
    # Field numbers from KEDA's externalscaler.proto; a renumbering would break the wire format.
    expected = {
        "ScaledObjectRef": {"name": 1, "namespace": 2, "scalerMetadata": 3},
        "IsActiveResponse": {"result": 1},
        "GetMetricSpecResponse": {"metricSpecs": 1},
        "MetricSpec": {"metricName": 1, "targetSize": 2, "targetSizeFloat": 3},
        "GetMetricsRequest": {"scaledObjectRef": 1, "metricName": 2},
        "GetMetricsResponse": {"metricValues": 1},
        "MetricValue": {"metricName": 1, "metricValue": 2, "metricValueFloat": 3},
    }
    for message, numbers in expected.items():
        desc = pb.DESCRIPTOR.message_types_by_name[message]
        assert {f.name: f.number for f in desc.fields} == numbers, message
    assert pb.DESCRIPTOR.package == "externalscaler"
    service = pb.DESCRIPTOR.services_by_name["ExternalScaler"]
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods == {
        "IsActive": (False, False),
        "StreamIsActive": (False, True),
        "GetMetricSpec": (False, False),
        "GetMetrics": (False, False),
        "StreamMetricSpec": (False, True),
    }
