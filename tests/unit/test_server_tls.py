"""TLS and mutual TLS as KEDA uses them (caCert; tlsClientCert + tlsClientKey), certificates made in the test."""

import datetime
import ipaddress

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scaler._proto import externalscaler_pb2 as pb
from scaler._proto import externalscaler_pb2_grpc as pb_grpc
from scaler.config import ServerDefaults, parse_metadata
from scaler.policy import decide
from scaler.server import METRIC_NAME, ScalerServer, ServerSettings
from scaler.server.fake_source import ScriptedSource
from scaler.server.tls import TlsConfigError, TlsFiles, tls_files
from scaler.signals import Signals

BUSY = Signals(observed_at=0.0, pods_reporting=2, waiting=20, running=10)
EXPECTED = decide(BUSY, None, parse_metadata({}, scaled_object="llama", namespace="ml"), 0.0).desired


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(cn):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca, cn, *, server, expired=False):
    """A leaf certificate signed by ``ca``; ``expired``: valid for a day that ended an hour ago."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    end = now - datetime.timedelta(hours=1) if expired else now + datetime.timedelta(days=1)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(end - datetime.timedelta(days=1)).not_valid_after(end)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                               else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                         x509.DNSName("localhost")]), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    return _pem_key(key), cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca("test-ca")
    other_ca = make_ca("other-ca")
    server_key, server_cert = issue(ca, "vllm-scaler", server=True)
    client_key, client_cert = issue(ca, "keda-operator", server=False)
    rogue_key, rogue_cert = issue(other_ca, "rogue", server=False)
    expired_key, expired_cert = issue(ca, "keda-operator", server=False, expired=True)
    files = {"ca.crt": ca[1].public_bytes(serialization.Encoding.PEM), "tls.crt": server_cert, "tls.key": server_key,
             "client.crt": client_cert, "client.key": client_key, "rogue.crt": rogue_cert, "rogue.key": rogue_key,
             "expired.crt": expired_cert, "expired.key": expired_key}
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


def serve(tls, health_port=None):
    source = ScriptedSource({("ml", "llama"): BUSY})
    return ScalerServer(ServerSettings(host="127.0.0.1", port=0, metrics_port=None, tls=tls, health_port=health_port,
                                       defaults=ServerDefaults(prometheus_url="http://127.0.0.1:9")),
                        source_factory=lambda address: source).start()


def call(address, creds):
    """KEDA's poll over a secure channel; the target name override matches the server certificate's SAN."""
    with grpc.secure_channel(address, creds) as channel:
        stub = pb_grpc.ExternalScalerStub(channel)
        ref = pb.ScaledObjectRef(name="llama", namespace="ml")
        stub.GetMetricSpec(ref, timeout=3)
        return stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref, metricName=METRIC_NAME),
                               timeout=3).metricValues[0].metricValue


def test_server_tls_like_keda_enable_tls_with_ca_cert(pki) -> None:
    server = serve(TlsFiles(pki / "tls.crt", pki / "tls.key"))
    try:
        ca = (pki / "ca.crt").read_bytes()
        assert call(server.address, grpc.ssl_channel_credentials(root_certificates=ca)) == EXPECTED
        # A client that does not trust the CA (KEDA without caCert) cannot connect.
        other = (pki / "rogue.crt").read_bytes()
        with pytest.raises(grpc.RpcError) as exc:
            call(server.address, grpc.ssl_channel_credentials(root_certificates=other))
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        # Plaintext is refused on a TLS port.
        with grpc.insecure_channel(server.address) as ch, pytest.raises(grpc.RpcError):
            pb_grpc.ExternalScalerStub(ch).GetMetricSpec(pb.ScaledObjectRef(name="llama", namespace="ml"), timeout=2)
    finally:
        server.stop(grace=0.5)


def client_creds(pki, name):
    """KEDA's channel: caCert plus, unless ``name`` is None, tlsClientCert/tlsClientKey from ``name``.crt/.key."""
    ca = (pki / "ca.crt").read_bytes()
    if name is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=(pki / f"{name}.key").read_bytes(),
                                        certificate_chain=(pki / f"{name}.crt").read_bytes())


