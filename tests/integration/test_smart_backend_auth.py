"""SMART Backend Services on the development stack: the client radmesh-services gets access tokens
from Keycloak with a JWT assertion signed by its private key (private_key_jwt, RS384), and HAPI's
second port (RADMESH_FHIR_SMART_PORT, 8081) serves /fhir only to such tokens, by scope
(system/*.rs reads, system/*.cruds also writes), while the first port (8080) stays open.
The assertion is built by hand here (pyjwt) to check the server side against the contract in
deploy/keycloak/README.md and deploy/hapi-fhir/README.md; tokens are never printed."""

from __future__ import annotations

import base64
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from prometheus_client import REGISTRY

from shared.fhir import FhirClient
from shared.settings import FhirSettings, SmartBackendSettings
from shared.smart_auth import TokenRefused
from tests.conftest import Infrastructure
from tests.identity import access_token, forged_token
from tests.integration.fhir_seed import TEST_TAG_SYSTEM
from tests.waiting import until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "radmesh-services"
READ_SCOPE = "system/*.rs"
WRITE_SCOPE = "system/*.cruds"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FHIR_JSON = "application/fhir+json"
TIMEOUT = aiohttp.ClientTimeout(total=15)


@dataclass(frozen=True)
class Smart:
    """Where the SMART side of the development stack answers, and the keys up.sh made."""

    token_url: str
    open_base: str  # RADMESH_FHIR_PORT: no token needed
    smart_base: str  # RADMESH_FHIR_SMART_PORT: access tokens required
    services_key: Path  # known to Keycloak (radmesh-services' certificate)
    wrong_key: Path  # a key pair Keycloak does not know


@pytest.fixture(scope="module")
def smart(infra: Infrastructure) -> Smart:
    run_dir = Path(os.environ.get("RADMESH_RUN_DIR", str(ROOT / ".run")))
    keys = run_dir / "keycloak" / "smart"
    services_key, wrong_key = keys / f"{CLIENT_ID}.key.pem", keys / "wrong.key.pem"
    for key in (services_key, wrong_key):
        if not key.is_file():
            pytest.fail(f"{key} is missing: deploy/keycloak/up.sh makes it (then restart Keycloak)")
    smart_port = os.environ.get("RADMESH_FHIR_SMART_PORT", "8081")
    return Smart(
        token_url=f"{infra.oidc_issuer}/protocol/openid-connect/token",
        open_base=infra.fhir_base_url,
        smart_base=f"http://127.0.0.1:{smart_port}/fhir",
        services_key=services_key,
        wrong_key=wrong_key,
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        yield session


def client_assertion(key: Path, token_url: str, *, kid: str | None = None) -> str:
    """The SMART Backend Services client assertion: RS384, iss = sub = the client, aud = the token
    endpoint, a random jti, valid for 60 s; no kid unless given."""
    claims = {
        "iss": CLIENT_ID,
        "sub": CLIENT_ID,
        "aud": token_url,
        "jti": str(uuid.uuid4()),
        "exp": int(time.time()) + 60,
    }
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, key.read_text(), algorithm="RS384", headers=headers)


def keycloak_key_id(key: Path) -> str:
    """The kid Keycloak gives a client's certificate key: base64url(SHA-256(SubjectPublicKeyInfo))."""
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(spki).digest()).rstrip(b"=").decode()


