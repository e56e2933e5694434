"""OpenID Connect access tokens at radmesh's HTTP boundary: who is calling, and in which roles.

A request under a protected path must carry `Authorization: Bearer <JWT>` issued by the
configured identity provider (Keycloak in development; the hospital's Keycloak, Entra ID, ...
in production). The token is verified with PyJWT against the issuer's JWKS (found through its
discovery document, cached, fetched again when a token names an unknown key): signature,
issuer, audience, expiry. Its roles are read from a configurable claim (Keycloak: the dotted
path `realm_access.roles`).

Answers, each a FHIR OperationOutcome:
    401  no token, a malformed one, a bad signature, another issuer, another audience, expired
    403  a valid token without a role the route needs (`Forbidden` raised by a handler)
    503  the identity provider's keys cannot be fetched (nothing was done; retry later)

The roles radmesh knows are `ROLES`; what each may see is the route's business.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from shared.operation_outcome import outcome_response
from shared.settings import OidcSettings
from shared.telemetry import http_client_tracing

__all__ = [
    "CLINICIAN",
    "OPERATOR",
    "RADIOLOGIST",
    "ROLES",
    "Forbidden",
    "IdentityProviderUnavailable",
    "Principal",
    "TokenVerifier",
    "Unauthenticated",
    "development_token",
    "oidc_middleware",
    "principal_of",
    "require_role",
]

log = structlog.get_logger(__name__)

RADIOLOGIST = "radiologist"  # sees preliminary AI results and decides on them
CLINICIAN = "clinician"  # sees final results; acknowledges critical alerts
OPERATOR = "operator"  # sees queues, dead letters and model status; no patient data
ROLES = (RADIOLOGIST, CLINICIAN, OPERATOR)


class Unauthenticated(Exception):
    """No token, or one this service does not accept (answered with 401)."""


class Forbidden(Exception):
    """A valid token without the role the request needs (answered with 403)."""


class IdentityProviderUnavailable(Exception):
    """The identity provider's discovery document or keys could not be fetched (503)."""


@dataclass(frozen=True)
class Principal:
    """The signed-in user (or client) a verified access token names."""

    issuer: str
    subject: str
    username: str | None
    name: str | None
    given_name: str | None
    family_name: str | None
    roles: frozenset[str]
    fhir_user: str | None
    client: str | None  # the token's `azp`: the application the user signed in with

    def has_any(self, roles: Collection[str]) -> bool:
        return bool(self.roles.intersection(roles))

    @property
    def label(self) -> str:
        """How logs and audit records name the user: the account name, never a patient's."""
        return self.username or self.subject