@pytest.mark.parametrize("client", [None, "rogue", "expired"],
                         ids=["missing-client-cert", "client-cert-from-a-wrong-ca", "expired-client-cert"])
def test_mutual_tls_refuses_a_client_without_a_valid_certificate_from_the_client_ca(pki, client) -> None:
    server = serve(TlsFiles(pki / "tls.crt", pki / "tls.key", pki / "ca.crt"))
    try:
        with pytest.raises(grpc.RpcError) as exc:  # refused in the handshake: no RPC reaches the servicer
            call(server.address, client_creds(pki, client))
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        assert server.store.targets() == []
        assert call(server.address, client_creds(pki, "client")) == EXPECTED  # the valid one, same server
    finally:
        server.stop(grace=0.5)


def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(pki) -> None:
    server = serve(TlsFiles(pki / "tls.crt", pki / "tls.key", pki / "ca.crt"), health_port=0)
    try:
        assert call(server.address, client_creds(pki, "client")) == EXPECTED
        # The kubelet's plaintext gRPC probe reaches health on the health port, and only health.
        with grpc.insecure_channel(f"127.0.0.1:{server.health_port}") as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="externalscaler.ExternalScaler"), timeout=3).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as exc:
                pb_grpc.ExternalScalerStub(ch).GetMetricSpec(pb.ScaledObjectRef(name="llama", namespace="ml"),
                                                             timeout=3)
            assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop(grace=0.5)


@pytest.mark.parametrize("cert, key, ca, flag", [
    ("a.crt", None, None, "--tls-key"),
    (None, "a.key", None, "--tls-cert"),
    (None, None, "ca.crt", "--tls-client-ca"),
])
def test_tls_flag_combinations_name_the_missing_flag(cert, key, ca, flag) -> None:
    with pytest.raises(TlsConfigError, match=flag):
        tls_files(cert, key, ca)


def test_unreadable_or_non_pem_files_name_flag_and_path(pki, tmp_path) -> None:
    with pytest.raises(TlsConfigError, match=r"--tls-cert='.*missing.crt': cannot read"):
        TlsFiles(tmp_path / "missing.crt", pki / "tls.key").server_credentials()
    with pytest.raises(TlsConfigError, match=r"not a matching certificate and private key"):
        TlsFiles(pki / "tls.crt", pki / "client.key").server_credentials()
    (tmp_path / "junk.key").write_text("not a key")
    with pytest.raises(TlsConfigError, match=r"--tls-key='.*junk.key': not a PEM file holding a PRIVATE KEY"):
        TlsFiles(pki / "tls.crt", tmp_path / "junk.key").server_credentials()


def test_rotated_certificate_files_are_served_to_new_connections_without_restart(pki, tmp_path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    for name in ("tls.crt", "tls.key"):
        (live / name).write_bytes((pki / name).read_bytes())
    server = serve(TlsFiles(live / "tls.crt", live / "tls.key"))
    try:
        old_ca = (pki / "ca.crt").read_bytes()
        assert call(server.address, grpc.ssl_channel_credentials(root_certificates=old_ca)) == EXPECTED
        # cert-manager renews with a new CA: the files change in place.
        new_ca = make_ca("renewed-ca")
        key, cert = issue(new_ca, "vllm-scaler", server=True)
        (live / "tls.key").write_bytes(key)
        (live / "tls.crt").write_bytes(cert)
        new_ca_pem = new_ca[1].public_bytes(serialization.Encoding.PEM)
        assert call(server.address, grpc.ssl_channel_credentials(root_certificates=new_ca_pem)) == EXPECTED
        with pytest.raises(grpc.RpcError):
            call(server.address, grpc.ssl_channel_credentials(root_certificates=old_ca))
        # A broken write (half-written, or a key of another certificate) is not loaded: the current pair serves.
        for bad in (b"half-written", (pki / "client.key").read_bytes()):
            (live / "tls.key").write_bytes(bad)
            assert call(server.address, grpc.ssl_channel_credentials(root_certificates=new_ca_pem)) == EXPECTED
    finally:
        server.stop(grace=0.5)
