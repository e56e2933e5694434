"""shared.tls: the FHIR client reaches an https:// server whose certificate a site CA signed
when that CA's bundle is configured, and refuses it (transient: no answer) when it is not; an
unreadable bundle stops start-up."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.errors import ConfigurationError, RemoteUnavailable
from shared.fhir import FhirClient
from shared.settings import FhirSettings
from shared.tls import Trust


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture
async def https_fhir(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A FHIR-ish https server on loopback with a certificate from a CA of the test's own; its
    base URL and the CA's PEM bundle."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "radmesh test CA")])
    ca = _certificate("radmesh test CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("127.0.0.1", server_key, ca_name, ca_key, ca=False)
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")

    async def metadata(request: web.Request) -> web.Response:
        return web.json_response({"resourceType": "CapabilityStatement"})

    app = web.Application()
    app.router.add_get("/fhir/metadata", metadata)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    yield f"https://127.0.0.1:{port}/fhir", bundle
    await runner.cleanup()


async def test_the_site_ca_bundle_is_trusted_and_nothing_else(
    https_fhir: tuple[str, Path],
) -> None:
    base_url, bundle = https_fhir
    trusted = FhirClient(FhirSettings(base_url=base_url, ca_bundle=bundle))
    untrusted = FhirClient(FhirSettings(base_url=base_url))
    try:
        assert (await trusted.execute("metadata", "get"))["resourceType"] == "CapabilityStatement"
        with pytest.raises(RemoteUnavailable, match="certificate verify failed"):
            await untrusted.execute("metadata", "get")
    finally:
        await trusted.close()
        await untrusted.close()


def test_an_unreadable_bundle_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot be used"):
        Trust(tmp_path / "missing.pem")
