"""services.inference.input_checks: refuse, flag or accept what can mislead a model."""

from __future__ import annotations

import pytest

from services.inference.input_checks import input_notes, spacing_problem
from services.inference.volumes import InputQuality
from shared.errors import InvalidMessage
from shared.registry import InputChecks

EVEN = (5.0, 5.0, 5.0, 5.0)
GAPPED = (5.0, 5.0, 15.0, 5.0)


def test_even_spacing_is_no_problem_and_a_gap_counts_its_missing_slices() -> None:
    assert spacing_problem(EVEN, 0.1) is None
    assert spacing_problem((5.0, 5.2, 4.8), 0.1) is None
    assert spacing_problem(GAPPED, 0.1) == (
        "uneven slice spacing: 1 of 4 gaps differ from the median 5.00 mm by more than 10%; "
        "the largest gap, 15.00 mm, is about 2 missing slices"
    )


def test_by_default_lossy_or_gapped_input_is_refused_saying_why() -> None:
    """The safe default: a study the model could misread is not analysed, and the dead
    letter says what was wrong with it."""
    with pytest.raises(InvalidMessage, match="not analysed by ich-reference 1: lossy input: JPEG"):
        input_notes(
            InputQuality(lossy="JPEG Baseline", spacings_mm=EVEN), InputChecks(), "ich-reference 1"
        )
    with pytest.raises(InvalidMessage, match="about 2 missing slices"):
        input_notes(InputQuality(spacings_mm=GAPPED), InputChecks(), "ich-reference 1")


def test_a_model_that_flags_gets_notes_and_one_that_accepts_gets_none() -> None:
    quality = InputQuality(lossy="JPEG Baseline", spacings_mm=GAPPED)
    flagged = input_notes(quality, InputChecks(lossy="flag", uneven_spacing="flag"), "m 1")
    assert flagged[0] == "lossy input: JPEG Baseline"
    assert flagged[1].startswith("uneven slice spacing")
    accepted = input_notes(quality, InputChecks(lossy="accept", uneven_spacing="accept"), "m 1")
    assert accepted == ()
    assert input_notes(InputQuality(spacings_mm=EVEN), InputChecks(), "m 1") == ()
