"""services.mapper.fhir_mapping: one model run → the transaction Bundle, without a network."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.mapper.fhir_mapping import build_run
from services.mapper.fhir_validation import validate_bundle
from services.mapper.structured_report import tracking_uid
from shared.codes import DCM
from shared.errors import InvalidMessage
from shared.identifiers import DICOM_IMAGE_EXTENSION
from shared.messages import Finding, InferenceCompleted, ModelRef, StudyRef
from shared.registry import ModelEntry, Registry, load_registry

REGISTRY = load_registry(Path(__file__).resolve().parents[3] / "registry" / "models.yaml")
STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
RECORDED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SNOMED = "http://snomed.info/sct"


def _study(**overrides: str) -> StudyRef:
    fields = {
        "study_instance_uid": STUDY,
        "imaging_study": "ImagingStudy/is-1",
        "patient": "Patient/p-1",
        "service_request": "ServiceRequest/sr-1",
        "encounter": "Encounter/e-1",
        **overrides,
    }
    return StudyRef(**fields)


def _bleed(**study: str) -> InferenceCompleted:
    return InferenceCompleted(
        study=_study(**study),
        model=ModelRef(id="ich-reference", version="1"),
        findings=(
            Finding(
                finding_key="intracranial-hemorrhage",
                present=True,
                probability=0.93,
                series_instance_uid=SERIES,
                sop_instance_uids=("1.2.3.10", "1.2.3.11"),
            ),
            Finding(
                finding_key="hemorrhage-volume",
                present=True,
                value=12.5,
                unit="mL",
                series_instance_uid=SERIES,
            ),
        ),
        inference_duration_ms=1500.0,
        created_at=datetime(2026, 1, 2, 3, 4, 0, tzinfo=UTC),
    )


def _nodules() -> InferenceCompleted:
    return InferenceCompleted(
        study=_study(),
        model=ModelRef(id="lung-nodule-reference", version="1"),
        findings=(
            Finding(finding_key="lung-nodule", index=0, present=True, probability=0.9),
            Finding(finding_key="lung-nodule", index=1, present=True, probability=0.6),
            Finding(
                finding_key="lung-nodule-diameter", index=0, present=True, value=9.0, unit="mm"
            ),
            Finding(
                finding_key="lung-nodule-diameter", index=1, present=True, value=5.5, unit="mm"
            ),
        ),
        inference_duration_ms=900.0,
    )


def _model(event: InferenceCompleted) -> ModelEntry:
    return REGISTRY.get(event.model.id, event.model.version)


def _resources(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [
        entry["resource"]
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] == resource_type
    ]


def test_every_resource_of_a_run_validates_as_fhir() -> None:
    """Device, Observations, DiagnosticReport and Provenance of both reference models pass the
    fhir.resources models and the reference-target check."""
    for event in (_bleed(), _nodules()):
        validate_bundle(build_run(event, _model(event), RECORDED).bundle)


def test_bundle_is_one_transaction_of_conditional_creates_on_business_identifiers() -> None:
    """Every result entry is a POST with ifNoneExist on its radmesh identifier (Provenance: on
    its tag), in the order Device, Observations, DiagnosticReport, Provenance; then the run's
    analysis claim Task is completed by a conditional update, its output the report; last, the
    verification Task is created on its identifier, its focus the report."""
    bundle = build_run(_bleed(), _model(_bleed()), RECORDED).bundle
    assert bundle["type"] == "transaction"
    run = f"{STUDY}/ich-reference/1"
    *creates, claim, task = bundle["entry"]
    assert [entry["request"]["ifNoneExist"] for entry in creates] == [
        "identifier=urn:radmesh:device|ich-reference/1",
        f"identifier=urn:radmesh:observation|{run}/intracranial-hemorrhage/0",
        f"identifier=urn:radmesh:observation|{run}/hemorrhage-volume/0",
        f"identifier=urn:radmesh:diagnosticreport|{run}",
        f"_tag=urn:radmesh:provenance|{run}",
    ]
    assert {entry["request"]["method"] for entry in creates} == {"POST"}
    assert claim["request"] == {
        "method": "PUT",
        "url": f"Task?identifier=urn:radmesh:analysis-claim|{run}",
    }
    assert claim["resource"]["status"] == "completed"
    report_url = creates[3]["fullUrl"]
    assert claim["resource"]["output"][0]["valueReference"] == {"reference": report_url}
    assert task["request"] == {
        "method": "POST",
        "url": "Task",
        "ifNoneExist": f"identifier=urn:radmesh:task|{run}",
    }
    assert task["resource"]["focus"] == {"reference": report_url}
    assert all(entry["fullUrl"].startswith("urn:uuid:") for entry in bundle["entry"])


def test_the_verification_task_rides_with_the_results_and_names_their_event() -> None:
    """The verification Task in the run's own transaction: requested, for the patient, its
    priority `stat` for the present critical bleed and `routine` for nodules (none critical),
    its device and focus the fullUrls of the same Bundle's Device and report, and the message
    id the run's results.posted will carry."""
    bleed = build_run(_bleed(), _model(_bleed()), RECORDED)
    (task,) = [
        entry for entry in bleed.bundle["entry"] if entry["fullUrl"] == bleed.verification_task_url
    ]
    resource = task["resource"]
    assert (resource["status"], resource["intent"], resource["priority"]) == (
        "requested",
        "order",
        "stat",
    )
    assert resource["for"] == {"reference": "Patient/p-1"}
    assert resource["requester"] == {"reference": bleed.device_url}
    inputs = {i["type"]["text"]: i for i in resource["input"]}
    assert inputs["results-posted-message-id"]["valueString"] == str(bleed.results_posted_id)
    assert inputs["device"]["valueReference"] == {"reference": bleed.device_url}
    assert resource["focus"] == {"reference": bleed.diagnostic_report_url}
    nodules = build_run(_nodules(), _model(_nodules()), RECORDED)
    assert _resources(nodules.bundle, "Task")[-1]["priority"] == "routine"
    assert nodules.results_posted_id != bleed.results_posted_id


