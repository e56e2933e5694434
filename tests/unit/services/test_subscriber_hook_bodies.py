"""services.subscriber.hook_bodies and shared.operation_outcome's body reading: hostile bodies
(deep nesting, huge numbers, nulls where lists are expected, lone surrogates, bytes that are not
UTF-8, bodies labelled as something other than JSON) are refused with a message saying what and
where, never with an exception the HTTP layer would answer with 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from services.subscriber.hook_bodies import (
    parse_imaging_study,
    parse_stable_study_event,
)
from services.subscriber.notifications import parse_posted_body
from shared.errors import InvalidMessage
from shared.json_input import MAX_INTEGER_DIGITS, MAX_JSON_DEPTH, read_json
from shared.operation_outcome import media_type_refusal

# what the PACS signs with every event (replay protection)
SIGNED = {"event_id": "0123456789abcdef", "emitted_at": "2026-12-01T10:00:00.000+00:00"}


def _study(**changes: Any) -> dict[str, Any]:
    study: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": "is-1",
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
        "status": "available",
        "subject": {"reference": "Patient/p"},
        "series": [
            {
                "uid": "1.2.3.1",
                "modality": {"code": "CT"},
                "numberOfInstances": 1,
                "instance": [{"uid": "1.2.3.1.1", "sopClass": {"code": "urn:oid:1.2.840"}}],
            }
        ],
    }
    study.update(changes)
    return study


def _bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def _refusal(parse: Any, body: bytes) -> str:
    with pytest.raises(InvalidMessage) as refused:
        parse(body)
    return str(refused.value)


# -- what still passes ------------------------------------------------------------------------


def test_valid_hook_bodies_parse_as_before() -> None:
    """An ImagingStudy, a notification Bundle carrying it, and a PACS event parse; a UTF-8 byte
    order mark, an escaped surrogate pair (an emoji) and nesting of exactly 64 levels are fine."""
    emoji = _bytes(_study(description="head 😀"))  # json.dumps escapes it as \\ud83d\\ude00
    assert b"\\ud83d\\ude00" in emoji
    assert parse_imaging_study(_bytes(_study())) == _study()
    assert parse_imaging_study(b"\xef\xbb\xbf" + _bytes(_study()))["id"] == "is-1"
    assert parse_imaging_study(emoji)["description"] == "head 😀"
    bundle = {"resourceType": "Bundle", "type": "history", "entry": [{"resource": _study()}]}
    assert parse_posted_body(_bytes(bundle)).imaging_studies == (_study(),)
    event = parse_stable_study_event(
        _bytes({**SIGNED, "study_instance_uid": "1.2.3", "series": []})
    )
    assert event.study_instance_uid == "1.2.3"
    assert read_json(_nested(MAX_JSON_DEPTH).encode()) is not None


def test_fhir_nulls_that_align_primitives_with_their_extensions_are_allowed() -> None:
    """FHIR JSON's one use of null: in an array of primitives next to its `_name` companion."""
    body = b'{"given": [null, "Ann"], "_given": [{"id": "g1"}, null]}'
    assert read_json(body, fhir=True) == {"given": [None, "Ann"], "_given": [{"id": "g1"}, None]}


def test_nulls_are_left_to_the_model_outside_fhir() -> None:
    """Without `fhir`, null is a JSON value like any other (the PACS event's optional fields)."""
    assert read_json(b'{"accession_number": null}') == {"accession_number": None}
    event = parse_stable_study_event(
        _bytes({**SIGNED, "study_instance_uid": "1.2.3", "accession_number": None})
    )
    assert event.accession_number is None


