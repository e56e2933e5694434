"""shared.masks and FindingMask: a finding's mask survives the message, and a mask that does not
fit its box is refused where it crosses the process boundary."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from shared.masks import box_shape, pack_mask, unpack_mask
from shared.messages import FindingMask


def test_a_mask_round_trips_and_a_large_box_packs_small() -> None:
    """Bits in, the same bits out; a 60×150×150 box of solid blood is under 2 KB of text."""
    mask = np.zeros((60, 150, 150), dtype=np.uint8)
    mask[5:50, 20:120, 30:130] = 1
    text = pack_mask(mask)
    assert len(text) < 2048
    assert np.array_equal(unpack_mask(text, mask.shape), mask)


def test_a_mask_of_another_shape_or_not_a_mask_is_refused() -> None:
    """The bits must fill the box exactly; text that is not packed bits is no mask."""
    text = pack_mask(np.ones((2, 3, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="not a"):
        unpack_mask(text, (3, 3, 4))
    with pytest.raises(ValueError, match="not packed bits"):
        unpack_mask("bm90IHpsaWI=", (2, 3, 4))


def test_a_finding_mask_names_one_image_per_box_slice() -> None:
    """box (z0, y0, x0, z1, y1, x1) with z1 − z0 + 1 SOP Instance UIDs and its bits; a box
    ending before it starts, or a slice without its image, is an invalid message."""
    box = (4, 10, 20, 5, 12, 23)
    bits = pack_mask(np.ones(box_shape(box), dtype=np.uint8))
    FindingMask(box=box, sop_instance_uids=("1.2.3", "1.2.4"), bits=bits)
    with pytest.raises(ValidationError, match="one image per slice"):
        FindingMask(box=box, sop_instance_uids=("1.2.3",), bits=bits)
    with pytest.raises(ValidationError, match="each end"):
        FindingMask(box=(5, 10, 20, 4, 12, 23), sop_instance_uids=("1.2.3",), bits=bits)