_PRINCIPAL_KEY = web.RequestKey("radmesh.principal", Principal)


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class TokenVerifier:
    """Verifies access tokens of one issuer; keeps its JWKS cached."""

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self._discovery: dict[str, Any] | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
            self._session = aiohttp.ClientSession(
                timeout=timeout, trace_configs=http_client_tracing("identity-provider")
            )
        return self._session

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._http().get(url) as response:
                if response.status != 200:
                    raise IdentityProviderUnavailable(f"{url} answered {response.status}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise IdentityProviderUnavailable(f"{url}: {error!r}") from error
        if not isinstance(body, dict):
            raise IdentityProviderUnavailable(f"{url} did not answer a JSON object")
        return body

    async def discovery(self) -> dict[str, Any]:
        """The issuer's OpenID Connect discovery document (fetched once)."""
        if self._discovery is None:
            issuer = self.settings.issuer.rstrip("/")
            discovery = await self._get_json(f"{issuer}/.well-known/openid-configuration")
            if discovery.get("issuer") != self.settings.issuer:
                raise IdentityProviderUnavailable(
                    f"the discovery document names issuer {discovery.get('issuer')!r}, "
                    f"not the configured {self.settings.issuer!r} (RADMESH_OIDC__ISSUER)"
                )
            self._discovery = discovery
        return self._discovery

    async def _fetch_keys(self) -> None:
        jwks_url = self.settings.jwks_url
        if jwks_url is None:
            discovery = await self.discovery()
            jwks_url = _text(discovery.get("jwks_uri"))
            if jwks_url is None:
                raise IdentityProviderUnavailable("the discovery document has no jwks_uri")
        jwks = await self._get_json(jwks_url)
        keys: dict[str, jwt.PyJWK] = {}
        for key in jwks.get("keys", []):
            if not isinstance(key, dict) or key.get("use", "sig") != "sig":
                continue
            try:
                parsed = jwt.PyJWK(key)
            except (jwt.PyJWKError, jwt.InvalidKeyError) as error:
                log.warning("jwks_key_skipped", kid=key.get("kid"), error=str(error))
                continue
            keys[str(key.get("kid", ""))] = parsed
        self._keys = keys
        self._fetched_at = time.monotonic()
        log.info("jwks_fetched", url=jwks_url, keys=len(keys))

    async def _key(self, kid: str) -> jwt.PyJWK:
        async with self._lock:
            stale = time.monotonic() - self._fetched_at >= self.settings.jwks_refetch_seconds
            if kid not in self._keys and (not self._fetched_at or stale):
                await self._fetch_keys()
        key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated(
                f"the token is signed with key {kid!r}, which {self.settings.issuer} does not publish"
            )
        return key

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; Unauthenticated saying why it is not one."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as error:
            raise Unauthenticated(f"the bearer token is not a JWT: {error}") from error
        algorithm = header.get("alg")
        if algorithm not in self.settings.algorithms:
            raise Unauthenticated(
                f"the token's algorithm {algorithm!r} is not one of {list(self.settings.algorithms)}"
            )
        key = await self._key(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_seconds,
                options={"require": ["exp", "iat", "iss", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError as error:
            raise Unauthenticated("the token has expired: sign in again") from error
        except jwt.InvalidIssuerError as error:
            raise Unauthenticated(f"the token was not issued by {self.settings.issuer}") from error
        except jwt.InvalidAudienceError as error:
            raise Unauthenticated(
                f"the token is not meant for this service (audience {self.settings.audience!r})"
            ) from error
        except jwt.InvalidTokenError as error:
            raise Unauthenticated(f"the token is not valid: {error}") from error
        roles = _claim(claims, self.settings.roles_claim)
        return Principal(
            issuer=str(claims["iss"]),
            subject=str(claims["sub"]),
            username=_text(claims.get("preferred_username")),
            name=_text(claims.get("name")),
            given_name=_text(claims.get("given_name")),
            family_name=_text(claims.get("family_name")),
            roles=frozenset(r for r in roles if isinstance(r, str))
            if isinstance(roles, list)
            else frozenset(),
            fhir_user=_text(_claim(claims, self.settings.fhir_user_claim)),
            client=_text(claims.get("azp")),
        )


def _under(path: str, prefixes: Sequence[str]) -> bool:
    return any(path == prefix or path.startswith(f"{prefix.rstrip('/')}/") for prefix in prefixes)


def oidc_middleware(verifier: TokenVerifier, protected: Sequence[str]) -> Middleware:
    """Requests under the `protected` path prefixes need a valid access token (401 otherwise);
    the handler finds the caller with `principal_of(request)` and refuses a missing role by
    raising Forbidden (403)."""
    challenge = 'Bearer realm="radmesh"'

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _under(request.path, protected):
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("an access token is required (Authorization: Bearer <token>)")
            request[_PRINCIPAL_KEY] = await verifier.verify(token.strip())
        except Unauthenticated as error:
            log.info("request_unauthenticated", path=request.path, reason=str(error))
            return outcome_response(
                401,
                "login",
                str(error),
                headers={
                    "WWW-Authenticate": f'{challenge}, error="invalid_token"'
                    if token
                    else challenge
                },
            )
        except IdentityProviderUnavailable as error:
            log.warning("identity_provider_unavailable", error=str(error))
            return outcome_response(
                503,
                "transient",
                f"the identity provider cannot be reached to check the token; nothing was done: {error}",
                headers={"Retry-After": "5"},
            )
        try:
            return await handler(request)
        except Forbidden as error:
            principal = principal_of(request)
            log.info(
                "request_forbidden", path=request.path, user=principal.label, reason=str(error)
            )
            return outcome_response(403, "forbidden", str(error))

    return authenticate


def principal_of(request: web.Request) -> Principal:
    """The caller the middleware verified (only under a protected path)."""
    principal = request.get(_PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        raise Unauthenticated("no verified access token on this request")
    return principal


def require_role(request: web.Request, *roles: str) -> Principal:
    """The caller, if it holds one of `roles`; Forbidden otherwise."""
    principal = principal_of(request)
    if not principal.has_any(roles):
        held = sorted(principal.roles.intersection(ROLES)) or ["none of radmesh's roles"]
        raise Forbidden(
            f"this needs the role {' or '.join(roles)}; {principal.label} has {', '.join(held)}"
        )
    return principal


async def development_token(settings: OidcSettings, username: str, password: str) -> str:
    """An access token of a development account, by the resource-owner password grant of the
    page's public client (enabled in the development realm only; a real provider refuses it)."""
    url = f"{settings.issuer.rstrip('/')}/protocol/openid-connect/token"
    form = {
        "grant_type": "password",
        "client_id": settings.page_client_id,
        "username": username,
        "password": password,
        "scope": "openid",
    }
    timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(url, data=form) as response,
        ):
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        raise IdentityProviderUnavailable(f"{url}: {error!r}") from error
    token = body.get("access_token") if isinstance(body, dict) else None
    if response.status != 200 or not isinstance(token, str):
        described = body.get("error_description") if isinstance(body, dict) else None
        raise Unauthenticated(f"{url} refused {username}: {response.status} {described or body}")
    return token
