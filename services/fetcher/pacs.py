"""Which PACS a study is fetched from: the one its ImagingStudy's dicom-wado-rs Endpoint names
(carried in study.detected as `dicomweb_base_url`) when that address is allowed, the configured
PACS when the study names none. An address not on the allow-list is refused with a permanent
error naming it: radmesh never sends its PACS credentials to a server nobody configured."""

from __future__ import annotations

from collections.abc import Iterable

from shared.dicomweb import DicomWebClient
from shared.errors import PermanentError
from shared.settings import DicomWebSettings

__all__ = ["PacsDirectory"]


def _normal(url: str) -> str:
    return url.strip().rstrip("/")


class PacsDirectory:
    """One DICOMweb client per allowed PACS (the configured one first)."""

    def __init__(
        self,
        default: DicomWebClient,
        settings: DicomWebSettings | None = None,
        allowed: Iterable[str] = (),
    ) -> None:
        self.default = default
        self._settings = settings
        self._allowed = {_normal(url) for url in allowed} | {_normal(default.base_url)}
        self._clients: dict[str, DicomWebClient] = {_normal(default.base_url): default}

    def client_for(self, base_url: str | None) -> DicomWebClient:
        """The client of `base_url` (the configured PACS when None)."""
        if base_url is None:
            return self.default
        url = _normal(base_url)
        if url not in self._allowed or (url not in self._clients and self._settings is None):
            raise PermanentError(
                f"the study's DICOMweb Endpoint {url} is not an allowed PACS "
                f"(RADMESH_FETCHER_ALLOWED_PACS: {', '.join(sorted(self._allowed))})"
            )
        if url not in self._clients:
            assert self._settings is not None
            self._clients[url] = DicomWebClient(self._settings, base_url=url)
        return self._clients[url]

    async def close(self) -> None:
        for client in self._clients.values():
            if client is not self.default:
                await client.close()
