"""The verification service's review API as a bare HTTP app around a ReviewDesk (no bus
lifecycle of its own), behind the real token check, for the tests that call the API."""

from __future__ import annotations

from services.verification.audit import AuditTrail
from services.verification.handlers import PROTECTED_PATHS, ReviewApi
from services.verification.review import ReviewDesk
from services.verification.reviewers import ReviewerDirectory
from shared.auth import TokenVerifier, oidc_middleware
from shared.runtime import ServiceApp
from shared.settings import OidcSettings

__all__ = ["review_app"]


def review_app(desk: ReviewDesk, oidc: OidcSettings, name: str) -> ServiceApp:
    tokens = TokenVerifier(oidc)

    async def nothing() -> None:
        return None

    async def unready() -> list[str]:
        return []

    return ServiceApp(
        name=name,
        start=nothing,
        stop=tokens.close,
        unready=unready,
        routes=ReviewApi(desk, ReviewerDirectory(desk.fhir), AuditTrail(desk.fhir)).routes(),
        middlewares=[oidc_middleware(tokens, PROTECTED_PATHS)],
    )
