"""services.subscriber.imaging_study and pacs_study: what selectors see, and DICOMcast-style
ImagingStudies built from the PACS."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import structlog.testing

from services.subscriber.hook_bodies import StableStudyEvent
from services.subscriber.imaging_study import series_summaries, study_instance_uid, study_ref
from services.subscriber.pacs_study import fhir_started, imaging_study_from_pacs
from shared.dicomweb import InstanceInfo, SeriesInfo, StudyAttributes
from shared.errors import InvalidMessage

CT = "1.2.840.10008.5.1.4.1.1.2"


def _imaging_study() -> dict[str, Any]:
    return {
        "resourceType": "ImagingStudy",
        "id": "is-1",
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
        "status": "available",
        "subject": {"reference": "Patient/p"},
        "basedOn": [{"reference": "ServiceRequest/sr"}],
        "endpoint": [{"reference": "Endpoint/e"}],
        "series": [
            {
                "uid": "1.2.3.1",
                "modality": {"code": "CT"},
                "bodySite": {"system": "http://snomed.info/sct", "code": "69536005"},
                "numberOfInstances": 2,
                "instance": [
                    {"uid": "1.2.3.1.1", "sopClass": {"code": f"urn:oid:{CT}"}},
                    {"uid": "1.2.3.1.2", "sopClass": {"code": f"urn:oid:{CT}"}},
                ],
            }
        ],
    }


def test_series_summary_maps_snomed_body_site_to_dicom_body_part() -> None:
    """A head series coded SNOMED 69536005 is Body Part Examined HEAD with its SOP class."""
    (summary,) = series_summaries(_imaging_study())
    assert (summary.modality, summary.body_part_examined) == ("CT", "HEAD")
    assert summary.sop_class_uids == (CT,)
    assert summary.number_of_instances == 2


def test_study_ref_carries_the_fhir_links_and_the_pacs_address() -> None:
    """Patient, order and the dicom-wado-rs address travel with the study run."""
    ref = study_ref(_imaging_study(), {"Endpoint/e": "http://pacs/dicom-web"})
    assert ref.study_instance_uid == "1.2.3"
    assert (ref.imaging_study, ref.patient, ref.service_request) == (
        "ImagingStudy/is-1",
        "Patient/p",
        "ServiceRequest/sr",
    )
    assert ref.dicomweb_base_url == "http://pacs/dicom-web"


def test_imaging_study_without_dicom_uid_is_invalid() -> None:
    """Without an urn:dicom:uid identifier there is no study to fetch."""
    with pytest.raises(InvalidMessage, match="urn:dicom:uid"):
        study_instance_uid({"resourceType": "ImagingStudy", "identifier": []})


def _stable_event(instance_count: int) -> StableStudyEvent:
    """A stable-study event for study 1.2.3 (accession ACC1, one CT series)."""
    return StableStudyEvent(
        event_id="0123456789abcdef",
        emitted_at=datetime(2026, 12, 1, 10, 0, tzinfo=UTC),
        study_instance_uid="1.2.3",
        accession_number="ACC1",
        modalities=["CT"],
        instance_count=instance_count,
    )


def test_pacs_study_becomes_an_imaging_study_with_real_instances() -> None:
    """The PACS event plus QIDO-RS give identifiers, the order, body site and every instance."""
    event = _stable_event(instance_count=2)
    details = [
        (
            SeriesInfo("1.2.3.1", "CT", "HEAD", "Axial", 2),
            [InstanceInfo("1.2.3.1.1", CT, 1), InstanceInfo("1.2.3.1.2", CT, 2)],
        )
    ]
    study = imaging_study_from_pacs(event, details, "Patient/p", "ServiceRequest/sr", "Endpoint/e")
    assert study["status"] == "available"
    assert {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3", "use": "official"} in study[
        "identifier"
    ]
    assert any(i.get("value") == "ACC1" for i in study["identifier"])
    assert study["basedOn"] == [{"reference": "ServiceRequest/sr"}]
    (series,) = study["series"]
    assert series["bodySite"]["code"] == "69536005"
    assert [i["uid"] for i in series["instance"]] == ["1.2.3.1.1", "1.2.3.1.2"]
    assert series_summaries(study)[0].body_part_examined == "HEAD"


def test_a_chest_series_is_coded_as_dicom_codes_chest_and_read_back_from_either_code() -> None:
    """CHEST is SNOMED 816094009 "Chest" (PS3.16 Annex L); a body site in the code DICOM used
    before, 51185008 (as EHRs and the samples still write it), reads back as CHEST too."""
    event = _stable_event(instance_count=1)
    details = [
        (SeriesInfo("1.2.3.1", "CT", "CHEST", "Axial", 1), [InstanceInfo("1.2.3.1.1", CT, 1)])
    ]
    study = imaging_study_from_pacs(event, details, "Patient/p", "ServiceRequest/sr", "Endpoint/e")
    (series,) = study["series"]
    assert series["bodySite"] == {
        "system": "http://snomed.info/sct",
        "code": "816094009",
        "display": "Chest",
    }
    assert series_summaries(study)[0].body_part_examined == "CHEST"
    series["bodySite"] = {"system": "http://snomed.info/sct", "code": "51185008"}
    assert series_summaries(study)[0].body_part_examined == "CHEST"


@pytest.mark.parametrize("uid", ["%00", "", "1.2.3#frag", "1.2.3; DROP TABLE", "01.2"])
def test_an_imaging_study_whose_dicom_uid_is_malformed_is_refused(uid: str) -> None:
    """A urn:dicom:uid identifier that is not a DICOM UID is an InvalidMessage (the hook gets a
    400 saying so) before the UID reaches a QIDO-RS query."""
    study = _imaging_study()
    study["identifier"] = [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}]
    with pytest.raises(InvalidMessage, match="urn:dicom:uid"):
        study_instance_uid(study)


def test_an_imaging_study_with_an_absolute_subject_is_refused_with_the_field() -> None:
    """A subject that is not a relative Patient/<id> (another server's URL) cannot be carried
    in study.detected: InvalidMessage naming the field, not a crash."""
    study = {**_imaging_study(), "subject": {"reference": "http://elsewhere/fhir/Patient/1"}}
    with pytest.raises(InvalidMessage, match="patient"):
        study_ref(study, {})


def test_the_study_time_travels_when_it_is_a_fhir_datetime_and_is_dropped_saying_so_if_not() -> (
    None
):
    """ImagingStudy.started goes with the run (the results' effective time); a started the
    FHIR server should not have taken (a time without zone) is left out and logged."""
    timed = {**_imaging_study(), "started": "2026-11-30T22:15:00+01:00"}
    assert study_ref(timed, {}).started == "2026-11-30T22:15:00+01:00"
    with structlog.testing.capture_logs() as logs:
        zoneless = study_ref({**_imaging_study(), "started": "2026-11-30T22:15:00"}, {})
    assert zoneless.started is None
    assert [entry["event"] for entry in logs] == ["imaging_study_started_unusable"]
    assert study_ref(_imaging_study(), {}).started is None


@pytest.mark.parametrize(
    ("dicom", "fhir"),
    [
        (("20261130", "221500.25", "+0100"), "2026-11-30T22:15:00.25+01:00"),
        (("20261130", "2215", "-0500"), "2026-11-30T22:15:00-05:00"),
        (("20261130", "221500", None), "2026-11-30"),  # no zone: the date alone
        (("20261130", None, "+0000"), "2026-11-30"),
        (("20261331", "221500", "+0100"), None),  # no such month
        (("2026-11-30", None, None), None),  # not a DICOM DA
        ((None, "221500", "+0100"), None),
    ],
)
def test_the_pacs_study_time_becomes_a_fhir_datetime_only_as_precise_as_it_is_known(
    dicom: tuple[str | None, str | None, str | None], fhir: str | None
) -> None:
    assert fhir_started(*dicom) == fhir


def test_pacs_study_gets_its_start_description_procedure_and_series_numbers() -> None:
    """An ImagingStudy registered from the PACS says when the study and each series started
    (with the study's timezone offset), the study's description, the procedure ordered (the
    order's code) and each series' number; the PACS's Endpoint is named once, for the study."""
    event = _stable_event(instance_count=1)
    series = SeriesInfo(
        "1.2.3.1", "CT", "HEAD", "Axial", 1, series_number=3, series_date="20261130",
        series_time="081502",
    )  # fmt: skip
    procedure = {"coding": [{"system": "http://loinc.org", "code": "30799-1"}], "text": "CT Head"}
    study = imaging_study_from_pacs(
        event,
        [(series, [InstanceInfo("1.2.3.1.1", CT, 1)])],
        "Patient/p",
        "ServiceRequest/sr",
        "Endpoint/e",
        study=StudyAttributes("20261130", "0812", "+0100", "CT HEAD WITHOUT CONTRAST"),
        procedure_code=procedure,
    )
    assert study["started"] == "2026-11-30T08:12:00+01:00"
    assert study["description"] == "CT HEAD WITHOUT CONTRAST"
    assert study["procedureCode"] == [procedure]
    assert study["endpoint"] == [{"reference": "Endpoint/e"}]
    (only,) = study["series"]
    assert only["number"] == 3
    assert only["started"] == "2026-11-30T08:15:02+01:00"
    assert "endpoint" not in only
    bare = imaging_study_from_pacs(
        event, [(SeriesInfo("1.2.3.1", "CT", "HEAD", None, 1), [])], "Patient/p", None, "Endpoint/e"
    )
    assert not {"started", "description", "procedureCode"} & set(bare)
    assert not {"number", "started", "description"} & set(bare["series"][0])
