"""SMART Backend Services: radmesh's own FHIR calls authenticated with OAuth 2.0 client
credentials and a signed JWT assertion (private_key_jwt), as the SMART App Launch IG's
"Backend Services" profile asks (https://hl7.org/fhir/smart-app-launch/backend-services.html).

- The token endpoint comes from `RADMESH_FHIR__SMART__TOKEN_URL`, or from the FHIR server's
  `/.well-known/smart-configuration` (read once).
- Each token request carries a fresh client assertion: a JWT signed with the client's private
  key (RS384 or ES384, the algorithms the IG requires servers to support; the key from a PEM
  file or secret), `iss` = `sub` = the client id, `aud` = the token endpoint, a unique `jti`,
  expiring within five minutes.
- The access token is cached and refreshed `refresh_before_seconds` before it expires (or
  halfway through its life, if that is shorter: a short-lived token is still reused rather than
  asked for at every call); one request at a time per process, however many handlers need a
  token at once.
- A refusal from the token endpoint (a wrong key, an unknown client: 400/401) is logged once
  with the endpoint's error and raised as `TokenRefused` (transient: the message waits in the
  retry delays, nothing is lost); further attempts within `failure_backoff_seconds` fail at
  once without asking again, so a misconfigured key does not storm the identity provider.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import structlog

from shared.errors import ConfigurationError, RemoteUnavailable, TransientError
from shared.settings import SmartBackendSettings
from shared.telemetry import http_client_tracing
from shared.tls import Trust

__all__ = ["ASSERTION_TYPE", "SmartBackendAuth", "TokenRefused", "client_assertion"]

log = structlog.get_logger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_ASSERTION_LIFETIME_SECONDS = 300  # the IG: no more than five minutes


class TokenRefused(TransientError):
    """The token endpoint refused radmesh's client credentials (the message is retried later;
    the configuration needs fixing: the log says what the endpoint answered)."""


@dataclass(frozen=True)
class _Token:
    value: str
    renew_at: float  # time.monotonic() after which a new one is asked for


def client_assertion(
    client_id: str, token_url: str, private_key: str, algorithm: str, key_id: str | None
) -> str:
    """The signed JWT a token request authenticates with."""
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "jti": str(uuid.uuid4()),
        "iat": now,
        "exp": now + _ASSERTION_LIFETIME_SECONDS,
    }
    headers = {"kid": key_id} if key_id else None
    return jwt.encode(claims, private_key, algorithm=algorithm, headers=headers)


class SmartBackendAuth:
    """Access tokens for one FHIR server (see the module's docstring)."""

    def __init__(
        self,
        settings: SmartBackendSettings,
        fhir_base_url: str,
        timeout_seconds: float,
        trust: Trust | None = None,
    ) -> None:
        self.settings = settings
        self.trust = trust or Trust(None)
        self.fhir_base_url = fhir_base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._token: _Token | None = None
        self._token_url = settings.token_url
        self._refused_until = 0.0
        self._refusal = ""
        self._lock = asyncio.Lock()
        self._private_key = self._read_key()

    def _read_key(self) -> str:
        if self.settings.private_key is not None:
            return self.settings.private_key.get_secret_value()
        path = self.settings.private_key_file
        if path is None:
            raise ConfigurationError(
                "SMART Backend Services needs the client's private key: set "
                "RADMESH_FHIR__SMART__PRIVATE_KEY_FILE or RADMESH_FHIR__SMART__PRIVATE_KEY"
            )
        try:
            return Path(path).read_text()
        except OSError as error:
            raise ConfigurationError(f"SMART private key {path} cannot be read: {error}") from error

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=self.trust.connector(),
                timeout=self._timeout,
                trace_configs=http_client_tracing("identity-provider"),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def forget(self) -> None:
        """Drop the cached token (the FHIR server refused it): the next call gets a new one."""
        self._token = None

    async def token(self) -> str:
        """A valid access token, from the cache or the token endpoint."""
        if self._fresh(self._token):
            assert self._token is not None
            return self._token.value
        async with self._lock:
            if self._fresh(self._token):
                assert self._token is not None
                return self._token.value
            if time.monotonic() < self._refused_until:
                raise TokenRefused(self._refusal)
            self._token = await self._request_token()
            return self._token.value

    def _fresh(self, token: _Token | None) -> bool:
        return token is not None and time.monotonic() < token.renew_at

    async def _discover(self) -> str:
        url = f"{self.fhir_base_url}/.well-known/smart-configuration"
        body = await self._get_json(url)
        token_url = body.get("token_endpoint")
        if not isinstance(token_url, str) or not token_url:
            raise TokenRefused(f"{url} names no token_endpoint")
        return token_url

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._http().get(url, headers={"Accept": "application/json"}) as response:
                if response.status != 200:
                    raise RemoteUnavailable(
                        f"SMART configuration {url} answered {response.status}",
                        url=url,
                        status=response.status,
                    )
                body: dict[str, Any] = await response.json(content_type=None)
                return body
        except (aiohttp.ClientError, TimeoutError) as error:
            raise RemoteUnavailable(
                f"SMART configuration {url}: {error!r}", url=url, status=None
            ) from error

    async def _request_token(self) -> _Token:
        token_url = self._token_url or await self._discover()
        self._token_url = token_url
        form = {
            "grant_type": "client_credentials",
            "scope": self.settings.scopes,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(
                self.settings.client_id,
                token_url,
                self._private_key,
                self.settings.algorithm,
                self.settings.key_id,
            ),
        }
        try:
            async with self._http().post(token_url, data=form) as response:
                status = response.status
                body: dict[str, Any] = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise RemoteUnavailable(
                f"token endpoint {token_url}: {error!r}", url=token_url, status=None
            ) from error
        if status in (400, 401, 403):
            said = f"{status} {body.get('error', '')}: {str(body.get('error_description', ''))[:200]}"
            self._refusal = (
                f"the token endpoint {token_url} refused client {self.settings.client_id} "
                f"({said}); not asking again for {self.settings.failure_backoff_seconds:g} s"
            )
            self._refused_until = time.monotonic() + self.settings.failure_backoff_seconds
            log.error(
                "smart_token_refused", reason=self._refusal, action="check the client's key and id"
            )
            raise TokenRefused(self._refusal)
        if status != 200 or not isinstance(body.get("access_token"), str):
            raise RemoteUnavailable(
                f"token endpoint {token_url} answered {status}", url=token_url, status=status
            )
        granted = str(body.get("scope", ""))
        missing = set(self.settings.scopes.split()) - set(granted.split())
        if granted and missing:
            log.warning("smart_scopes_not_granted", missing=sorted(missing), granted=granted)
        lifetime = float(body.get("expires_in", 300))
        log.info("smart_token_obtained", expires_in=lifetime, scope=granted)
        margin = min(self.settings.refresh_before_seconds, lifetime / 2)
        return _Token(str(body["access_token"]), time.monotonic() + lifetime - margin)
