"""ScaledObject trigger metadata -> a frozen, typed :class:`PolicyConfig`.

KEDA sends the trigger's whole ``metadata`` map with every call
(``ScaledObjectRef.scalerMetadata``). It is parsed once per distinct map (the
server caches by content) into a :class:`PolicyConfig`. Keys are camelCase,
exactly as users type them in YAML. Every problem is collected and reported at
once in a :class:`~scaler.errors.ConfigError`, each naming the key and the bad
value; the gRPC servicer maps it to ``INVALID_ARGUMENT``.

The table :data:`KEYS` is the single source of truth for key names, types,
defaults and documentation: the README's configuration reference and the test
that parses ``deploy/`` examples are both checked against it
(``tests/unit/test_config.py``).

Durations accept plain seconds (``"30"``, ``"2.5"``) or Go-style units
(``"30s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``).

Every value is bounded (``Key.bounds``, shown in the README): a value outside
its bounds is a problem naming the key, the value (cut at 60 characters) and
the bound, e.g. ``coldStart='999999999h': must be <= 4h``. The bounds are what
makes :func:`scaler.policy.decide` total over every accepted config
(``tests/unit/test_policy_property.py``).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError, ConfigProblem
from .redact import redact

# Keys KEDA itself reads from the same metadata map; they reach us too and are
# accepted without effect (``scalerAddress`` is where KEDA found us).
KEDA_OWNED_KEYS = frozenset({"scalerAddress", "enableTLS", "unsafeSsl", "caCert", "tlsClientCert", "tlsClientKey"})

POLICIES = ("reactive", "predictive")

# What identifies the series a config reads (PolicyConfig.target_key): Prometheus address, namespace,
# deployment, model name (None: every model) and policy.
TargetKey = tuple[str, str, str, str | None, str]

# Kubernetes object names (RFC 1123 labels/subdomains).
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# Characters that could end a PromQL label matcher or a string literal.
_PROMQL_UNSAFE = re.compile(r'["\'`\\{}\n\r\t]')
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


class _Invalid(ValueError):
    """Raised by a key parser; the message explains what is wrong with the value."""


def parse_duration(text: str) -> float:
    """Seconds from ``"30"``, ``"2.5"``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``."""
    s = text.strip()
    try:
        value = float(s)
    except ValueError:
        pos, total = 0, 0.0
        if not s:
            raise _Invalid("empty duration") from None
        for m in _DURATION_PART.finditer(s):
            if m.start() != pos:
                break
            num, unit = float(m.group(1)), m.group(2)
            total += num * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
            pos = m.end()
        if pos != len(s):
            raise _Invalid("not a duration (use seconds, or units like 30s, 5m, 1h)") from None
        value = total
    if not math.isfinite(value) or value < 0:
        raise _Invalid("must be a finite, non-negative duration")
    return value


# ---- bounds ---------------------------------------------------------------------------------------------
# Every accepted value has a minimum and a maximum that a real deployment could need; they keep decide()
# total (no division by ~0, no overflow, bounded work per decision: tests/unit/test_policy_property.py) and
# one target's settings from loading the shared source (a refresh every 0.5 s at most, windows PromQL
# can evaluate). The README's configuration reference shows them (the `bounds` column, from Key.bounds).
# Why each (the values are in KEYS):
# - refreshInterval 0.5 s .. 1 h: at most two fetches a second per target (faster re-reads the same scrape at
#   1 s scrape intervals; the bundled compressed-time demo runs at 0.5 s); maxStaleness 1 s .. 24 h.
# - window 2 s .. 24 h: a rate needs two scrapes (2 s at the fastest common 1 s scrape interval); a day is
#   the longest range the forecast reads.
# - scaleToZeroAfter 0 .. 24 h; coldStart 1 s .. 4 h (a large model pulled from cold storage); reactionLag
#   0 .. 1 h (KEDA's poll and the HPA's sync are seconds to minutes): the horizon is at most 5 h, 300
#   forecast steps.
# - ttftP95 1 ms .. 1 h, tpotP95 1 ms .. 60 s (vLLM's smallest bucket edges are 1 ms and 10 ms).
# - queuePerReplica, runningPerReplica 0.01 .. 100,000 requests; capacityPerReplica 0.001 .. 1,000,000
#   requests/s; forecastActivationRate 0.0001 .. 1,000,000 requests/s; kvCacheTarget 0.01 .. 1,
#   targetUtilization 0.05 .. 1: divisors with floors, so no term divides into infinity.
# - replica counts 0 .. MAX_REPLICAS.

MAX_REPLICAS = 150_000
"""Highest replica count accepted: Kubernetes' documented largest cluster holds 150,000 pods (a
Deployment cannot have more), far inside the int32 of KEDA's ``maxReplicaCount`` and the int64 of the
reply."""

MAX_TEXT = 1024
"""Longest free-text value (an address); a PromQL query may be 4x this."""

MAX_METADATA = 65536
"""Most characters of keys and values in one trigger's metadata (KEDA's own keys, e.g. a CA bundle, count
too): a live target keeps its metadata, so this bounds a server's memory at ``--max-targets`` times it."""