async def request_token(
    http: aiohttp.ClientSession,
    smart: Smart,
    scope: str,
    *,
    key: Path | None = None,
    kid: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """Keycloak's answer to a client-credentials request signed with `key` (status, JSON body)."""
    assertion = client_assertion(key or smart.services_key, smart.token_url, kid=kid)
    form = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    async with http.post(smart.token_url, data=form) as response:
        body = await response.json(content_type=None)
        assert isinstance(body, dict)
        return response.status, body


async def token_for(http: aiohttp.ClientSession, smart: Smart, scope: str) -> str:
    status, body = await request_token(http, smart, scope)
    assert status == 200, {k: v for k, v in body.items() if "token" not in k}
    token = body["access_token"]
    assert isinstance(token, str)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": FHIR_JSON}


def basic_resource() -> dict[str, Any]:
    """A Basic resource tagged as this test's (Basic.code is its one required element)."""
    return {
        "resourceType": "Basic",
        "meta": {"tag": [{"system": TEST_TAG_SYSTEM, "code": "smart-backend-auth"}]},
        "code": {"coding": [{"system": TEST_TAG_SYSTEM, "code": f"smart-{uuid.uuid4().hex[:12]}"}]},
    }


async def fhir_call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    """Status, JSON body and headers of one FHIR request."""
    sent = {"Accept": FHIR_JSON, **(headers or {})}
    if body is not None:
        sent["Content-Type"] = FHIR_JSON
    async with http.request(method, url, headers=sent, json=body) as response:
        text = await response.text()
        parsed = await response.json(content_type=None) if text else {}
        assert isinstance(parsed, dict)
        return response.status, parsed, response.headers


def issue(outcome: dict[str, Any]) -> dict[str, Any]:
    assert outcome.get("resourceType") == "OperationOutcome", outcome
    first = outcome["issue"][0]
    assert isinstance(first, dict)
    return first


# -- Keycloak: the token endpoint ---------------------------------------------------------------


async def test_the_services_key_gets_a_token_with_the_scopes_asked_for(
    http: aiohttp.ClientSession, smart: Smart, infra: Infrastructure
) -> None:
    status, body = await request_token(http, smart, f"{READ_SCOPE} {WRITE_SCOPE}")
    assert status == 200, {k: v for k, v in body.items() if "token" not in k}
    assert body["token_type"] == "Bearer"
    assert 0 < body["expires_in"] <= 300
    assert set(body["scope"].split()) >= {READ_SCOPE, WRITE_SCOPE}
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["iss"] == infra.oidc_issuer
    assert claims["azp"] == CLIENT_ID
    assert set(claims["scope"].split()) >= {READ_SCOPE, WRITE_SCOPE}
    assert claims["exp"] - claims["iat"] == 300

    # an optional scope is granted only when asked for
    status, body = await request_token(http, smart, READ_SCOPE)
    assert status == 200
    assert READ_SCOPE in body["scope"].split()
    assert WRITE_SCOPE not in body["scope"].split()


async def test_an_assertion_signed_by_a_wrong_key_is_refused(
    http: aiohttp.ClientSession, smart: Smart
) -> None:
    status, body = await request_token(http, smart, READ_SCOPE, key=smart.wrong_key)
    # Keycloak 26.7 answers every failed JWT client authentication with 400 invalid_client (RFC
    # 6749 5.2 allows 400 or 401 when the client did not use the Authorization header).
    assert status in (400, 401)
    assert body["error"] == "invalid_client"
    assert "access_token" not in body


async def test_a_kid_must_be_the_one_keycloak_gives_the_certificate(
    http: aiohttp.ClientSession, smart: Smart
) -> None:
    """kid is optional; when sent, Keycloak looks the key up by it (certificate credential)."""
    status, body = await request_token(
        http, smart, READ_SCOPE, kid=keycloak_key_id(smart.services_key)
    )
    assert status == 200, {k: v for k, v in body.items() if "token" not in k}
    status, body = await request_token(http, smart, READ_SCOPE, kid=CLIENT_ID)
    assert (status, body["error"]) == (400, "invalid_client")


# -- HAPI: the SMART port -----------------------------------------------------------------------


async def test_without_a_token_the_smart_port_answers_401(
    http: aiohttp.ClientSession, smart: Smart
) -> None:
    status, outcome, headers = await fhir_call(http, "GET", f"{smart.smart_base}/Basic?_count=1")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    first = issue(outcome)
    assert first["code"] == "login"
    assert "no access token" in first["diagnostics"]
    assert smart.token_url in first["diagnostics"]


async def test_a_garbage_or_foreign_token_answers_401_without_echoing_it(
    http: aiohttp.ClientSession, smart: Smart, infra: Infrastructure
) -> None:
    garbage = f"not-a-jwt-{uuid.uuid4().hex}"
    forged = forged_token(infra.oidc_issuer)  # Keycloak's claims, a key of our own
    for token, said in ((garbage, "not a signed JWT"), (forged, "does not publish")):
        status, outcome, headers = await fhir_call(
            http, "GET", f"{smart.smart_base}/Basic?_count=1", headers=bearer(token)
        )
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert 'error="invalid_token"' in headers["WWW-Authenticate"]
        first = issue(outcome)
        assert first["code"] == "login"
        assert said in first["diagnostics"]
        for part in token.split("."):
            assert part not in first["diagnostics"]
            assert part not in headers["WWW-Authenticate"]

    status, outcome, _ = await fhir_call(
        http, "GET", f"{smart.smart_base}/Basic", headers={"Authorization": "Basic cmFkMTp4"}
    )
    assert status == 401
    assert "not 'Bearer" in issue(outcome)["diagnostics"]


async def test_a_read_token_reads_but_cannot_write(
    http: aiohttp.ClientSession, smart: Smart
) -> None:
    token = await token_for(http, smart, READ_SCOPE)

    status, bundle, _ = await fhir_call(
        http, "GET", f"{smart.smart_base}/Basic?_count=1", headers=bearer(token)
    )
    assert status == 200
    assert bundle["resourceType"] == "Bundle"
    # a search by POST is a read too
    async with http.post(
        f"{smart.smart_base}/Basic/_search",
        data={"_count": "1"},
        headers=bearer(token),
    ) as response:
        assert response.status == 200

    status, outcome, headers = await fhir_call(
        http, "POST", f"{smart.smart_base}/Basic", headers=bearer(token), body=basic_resource()
    )
    assert status == 403
    first = issue(outcome)
    assert first["code"] == "forbidden"
    assert WRITE_SCOPE in first["diagnostics"]
    assert "insufficient_scope" in headers["WWW-Authenticate"]

    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": basic_resource(),
                "request": {"method": "POST", "url": "Basic"},
            }
        ],
    }
    status, outcome, _ = await fhir_call(
        http, "POST", smart.smart_base, headers=bearer(token), body=transaction
    )
    assert status == 403
    assert WRITE_SCOPE in issue(outcome)["diagnostics"]