def test_identifiers_and_full_urls_are_the_same_for_a_redelivered_message() -> None:
    """Two builds of the same run (a redelivery, later) produce the same identifiers and fullUrls,
    so the conditional creates find what the first delivery wrote."""
    first = build_run(_bleed(), _model(_bleed()), RECORDED)
    again = build_run(_bleed(), _model(_bleed()), datetime.now(UTC))
    assert [e["fullUrl"] for e in first.bundle["entry"]] == [
        e["fullUrl"] for e in again.bundle["entry"]
    ]
    assert [e["request"] for e in first.bundle["entry"]] == [
        e["request"] for e in again.bundle["entry"]
    ]
    other_study = build_run(_bleed(study_instance_uid="1.2.9"), _model(_bleed()), RECORDED)
    assert first.observation_urls[0] != other_study.observation_urls[0]
    assert first.device_url == other_study.device_url  # one Device per model version


def test_presence_observation_carries_codes_value_probability_and_links() -> None:
    """The ICH Observation: preliminary, imaging, SNOMED 1386000, Present, probability component,
    body site, subject/encounter/basedOn, derivedFrom the ImagingStudy, device, AIAST, UIDs."""
    run = build_run(_bleed(), _model(_bleed()), RECORDED)
    observation = _resources(run.bundle, "Observation")[0]
    assert observation["status"] == "preliminary"
    assert observation["category"][0]["coding"][0]["code"] == "imaging"
    assert observation["code"]["coding"] == [
        {"system": SNOMED, "code": "1386000", "display": "Intracranial hemorrhage"}
    ]
    assert observation["valueCodeableConcept"]["coding"][0] == {
        "system": SNOMED,
        "code": "52101004",
        "display": "Present",
    }
    component = observation["component"][0]
    assert component["code"]["coding"][0]["code"] == "122157"
    assert component["valueQuantity"]["value"] == 0.93
    assert observation["bodySite"]["coding"][0]["code"] == "12738006"
    assert observation["subject"] == {"reference": "Patient/p-1"}
    assert observation["encounter"] == {"reference": "Encounter/e-1"}
    assert observation["basedOn"] == [{"reference": "ServiceRequest/sr-1"}]
    assert observation["derivedFrom"][0]["reference"] == "ImagingStudy/is-1"
    assert observation["device"] == {"reference": run.device_url}
    assert observation["meta"]["security"][0]["code"] == "AIAST"
    assert observation["extension"] == [
        {
            "url": DICOM_IMAGE_EXTENSION,
            "extension": [
                {"url": "seriesInstanceUid", "valueOid": f"urn:oid:{SERIES}"},
                {"url": "sopInstanceUid", "valueOid": "urn:oid:1.2.3.10"},
                {"url": "sopInstanceUid", "valueOid": "urn:oid:1.2.3.11"},
            ],
        }
    ]
    assert "Intracranial hemorrhage: present (probability 0.93)" in observation["note"][0]["text"]


def test_absent_finding_is_coded_absent() -> None:
    """An absent finding is valueCodeableConcept SNOMED 2667000 Absent."""
    event = InferenceCompleted(
        study=_study(),
        model=ModelRef(id="ich-reference", version="1"),
        findings=(Finding(finding_key="intracranial-hemorrhage", present=False, probability=0.02),),
        inference_duration_ms=10.0,
    )
    run = build_run(event, _model(event), RECORDED)
    observation = _resources(run.bundle, "Observation")[0]
    assert observation["valueCodeableConcept"]["coding"][0]["code"] == "2667000"
    report = _resources(run.bundle, "DiagnosticReport")[0]
    assert "conclusionCode" not in report
    assert "Intracranial hemorrhage: absent" in report["conclusion"]


