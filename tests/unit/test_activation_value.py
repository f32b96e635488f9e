"""activationQuery results -> Signals.upstream_demand (scaler.sources.prometheus.activation_value, with_upstream).

Results are shaped as Prometheus' ``data.result`` (what prometheus-api-client's ``custom_query`` returns).
"""

from __future__ import annotations

import math

import pytest

from scaler.errors import ActivationQueryError, NoDataError, SourceError
from scaler.signals import Signals
from scaler.sources.prometheus import activation_value, with_upstream

NOW = 1_700_000_000.0


def _series(value, **labels):
    return {"metric": labels, "value": [NOW, value]}


def test_scalar_and_one_series_give_their_value():
    assert activation_value([NOW, "7"]) == 7.0
    assert activation_value([_series("3.5", deployment="llama")]) == 3.5
    assert activation_value([_series("+Inf")]) == math.inf


def test_empty_vector_means_no_demand_series_is_zero():
    # e.g. sum(gateway_queue{...}) while the gateway exports no queue series: nothing is waiting
    assert activation_value([]) == 0.0


def test_nan_is_unknown_not_zero():
    # what `sum(q) or vector(NaN)` gives when q is absent: the user asked for "absent means unknown"
    assert activation_value([_series("NaN")]) is None
    assert activation_value([NOW, "NaN"]) is None


def test_several_series_is_an_error_naming_the_count():
    rows = [_series("1", __name__="gw_queue", gateway=g) for g in "abcd"]
    with pytest.raises(ValueError, match=r"returns 4 series \(gw_queue\{gateway=\"a\"\}.*sum\(\.\.\.\)"):
        activation_value(rows)


@pytest.mark.parametrize("result, message", [
    ([{"metric": {}, "values": [[NOW, "1"]]}], "range vector"),
    ([_series("-1")], "must be >= 0"),
    ([NOW, "queue"], "not a number"),
    ({"unexpected": 1}, "not a scalar or an instant vector"),
])
def test_other_shapes_are_errors(result, message):
    with pytest.raises(ValueError, match=message):
        activation_value(result)


def test_with_upstream_sets_the_value_or_carries_the_error_with_the_vllm_snapshot():
    sig = Signals(observed_at=NOW, pods_reporting=2, waiting=1.0, running=3.0)
    assert with_upstream(sig, 4.0).upstream_demand == 4.0
    assert with_upstream(sig, None).upstream_demand is None
    at_zero = Signals(observed_at=NOW, pods_reporting=0)
    assert with_upstream(at_zero, 0.0).upstream_demand == 0.0
    err = ActivationQueryError("sum(q{", "Prometheus rejected it: bad_data: parse error")
    out = with_upstream(sig, err)
    assert isinstance(out, ActivationQueryError) and isinstance(out, SourceError)
    assert out.kind == "activation_query" and out.signals is sig
    assert "activationQuery='sum(q{'" in str(out) and "bad_data" in str(out)
    # a target whose vLLM part failed keeps that failure (its own kind), the activation value is not lost on
    # a snapshot that does not exist
    nodata = NoDataError("no series", source="prometheus")
    assert with_upstream(nodata, 3.0) is nodata
    assert with_upstream(nodata, err).signals is None


def test_prometheus_error_reads_the_json_body_prometheus_api_client_puts_in_its_message():
    from prometheus_api_client import PrometheusApiClientException

    from scaler.errors import SourceHTTPError
    from scaler.sources.prometheus import prometheus_error

    body = b'{"status":"error","errorType":"bad_data","error":"invalid parameter \\"query\\": 1:5: parse error"}'
    exc = SourceHTTPError("x", status=400, source="prometheus")
    exc.__cause__ = PrometheusApiClientException(f"HTTP Status Code 400 ({body!r})")
    assert prometheus_error(exc) == 'bad_data: invalid parameter "query": 1:5: parse error'
    exc.__cause__ = PrometheusApiClientException("HTTP Status Code 400 (b'not json')")
    assert prometheus_error(exc) == str(exc)      # shown as it is, never lost