# -- what is refused, saying what and where ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(_nested(MAX_JSON_DEPTH + 1).encode(), "deeper than 64 levels", id="65-levels"),
        pytest.param(_nested(100_000).encode(), "deeper than 64 levels", id="100000-levels"),
        pytest.param(
            _bytes(_study(extension=[{"url": "u", "extension": "@"}])).replace(
                b'"@"', _nested(70).encode()
            ),
            "(at extension.0.extension.0.0.0",
            id="deep-inside-an-extension",
        ),
        pytest.param(
            _bytes(_study(numberOfSeries="@")).replace(b'"@"', b"9" * (MAX_INTEGER_DIGITS + 1)),
            "integer of 4301 digits",
            id="4301-digit-integer",
        ),
        pytest.param(
            _bytes(_study(numberOfSeries="@")).replace(b'"@"', b"1e999"),
            "number out of range: 1e999",
            id="float-overflow",
        ),
        pytest.param(
            _bytes(_study(numberOfSeries="@")).replace(b'"@"', b"NaN"),
            "NaN, which is not a JSON number",
            id="nan",
        ),
        pytest.param(_bytes(_study(series=None)), "series: null is not allowed", id="series-null"),
        pytest.param(
            _bytes(_study(identifier=None)), "identifier: null is not allowed", id="identifier-null"
        ),
        pytest.param(
            _bytes(_study(series=[{"uid": "1.2", "modality": {"code": "CT"}, "instance": None}])),
            "series.0.instance: null is not allowed",
            id="instance-null",
        ),
        pytest.param(
            _bytes(_study(series=[None])), "series.0: null is not allowed", id="null-in-series"
        ),
        pytest.param(
            _bytes(_study(description="\ud800")),
            "description: a lone UTF-16 surrogate",
            id="lone-surrogate-value",
        ),
        pytest.param(
            _bytes({**_study(), "\udfff": 1}),
            "a member name has a lone UTF-16 surrogate",
            id="lone-surrogate-name",
        ),
        pytest.param(
            b"\xff\xfe{}", "body is not JSON: it is not UTF-8 (byte 0xff at 0)", id="utf-16"
        ),
        pytest.param(
            _bytes(_study()).replace(b'"available"', b'"avail\xed\xa0\x80"'),
            "it is not UTF-8 (byte 0xed",
            id="raw-surrogate-bytes",
        ),
        pytest.param(
            _bytes(_study())[:-1] + b', "series": null}',
            "the member 'series' twice in one object",
            id="duplicate-member",
        ),
        pytest.param(b"{not json", "body is not JSON: Expecting property name", id="not-json"),
        pytest.param(b"[]", "ImagingStudy resource, not a JSON array", id="an-array"),
        pytest.param(
            _bytes(_study(resourceType="Patient")), "not resourceType 'Patient'", id="a-patient"
        ),
        pytest.param(
            _bytes({k: v for k, v in _study().items() if k != "resourceType"}),
            "ImagingStudy resource: it has no resourceType",
            id="no-resource-type",
        ),
    ],
)
def test_hostile_imaging_study_is_refused_saying_what_and_where(body: bytes, expected: str) -> None:
    """Each hostile rest-hook payload is an InvalidMessage (a 400) whose text names the problem
    and, where there is one, its location."""
    assert expected in _refusal(parse_imaging_study, body)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            {"subject": {"reference": "Group/g1"}}, "subject.reference must be", id="group"
        ),
        pytest.param(
            {"subject": {"reference": "http://elsewhere/fhir/Patient/1"}},
            "subject.reference must be",
            id="absolute",
        ),
        pytest.param(
            {"subject": {"reference": "." * 70_000}}, "subject.reference must be", id="overlong"
        ),
        pytest.param(
            {"subject": {"reference": "Patient/p\n"}}, "subject.reference must be", id="newline"
        ),
        pytest.param(
            {"endpoint": [{"reference": "Endpoint/../Patient/p"}]},
            "endpoint.0.reference is not an Endpoint/<id>",
            id="endpoint-path",
        ),
    ],
)
def test_references_read_before_the_announcement_are_checked_first(
    change: dict[str, Any], expected: str
) -> None:
    """The subject (its Consents are searched) and the Endpoint references (read for the PACS
    address) of an ImagingStudy are refused at the door when they are not what radmesh reads:
    a 400 naming the element, not the FHIR server's 400 to a search (which the hook answered
    with 500)."""
    assert expected in _refusal(parse_imaging_study, _bytes(_study(**change)))
    absolute = {"endpoint": [{"reference": "http://elsewhere/fhir/Endpoint/e"}]}
    assert parse_imaging_study(_bytes(_study(**absolute)))["id"] == "is-1"  # not read: left be


