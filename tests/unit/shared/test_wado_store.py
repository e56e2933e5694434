"""shared.wado_store: an instance's identity from the first bytes of its part; each part of a
WADO-RS response written once and named by its SOP Instance UID."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from shared.storage import BlobStore, PixelsGone
from shared.wado_store import HEADER_BYTES, Identity, SeriesSink, _walked_identity, identity_of


def _encoded_instance(
    *, instance_number: int | None, header_padding: int = 0, sop_instance_uid: str = "1.2.3.4.5"
) -> bytes:
    """A small CT instance as WADO-RS sends it (Part 10 bytes); `header_padding` bytes of a
    private element push the Instance Number that far into the file."""
    dataset = Dataset()
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    dataset.SOPInstanceUID = sop_instance_uid
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
    identity = identity_of(encoded[:HEADER_BYTES], whole=len(encoded) < HEADER_BYTES)
    assert identity == Identity("1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.2", 7)
    long_header = _encoded_instance(instance_number=7, header_padding=HEADER_BYTES)
    assert identity_of(long_header[:HEADER_BYTES], whole=False) is None
    unnumbered = _encoded_instance(instance_number=None)
    whole = identity_of(unnumbered, whole=True)
    assert whole is not None and whole.instance_number is None
    # the header walked past where the Instance Number would be: it is known to be absent
    cut = identity_of(unnumbered[:1000], whole=False)
    assert cut is not None and cut.instance_number is None
    assert identity_of(unnumbered[:200], whole=False) is None
    assert identity_of(b"--not dicom--" * 100, whole=True) is None


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
    identity = identity_of(encoded[:HEADER_BYTES], whole=len(encoded) <= HEADER_BYTES)
    assert identity is not None
    number = expected.get("InstanceNumber")
    assert identity == Identity(
        expected.SOPInstanceUID, expected.SOPClassUID, int(number) if number is not None else None
    )
    walked = _walked_identity(encoded[:HEADER_BYTES])
    explicit = expected.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (walked is not None) == explicit


def _feed(sink: SeriesSink, encoded: bytes, chunk: int) -> None:
    sink.start({"content-type": "application/dicom"})
    view = memoryview(encoded)
    for start in range(0, len(encoded), chunk):
        sink.data(view[start : start + chunk])
    sink.end()


def test_the_parts_are_stored_one_after_another_in_one_blob_at_their_offsets(
    tmp_path: Path,
) -> None:
    """Parts in small and large chunks, one with a header longer than the first bytes (read
    back from the blob): each is stored bytes for bytes in this fetch's `<prefix>/instances-…`
    at its offset, listed in order with its UIDs and number; the blob is named once the
    response is complete and no temporary file is left."""
    store = BlobStore(tmp_path)
    sink = SeriesSink(store, "run/series")
    instances = [
        _encoded_instance(instance_number=1, sop_instance_uid="1.2.3.1"),
        _encoded_instance(
            instance_number=2, sop_instance_uid="1.2.3.2", header_padding=HEADER_BYTES
        ),
        _encoded_instance(instance_number=None, sop_instance_uid="1.2.3.3"),
    ]
    for encoded, chunk in zip(instances, (7, 1 << 20, 4096), strict=True):
        _feed(sink, encoded, chunk)
    assert [p.name for p in (tmp_path / "run/series").iterdir() if not p.name.startswith(".")] == []
    sink.finish()
    assert [(r.sop_instance_uid, r.instance_number) for r in sink.retrieved] == [
        ("1.2.3.1", 1),
        ("1.2.3.2", 2),
        ("1.2.3.3", None),
    ]
    (key,) = {retrieved.blob_key for retrieved in sink.retrieved}
    assert key.startswith("run/series/instances-")
    offset = 0
    for retrieved, encoded in zip(sink.retrieved, instances, strict=True):
        assert (retrieved.offset, retrieved.size_bytes) == (offset, len(encoded))
        assert store.read_range(retrieved.blob_key, retrieved.offset, retrieved.size_bytes) == (
            encoded
        )
        assert retrieved.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
        offset += len(encoded)
    assert store.read_bytes(key) == b"".join(instances)
    assert [path.name for path in (tmp_path / "run/series").iterdir()] == [key.split("/")[-1]]
    sink.abort()  # after finish: nothing to remove
    assert store.exists(key)


def test_a_second_fetch_of_a_series_leaves_the_first_fetchs_blob_as_it_was(
    tmp_path: Path,
) -> None:
    """A redelivered message fetches the series again, its instances in another order, while
    the first fetch's manifest may still be read: each fetch has a blob of its own, so the
    first manifest's offsets still name the instances it listed."""
    store = BlobStore(tmp_path)
    instances = [
        _encoded_instance(instance_number=n, sop_instance_uid=f"1.2.3.{n}") for n in (1, 2, 3)
    ]
    first, second = SeriesSink(store, "run/series"), SeriesSink(store, "run/series")
    for encoded in instances:
        _feed(first, encoded, 4096)
    first.finish()
    for encoded in reversed(instances):
        _feed(second, encoded, 4096)
    second.finish()
    assert first.retrieved[0].blob_key != second.retrieved[0].blob_key
    for retrieved, encoded in zip(first.retrieved, instances, strict=True):
        assert store.read_range(retrieved.blob_key, retrieved.offset, retrieved.size_bytes) == (
            encoded
        )


def test_a_response_cut_off_leaves_no_file(tmp_path: Path) -> None:
    """A response that fails within a part: the series' blob being written is removed (a
    retried fetch writes it anew); nothing is named."""
    store = BlobStore(tmp_path)
    sink = SeriesSink(store, "run/series")
    _feed(sink, _encoded_instance(instance_number=1, sop_instance_uid="1.2.3.1"), 1000)
    sink.start({})
    sink.data(memoryview(_encoded_instance(instance_number=2)[:500]))
    sink.abort()
    assert list((tmp_path / "run/series").iterdir()) == []


def test_a_blob_that_cannot_be_named_is_removed_by_abort(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename of a complete series blob fails (a full or read-only disk): the error goes
    up, and `abort`, which the fetch always calls, leaves no temporary file behind."""
    store = BlobStore(tmp_path)
    sink = SeriesSink(store, "run/series")
    _feed(sink, _encoded_instance(instance_number=1, sop_instance_uid="1.2.3.1"), 4096)

    def refused(source: object, destination: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("shared.storage.os.replace", refused)
    with pytest.raises(OSError, match="No space left"):
        sink.finish()
    sink.abort()
    assert list((tmp_path / "run/series").iterdir()) == []


def test_a_range_past_the_end_of_its_blob_is_pixels_gone(tmp_path: Path) -> None:
    """A manifest naming more bytes than the blob holds (cut short, or written anew since) is
    PixelsGone, not a short read handed to pydicom."""
    store = BlobStore(tmp_path)
    store.write_bytes("run/series/instances", b"x" * 100)
    assert store.read_range("run/series/instances", 90, 10) == b"x" * 10
    with pytest.raises(PixelsGone, match="holds 100 bytes, not the 110"):
        store.read_range("run/series/instances", 90, 20)
    with pytest.raises(PixelsGone, match="not in the store"):
        store.read_range("run/other/instances", 0, 1)
