"""shared.dicomweb: a GET on a keep-alive connection the PACS closed while it sat idle; an
instance's identity from the first bytes of its part."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from shared.dicomweb import _HEADER_BYTES, DicomWebClient, _identity, _walked_identity
from shared.errors import RemoteUnavailable
from shared.settings import DicomWebSettings

STUDY = {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}


def _client(failures: int) -> tuple[DicomWebClient, list[str]]:
    """A client whose first `failures` reads find their connection closed by the PACS."""
    client = DicomWebClient(DicomWebSettings())
    calls: list[str] = []

    async def read_json(url: str, params: list[tuple[str, str]], what: str) -> list[Any]:
        calls.append(what)
        if len(calls) <= failures:
            raise aiohttp.ServerDisconnectedError()
        return [STUDY]

    client._read_json = read_json  # type: ignore[method-assign]
    return client, calls


async def test_a_query_on_a_connection_the_pacs_closed_goes_again_once() -> None:
    """Orthanc closes idle keep-alive connections after about a second: the QIDO-RS query that
    met one is sent again on a fresh connection (a hook answered 503 for it before)."""
    client, calls = _client(failures=1)
    assert await client.search_studies("A1") == ["1.2.3"]
    assert calls == ["QIDO-RS studies", "QIDO-RS studies"]


async def test_a_pacs_that_keeps_disconnecting_is_unavailable() -> None:
    client, calls = _client(failures=2)
    with pytest.raises(RemoteUnavailable, match="QIDO-RS studies"):
        await client.search_studies("A1")
    assert len(calls) == 2


def _encoded_instance(*, instance_number: int | None, header_padding: int = 0) -> bytes:
    """A small CT instance as WADO-RS sends it (Part 10 bytes); `header_padding` bytes of a
    private element push the Instance Number that far into the file."""
    dataset = Dataset()
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    dataset.SOPInstanceUID = "1.2.3.4.5"
    if header_padding:
        dataset.private_block(0x0009, "RADMESH TEST", create=True).add_new(
            0x10, "OB", bytes(header_padding)
        )
    if instance_number is not None:
        dataset.InstanceNumber = instance_number
    dataset.Rows = dataset.Columns = 64
    dataset.BitsAllocated = 16
    dataset.PixelData = bytes(64 * 64 * 2)
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_an_instances_uids_and_number_are_read_from_its_first_bytes() -> None:
    """The UIDs and the Instance Number come from the part's first bytes (no re-read of the
    stored file); a header longer than those bytes, or bytes that are not DICOM, give None
    (the file is read back instead); a whole instance without Instance Number is fine."""
    encoded = _encoded_instance(instance_number=7)
    identity = _identity(encoded[:_HEADER_BYTES], whole=len(encoded) < _HEADER_BYTES)
    assert identity is not None
    assert (identity.SOPInstanceUID, identity.SOPClassUID, identity.InstanceNumber) == (
        "1.2.3.4.5",
        "1.2.840.10008.5.1.4.1.1.2",
        7,
    )
    long_header = _encoded_instance(instance_number=7, header_padding=_HEADER_BYTES)
    assert _identity(long_header[:_HEADER_BYTES], whole=False) is None
    unnumbered = _encoded_instance(instance_number=None)
    whole = _identity(unnumbered, whole=True)
    assert whole is not None and "InstanceNumber" not in whole
    # the header walked past where the Instance Number would be: it is known to be absent
    cut = _identity(unnumbered[:1000], whole=False)
    assert cut is not None and "InstanceNumber" not in cut
    assert _identity(unnumbered[:200], whole=False) is None
    assert _identity(b"--not dicom--" * 100, whole=True) is None


@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "MR_small_implicit.dcm", "SC_rgb.dcm"],
)
def test_the_walked_identity_is_what_pydicom_reads(name: str) -> None:
    """Whether the header is walked (Explicit VR Little Endian) or parsed by pydicom (any other
    form), the identity of real files is the one pydicom reads from the whole file."""
    path = get_testdata_file(name)
    assert isinstance(path, str)
    encoded = Path(path).read_bytes()
    expected = dcmread(path, stop_before_pixels=True)
    identity = _identity(encoded[:_HEADER_BYTES], whole=len(encoded) <= _HEADER_BYTES)
    assert identity is not None
    assert identity.SOPInstanceUID == expected.SOPInstanceUID
    assert identity.SOPClassUID == expected.SOPClassUID
    assert identity.get("InstanceNumber") == expected.get("InstanceNumber")
    walked = _walked_identity(encoded[:_HEADER_BYTES])
    explicit = expected.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (walked is not None) == explicit