def test_null_series_inside_a_notification_bundle_is_refused_with_its_path() -> None:
    """A null inside a Bundle's ImagingStudy is refused with the path from the Bundle down."""
    bundle = {"resourceType": "Bundle", "entry": [{"resource": _study(series=None)}]}
    message = _refusal(parse_posted_body, _bytes(bundle))
    assert message.startswith("entry.0.resource.series: null is not allowed in FHIR JSON")


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        pytest.param({"series": None}, "series: Input should be a valid list", id="series-null"),
        pytest.param(
            {"modalities": None}, "modalities: Input should be a valid list", id="modalities-null"
        ),
        pytest.param(
            {"series": [None]}, "series.0: Input should be a valid dictionary", id="null-series"
        ),
        pytest.param(
            {"accession_number": "A\udfff"}, "accession_number: a lone UTF-16", id="surrogate"
        ),
        pytest.param({"instance_count": "@"}, "integer of 5000 digits", id="huge-integer"),
    ],
)
def test_hostile_stable_study_event_is_refused_saying_where(
    event: dict[str, Any], expected: str
) -> None:
    """PACS events with a null where a list belongs, a lone surrogate or a huge integer are an
    InvalidMessage naming the field."""
    body = _bytes({**SIGNED, "study_instance_uid": "1.2.3", **event}).replace(b'"@"', b"7" * 5000)
    assert expected in _refusal(parse_stable_study_event, body)


def test_refusals_of_unparseable_text_start_with_the_callers_wording() -> None:
    """`not_json` phrases the refusal of text that is not JSON (the review API says "the body is
    not valid JSON"); the limits keep their own wording."""
    with pytest.raises(InvalidMessage, match=r"^the body is not valid JSON: Expecting value"):
        read_json(b"", not_json="the body is not valid JSON")
    with pytest.raises(InvalidMessage, match=r"^body nests deeper than 64 levels"):
        read_json(_nested(5000).encode(), not_json="the body is not valid JSON")


# -- Content-Type -----------------------------------------------------------------------------


def _request(content_type: str | None) -> Any:
    headers = CIMultiDict({"Content-Type": content_type} if content_type is not None else {})
    return make_mocked_request("POST", "/fhir", headers=headers)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/fhir+json",
        "application/fhir+json; charset=UTF-8",
        "application/json",
        'application/json; charset="utf-8"',
        "APPLICATION/JSON",
        "application/json+fhir",
        None,
        "application/octet-stream",
        "text/plain; charset=utf-8",
    ],
)
def test_json_and_unlabelled_bodies_pass_the_media_type_check(content_type: str | None) -> None:
    """JSON media types pass, and so do bodies their client did not label (no header, or the
    HTTP libraries' defaults application/octet-stream and text/plain)."""
    assert media_type_refusal(_request(content_type), b"{}") is None


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("image/png", "Content-Type 'image/png' is not JSON"),
        ("application/xml", "Content-Type 'application/xml' is not JSON"),
        ("application/fhir+xml", "Content-Type 'application/fhir+xml' is not JSON"),
        ("application/x-www-form-urlencoded", "is not JSON"),
        ("multipart/form-data; boundary=x", "Content-Type 'multipart/form-data' is not JSON"),
        ("garbage", "Content-Type 'garbage' is not a media type"),
        ("application/json; charset=foo", "charset 'foo' is not supported: JSON bodies are UTF-8"),
        ("application/fhir+json; charset=utf-16", "charset 'utf-16' is not supported"),
        ("text/plain; charset=latin-1", "charset 'latin-1' is not supported"),
    ],
)
def test_bodies_labelled_as_something_else_get_415_saying_what_is_accepted(
    content_type: str, expected: str
) -> None:
    """A non-empty body labelled as another format or another charset is answered with 415 and an
    OperationOutcome naming the label and the JSON media types accepted (also in `Accept`)."""
    refusal = media_type_refusal(_request(content_type), b"{}")
    assert refusal is not None and refusal.status == 415
    assert refusal.content_type == "application/fhir+json"
    assert refusal.text is not None
    outcome = json.loads(refusal.text)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "not-supported"
    assert expected in outcome["issue"][0]["diagnostics"]
    assert "application/fhir+json" in refusal.headers["Accept"]


def test_an_empty_body_is_never_refused_for_its_label() -> None:
    """HAPI's rest-hook without payload POSTs nothing labelled application/x-www-form-urlencoded:
    an empty body has no format to refuse."""
    assert media_type_refusal(_request("application/x-www-form-urlencoded"), b"") is None