def test_quantity_is_a_ucum_value_derived_from_the_presence_it_measures() -> None:
    """Each nodule diameter is a UCUM mm valueQuantity derivedFrom the nodule of the same index."""
    run = build_run(_nodules(), _model(_nodules()), RECORDED)
    observations = _resources(run.bundle, "Observation")
    diameters = observations[2:]
    assert [d["valueQuantity"] for d in diameters] == [
        {"value": 9.0, "unit": "mm", "system": "http://unitsofmeasure.org", "code": "mm"},
        {"value": 5.5, "unit": "mm", "system": "http://unitsofmeasure.org", "code": "mm"},
    ]
    assert [d["derivedFrom"][1]["reference"] for d in diameters] == list(run.observation_urls[:2])
    assert observations[0]["code"]["coding"][1] == {
        "system": "http://radlex.org",
        "code": "RID50149",
        "display": "pulmonary nodule",
    }


def test_quantity_without_its_presence_finding_is_an_invalid_message() -> None:
    """A diameter whose nodule is missing from the message cannot be linked: InvalidMessage."""
    event = InferenceCompleted(
        study=_study(),
        model=ModelRef(id="lung-nodule-reference", version="1"),
        findings=(Finding(finding_key="lung-nodule-diameter", present=True, value=4.0),),
        inference_duration_ms=1.0,
    )
    with pytest.raises(InvalidMessage, match="lung-nodule"):
        build_run(event, _model(event), RECORDED)


def test_quantity_without_a_value_is_an_invalid_message() -> None:
    """A diameter finding that carries no number is dead-lettered with that reason, not a crash."""
    event = InferenceCompleted(
        study=_study(),
        model=ModelRef(id="lung-nodule-reference", version="1"),
        findings=(
            Finding(finding_key="lung-nodule", present=True, probability=0.9),
            Finding(finding_key="lung-nodule-diameter", present=True, value=None, unit="mm"),
        ),
        inference_duration_ms=1.0,
    )
    with pytest.raises(
        InvalidMessage, match=r"lung-nodule-diameter\[0\] is a quantity without a value"
    ):
        build_run(event, _model(event), RECORDED)


def test_report_links_results_study_order_and_present_codes() -> None:
    """The DiagnosticReport: preliminary, RAD + imaging, the registry report code, every
    Observation as result, the ImagingStudy, and conclusionCode only for present findings."""
    run = build_run(_nodules(), _model(_nodules()), RECORDED)
    report = _resources(run.bundle, "DiagnosticReport")[0]
    assert report["status"] == "preliminary"
    assert [c["coding"][0]["code"] for c in report["category"]] == ["RAD", "imaging"]
    assert report["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "24627-2",
        "display": "CT Chest",
    }
    assert [r["reference"] for r in report["result"]] == list(run.observation_urls)
    assert report["imagingStudy"][0]["reference"] == "ImagingStudy/is-1"
    assert [c["coding"][0]["code"] for c in report["conclusionCode"]] == ["427359005"]
    assert "Solitary nodule of lung #2: present (probability 0.60)" in report["conclusion"]
    assert "Diameter #1: 9 mm" in report["conclusion"]
    assert report["meta"]["security"][0]["code"] == "AIAST"


def test_provenance_and_device_describe_who_did_what_when() -> None:
    """Provenance targets report + Observations, its reason AIAST (AI Transparency on FHIR's AI
    Provenance), its agent the Device (author), its entity the ImagingStudy (source), and
    occurredPeriod spans the inference duration; the Device names the model, its version and
    manufacturer."""
    run = build_run(_bleed(), _model(_bleed()), RECORDED)
    provenance = _resources(run.bundle, "Provenance")[0]
    assert [t["reference"] for t in provenance["target"]] == [
        run.diagnostic_report_url,
        *run.observation_urls,
    ]
    assert provenance["agent"][0]["who"] == {"reference": run.device_url}
    assert provenance["agent"][0]["type"]["coding"][0]["code"] == "author"
    assert provenance["reason"][0]["coding"] == [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
            "code": "AIAST",
            "display": "Artificial Intelligence asserted",
        }
    ]
    assert provenance["entity"][0]["role"] == "source"
    assert provenance["entity"][0]["what"]["reference"] == "ImagingStudy/is-1"
    assert provenance["recorded"] == RECORDED.isoformat()
    assert provenance["occurredPeriod"] == {
        "start": "2026-01-02T03:03:58.500000+00:00",
        "end": "2026-01-02T03:04:00+00:00",
    }
    device = _resources(run.bundle, "Device")[0]
    assert device["deviceName"][0]["name"].endswith("(reference algorithm, not for clinical use)")
    assert device["version"] == [{"value": "1"}]
    assert device["manufacturer"] == "radmesh project"