async def test_a_cruds_token_writes(http: aiohttp.ClientSession, smart: Smart) -> None:
    token = await token_for(http, smart, f"{READ_SCOPE} {WRITE_SCOPE}")
    status, created, headers = await fhir_call(
        http, "POST", f"{smart.smart_base}/Basic", headers=bearer(token), body=basic_resource()
    )
    assert status == 201, created
    assert created["resourceType"] == "Basic"
    assert f":{smart.smart_base.split(':')[2]}" in headers["Location"]  # served from the SMART port

    url = f"{smart.smart_base}/Basic/{created['id']}"
    status, read, _ = await fhir_call(http, "GET", url, headers=bearer(token))
    assert (status, read["id"]) == (200, created["id"])
    status, _, _ = await fhir_call(http, "DELETE", url, headers=bearer(token))
    assert status in (200, 204)


async def test_a_user_token_without_system_scopes_is_forbidden(
    http: aiohttp.ClientSession, smart: Smart, infra: Infrastructure
) -> None:
    """A real Keycloak token (good signature and issuer) of a signed-in user: no system scope."""
    token = await access_token(infra, "rad1")
    status, outcome, _ = await fhir_call(
        http, "GET", f"{smart.smart_base}/Basic?_count=1", headers=bearer(token)
    )
    assert status == 403
    first = issue(outcome)
    assert first["code"] == "forbidden"
    assert READ_SCOPE in first["diagnostics"]