def _fmt_duration(seconds: float) -> str:
    """A bound as users write it: ``250ms``, ``2s``, ``10m``, ``24h``."""
    if seconds == 0:
        return "0s"
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s" if seconds >= 1 else f"{seconds * 1000:g}ms"


def _fmt_num(x: float) -> str:
    """A bound as a plain number: ``0.001``, ``100,000``."""
    return f"{int(x):,}" if x == int(x) else f"{x:g}"


def _bounded(parse: Callable[[str], Any], bounds: str, lo: float | None = None,
             hi: float | None = None) -> Callable[[str], Any]:
    """Attach the bounds to a parser: ``bounds`` (text for the README), ``lo``/``hi`` (numbers, for tests)."""
    parse.bounds, parse.lo, parse.hi = bounds, lo, hi  # type: ignore[attr-defined]
    return parse


def _check_range(value: float, lo: float, hi: float, show: Callable[[float], str]) -> None:
    if value < lo:
        raise _Invalid(f"must be >= {show(lo)}")
    if value > hi:
        raise _Invalid(f"must be <= {show(hi)}")


def _float(lo: float, hi: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise _Invalid("not a number") from None
        if not math.isfinite(value):
            raise _Invalid("must be finite")
        _check_range(value, lo, hi, _fmt_num)
        return value

    return _bounded(parse, f"{_fmt_num(lo)} .. {_fmt_num(hi)}", lo, hi)


_INT = re.compile(r"[+-]?[0-9]{1,19}")


def _int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        t = text.strip()
        if not _INT.fullmatch(t):
            # also refuses "1_000", non-ASCII digits and 20+ digit numbers that int() would take
            if not re.fullmatch(r"[+-]?[0-9]+", t):
                raise _Invalid("not an integer")
            raise _Invalid(f"must be >= {lo}" if t.startswith("-") else f"must be <= {hi}")
        value = int(t)
        _check_range(value, lo, hi, str)
        return value

    return _bounded(parse, f"{lo} .. {hi:,}", lo, hi)


def _duration(lo: float, hi: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = parse_duration(text)
        _check_range(value, lo, hi, _fmt_duration)
        return value

    return _bounded(parse, f"{_fmt_duration(lo)} .. {_fmt_duration(hi)}", lo, hi)


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "1", "yes"):
        return True
    if t in ("false", "0", "no"):
        return False
    raise _Invalid("not a boolean (true or false)")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        t = text.strip()
        if t not in options:
            raise _Invalid(f"must be one of {', '.join(options)}")
        return t

    return _bounded(parse, " / ".join(options))


def _k8s_name(pattern: re.Pattern[str], what: str, longest: int) -> Callable[[str], str]:
    def parse(text: str) -> str:
        t = text.strip()
        if not pattern.match(t):
            raise _Invalid(f"not a valid Kubernetes {what} (lowercase RFC 1123, at most {longest} characters)")
        return t

    return _bounded(parse, f"RFC 1123, <= {longest} chars")


def _label_value(longest: int) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text:
            raise _Invalid("must not be empty")
        if len(text) > longest:
            raise _Invalid(f"longer than {longest} characters")
        if _PROMQL_UNSAFE.search(text) or not text.isprintable():
            raise _Invalid("contains a quote, backslash, brace or control character, not allowed in a label "
                           "value")
        return text

    return _bounded(parse, f"1 .. {longest} chars, no quotes, braces, backslash")


# A base URL: scheme, host (name, IPv4 or [IPv6]), optional port, optional path prefix. Nothing else:
# no user:password@ (a credential in metadata), no ?query (Prometheus takes the first `query` parameter:
# an address carrying one would replace the scaler's PromQL with the tenant's), no #fragment.
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])"
_BASE_URL = re.compile(r"(?P<scheme>https?)://(?P<host>" + _HOST + r")(?::(?P<port>[0-9]{1,5}))?"
                       r"(?P<path>(?:/[A-Za-z0-9._~%!$&'()*+,;=:@-]*)*)")


