"""TLS and mutual TLS for the gRPC server, matching what KEDA sends.

KEDA's side (trigger metadata ``enableTLS: "true"``, TriggerAuthentication
``caCert``, ``tlsClientCert``, ``tlsClientKey``): KEDA verifies the server
certificate against ``caCert`` and, when given a client certificate, presents
it. The server's side:

* ``--tls-cert`` / ``--tls-key``: the server certificate chain and key (PEM);
  its SANs must include the ``scalerAddress`` host KEDA dials.
* ``--tls-client-ca``: when set, client certificates are *required* and must
  chain to this CA (mutual TLS); KEDA then needs ``tlsClientCert`` and
  ``tlsClientKey``.

Rotation without restart: the files are checked (modification time and size)
whenever a client connects, and a changed set is loaded for new connections
(cert-manager renewing the Secret, the kubelet swapping the mounted files).
A set that does not load (e.g. caught half-written) is logged and the previous
one kept; connections already open keep their session.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

# (mtime_ns, size, inode) of each file, None when it cannot be read
_Stamp = tuple[tuple[int, int, int] | None, ...]

log = logging.getLogger("scaler.server.tls")


class TlsConfigError(ValueError):
    """A TLS file is missing, unreadable or not PEM; the message names the flag and the path."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials that load the files now (errors name the flag) and reload them when they change."""
        reloader = _Reloader(self)
        # gRPC's fetcher may return None (keep the configuration); the grpcio stubs do not say so
        return grpc.dynamic_ssl_server_credentials(reloader.initial, reloader.fetch,  # type: ignore[arg-type]
                                                   require_client_authentication=self.mutual)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        cert = _read_pem("--tls-cert", self.cert, "CERTIFICATE")
        key = _read_pem("--tls-key", self.key, "PRIVATE KEY")
        ca = _read_pem("--tls-client-ca", self.client_ca, "CERTIFICATE") if self.client_ca else None
        try:  # the stdlib checks that the key belongs to the certificate (gRPC would fail every handshake)
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.cert, self.key)
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError(f"--tls-cert={str(self.cert)!r} / --tls-key={str(self.key)!r}: not a matching "
                                 f"certificate and private key ({exc})") from None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def _stamp(self) -> _Stamp:
        out: list[tuple[int, int, int] | None] = []
        for path in (self.cert, self.key, self.client_ca):
            if path is None:
                continue
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)


class _Reloader:
    """gRPC asks ``fetch`` for a new configuration on each handshake; it answers only when the files changed."""

    def __init__(self, files: TlsFiles):
        self._files = files
        self._stamp = files._stamp()
        self._bad_stamp: _Stamp | None = None
        self.initial = files._load()
        self._lock = threading.Lock()

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        stamp = self._files._stamp()
        if stamp == self._stamp or stamp == self._bad_stamp:
            return None
        with self._lock:
            if stamp == self._stamp or stamp == self._bad_stamp:
                return None
            try:
                config = self._files._load()
            except TlsConfigError as exc:
                self._bad_stamp = stamp  # logged once per change, not per connection
                log.warning("TLS files changed but do not load; keeping the previous ones: %s", exc)
                return None
            self._stamp = stamp
            log.info("TLS certificate files reloaded", extra={"fields": {"cert": str(self._files.cert)}})
            return config


def tls_files(cert: str | None, key: str | None, client_ca: str | None) -> TlsFiles | None:
    """Check the flag combination: none (plaintext), cert+key (TLS), cert+key+CA (mTLS)."""
    if not cert and not key:
        if client_ca:
            raise TlsConfigError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is on top of TLS)")
        return None
    if not cert or not key:
        missing = "--tls-key" if cert else "--tls-cert"
        raise TlsConfigError(f"{missing} is required when {'--tls-cert' if cert else '--tls-key'} is set")
    return TlsFiles(Path(cert), Path(key), Path(client_ca) if client_ca else None)


def _read_pem(flag: str, path: Path | None, kind: str) -> bytes:
    assert path is not None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{flag}={str(path)!r}: cannot read: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data or kind.encode() not in data:
        raise TlsConfigError(f"{flag}={str(path)!r}: not a PEM file holding a {kind}")
    return data
