"""vLLM's Prometheus metric names, labels and histogram buckets: the one place that spells them.

Both sides of the project use this module: :mod:`scaler.sources.prometheus`
reads these series and :mod:`simulations.exposition` writes them for simulated
pods. Nothing else spells a vLLM metric name, so a rename in vLLM is one edit.

Sources: vLLM 0.6.3 ``vllm/engine/metrics.py`` (the V0 engine, "old" names) and
vLLM 0.11.0 ``vllm/v1/metrics/loggers.py`` (the V1 engine, "new" names), as
summarised in ``shared/reference/vllm-metrics.md``.

Each :class:`MetricFamily` lists its candidate names **newest first**: the
source probes which one a namespace exports and uses the first found
(``vllm:kv_cache_usage_perc`` since 0.9.2, ``vllm:gpu_cache_usage_perc``
before; ``vllm:inter_token_latency_seconds`` since 0.11,
``vllm:time_per_output_token_seconds`` before).

Counters are written here by their *sample* name, with the ``_total`` suffix
that the Prometheus client adds (``vllm:request_success_total``); the
OpenMetrics family name is the same without ``_total``.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- labels ---------------------------------------------------------------------------------
#: vLLM's own label on every series (V0 and V1): the served model name.
LABEL_MODEL_NAME = "model_name"
#: V1 adds the engine index (``"0"`` for a single engine per pod).
LABEL_ENGINE = "engine"
#: Completion counter's reason: V1 ``stop``, ``length``, ``abort`` (V0 also ``stop``/``length``).
LABEL_FINISHED_REASON = "finished_reason"
#: Reasons that are not a served completion: left out of the completion rate.
ABORT_REASONS = frozenset({"abort"})
#: Added by Prometheus' Kubernetes service discovery (relabelled), not by vLLM; the scaler
#: matches pods and namespaces with these.
LABEL_NAMESPACE = "namespace"
LABEL_POD = "pod"
#: Prometheus' scrape-health series: 1 when a target was scraped, 0 when the scrape failed.
UP = "up"


@dataclass(frozen=True)
class MetricFamily:
    """One quantity vLLM exports, under its candidate names (newest first).

    ``kind`` is the Prometheus type: ``gauge``, ``counter`` (names carry ``_total``)
    or ``histogram`` (names are the base name; series are ``_bucket``, ``_sum``, ``_count``).
    """

    key: str
    kind: str
    names: tuple[str, ...]
    help: str

    @property
    def new(self) -> str:
        return self.names[0]

    @property
    def old(self) -> str:
        return self.names[-1]


WAITING = MetricFamily("waiting", "gauge", ("vllm:num_requests_waiting",),
                       "Number of requests waiting to be processed.")
RUNNING = MetricFamily("running", "gauge", ("vllm:num_requests_running",),
                       "Number of requests in model execution batches.")
KV_CACHE = MetricFamily("kv_cache", "gauge", ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
                        "KV-cache usage. 1 means 100 percent usage.")
TTFT = MetricFamily("ttft", "histogram", ("vllm:time_to_first_token_seconds",),
                    "Histogram of time to first token in seconds.")
ITL = MetricFamily("itl", "histogram", ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
                   "Histogram of inter-token latency (time per output token) in seconds.")
E2E = MetricFamily("e2e", "histogram", ("vllm:e2e_request_latency_seconds",),
                   "Histogram of end to end request latency in seconds.")
REQUEST_PROMPT_TOKENS = MetricFamily("request_prompt_tokens", "histogram", ("vllm:request_prompt_tokens",),
                                     "Number of prefill tokens processed, per request.")
REQUEST_GENERATION_TOKENS = MetricFamily("request_generation_tokens", "histogram",
                                         ("vllm:request_generation_tokens",),
                                         "Number of generation tokens processed, per request.")
PROMPT_TOKENS = MetricFamily("prompt_tokens", "counter", ("vllm:prompt_tokens_total",),
                             "Number of prefill tokens processed.")
GENERATION_TOKENS = MetricFamily("generation_tokens", "counter", ("vllm:generation_tokens_total",),
                                 "Number of generation tokens processed.")
REQUEST_SUCCESS = MetricFamily("request_success", "counter", ("vllm:request_success_total",),
                               "Count of successfully processed requests, by finished_reason.")

#: Every family, in the order the exposition writes them.
FAMILIES: tuple[MetricFamily, ...] = (
    WAITING, RUNNING, KV_CACHE, TTFT, ITL, E2E, REQUEST_PROMPT_TOKENS, REQUEST_GENERATION_TOKENS,
    PROMPT_TOKENS, GENERATION_TOKENS, REQUEST_SUCCESS,
)
#: Families with more than one candidate name: what the source probes.
PROBED: tuple[MetricFamily, ...] = tuple(f for f in FAMILIES if len(f.names) > 1)

# --- histogram bucket edges (seconds), without +Inf ---------------------------------------------
TTFT_BUCKETS_V0: tuple[float, ...] = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                                      2.5, 5.0, 7.5, 10.0)
TTFT_BUCKETS_V1: tuple[float, ...] = TTFT_BUCKETS_V0 + (20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS_V0: tuple[float, ...] = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
ITL_BUCKETS_V1: tuple[float, ...] = ITL_BUCKETS_V0 + (5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
E2E_BUCKETS_V0: tuple[float, ...] = (1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)
E2E_BUCKETS_V1: tuple[float, ...] = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                                     60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
# Token-count histograms: vLLM builds them with build_1_2_5_buckets(max_model_len); shown here for
# max_model_len = 32768 (1, 2, 5, 10, 20, 50, ... up to the model length).
TOKEN_BUCKETS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
                                    5000.0, 10000.0, 20000.0)

BUCKETS: dict[str, dict[str, tuple[float, ...]]] = {
    "v0": {"ttft": TTFT_BUCKETS_V0, "itl": ITL_BUCKETS_V0, "e2e": E2E_BUCKETS_V0, "tokens": TOKEN_BUCKETS},
    "v1": {"ttft": TTFT_BUCKETS_V1, "itl": ITL_BUCKETS_V1, "e2e": E2E_BUCKETS_V1, "tokens": TOKEN_BUCKETS},
}
NAME_SETS = ("v0", "v1")


def name_for(family: MetricFamily, names: str) -> str:
    """The name a vLLM engine of generation ``names`` (``"v1"`` new, ``"v0"`` old) exports for ``family``."""
    if names not in NAME_SETS:
        raise ValueError(f"names must be one of {NAME_SETS}, got {names!r}")
    return family.new if names == "v1" else family.old
