"""services.fetcher.pacs: a study is fetched from its Endpoint's PACS only when allowed."""

from __future__ import annotations

import pytest

from services.fetcher.pacs import PacsDirectory
from shared.dicomweb import DicomWebClient
from shared.errors import PermanentError
from shared.settings import DicomWebSettings

SETTINGS = DicomWebSettings(base_url="http://127.0.0.1:8042/dicom-web")


async def test_the_configured_pacs_serves_studies_that_name_it_or_none() -> None:
    """No Endpoint, or the configured address (trailing slash or not): the configured client."""
    default = DicomWebClient(SETTINGS)
    pacs = PacsDirectory(default, SETTINGS)
    assert pacs.client_for(None) is default
    assert pacs.client_for("http://127.0.0.1:8042/dicom-web/") is default
    await pacs.close()


async def test_an_allowed_second_pacs_gets_its_own_client() -> None:
    """An Endpoint on the allow-list is fetched from with a client of its own, reused."""
    pacs = PacsDirectory(DicomWebClient(SETTINGS), SETTINGS, ["http://10.1.2.3/dicomweb"])
    other = pacs.client_for("http://10.1.2.3/dicomweb")
    assert other.base_url == "http://10.1.2.3/dicomweb"
    assert pacs.client_for("http://10.1.2.3/dicomweb/") is other
    await pacs.close()


async def test_an_endpoint_not_on_the_allow_list_is_refused_naming_it() -> None:
    """Any other address is a permanent error naming it and the allowed ones: the PACS
    credentials never go to a server nobody configured."""
    pacs = PacsDirectory(DicomWebClient(SETTINGS), SETTINGS)
    with pytest.raises(PermanentError, match=r"http://evil\.example/dicom-web is not an allowed"):
        pacs.client_for("http://evil.example/dicom-web")
    await pacs.close()