def test_study_without_imaging_study_on_the_server_is_referenced_by_its_uid() -> None:
    """No ImagingStudy id: derivedFrom/imagingStudy/entity use the urn:dicom:uid identifier."""
    bleed = _bleed()
    event = bleed.model_copy(
        update={"study": bleed.study.model_copy(update={"imaging_study": None})}
    )
    run = build_run(event, _model(event), RECORDED)
    validate_bundle(run.bundle)
    report = _resources(run.bundle, "DiagnosticReport")[0]
    assert report["imagingStudy"] == [
        {"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY}"}}
    ]


def test_registry_fixture_has_both_reference_models() -> None:
    """The registry the tests map with declares the two reference models (guards the fixtures)."""
    assert isinstance(REGISTRY, Registry)
    assert {model.id for model in REGISTRY.models} == {"ich-reference", "lung-nodule-reference"}


def test_a_flagged_inputs_note_is_in_the_conclusion_and_on_every_finding() -> None:
    """Input the model's checks flag (not refuse): the report's conclusion and each
    Observation's notes say what was wrong with it; the run's identifiers are unchanged."""
    event = _bleed().model_copy(
        update={"input_notes": ("uneven slice spacing: 1 of 31 gaps differ from the median",)}
    )
    run = build_run(event, _model(event), RECORDED)
    (report,) = _resources(run.bundle, "DiagnosticReport")
    assert report["conclusion"].endswith(
        "Input quality: uneven slice spacing: 1 of 31 gaps differ from the median. "
        "Read the result with this in mind."
    )
    for observation in _resources(run.bundle, "Observation"):
        assert observation["note"][-1]["text"].startswith("Input quality: uneven slice spacing")
    plain = build_run(_bleed(), _model(event), RECORDED)
    assert [e["request"] for e in plain.bundle["entry"]] == [
        e["request"] for e in run.bundle["entry"]
    ]


def test_the_results_are_effective_at_the_studys_time_when_it_is_known() -> None:
    """Every Observation and the DiagnosticReport carry effectiveDateTime = the study's time;
    without one they carry none (no guessed time)."""
    timed = _bleed(started="2026-11-30T22:15:00+01:00")
    bundle = build_run(timed, _model(timed), RECORDED).bundle
    written = [*_resources(bundle, "Observation"), *_resources(bundle, "DiagnosticReport")]
    assert {r.get("effectiveDateTime") for r in written} == {"2026-11-30T22:15:00+01:00"}
    untimed = _bleed()
    bundle = build_run(untimed, _model(untimed), RECORDED).bundle
    written = [*_resources(bundle, "Observation"), *_resources(bundle, "DiagnosticReport")]
    assert all("effectiveDateTime" not in r for r in written)


def test_the_device_is_typed_as_an_ai_device_the_ai_transparency_ig_way() -> None:
    """Device.type carries AIdeviceTypeCS#Artificial-Intelligence (the IG's AI Device profile,
    an extensible binding) beside the readable text."""
    event = _bleed()
    (device,) = _resources(build_run(event, _model(event), RECORDED).bundle, "Device")
    assert device["type"]["coding"] == [
        {
            "system": "http://hl7.org/fhir/uv/aitransparency/CodeSystem/AIdeviceTypeCS",
            "code": "Artificial-Intelligence",
            "display": "All kinds of Artificial Intelligence",
        }
    ]
    assert device["type"]["text"] == "AI image analysis algorithm"


def test_each_observation_names_the_tracking_uid_of_its_sr_measurement_group() -> None:
    """Nodule i and its diameter both carry the Tracking Unique Identifier (DCM 112040) of nodule
    i's group in the SR, as urn:dicom:uid urn:oid:<UID>; two nodules, two UIDs."""
    event = _nodules()
    model = _model(event)
    observations = _resources(build_run(event, model, RECORDED).bundle, "Observation")

    def tracking(observation: dict[str, Any]) -> str:
        (found,) = [
            i
            for i in observation["identifier"]
            if i.get("type", {}).get("coding")
            == [{"system": DCM, "code": "112040", "display": "Tracking Unique Identifier"}]
        ]
        assert found["system"] == "urn:dicom:uid"
        return str(found["value"])

    expected = [f"urn:oid:{tracking_uid(STUDY, model, 'lung-nodule', index)}" for index in (0, 1)]
    assert [tracking(o) for o in observations] == expected + expected
    assert expected[0] != expected[1]
