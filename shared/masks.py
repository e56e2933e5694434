"""A finding's mask in a message (`shared.messages.FindingMask.bits`): the box's voxels packed one
bit each (np.packbits, C order), zlib-compressed, base64. Masks are mostly runs of 0 and 1, so a
large box costs a few KB."""

from __future__ import annotations

import base64
import binascii
import zlib

import numpy as np
import numpy.typing as npt

__all__ = ["box_shape", "pack_mask", "unpack_mask"]


def box_shape(box: tuple[int, int, int, int, int, int]) -> tuple[int, int, int]:
    """(slices, rows, columns) of an inclusive (z0, y0, x0, z1, y1, x1) box."""
    z0, y0, x0, z1, y1, x1 = box
    return z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1


def pack_mask(mask: npt.NDArray[np.generic]) -> str:
    """The text of a mask (nonzero voxels are inside)."""
    packed = np.packbits(np.asarray(mask) != 0, axis=None)
    return base64.b64encode(zlib.compress(packed.tobytes(), 9)).decode("ascii")


def unpack_mask(bits: str, shape: tuple[int, int, int]) -> npt.NDArray[np.uint8]:
    """The mask of `shape` a text holds (ValueError: it is no mask of that shape)."""
    try:
        packed = np.frombuffer(zlib.decompress(base64.b64decode(bits, validate=True)), np.uint8)
    except (binascii.Error, zlib.error) as error:
        raise ValueError(f"the mask is not packed bits: {error}") from error
    count = int(np.prod(shape))
    if min(shape, default=0) < 1 or packed.size != (count + 7) // 8:
        raise ValueError(f"the mask holds {packed.size * 8} bits, not a {shape} box")
    return np.unpackbits(packed, count=count).reshape(shape)
