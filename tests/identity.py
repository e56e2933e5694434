"""Access tokens from the development Keycloak for the tests, and tokens it never issued."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.auth import development_token
from shared.settings import OidcSettings
from tests.conftest import Infrastructure

__all__ = ["DEV_PASSWORD", "TokenCache", "access_token", "forged_token", "oidc_settings"]

DEV_PASSWORD = "radmesh-dev"  # of every account in deploy/keycloak/realm-radmesh.json


def oidc_settings(infra: Infrastructure, **overrides: Any) -> OidcSettings:
    return OidcSettings(issuer=infra.oidc_issuer, **overrides)


async def access_token(
    infra: Infrastructure, account: str, *, client: str = "radmesh-review"
) -> str:
    """A real access token of a development account (rad1, rad2, clin1, clin2, ops1, guest1)."""
    settings = oidc_settings(infra, page_client_id=client)
    return await development_token(settings, account, DEV_PASSWORD)


def forged_token(issuer: str, *, roles: tuple[str, ...] = ("radiologist",)) -> str:
    """A well-formed RS256 token with the claims radmesh reads, signed by a key of our own."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": "radmesh",
        "sub": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 300,
        "preferred_username": "intruder",
        "realm_access": {"roles": list(roles)},
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "not-keycloaks"})


class TokenCache:
    """Real access tokens per account, fetched again when less than 30 s of one is left."""

    def __init__(self, infra: Infrastructure) -> None:
        self.infra = infra
        self._tokens: dict[str, tuple[str, float]] = {}

    async def __call__(self, account: str) -> str:
        token, expires = self._tokens.get(account, ("", 0.0))
        if expires - time.time() < 30:
            token = await access_token(self.infra, account)
            claims = jwt.decode(token, options={"verify_signature": False})
            self._tokens[account] = (token, float(claims["exp"]))
        return token
