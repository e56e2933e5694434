"""services.notifier.hl7_results against the real FHIR server and an MLLP listener from
python-hl7: the record of a run reaches the EHR as ORU^R01s, preliminary then final, each
acknowledged; a refusal and an unreachable receiver are told apart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.mapper.handlers import MapResults
from services.notifier.hl7_results import MllpSender, SendResults
from shared.errors import PermanentError, RemoteUnavailable
from shared.fhir import FhirClient, transaction_bundle, versioned_update_entry
from shared.messages import (
    Finding,
    FindingVerified,
    InferenceCompleted,
    ModelRef,
    ResultsPosted,
    StudyRef,
)
from shared.registry import load_registry
from shared.settings import FhirSettings
from tests.conftest import Infrastructure
from tests.hl7_receiver import Hl7Receiver
from tests.integration.sample_studies import load_fresh_study

pytestmark = pytest.mark.integration

REGISTRY = load_registry(Path(__file__).resolve().parents[2] / "registry" / "models.yaml")


@pytest.fixture
async def fhir(infra: Infrastructure) -> AsyncIterator[FhirClient]:
    client = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    yield client
    await client.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Hl7Receiver]:
    started = await Hl7Receiver().start()
    yield started
    await started.stop()


def _sender(fhir: FhirClient, port: int) -> SendResults:
    return SendResults(
        fhir,
        MllpSender("127.0.0.1", port, timeout_seconds=5),
        receiving_application="EHR",
        receiving_facility="WARD",
        sending_facility="RADIOLOGY",
    )


async def _posted_bleed(infra: Infrastructure, fhir: FhirClient) -> ResultsPosted:
    loaded = await asyncio.to_thread(load_fresh_study, infra, "head-bleed", slices=8, size=64)
    event = InferenceCompleted(
        study=StudyRef(
            study_instance_uid=loaded.study_instance_uid,
            imaging_study=loaded.fhir_ids["ImagingStudy"],
            patient=loaded.fhir_ids["Patient"],
            service_request=loaded.fhir_ids["ServiceRequest"],
        ),
        model=ModelRef(id="ich-reference", version="1"),
        findings=(
            Finding(finding_key="intracranial-hemorrhage", present=True, probability=0.91),
            Finding(finding_key="hemorrhage-volume", present=True, value=14.2, unit="mL"),
        ),
        inference_duration_ms=500.0,
    )
    (posted,) = await MapResults(REGISTRY, fhir, None)(event)
    assert isinstance(posted, ResultsPosted)
    return posted


async def test_a_run_reaches_the_ehr_preliminary_then_final_each_acknowledged(
    infra: Infrastructure, fhir: FhirClient, receiver: Hl7Receiver
) -> None:
    """results.posted: one ORU^R01 naming the Patient's MRN, the order's accession number and
    the report (OBR-25 P), the bleed, its probability and its volume as OBX; the record made
    final, as a verdict does, then finding.verified: a second ORU, OBR-25 and OBX-11 F, under
    a new control id."""
    posted = await _posted_bleed(infra, fhir)
    results = _sender(fhir, receiver.port)
    await results.on_posted(posted)
    report_id = posted.diagnostic_report.removeprefix("DiagnosticReport/")
    (preliminary,) = receiver.of_report(report_id)
    patient = await fhir.read_resource(posted.study.patient or "")
    order = await fhir.read_resource(posted.study.service_request or "")
    assert str(preliminary.segment("PID")[3][0][0]) == patient["identifier"][0]["value"]
    accession = next(
        i["value"] for i in order["identifier"] if i["type"]["coding"][0]["code"] == "ACSN"
    )
    assert str(preliminary.segment("OBR")[18]) == accession
    assert str(preliminary.segment("OBR")[25]) == "P"
    assert [str(s[3][0][0]) for s in preliminary.segments("OBX")] == [
        "1386000",
        "122157",
        "118565006",
    ]

    report, observations = await fhir.read_report_with_results(posted.diagnostic_report)
    base = infra.fhir_base_url
    await fhir.transaction(
        transaction_bundle(
            [
                versioned_update_entry({**r, "status": "final"}, base)
                for r in (report, *observations)
            ]
        )
    )
    verified = FindingVerified(
        study=posted.study,
        task="Task/verification-of-this-run",
        diagnostic_report=posted.diagnostic_report,
        verifier="Practitioner/radiologist",
        provenance="Provenance/of-the-verdict",
    )
    await results.on_changed(verified)
    first, final = receiver.of_report(report_id)
    assert str(final.segment("OBR")[25]) == "F"
    assert {str(s[11]) for s in final.segments("OBX")} == {"F"}
    assert str(final.segment("MSH")[10]) != str(first.segment("MSH")[10])


async def test_a_refusal_is_permanent_and_a_receiver_that_is_down_transient(
    infra: Infrastructure, fhir: FhirClient, receiver: Hl7Receiver
) -> None:
    """An AE naming its reason: a PermanentError quoting it, what it echoes of the patient
    redacted (the message is dead-lettered); no listener on the port: RemoteUnavailable (the
    message is retried later)."""
    posted = await _posted_bleed(infra, fhir)
    receiver.answer_code, receiver.answer_text = "AE", "unknown patient MRN-0042 'Doe^Jane'"
    with pytest.raises(
        PermanentError, match="refused the ORU\\^R01 with AE: unknown patient"
    ) as refused:
        await _sender(fhir, receiver.port).on_posted(posted)
    # what the receiver echoed of the patient is not carried into logs and dead letters
    assert "0042" not in str(refused.value) and "Doe" not in str(refused.value)
    await receiver.stop()
    with pytest.raises(RemoteUnavailable, match="did not take the ORU"):
        await _sender(fhir, receiver.port).on_posted(posted)