async def test_metadata_and_smart_configuration_are_open_on_both_ports(
    http: aiohttp.ClientSession, smart: Smart
) -> None:
    for base in (smart.open_base, smart.smart_base):
        status, statement, _ = await fhir_call(http, "GET", f"{base}/metadata")
        assert (status, statement["resourceType"]) == (200, "CapabilityStatement")

        async with http.get(f"{base}/.well-known/smart-configuration") as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            configuration = await response.json()
        assert configuration["token_endpoint"] == smart.token_url
        assert configuration["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
        assert configuration["token_endpoint_auth_signing_alg_values_supported"] == [
            "RS384",
            "ES384",
        ]
        assert configuration["grant_types_supported"] == ["client_credentials"]
        assert configuration["scopes_supported"] == [READ_SCOPE, WRITE_SCOPE]
        assert configuration["capabilities"] == ["client-confidential-asymmetric"]


# -- HAPI: the open port is as before -------------------------------------------------------------


async def test_the_open_port_needs_no_token(http: aiohttp.ClientSession, smart: Smart) -> None:
    status, bundle, _ = await fhir_call(http, "GET", f"{smart.open_base}/Basic?_count=1")
    assert (status, bundle["resourceType"]) == (200, "Bundle")
    status, created, _ = await fhir_call(
        http, "POST", f"{smart.open_base}/Basic", body=basic_resource()
    )
    assert status == 201, created
    answers: list[int] = []

    async def deleted() -> bool:
        # HAPI answers 409 (HAPI-0826, "two threads were trying to update the same resource")
        # when its own background indexing still holds a resource this new: a client sends the
        # DELETE again, as HAPI's message says
        status, _, _ = await fhir_call(http, "DELETE", f"{smart.open_base}/Basic/{created['id']}")
        answers.append(status)
        return status in (200, 204)

    await until(deleted, "the open port takes a DELETE without a token", seconds=10)
    assert set(answers) <= {200, 204, 409}, answers


def _calls_to_the_identity_provider() -> float:
    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "radmesh_remote_call_seconds"
        for sample in family.samples
        if sample.name.endswith("_count") and sample.labels.get("remote") == "identity-provider"
    )


async def test_radmesh_reads_and_writes_on_the_protected_port_with_its_own_tokens(
    smart: Smart,
) -> None:
    """radmesh's FhirClient with SMART settings (shared/smart_auth.py): the token endpoint found
    in the server's smart-configuration, a token got once with the client's key and reused for
    a write and a read on the port that requires one."""
    settings = FhirSettings(
        base_url=smart.smart_base,
        smart=SmartBackendSettings(client_id=CLIENT_ID, private_key_file=smart.services_key),
    )
    fhir = FhirClient(settings)
    before = _calls_to_the_identity_provider()
    try:
        created = await fhir.create_resource(basic_resource())
        read = await fhir.read_resource(f"Basic/{created['id']}")
        found = await fhir.execute("Basic", "get", params={"_id": created["id"]})
    finally:
        await fhir.close()
    assert read["id"] == created["id"]
    assert found["total"] == 1
    # the smart-configuration and one token request; the three FHIR calls reused the token
    assert _calls_to_the_identity_provider() - before == 2


async def test_a_wrong_key_is_refused_clearly_and_not_asked_again_within_the_backoff(
    smart: Smart,
) -> None:
    """The client's key is not the one Keycloak knows: the token endpoint answers invalid_client,
    radmesh raises TokenRefused (transient: the message waits in the retry delays) naming it,
    and five more calls within the backoff do not ask the endpoint again."""
    settings = FhirSettings(
        base_url=smart.smart_base,
        smart=SmartBackendSettings(
            client_id=CLIENT_ID,
            private_key_file=smart.wrong_key,
            token_url=smart.token_url,
            failure_backoff_seconds=60,
        ),
    )
    fhir = FhirClient(settings)
    before = _calls_to_the_identity_provider()
    try:
        for _ in range(6):
            with pytest.raises(TokenRefused, match="invalid_client"):
                await fhir.read_resource("Basic/anything")
    finally:
        await fhir.close()
    assert _calls_to_the_identity_provider() - before == 1
