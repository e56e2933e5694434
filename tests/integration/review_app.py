"""The verification service's review API as a bare HTTP app around a ReviewDesk (no bus
lifecycle of its own), for the tests that call the API."""

from __future__ import annotations

from services.verification.handlers import ReviewApi, bearer_token_middleware
from services.verification.review import ReviewDesk
from shared.runtime import ServiceApp

__all__ = ["review_app"]


def review_app(desk: ReviewDesk, token: str, name: str) -> ServiceApp:
    async def nothing() -> None:
        return None

    async def ready() -> bool:
        return True

    return ServiceApp(
        name=name,
        start=nothing,
        stop=nothing,
        ready=ready,
        routes=ReviewApi(desk).routes(),
        middlewares=[bearer_token_middleware(token)],
    )