def _url(text: str) -> str:
    t = text.strip()
    if len(t) > MAX_TEXT:
        raise _Invalid(f"longer than {MAX_TEXT} characters")
    if any(c.isspace() or not c.isprintable() for c in t):
        raise _Invalid("contains whitespace or a control character")
    scheme, sep, rest = t.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise _Invalid("must be an http:// or https:// base URL")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        raise _Invalid("must not carry credentials (user:password@); give the server a bearer token or "
                       "mTLS instead")
    if "?" in rest or "#" in rest:
        raise _Invalid("must be a base URL: no ?query or #fragment (the scaler adds the API path and query)")
    m = _BASE_URL.fullmatch(t)
    if not m:
        raise _Invalid("must be a base URL: http(s)://host[:port][/path prefix]")
    if m.group("port") is not None and not 1 <= int(m.group("port")) <= 65535:
        raise _Invalid("port must be 1..65535")
    if "'" in m.group("path"):  # kept out of every quoted context the address may reach
        raise _Invalid("the path must not contain a quote")
    return t.rstrip("/")


_bounded(_url, f"http(s)://host[:port][/path], <= {MAX_TEXT} chars")

# fleetModel parts: (lower, upper) bound and whether it must be a whole number. alpha >= 1 us keeps the
# model's capacity (at most maxNumSeqs / alpha requests/s) finite.
_FLEET_PARTS: dict[str, tuple[str, float, float]] = {
    "alpha": ("alpha", 1e-6, 60.0),
    "beta": ("beta", 0.0, 10.0),
    "gamma": ("gamma", 0.0, 1.0),
    "maxNumSeqs": ("max_num_seqs", 1, 1_000_000),
    "kvTokens": ("kv_tokens", 1, 1e10),
}


def _fleet_model(text: str) -> Any:
    """``alpha=0.015,beta=0.0003,gamma=0.00005,maxNumSeqs=256[,kvTokens=400000]`` -> FleetModel."""
    from .capacity import FleetModel  # late: capacity.py imports signals.py, which imports this module

    values: dict[str, float] = {}
    if len(text) > MAX_TEXT:
        raise _Invalid(f"longer than {MAX_TEXT} characters")
    for part in text.split(","):
        name, sep, raw = part.strip().partition("=")
        if not sep or name not in _FLEET_PARTS:
            raise _Invalid(f"bad part {part.strip()!r}: expected name=value with names {', '.join(_FLEET_PARTS)}")
        if name in values:
            raise _Invalid(f"{name} given twice")
        try:
            values[name] = float(raw)
        except ValueError:
            raise _Invalid(f"{name}={raw.strip()!r} is not a number") from None
        _, lo, hi = _FLEET_PARTS[name]
        if not math.isfinite(values[name]) or not lo <= values[name] <= hi:
            raise _Invalid(f"{name}={raw.strip()!r} must be within {_fmt_num(lo)} .. {_fmt_num(hi)}")
    missing = [n for n in ("alpha", "beta", "gamma", "maxNumSeqs") if n not in values]
    if missing:
        raise _Invalid(f"missing {', '.join(missing)}")
    if values["maxNumSeqs"] != int(values["maxNumSeqs"]):
        raise _Invalid("maxNumSeqs must be an integer >= 1")
    return FleetModel(alpha=values["alpha"], beta=values["beta"], gamma=values["gamma"],
                      max_num_seqs=int(values["maxNumSeqs"]), kv_tokens=values.get("kvTokens"))


