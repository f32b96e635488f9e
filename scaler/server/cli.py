"""``vllm-scaler serve``: every server setting as a flag and a ``VLLM_SCALER_*`` environment variable.

Precedence: flag, then environment variable, then default. A bad value names
the flag or the variable and the value. :data:`SETTINGS` is the single table
of settings; ``--help`` and docs/server.md are checked against it
(``tests/unit/test_server_cli.py``).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..config import ServerDefaults, _url, parse_duration
from ..redact import redact_text
from .logs import LOG_FORMATS, LOG_LEVELS, configure_logging
from .prometheus import PrometheusSourceFactory
from .tls import TlsConfigError, tls_files

if TYPE_CHECKING:   # imported where used (startup cost of `vllm-scaler --help`)
    from kubernetes.client import ApiClient

    from .app import ServerSettings
    from .refresher import SignalEnricher

log = logging.getLogger("scaler.server")

ENV_PREFIX = "VLLM_SCALER_"
COLD_START_SOURCES = ("auto", "kubernetes", "kube-state-metrics", "none")


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number 0-65535 (0: any free port)")
    return value


def _metrics_port(text: str) -> int | None:
    if text.strip().lower() in ("off", "none", "-1"):
        return None
    return _port(text)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be >= 1")
    return value


def _limit(text: str) -> int | None:
    value = int(text)
    if value < 0:
        raise ValueError("must be >= 0 (0: no limit)")
    return value or None


def _seconds(text: str) -> float:
    return parse_duration(text)


def _positive_seconds(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a Kubernetes namespace name (RFC 1123 label)


def _namespaces(text: str) -> frozenset[tuple[str, str]] | None:
    """``FROM=TO[,FROM=TO...]``: ScaledObjects in namespace FROM may read namespace TO; FROM ``*``: any.

    A ScaledObject always reads its own namespace (``NS=NS`` says so explicitly and changes nothing).
    """
    pairs = set()
    problems = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        src, sep, dst = (x.strip() for x in part.partition("="))
        if not sep:
            problems.append(f"{part!r} is not FROM=TO (team-a={part}: ScaledObjects in namespace team-a may read "
                            f"{part}; *={part}: ScaledObjects in any namespace may)")
            continue
        bad = ([] if src == "*" or _NAMESPACE.match(src) else [src]) + ([] if _NAMESPACE.match(dst) else [dst])
        if bad:
            problems.append(f"{part!r}: {' and '.join(repr(b) for b in bad)} not a namespace name"
                            + (" (`*` is allowed as FROM only)" if "*" in bad else ""))
            continue
        pairs.add((src, dst))
    if problems:
        raise ValueError("; ".join(problems))
    return frozenset(pairs) or None


def _urls(text: str) -> frozenset[str] | None:
    """``*`` (any address) or a comma-separated list of http(s) base URLs."""
    if text.strip() == "*":
        return None
    return frozenset(_url(u) for u in text.split(",") if u.strip())


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off", ""):
        return False
    raise ValueError("not a boolean (true or false)")


def _choice(options: tuple[str, ...], upper: bool = False) -> Callable[[str], str]:
    def parse(text: str) -> str:
        t = text.strip().upper() if upper else text.strip().lower()
        if t not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return t

    return parse


def _path(text: str) -> str | None:
    return text or None


@dataclass(frozen=True)
class Setting:
    flag: str
    parse: Callable[[str], Any]
    default: str  # as a user would type it; parsed like any other value
    help: str
    metavar: str = "VALUE"
    boolean: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("--host", str, "0.0.0.0", "Address the gRPC server listens on.", "ADDR"),
    Setting("--grpc-port", _port, "6000", "gRPC port (KEDA's scalerAddress points here). 0: any free port.",
            "PORT"),
    Setting("--health-port", _metrics_port, "off",
            "Extra plaintext gRPC port serving only grpc.health.v1, for kubelet gRPC probes when the main port "
            "uses TLS. 'off': none (health is always served on --grpc-port too).", "PORT"),
    Setting("--metrics-host", str, "", "Address of the HTTP /metrics endpoint. Empty: same as --host.", "ADDR"),
    Setting("--metrics-port", _metrics_port, "8080", "Port of the HTTP /metrics endpoint; 'off' disables it.",
            "PORT"),
    Setting("--prometheus-url", _url, ServerDefaults.prometheus_url,
            "Prometheus used by targets whose metadata has no prometheusAddress.", "URL"),
    Setting("--prometheus-timeout", _positive_seconds, "3s",
            "Timeout of each Prometheus query (background refresh only; RPCs never wait on Prometheus).",
            "DURATION"),
    Setting("--prometheus-bearer-token-file", _path, "",
            "Send `Authorization: Bearer <file contents>` to --prometheus-url (re-read when the file changes). "
            "Never sent to other prometheusAddress values.", "FILE"),
    Setting("--prometheus-ca-file", _path, "", "CA bundle (PEM) to verify an https:// Prometheus. Empty: the "
                                              "system CAs.", "FILE"),
    Setting("--allowed-namespaces", _namespaces, "",
            "Comma-separated FROM=TO pairs: ScaledObjects in namespace FROM may name namespace TO in their "
            "`namespace` key (`*=TO`: from any namespace). A ScaledObject always reads its own namespace. "
            "Empty: only its own.", "FROM=TO[,...]"),
    Setting("--allowed-prometheus-urls", _urls, "",
            "Comma-separated Prometheus base URLs a ScaledObject may name in `prometheusAddress` besides "
            "--prometheus-url. Empty: only --prometheus-url. `*`: any URL (then any ScaledObject author can make "
            "the scaler query any address).", "URL[,URL...]|*"),
    Setting("--allow-activation-query", _bool, "false",
            "Honour the `activationQuery` metadata key (arbitrary PromQL from ScaledObject authors).", "BOOL",
            boolean=True),
    Setting("--tls-cert", _path, "", "Server certificate chain (PEM). With --tls-key: serve TLS "
                                    "(KEDA: enableTLS=\"true\" and caCert).", "FILE"),
    Setting("--tls-key", _path, "", "Server private key (PEM).", "FILE"),
    Setting("--tls-client-ca", _path, "", "CA bundle (PEM) for client certificates. When set, clients MUST "
                                         "present a certificate it signed (mutual TLS; KEDA: tlsClientCert, "
                                         "tlsClientKey).", "FILE"),
    Setting("--cold-start-source", _choice(COLD_START_SOURCES), "auto",
            "Where the predictive policy's measured cold start (pod created -> Ready) and the Deployment's "
            "ready/starting replicas come from: `kubernetes` (the API: get deployments, list pods), "
            "`kube-state-metrics` (through Prometheus), `none`, or `auto` (the Kubernetes API when running in a "
            "cluster or with a kubeconfig, else none).", "|".join(COLD_START_SOURCES)),
    Setting("--demand-history", _bool, "true",
            "Load each predictive target's recent demand from Prometheus (one range subquery per target per "
            "minute) so forecasts start warm and every replica agrees after a restart.", "BOOL"),
    Setting("--idle-eviction", _positive_seconds, "10m",
            "Stop refreshing a target not asked about (and with no open stream) for this long.", "DURATION"),
    Setting("--cold-wait", _seconds, "0.8s",
            "On a target's first call, wait at most this long for its first refresh, then answer UNAVAILABLE. "
            "Keep 2x this well under KEDA's 3 s budget for GetMetrics+IsActive.", "DURATION"),
    Setting("--grace-period", _seconds, "10s",
            "On SIGTERM/SIGINT: time in-flight RPCs get to finish before the server exits.", "DURATION"),
    Setting("--max-concurrent-rpcs", _limit, "0",
            "Most RPCs handled at once, open streams included; beyond it calls fail RESOURCE_EXHAUSTED. "
            "0: no limit. (The server is asyncio-based: no worker thread per RPC.)", "N"),
    Setting("--max-targets", _positive_int, "5000",
            "Most live targets (distinct ScaledObject triggers) this server serves; a new one beyond it is "
            "refused RESOURCE_EXHAUSTED (counted in vllm_scaler_targets_refused_total) until idle ones are "
            "evicted.", "N"),
    Setting("--refresh-workers", _positive_int, "4",
            "Threads fetching from sources in the background (one fetch per Prometheus at a time).", "N"),
    Setting("--refresh-budget", _positive_seconds, "1s",
            "CPU time one target's enrichers and policy may use per refresh; a target over it is cut off, "
            "logged and counted (vllm_scaler_refresh_cutoffs_total), answers from its last good decision and is "
            "retried after a back-off. Waiting on I/O does not count.", "DURATION"),
    Setting("--log-level", _choice(LOG_LEVELS, upper=True), "INFO", "Log level.", "|".join(LOG_LEVELS)),
    Setting("--log-format", _choice(LOG_FORMATS), "json",
            "Log format: one JSON object per line, or text.", "|".join(LOG_FORMATS)),
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the KEDA external scaler gRPC server",
        description=(
            "Serve KEDA's externalscaler.ExternalScaler gRPC API (GetMetricSpec, GetMetrics, IsActive, "
            "StreamIsActive, StreamMetricSpec), grpc.health.v1 and server reflection, with an HTTP /metrics "
            "endpoint. Every setting is a flag or an environment variable (flag wins). SIGTERM shuts down "
            "gracefully and exits 0."),
        epilog="Environment variables: " + ", ".join(s.env for s in SETTINGS) + ". See docs/server.md.",
    )
    for s in SETTINGS:
        parser.add_argument(s.flag, dest=s.dest, default=None, metavar=s.metavar,
                            help=f"{s.help} [env {s.env}; default: {s.default or '(empty)'}]")
    parser.set_defaults(func=run)


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Each setting's value from flag, env or default; raises ``ValueError`` naming the flag or variable."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for s in SETTINGS:
        raw = getattr(args, s.dest, None)
        where = s.flag
        if raw is None and s.env in environ:
            raw, where = environ[s.env], s.env
        if raw is None:
            raw, where = s.default, f"{s.flag} default"
        try:
            values[s.dest] = s.parse(raw)
        except ValueError as exc:
            problems.append(redact_text(f"{where}={raw!r}: {exc}"))   # a refused URL may carry a password
    if problems:
        raise ValueError("; ".join(problems))
    return values


def build_settings(values: Mapping[str, Any]) -> ServerSettings:
    from .app import ServerSettings

    try:
        tls = tls_files(values["tls_cert"], values["tls_key"], values["tls_client_ca"])
    except TlsConfigError as exc:
        raise ValueError(str(exc)) from None
    return ServerSettings(
        host=values["host"], port=values["grpc_port"], health_port=values["health_port"],
        refresh_budget=values["refresh_budget"],
        metrics_host=values["metrics_host"] or None,
        metrics_port=values["metrics_port"],
        defaults=ServerDefaults(prometheus_url=values["prometheus_url"],
                                allowed_namespaces=values["allowed_namespaces"],
                                allow_activation_query=values["allow_activation_query"],
                                allowed_prometheus_urls=values["allowed_prometheus_urls"]),
        prometheus_timeout=values["prometheus_timeout"], tls=tls, idle_eviction=values["idle_eviction"],
        cold_wait=values["cold_wait"], grace=values["grace_period"],
        max_concurrent_rpcs=values["max_concurrent_rpcs"], refresh_workers=values["refresh_workers"],
        max_targets=values["max_targets"])


def build_enrichers(values: Mapping[str, Any], factory: PrometheusSourceFactory,
                    environ: Mapping[str, str] | None = None) -> list[SignalEnricher]:
    """The enrichers ``--cold-start-source`` and ``--demand-history`` ask for, in the order they run."""
    environ = os.environ if environ is None else environ
    timeout = values["prometheus_timeout"]
    enrichers: list[SignalEnricher] = []
    choice = values["cold_start_source"]
    if choice in ("auto", "kubernetes"):
        api = _kubernetes_api_client(environ, required=choice == "kubernetes")
        if api is not None:
            from ..sources.kubernetes import KubernetesColdStartReader

            enrichers.append(KubernetesColdStartReader(api, timeout=timeout))
        else:
            log.info("cold start not measured: no Kubernetes API access (--cold-start-source auto); the policy "
                     "uses the coldStart metadata key or its default")
    elif choice == "kube-state-metrics":
        from ..sources.history import KubeStateColdStartReader

        enrichers.append(KubeStateColdStartReader(factory.client, timeout=timeout))
    if values["demand_history"]:
        from ..sources.history import DemandHistoryReader

        enrichers.append(DemandHistoryReader(factory.client, timeout=timeout))
    return enrichers


def _kubernetes_api_client(environ: Mapping[str, str], *, required: bool) -> ApiClient | None:
    """In-cluster service account, else the kubeconfig; None (or, when required, ValueError) without either."""
    from kubernetes import client, config

    problems = []
    if environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config()
            return client.ApiClient()
        except config.ConfigException as exc:
            problems.append(f"in-cluster: {exc}")
    kubeconfig = environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    if any(os.path.isfile(p) for p in kubeconfig.split(os.pathsep) if p):
        try:
            config.load_kube_config(config_file=kubeconfig)
            return client.ApiClient()
        except (config.ConfigException, OSError, ValueError) as exc:
            problems.append(f"kubeconfig {kubeconfig}: {exc}")
    else:
        problems.append(f"no kubeconfig at {kubeconfig}")
    if required:
        raise ValueError("--cold-start-source='kubernetes': no Kubernetes API access (" + "; ".join(problems) + ")")
    return None


def run(args: argparse.Namespace) -> int:
    try:
        values = resolve(args)
        settings = build_settings(values)
        if settings.tls is not None:
            settings.tls.server_credentials()  # read the files now: a bad path fails before serving
        factory = PrometheusSourceFactory(default_url=settings.defaults.prometheus_url,
                                          timeout=settings.prometheus_timeout,
                                          bearer_token_file=values["prometheus_bearer_token_file"],
                                          ca_file=values["prometheus_ca_file"])
        enrichers = build_enrichers(values, factory)
    except (ValueError, TlsConfigError) as exc:
        print(f"vllm-scaler serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(values["log_level"], values["log_format"])
    from .app import ScalerServer

    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        if stop.is_set():  # a second signal: no more waiting
            _exit_now(1, "second signal: exiting at once")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = ScalerServer(settings, source_factory=factory, enrichers=enrichers)
    try:
        server.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    while not stop.wait(3600):
        pass
    log.info("signal received", extra={"fields": {"signal": received[0] if received else None}})
    # The process ends within the grace period whatever the refresh is doing: a worker thread in CPU work or
    # blocked on a socket neither delays the orderly stop (nothing waits for it) nor the exit (os._exit does not
    # join threads), and if the orderly stop itself overruns, this timer ends the process.
    deadline = threading.Timer(settings.grace + SHUTDOWN_MARGIN, _exit_now,
                               args=(1, f"shutdown overran grace + {SHUTDOWN_MARGIN:g} s: exiting"))
    deadline.daemon = True
    deadline.start()
    server.stop()
    _exit_now(0)
    return 0  # not reached


SHUTDOWN_MARGIN = 3.0
"""Seconds beyond ``--grace-period`` the orderly stop may take before the process exits anyway."""


def _exit_now(code: int, why: str | None = None) -> None:
    """Flush the logs and end the process now, without joining threads (a stuck refresh worker included)."""
    if why:
        log.error(why)
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)
