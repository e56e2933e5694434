"""TLS to the FHIR server and the PACS: the site's certificate authorities (a PEM bundle named
by `RADMESH_FHIR__CA_BUNDLE` / `RADMESH_DICOMWEB__CA_BUNDLE`), or the system's. Certificates
are always verified. The bundle is read when the adapter is made, so a service with an
unusable one does not start (exit 2, naming it)."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp

from shared.errors import ConfigurationError

__all__ = ["Trust"]


class Trust:
    """Whom an adapter's HTTPS connections trust."""

    def __init__(self, ca_bundle: Path | None) -> None:
        self.context: ssl.SSLContext | None = None
        if ca_bundle is not None:
            try:
                self.context = ssl.create_default_context(cafile=str(ca_bundle))
            except (OSError, ssl.SSLError) as error:
                raise ConfigurationError(f"CA bundle {ca_bundle} cannot be used: {error}") from error

    def connector(self) -> aiohttp.TCPConnector:
        """A connector for a new session (inside the event loop)."""
        return aiohttp.TCPConnector(ssl=self.context if self.context is not None else True)