_bounded(_fleet_model, ", ".join(f"{n} {_fmt_num(lo)} .. {_fmt_num(hi)}" for n, (_, lo, hi) in _FLEET_PARTS.items()))


def _promql(text: str) -> str:
    t = text.strip()
    if not t:
        raise _Invalid("must not be empty")
    if len(t) > 4 * MAX_TEXT:
        raise _Invalid(f"longer than {4 * MAX_TEXT} characters")
    return t


_bounded(_promql, f"1 .. {4 * MAX_TEXT} chars")


@dataclass(frozen=True)
class Key:
    """One metadata key: YAML name, dataclass field, parser, default (None: no default), docs."""

    name: str
    attr: str
    parse: Callable[[str], Any]
    default: Any
    type: str
    doc: str

    @property
    def bounds(self) -> str:
        """The accepted range, as the README's reference shows it."""
        return getattr(self.parse, "bounds", "")


# The documented defaults of the reactive and predictive policies. The
# predictive-policy keys are parsed here so that the config is one object; the
# formulas that use them live in scaler/policy.py.
KEYS: tuple[Key, ...] = (
    Key("prometheusAddress", "prometheus_address", _url, None, "URL",
        "Prometheus base URL. Default: the server's `--prometheus-url`."),
    Key("namespace", "namespace", _k8s_name(_DNS1123_LABEL, "namespace", 63), None, "string",
        "Namespace of the vLLM pods. Default: the ScaledObject's namespace. The server refuses another namespace "
        "unless `--allowed-namespaces` has a `FROM=TO` pair that lets the ScaledObject's namespace read it."),
    Key("deploymentName", "deployment", _k8s_name(_DNS1123_SUBDOMAIN, "Deployment name", 253), None, "string",
        "The vLLM Deployment; exactly the pods of its ReplicaSets are read (`<name>-<pod-template-hash>-<5 random>`, "
        "or StatefulSet `<name>-<ordinal>`), so `m005` never reads `m005-big`'s pods. Default: the ScaledObject's name."),
    Key("modelName", "model_name", _label_value(256), None, "string",
        "If set, only series with this vLLM `model_name` label are read."),
    Key("policy", "policy", _choice(*POLICIES), "predictive", "enum",
        "Formula inside `decide()`: `reactive` (queue, latency, KV, running) or `predictive`."),
    Key("minReplicas", "min_replicas", _int(0, MAX_REPLICAS), 0, "int",
        "Lowest replica count the policy asks for (KEDA's `minReplicaCount` still applies)."),
    Key("maxReplicas", "max_replicas", _int(1, MAX_REPLICAS), 10, "int",
        "Highest replica count the policy asks for."),
    Key("ttftP95", "ttft_p95", _float(0.001, 3600), 2.5, "seconds",
        "SLO: P95 time to first token. Put it on a vLLM bucket edge (e.g. 1.0, 2.5, 5.0)."),
    Key("tpotP95", "tpot_p95", _float(0.001, 60), 0.1, "seconds",
        "SLO: P95 time per output token (inter-token latency). Bucket edges: 0.05, 0.075, 0.1, 0.15..."),
    Key("queuePerReplica", "queue_per_replica", _float(0.01, 100_000), None, "requests",
        "Target waiting requests per replica (`vllm:num_requests_waiting`): the reactive queue term W / q*, and "
        "the predictive backlog while capacity is unknown. Default: the queue the spare capacity drains within "
        "the TTFT SLO, (1 - targetUtilization) x capacity x ttftP95, with `fleetModel` at the observed mean "
        "token sizes; without it 6.7, that formula on the default profile (Llama-3.1-8B on one H100, "
        "ShareGPT-sized requests: 26.8 req/s; scaler/capacity.py, \"Planning targets\")."),
    Key("runningPerReplica", "running_per_replica", _float(0.01, 100_000), None, "requests",
        "Target mean running requests per replica (`vllm:num_requests_running`): the reactive running term "
        "R / r*, and the predictive Little's-law fallback. Default: the running count of a replica serving "
        "targetUtilization of its capacity at the SLO, with `fleetModel` at the observed mean token sizes; "
        "without it 350, that count on the default profile (Llama-3.1-8B on one H100, vLLM 0.11 defaults, "
        "235 / 460-token requests: capacity 26.8 req/s, about 590 running at the knee; scaler/capacity.py, "
        "\"Planning targets\"). Set it (or `fleetModel`) for another GPU or workload: long prompts hold "
        "fewer (1,150 / 210 tokens: 162 on the same GPU)."),
    Key("kvCacheTarget", "kv_cache_target", _float(0.01, 1), 0.8, "fraction",
        "Target mean KV-cache usage per replica (0-1)."),
    Key("activationThreshold", "activation_threshold", _float(0, 1_000_000), 0.0, "requests",
        "Active (wake from / stay above zero) while waiting+running (or the activation query) is above this."),
    Key("activationQuery", "activation_query", _promql, None, "PromQL",
        "Upstream demand (router, gateway or queue metric) read at zero replicas, when vLLM exports nothing. "
        "Only honoured when the server runs with `--allow-activation-query`."),
    Key("refreshInterval", "refresh_interval", _duration(0.5, 3600), 5.0, "duration",
        "How often the server refreshes this target's signals in the background."),
    Key("maxStaleness", "max_staleness", _duration(1, 86400), 60.0, "duration",
        "Answer from the last good decision for at most this long after the source fails; then UNAVAILABLE."),
    Key("window", "window", _duration(2, 86400), 60.0, "duration",
        "Range window for rates and latency quantiles (PromQL `[window]`)."),
    Key("scaleToZeroAfter", "scale_to_zero_after", _duration(0, 86400), 300.0, "duration",
        "Inactive only after this long with no demand signal (and, predictive, no forecast demand)."),
    Key("coldStart", "cold_start", _duration(1, 4 * 3600), None, "duration",
        "Override the measured cold start (pod created to Ready). Default: measured, else 180 s."),
    Key("reactionLag", "reaction_lag", _duration(0, 3600), 45.0, "duration",
        "KEDA poll + HPA sync delay added to the cold start to form the forecast horizon."),
    Key("capacityPerReplica", "capacity_per_replica", _float(0.001, 1_000_000), None, "requests/s",
        "Requests/s one replica sustains within the SLO. Default: learned online, else calibrated."),
    Key("targetUtilization", "target_utilization", _float(0.05, 1), 0.9, "fraction",
        "Predictive: plan for forecast demand at this fraction of per-replica capacity. With `fleetModel` it "
        "also sets the default `runningPerReplica` and `queuePerReplica` (both policies)."),
    Key("forecast", "forecast", _choice("holt", "none"), "holt", "enum",
        "Predictive: demand forecaster (`holt`: Holt trend + daily season when a day of history exists; "
        "`none`: the observed rate, no look-ahead and no forecast wake-up)."),
    Key("fleetModel", "fleet_model", _fleet_model, None, "model",
        "Calibrated iteration-time model of one replica, "
        "`alpha=S,beta=S,gamma=S,maxNumSeqs=N[,kvTokens=N]` (t = alpha + beta*running + gamma*prefill_tokens), "
        "from which capacity at the SLO is computed with the mean token sizes (predictive), and the default "
        "`runningPerReplica` and `queuePerReplica` (both policies). Default: none."),
    Key("forecastActivationRate", "forecast_activation_rate", _float(0.0001, 1_000_000), 0.05, "requests/s",
        "Predictive: active (wake from zero ahead of a ramp) while the forecast arrival rate within the "
        "horizon is above this."),
)

