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

Certificates are read at start; rotate them by restarting the pod (a rolling
restart is harmless: KEDA reconnects and any replica can answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


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
        cert = _read_pem("--tls-cert", self.cert, "CERTIFICATE")
        key = _read_pem("--tls-key", self.key, "PRIVATE KEY")
        ca = _read_pem("--tls-client-ca", self.client_ca, "CERTIFICATE") if self.client_ca else None
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


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
