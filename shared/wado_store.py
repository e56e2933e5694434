"""The instances of a WADO-RS response into the blob store, part by part as they arrive.

A series' instances go one after another into one blob, `<prefix>/instances-<fetch>` (a name
of each fetch's own), each at the offset where its part began: one file created and renamed
per series, not per instance (on an ordinary disk, creating a file costs more than writing a
CT slice into one). Each part's SOP Instance UID, SOP Class UID and Instance Number come from
its first bytes (walking the Part 10 header, or pydicom when the walk does not follow it), so
nothing is read back (one in a thousand headers, longer than the first bytes, is read back
from the blob, the header only).
"""

from __future__ import annotations

import io
import re
import struct
import uuid
import zlib
from dataclasses import dataclass

import pydicom
from pydicom.errors import InvalidDicomError

from shared.dicom_header import walk_elements
from shared.messages import BlobInstance
from shared.storage import BlobStore, BlobWriter

__all__ = ["HEADER_BYTES", "Identity", "RetrievedInstance", "SeriesSink", "identity_of"]

# The first bytes of each retrieved instance parsed for its UIDs (a CT header is 2-10 KB).
HEADER_BYTES = 64 << 10
_IDENTITY_TAGS = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber")


@dataclass(frozen=True)
class RetrievedInstance:
    """One instance written to the blob store: `size_bytes` from `offset` in the blob."""

    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    blob_key: str
    offset: int
    size_bytes: int

    def blob(self) -> BlobInstance:
        """This instance as a manifest names it (the claim check a message carries)."""
        return BlobInstance(
            sop_instance_uid=self.sop_instance_uid,
            sop_class_uid=self.sop_class_uid,
            instance_number=self.instance_number,
            blob_key=self.blob_key,
            offset=self.offset,
            size_bytes=self.size_bytes,
        )


_SOP_CLASS_UID, _SOP_INSTANCE_UID, _INSTANCE_NUMBER = 0x00080016, 0x00080018, 0x00200013
_WALKED_TAGS = frozenset({_SOP_CLASS_UID, _SOP_INSTANCE_UID, _INSTANCE_NUMBER})
_UID_TEXT = re.compile(rb"[0-9.]{1,64}")
_INTEGER_TEXT = re.compile(rb"[+-]?[0-9]{1,12}")


@dataclass(frozen=True)
class Identity:
    """What names an instance in the store and in the manifest."""

    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None


def _walked_identity(head: bytes) -> Identity | None:
    """The identity from walking the header (shared/dicom_header.py), with no parser set-up per
    instance (CT's usual form); None when the walk gives none or a value is not what its VR
    allows (pydicom reads those)."""
    walked = walk_elements(head, _WALKED_TAGS, _INSTANCE_NUMBER)
    if walked is None:
        return None
    found = {tag: element.value(head) for tag, element in walked.items()}
    sop_class, sop_instance = found.get(_SOP_CLASS_UID, b""), found.get(_SOP_INSTANCE_UID, b"")
    number = found.get(_INSTANCE_NUMBER, b"").strip()
    valid_uids = _UID_TEXT.fullmatch(sop_class) and _UID_TEXT.fullmatch(sop_instance)
    if not valid_uids or (number and not _INTEGER_TEXT.fullmatch(number)):
        return None
    return Identity(sop_instance.decode(), sop_class.decode(), int(number) if number else None)


def _read_identity(dataset: pydicom.Dataset) -> Identity:
    number = dataset.get("InstanceNumber")
    return Identity(
        str(dataset.SOPInstanceUID),
        str(dataset.SOPClassUID),
        int(number) if number is not None else None,
    )


def identity_of(head: bytes, *, whole: bool) -> Identity | None:
    """SOP Instance UID, SOP Class UID and Instance Number from the first bytes of a Part 10
    instance, or None when they do not hold the header as far as the Instance Number (the
    caller then reads the stored file). `whole`: `head` is the entire instance."""
    walked = _walked_identity(head)
    if walked is not None:
        return walked
    try:
        dataset = pydicom.dcmread(
            io.BytesIO(head), stop_before_pixels=True, specific_tags=list(_IDENTITY_TAGS)
        )
    except (InvalidDicomError, EOFError, ValueError, OSError, struct.error, zlib.error):
        return None
    if "SOPInstanceUID" not in dataset or "SOPClassUID" not in dataset:
        return None
    if whole or "InstanceNumber" in dataset:
        return _read_identity(dataset)
    # No Instance Number in the first bytes: absent from the header, or beyond them.
    return None


SERIES_BLOB = "instances"  # a series' blob under the prefix: `instances-<fetch>`


class SeriesSink:
    """The parts of a WADO-RS series response into one blob, `<key_prefix>/instances-<fetch>`,
    each at its offset; `retrieved` lists them in order, `finish` names the blob once the
    response is complete. Its writes block the event loop for well under a millisecond each (a
    thread of its own measured no faster: the GIL goes back and forth with every chunk)."""

    def __init__(self, store: BlobStore, key_prefix: str) -> None:
        self._store = store
        # A name of this fetch's own: a redelivered message fetches the series again while the
        # manifest of the first fetch may still be read, and WADO-RS promises no order of the
        # instances, so a second fetch must not replace the blob that manifest's offsets name.
        self._key = f"{key_prefix}/{SERIES_BLOB}-{uuid.uuid4().hex[:12]}"
        self._writer: BlobWriter | None = None
        self._part: int | None = None  # where the part being written began
        self._head = bytearray()
        self.retrieved: list[RetrievedInstance] = []

    def start(self, headers: dict[str, str]) -> None:
        if self._writer is None:  # the series' blob, opened at its first part
            self._writer = self._store.writer(self._key.rpartition("/")[0])
        self._part = self._writer.size
        self._head = bytearray()

    def data(self, chunk: memoryview) -> None:
        assert self._writer is not None and self._part is not None, "part data before its start"
        if len(self._head) < HEADER_BYTES:
            self._head += chunk[: HEADER_BYTES - len(self._head)]
        self._writer.write(chunk)

    def end(self) -> None:
        writer, offset, self._part = self._writer, self._part, None
        assert writer is not None and offset is not None, "part end before its start"
        size = writer.size - offset
        head = bytes(self._head)
        identity = identity_of(head, whole=size <= len(head))
        if identity is None:  # a header longer than the first bytes: read from the blob
            with writer.window(offset, size) as instance:  # its header only, from the file
                identity = _read_identity(
                    pydicom.dcmread(
                        instance, stop_before_pixels=True, specific_tags=list(_IDENTITY_TAGS)
                    )
                )
        self.retrieved.append(
            RetrievedInstance(
                sop_instance_uid=identity.sop_instance_uid,
                sop_class_uid=identity.sop_class_uid,
                instance_number=identity.instance_number,
                blob_key=self._key,
                offset=offset,
                size_bytes=size,
            )
        )

    def finish(self) -> None:
        """The response is complete: the blob named (a series of no instance writes none). A
        failed rename leaves the writer to `abort`, which removes the temporary file."""
        if self._writer is not None:
            self._writer.commit(self._key)
            self._writer = None

    def abort(self) -> None:
        """The response failed (or `finish` came first: then nothing is left to do): the blob
        being written is removed; a retried fetch writes it anew."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