KEYS_BY_NAME: dict[str, Key] = {k.name: k for k in KEYS}


@dataclass(frozen=True)
class ServerDefaults:
    """Server-side settings that metadata may default from or is checked against."""

    prometheus_url: str = "http://127.0.0.1:9090"
    # (FROM, TO) pairs of --allowed-namespaces: a ScaledObject in FROM may read TO; FROM "*": any. None: none
    # (a ScaledObject always reads its own namespace).
    allowed_namespaces: frozenset[tuple[str, str]] | None = None
    allow_activation_query: bool = False
    # Base URLs a ScaledObject may name in `prometheusAddress` (besides prometheus_url); None: any.
    # Lock it down where ScaledObject authors should not make the scaler send queries elsewhere.
    allowed_prometheus_urls: frozenset[str] | None = None


@dataclass(frozen=True)
class PolicyConfig:
    """Everything one target's policy needs, typed and validated. Build with :func:`parse_metadata`."""

    scaled_object: str
    namespace: str
    deployment: str
    prometheus_address: str
    model_name: str | None = None
    policy: str = "predictive"
    min_replicas: int = 0
    max_replicas: int = 10
    ttft_p95: float = 2.5
    tpot_p95: float = 0.1
    queue_per_replica: float | None = None     # None: derived (scaler.policy.planning_targets)
    running_per_replica: float | None = None
    kv_cache_target: float = 0.8
    activation_threshold: float = 0.0
    activation_query: str | None = None
    refresh_interval: float = 5.0
    max_staleness: float = 60.0
    window: float = 60.0
    scale_to_zero_after: float = 300.0
    cold_start: float | None = None
    reaction_lag: float = 45.0
    capacity_per_replica: float | None = None
    target_utilization: float = 0.9
    forecast: str = "holt"
    fleet_model: Any = None  # scaler.capacity.FleetModel
    forecast_activation_rate: float = 0.05
    # Keys KEDA owns that were present, kept so nothing the user gave is silently lost.
    keda_keys: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def target_key(self) -> TargetKey:
        """What identifies the series this config reads (shared refresh and cache key)."""
        return (self.prometheus_address, self.namespace, self.deployment, self.model_name, self.policy)


