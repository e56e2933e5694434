"""Run values and their generations, DICOM UIDs and FHIR ids (shared.identifiers)."""

from __future__ import annotations

import re

import pytest

from shared.identifiers import (
    FHIR_ID_PATTERN,
    StudyRun,
    business_identifier,
    fhir_reference_pattern,
    is_dicom_uid,
    study_run_value,
)
from shared.messages import ModelRef


def test_first_generation_keeps_the_value_written_before_generations_existed() -> None:
    """Generation 1 is `<study>/<model>/<version>`, so older records keep their meaning."""
    assert study_run_value("1.2.3", "ich-reference", "1") == "1.2.3/ich-reference/1"
    assert ModelRef(id="ich-reference", version="1").run_value("1.2.3") == "1.2.3/ich-reference/1"


def test_a_later_generation_gets_values_of_its_own() -> None:
    """The run after a retraction writes under new identifiers (no conditional create finds
    the retracted run's resources)."""
    second = study_run_value("1.2.3", "ich-reference", "1", 2)
    assert second == "1.2.3/ich-reference/1/g2"
    assert business_identifier("Observation", second, "intracranial-hemorrhage", 0)["value"] != (
        business_identifier("Observation", "1.2.3/ich-reference/1", "intracranial-hemorrhage", 0)[
            "value"
        ]
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.2.3/ich-reference/1", StudyRun("1.2.3", "ich-reference", "1", 1)),
        ("1.2.3/ich-reference/1/g7", StudyRun("1.2.3", "ich-reference", "1", 7)),
        # an Observation's value: the run, the finding key and its index
        ("1.2.3/ich-reference/1/intracranial-hemorrhage/0", StudyRun("1.2.3", "ich-reference", "1")),
        (
            "1.2.3/ich-reference/1/g2/intracranial-hemorrhage/0",
            StudyRun("1.2.3", "ich-reference", "1", 2),
        ),
    ],
)
def test_run_values_read_back_with_their_generation(value: str, expected: StudyRun) -> None:
    """A run value, or a value that starts with one, names its run."""
    assert StudyRun.parse(value) == expected
    assert StudyRun.parse(expected.value) == expected


@pytest.mark.parametrize("value", ["", "1.2.3", "1.2.3/model", "x.y/model/1", "1.2.3//1"])
def test_what_is_not_a_run_value_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="not a radmesh run value"):
        StudyRun.parse(value)


@pytest.mark.parametrize("uid", ["1.2.3\n", "1.2.3\x00", " 1.2.3", "01.2"])
def test_a_uid_with_anything_around_it_is_no_uid(uid: str) -> None:
    """`$` also matched before a trailing newline: "1.2.3\\n" passed as a UID into QIDO-RS."""
    assert not is_dicom_uid(uid)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("a", True),
        ("a.", True),
        (".a", True),
        ("...", True),
        ("a-1.b", True),
        ("x" * 64, True),
        (".", False),  # a dot-segment: "Task/." is the Task endpoint itself
        ("..", False),  # "Task/.." is the server's base URL (HAPI-0287, answered as 502 once)
        ("x" * 65, False),
        ("a\n", False),
        ("", False),
    ],
)
def test_a_fhir_id_is_what_a_url_can_carry(value: str, valid: bool) -> None:
    """FHIR's id pattern, less the two ids URL resolution removes; also inside a reference."""
    assert (re.fullmatch(FHIR_ID_PATTERN, value) is not None) is valid
    reference = re.compile(fhir_reference_pattern("Task"))
    assert (reference.fullmatch(f"Task/{value}") is not None) is valid
