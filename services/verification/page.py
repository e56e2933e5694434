"""The review desk's web page (`/review`): plain HTML, CSS and JS from `review_page/`, no build
step and nothing fetched from the internet. The page signs in against the identity provider
(authorization code + PKCE) and then calls the review API with the user's token; the page
itself and its configuration carry no patient data and need no token.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from shared.auth import IdentityProviderUnavailable, TokenVerifier
from shared.operation_outcome import outcome_response

__all__ = ["ReviewPage"]

PAGE_DIR = Path(__file__).with_name("review_page")
_ASSETS = {"review.js": "text/javascript", "review.css": "text/css"}


class ReviewPage:
    def __init__(self, tokens: TokenVerifier, viewer_url: str | None) -> None:
        self.tokens = tokens
        self.viewer_url = viewer_url

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/review", self.page),
            web.get("/review/config.json", self.config),
            web.get("/review/assets/{name}", self.asset),
        ]

    async def page(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(
            PAGE_DIR / "index.html",
            headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-cache"},
        )

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _ASSETS:
            return outcome_response(404, "not-found", f"the review page has no asset {name!r}")
        return web.FileResponse(
            PAGE_DIR / name,
            headers={
                "Content-Type": f"{_ASSETS[name]}; charset=utf-8",
                "Cache-Control": "no-cache",
            },
        )

    async def config(self, _request: web.Request) -> web.StreamResponse:
        """Where the page signs in (from the issuer's discovery document) and the viewer."""
        try:
            discovery = await self.tokens.discovery()
        except IdentityProviderUnavailable as error:
            return outcome_response(
                503,
                "transient",
                f"the identity provider cannot be reached: {error}",
                headers={"Retry-After": "5"},
            )
        return web.json_response(
            {
                "issuer": self.tokens.settings.issuer,
                "client_id": self.tokens.settings.page_client_id,
                "roles_claim": self.tokens.settings.roles_claim,
                "authorization_endpoint": discovery.get("authorization_endpoint"),
                "token_endpoint": discovery.get("token_endpoint"),
                "end_session_endpoint": discovery.get("end_session_endpoint"),
                "viewer_url": self.viewer_url,
            }
        )
