"""Where the top-level elements of a Part 10 instance lie, walking its bytes in Explicit VR Little
Endian (CT's usual form) without building a pydicom Dataset: the fetcher takes each part's
identity this way (shared/wado_store.py), the inference service a slice's image attributes
(services/inference/image_header.py). Anything the walk does not follow (another transfer
syntax, an element of undefined length before the last one wanted, bytes cut off) is None:
the caller reads the instance with pydicom."""

from __future__ import annotations

import struct
from typing import NamedTuple

from pydicom.uid import ExplicitVRLittleEndian

__all__ = ["Element", "walk_elements"]

TRANSFER_SYNTAX_UID = 0x00020010
_EXPLICIT_VR_LITTLE_ENDIAN = ExplicitVRLittleEndian.encode()
# VRs whose length takes 4 bytes after 2 reserved ones (PS3.5 §7.1.2)
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


class Element(NamedTuple):
    """A top-level element: its VR and where its value lies in the instance's bytes (a tuple:
    made for each wanted element of each instance a fetch streams)."""

    vr: bytes
    start: int
    length: int

    def value(self, data: bytes) -> bytes:
        """The value's bytes, without the padding (NUL or space) that evens its length."""
        return data[self.start : self.start + self.length].rstrip(b"\0 ")


def walk_elements(data: bytes, wanted: frozenset[int], last: int) -> dict[int, Element] | None:
    """The `wanted` top-level elements (those present) up to the element `last` (itself too
    when wanted), walking a Part 10 instance from its file meta information; None when the data
    set is not Explicit VR Little Endian, an element before `last` has an undefined length, or
    the bytes end before the walk passes `last`'s place."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    offset, syntax, size = 132, b"", len(data)
    found: dict[int, Element] = {}
    unpack = struct.unpack_from
    while offset + 12 <= size:
        group, number, vr, short_length = unpack("<HH2sH", data, offset)
        tag = group << 16 | number
        if group != 2 and syntax != _EXPLICIT_VR_LITTLE_ENDIAN:
            return None
        if tag > last:
            return found
        if vr in _LONG_VRS:
            (length,) = unpack("<I", data, offset + 8)
            start = offset + 12
        else:
            length, start = short_length, offset + 8
        if length == 0xFFFFFFFF or start + length > size:
            return None
        if tag == TRANSFER_SYNTAX_UID:
            syntax = data[start : start + length].rstrip(b"\0 ")
        if tag in wanted:
            found[tag] = Element(vr, start, length)
        if tag == last:
            return found
        offset = start + length
    return None  # the data set goes on past these bytes: `last` may follow
