"""The PACS's deletion event and rejection notes → study.retracted (services/subscriber/retractions.py)."""

from __future__ import annotations

import json

import pytest

from services.subscriber.retractions import (
    deletion_retraction,
    parse_deleted_event,
    rejection_note_retractions,
)
from shared.errors import InvalidMessage
from shared.iocm import RejectionNote

EVENT = {
    "event": "deleted",
    "schema_version": 1,
    "event_id": "0123456789abcdef",
    "emitted_at": "2026-12-01T12:00:00.000+00:00",
    "study_instance_uid": "1.2.3",
    "whole_study": False,
    "series_instance_uids": ["1.2.3.4"],
}


def test_a_series_deletion_retracts_what_was_read_from_that_series() -> None:
    retraction = deletion_retraction(parse_deleted_event(json.dumps(EVENT).encode()))
    assert retraction.series_instance_uids == ("1.2.3.4",)
    assert (retraction.source, retraction.reason_code) == ("pacs-deleted", "113037")
    assert retraction.reason == "the PACS deleted 1 series"


def test_a_whole_study_deletion_retracts_every_run() -> None:
    body = {**EVENT, "whole_study": True, "series_instance_uids": []}
    retraction = deletion_retraction(parse_deleted_event(json.dumps(body).encode()))
    assert retraction.series_instance_uids == ()
    assert retraction.reason == "the PACS deleted the whole study"


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"series_instance_uids": []}, "names its series (series_instance_uids)"),
        ({"study_instance_uid": "%00"}, "study_instance_uid"),
        ({"series_instance_uids": ["1.2.3#x"]}, "series_instance_uids.0"),
        ({"whole_study": None}, "whole_study"),
    ],
)
def test_a_malformed_deletion_event_is_refused_saying_where(
    change: dict[str, object], where: str
) -> None:
    with pytest.raises(InvalidMessage, match="deleted event is invalid") as error:
        parse_deleted_event(json.dumps({**EVENT, **change}).encode())
    assert where in str(error.value)


def test_each_rejection_note_naming_series_is_one_retraction() -> None:
    notes = [
        RejectionNote("9.1", "113001", frozenset({"1.2.3.4"})),
        RejectionNote("9.2", "113039", frozenset()),  # names nothing radmesh read
    ]
    (retraction,) = rejection_note_retractions("1.2.3", notes)
    assert retraction.series_instance_uids == ("1.2.3.4",)
    assert (retraction.source, retraction.reason_code) == ("pacs-rejection-note", "113001")
    assert "Rejected for Quality Reasons" in retraction.reason
