"""shared.smart_auth against a token endpoint in the test (aiohttp on loopback): the client
assertion the SMART Backend Services profile asks for, the token cached until shortly before it
expires, and a refusal asked once per backoff, not per call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.errors import ConfigurationError
from shared.settings import SmartBackendSettings
from shared.smart_auth import ASSERTION_TYPE, SmartBackendAuth, TokenRefused


@dataclass
class TokenEndpoint:
    url: str
    fhir_base_url: str
    forms: list[dict[str, str]] = field(default_factory=list)
    answer: tuple[int, dict[str, Any]] = (200, {})
    issued: int = 0


@pytest.fixture
async def endpoint() -> AsyncIterator[TokenEndpoint]:
    state = TokenEndpoint(url="", fhir_base_url="")

    async def token(request: web.Request) -> web.Response:
        state.forms.append(dict(await request.post()))  # type: ignore[arg-type]
        status, body = state.answer
        if status == 200 and not body:
            state.issued += 1
            body = {"access_token": f"token-{state.issued}", "expires_in": 300,
                    "token_type": "bearer", "scope": "system/*.rs system/*.cruds"}
        return web.json_response(body, status=status)

    async def smart_configuration(request: web.Request) -> web.Response:
        return web.json_response({"token_endpoint": state.url})

    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_get("/fhir/.well-known/smart-configuration", smart_configuration)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/token"
    state.fhir_base_url = f"http://127.0.0.1:{port}/fhir"
    yield state
    await runner.cleanup()


def _rsa_key() -> tuple[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, key.public_key()


async def test_the_assertion_is_signed_rs384_for_the_discovered_token_endpoint(
    endpoint: TokenEndpoint,
) -> None:
    """The token endpoint is read from the FHIR server's smart-configuration; the request is a
    client-credentials grant with the scopes and a JWT assertion signed RS384 whose iss and sub
    are the client, aud the token endpoint, with a jti and at most five minutes to live."""
    pem, public = _rsa_key()
    settings = SmartBackendSettings.model_validate(
        {"client_id": "radmesh-services", "private_key": pem, "key_id": "k1"}
    )
    auth = SmartBackendAuth(settings, endpoint.fhir_base_url, 5)
    try:
        assert await auth.token() == "token-1"
    finally:
        await auth.close()
    (form,) = endpoint.forms
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "system/*.rs system/*.cruds"
    assert form["client_assertion_type"] == ASSERTION_TYPE
    assert jwt.get_unverified_header(form["client_assertion"])["alg"] == "RS384"
    assert jwt.get_unverified_header(form["client_assertion"])["kid"] == "k1"
    claims = jwt.decode(
        form["client_assertion"], public, algorithms=["RS384"], audience=endpoint.url
    )
    assert claims["iss"] == claims["sub"] == "radmesh-services"
    assert claims["jti"] and claims["exp"] - claims["iat"] <= 300


async def test_an_es384_key_signs_es384(endpoint: TokenEndpoint) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    settings = SmartBackendSettings.model_validate(
        {"client_id": "c", "private_key": pem, "algorithm": "ES384", "token_url": endpoint.url}
    )
    auth = SmartBackendAuth(settings, endpoint.fhir_base_url, 5)
    try:
        await auth.token()
    finally:
        await auth.close()
    assertion = endpoint.forms[0]["client_assertion"]
    assert jwt.decode(assertion, key.public_key(), algorithms=["ES384"], audience=endpoint.url)


async def test_the_token_is_cached_then_refreshed_and_forgotten_on_demand(
    endpoint: TokenEndpoint,
) -> None:
    """Ten calls, one token request; `forget` (the FHIR server said 401) gets a new one; a
    token shorter-lived than twice `refresh_before_seconds` is still reused (renewed halfway
    through its life), not asked for at every call; one already past that point is replaced."""
    pem, _ = _rsa_key()
    settings = SmartBackendSettings.model_validate(
        {"client_id": "c", "private_key": pem, "token_url": endpoint.url}
    )
    auth = SmartBackendAuth(settings, endpoint.fhir_base_url, 5)
    try:
        assert {await auth.token() for _ in range(10)} == {"token-1"}
        auth.forget()
        assert await auth.token() == "token-2"
        endpoint.answer = (200, {"access_token": "short", "expires_in": 30})
        auth.forget()
        assert {await auth.token() for _ in range(5)} == {"short"}  # 30 s: reused for 15 s
        endpoint.answer = (200, {"access_token": "spent", "expires_in": 0})
        auth.forget()
        assert await auth.token() == "spent"
        endpoint.answer = (200, {})
        assert await auth.token() == "token-3"  # "spent" was at its renewal point at once
    finally:
        await auth.close()
    assert len(endpoint.forms) == 5


async def test_a_refused_key_is_asked_once_per_backoff_and_says_why(
    endpoint: TokenEndpoint,
) -> None:
    """401 invalid_client: TokenRefused (transient: the message waits and is retried) naming
    the endpoint's error; further calls within the backoff do not ask the endpoint again."""
    pem, _ = _rsa_key()
    settings = SmartBackendSettings.model_validate(
        {"client_id": "c", "private_key": pem, "token_url": endpoint.url,
         "failure_backoff_seconds": 60}
    )
    endpoint.answer = (401, {"error": "invalid_client", "error_description": "Invalid signature"})
    auth = SmartBackendAuth(settings, endpoint.fhir_base_url, 5)
    try:
        for _ in range(5):
            with pytest.raises(TokenRefused, match="invalid_client: Invalid signature"):
                await auth.token()
    finally:
        await auth.close()
    assert len(endpoint.forms) == 1


def test_no_key_at_all_is_a_configuration_error() -> None:
    settings = SmartBackendSettings(client_id="c")
    with pytest.raises(ConfigurationError, match="PRIVATE_KEY_FILE"):
        SmartBackendAuth(settings, "http://127.0.0.1:1/fhir", 5)
