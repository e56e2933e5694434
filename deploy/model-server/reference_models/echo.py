"""The no-work model: answers the input's shape, to measure radmesh's own overhead."""

from __future__ import annotations

from reference_models.common import VolumeInput

ECHO_CONSTANT = 1.0


def echo(inp: VolumeInput) -> tuple[tuple[int, int, int], float]:
    """The volume's shape (slices, rows, columns) and a constant."""
    z, y, x = inp.volume.shape
    return (z, y, x), ECHO_CONSTANT