def parse_metadata(
    metadata: Mapping[str, str],
    *,
    scaled_object: str,
    namespace: str,
    defaults: ServerDefaults | None = None,
) -> PolicyConfig:
    """Parse KEDA trigger metadata into a :class:`PolicyConfig`, reporting every problem at once.

    ``scaled_object`` and ``namespace`` come from ``ScaledObjectRef.name`` / ``.namespace``.
    Raises :class:`~scaler.errors.ConfigError`.
    """
    defaults = defaults or ServerDefaults()
    problems: list[ConfigProblem] = []
    values: dict[str, Any] = {}
    keda: list[tuple[str, str]] = []
    size = metadata_size(metadata)
    if size > MAX_METADATA:
        problems.append(ConfigProblem("metadata", f"<{size} characters of keys and values>",
                                      f"more than {MAX_METADATA}"))
    for key in sorted(metadata):
        raw = metadata[key]
        if key in KEYS_BY_NAME:
            spec = KEYS_BY_NAME[key]
            try:
                values[spec.attr] = spec.parse(raw)
            except _Invalid as exc:
                # an address is shown without the credentials it may (wrongly) carry
                shown = redact(raw) if key == "prometheusAddress" else raw
                problems.append(ConfigProblem(key, shown, str(exc)))
        elif key in KEDA_OWNED_KEYS or (key.endswith("FromEnv") and key[: -len("FromEnv")] in KEYS_BY_NAME):
            # KEDA resolves `<key>FromEnv` itself and forwards the resolved `<key>`.
            keda.append((key, raw))
        else:
            problems.append(ConfigProblem(key, raw, _unknown(key)))

    if not namespace:
        problems.append(ConfigProblem("namespace", namespace, "the ScaledObjectRef carries no namespace"))
    elif not _DNS1123_LABEL.match(namespace):
        # KEDA sends the ScaledObject's namespace; anything else is a client inventing one (it would reach
        # PromQL label matchers, log lines and metric labels)
        problems.append(ConfigProblem("namespace", namespace,
                                      "the ScaledObjectRef's namespace is not a Kubernetes namespace name"))
    if len(scaled_object or "") > 253:
        problems.append(ConfigProblem("name", scaled_object,
                                      "the ScaledObjectRef's name is longer than a Kubernetes name (253)"))
    ns = values.get("namespace", namespace)
    if "namespace" in values and ns != namespace:
        allowed = defaults.allowed_namespaces or frozenset()
        if (namespace, ns) not in allowed and ("*", ns) not in allowed:
            problems.append(ConfigProblem(
                "namespace", ns,
                f"differs from the ScaledObject's namespace {namespace!r} and is not in the server's "
                "--allowed-namespaces"))
    if "deployment" in values:
        deployment = values.pop("deployment")
    else:
        deployment = scaled_object
        if "deploymentName" not in metadata and not _DNS1123_SUBDOMAIN.match(scaled_object or ""):
            problems.append(ConfigProblem("deploymentName", None,
                                          f"required: the ScaledObject name {scaled_object!r} is not a valid "
                                          "Deployment name"))
    if values.get("activation_query") is not None and not defaults.allow_activation_query:
        problems.append(ConfigProblem("activationQuery", metadata.get("activationQuery"),
                                      "the server does not allow activation queries (--allow-activation-query)"))
    address = values.get("prometheus_address")
    if address is not None and defaults.allowed_prometheus_urls is not None:
        allowed_urls = {u.rstrip("/") for u in defaults.allowed_prometheus_urls} | {defaults.prometheus_url.rstrip("/")}
        if address not in allowed_urls:
            problems.append(ConfigProblem("prometheusAddress", metadata.get("prometheusAddress"),
                                          "not in the server's --allowed-prometheus-urls"))
    refresh = values.get("refresh_interval", _default("refresh_interval"))
    staleness = values.get("max_staleness", _default("max_staleness"))
    if staleness <= refresh and "maxStaleness" not in [p.key for p in problems]:
        # A decision is at best one refresh old: a bound at or below the interval flaps to UNAVAILABLE.
        problems.append(ConfigProblem("maxStaleness", metadata.get("maxStaleness", f"{staleness:g}"),
                                      f"must be greater than refreshInterval ({refresh:g}s)"))
    lo, hi = values.get("min_replicas", 0), values.get("max_replicas", 10)
    if "min_replicas" not in [p.key for p in problems] and lo > hi:
        problems.append(ConfigProblem("minReplicas", metadata.get("minReplicas", str(lo)),
                                      f"must be <= maxReplicas ({hi})"))
    if problems:
        raise ConfigError(problems)

    values["namespace"] = ns
    values.setdefault("prometheus_address", defaults.prometheus_url.rstrip("/"))
    known = {f.name for f in fields(PolicyConfig)}
    assert set(values) <= known, set(values) - known
    return PolicyConfig(scaled_object=scaled_object, deployment=deployment, keda_keys=tuple(keda), **values)


def metadata_size(metadata: Mapping[str, str]) -> int:
    """Characters of every key and value."""
    return sum(len(k) + len(v) for k, v in metadata.items())


def _unknown(key: str) -> str:
    """The message for an unknown key: the closest known name, if one is close (a typo)."""
    close = difflib.get_close_matches(key[:64], list(KEYS_BY_NAME), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key ({hint}the keys are listed in the README's configuration reference)"


def _default(attr: str) -> Any:
    """The documented default of a PolicyConfig field (from the KEYS table)."""
    return next(k.default for k in KEYS if k.attr == attr)


def defaults_table() -> list[tuple[str, str, str, str, str]]:
    """(key, type, default, bounds, meaning) rows, for the README's configuration reference."""
    rows = []
    for k in KEYS:
        default = "(see meaning)" if k.default is None else str(k.default)
        rows.append((k.name, k.type, default, k.bounds, k.doc))
    return rows
