"""A model's input checks (the registry's `input_checks`, shared/registry.py InputChecks) applied
to a volume's quality facts (volumes.py InputQuality), pure: a refused input is an
InvalidMessage saying what and why (the study is not analysed, the message is dead-lettered with
that reason); a flagged one yields the notes its results carry."""

from __future__ import annotations

import numpy as np

from services.inference.volumes import InputQuality
from shared.errors import InvalidMessage
from shared.registry import InputChecks

__all__ = ["input_notes", "spacing_problem"]


def spacing_problem(spacings_mm: tuple[float, ...], tolerance: float) -> str | None:
    """Why the slices are not evenly spaced (gaps: missing slices), or None when they are."""
    if not spacings_mm:
        return None
    spacings = np.asarray(spacings_mm)
    median = float(np.median(spacings))
    uneven = np.abs(spacings - median) > tolerance * median
    if not uneven.any():
        return None
    largest = float(spacings.max())
    missing = max(0, round(largest / median) - 1)
    gap = f"; the largest gap, {largest:.2f} mm, is about {missing} missing slices" if missing else ""
    return (
        f"uneven slice spacing: {int(uneven.sum())} of {len(spacings)} gaps differ from the "
        f"median {median:.2f} mm by more than {tolerance:.0%}{gap}"
    )


def input_notes(quality: InputQuality, checks: InputChecks, model: str) -> tuple[str, ...]:
    """The notes a flagged input's results carry; raises InvalidMessage for a refused one."""
    found: list[tuple[str, str]] = []
    if quality.lossy is not None and checks.lossy != "accept":
        found.append((checks.lossy, f"lossy input: {quality.lossy}"))
    spacing = spacing_problem(quality.spacings_mm, checks.spacing_tolerance)
    if spacing is not None and checks.uneven_spacing != "accept":
        found.append((checks.uneven_spacing, spacing))
    refused = [problem for action, problem in found if action == "refuse"]
    if refused:
        raise InvalidMessage(
            f"not analysed by {model}: {'; '.join(refused)} (the model's input_checks refuse "
            "it); message dead-lettered"
        )
    return tuple(problem for _, problem in found)
