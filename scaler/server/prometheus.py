"""How the server builds a :class:`~scaler.sources.prometheus.PrometheusSource` per Prometheus address.

The default ``SourceFactory`` of ``vllm-scaler serve``. Server-side settings
that apply to the connection (never taken from ScaledObject metadata):

* ``timeout``: seconds per query (``--prometheus-timeout``);
* ``bearer_token_file``: sends ``Authorization: Bearer <token>``, re-reading
  the file when it changes (rotated Secrets and projected tokens). Sent only
  to the server's own ``--prometheus-url`` (same scheme, host and port): a
  ScaledObject that names another ``prometheusAddress`` in its metadata never
  receives the server's credential;
* ``ca_file``: CA bundle to verify an ``https://`` Prometheus.

No retries: a refresh fails fast and typed; the next refresh is the retry.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests
from urllib3.util.retry import Retry

if TYPE_CHECKING:   # imported where used (startup cost, import cycle)
    from prometheus_api_client import PrometheusConnect

    from ..sources.prometheus import PrometheusSource


class BearerTokenFile(requests.auth.AuthBase):
    """``Authorization: Bearer <contents of path>``, re-read when the file's mtime or size changes."""

    def __init__(self, path: str):
        self.path = path
        self._stamp: tuple[float, int] | None = None
        self._token = ""
        self._lock = threading.Lock()
        self.token()  # fail at start on a missing file, naming it

    def token(self) -> str:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime, st.st_size)
            with self._lock:
                if stamp != self._stamp:
                    with open(self.path, encoding="utf-8") as f:
                        self._token = f.read().strip()
                    self._stamp = stamp
                return self._token
        except OSError as exc:
            raise ValueError(f"--prometheus-bearer-token-file={self.path!r}: cannot read: "
                             f"{exc.strerror or exc}") from None

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token()}"
        return r


def _origin(url: str) -> tuple[str, str, int | None]:
    p = urlsplit(url)
    port = p.port or {"http": 80, "https": 443}.get(p.scheme)
    return (p.scheme, (p.hostname or "").lower(), port)


class PrometheusSourceFactory:
    """Callable ``address -> PrometheusSource`` with the server's connection settings.

    :meth:`client` gives the same connection to the enrichers that read Prometheus (demand history,
    kube-state-metrics cold start), so they use the same token and CA.
    """

    def __init__(self, *, default_url: str, timeout: float, bearer_token_file: str | None = None,
                 ca_file: str | None = None):
        self.default_url = default_url
        self.timeout = timeout
        self.auth = BearerTokenFile(bearer_token_file) if bearer_token_file else None
        if ca_file is not None and not os.path.isfile(ca_file):
            raise ValueError(f"--prometheus-ca-file={ca_file!r}: no such file")
        self.ca_file = ca_file

    def client(self, address: str) -> PrometheusConnect:
        """A ``PrometheusConnect`` for ``address`` with the server's CA, and its token when it is the server's own."""
        from prometheus_api_client import PrometheusConnect

        session = requests.Session()
        session.verify = self.ca_file or True
        same_origin = _origin(address) == _origin(self.default_url)
        return PrometheusConnect(
            url=address, session=session, timeout=self.timeout, method="POST",
            retry=Retry(total=0, connect=0, read=0, status=0, redirect=0, raise_on_status=False),
            auth=self.auth if same_origin else None)

    def __call__(self, address: str) -> PrometheusSource:
        from ..sources.prometheus import PrometheusSource

        return PrometheusSource(self.client(address), timeout=self.timeout)
