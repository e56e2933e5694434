"""The fetcher's own settings (prefix RADMESH_FETCHER_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class FetcherSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RADMESH_FETCHER_", extra="ignore", frozen=True)

    port: int = 8091
    # DICOMweb roots besides RADMESH_DICOMWEB__BASE_URL that a study's Endpoint may name (the
    # same credentials are sent); any other address is refused with a permanent error.
    allowed_pacs: tuple[str, ...] = ()
