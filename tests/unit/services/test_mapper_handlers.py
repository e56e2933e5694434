"""services.mapper.handlers: rollout, what is posted and published, with a fake FHIR server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from samples.dicom_series import describe_study, iter_instances
from samples.phantoms import head_ct
from services.mapper.handlers import MapResults
from shared.dicomweb import DicomWebClient
from shared.errors import InvalidMessage, PermanentError, RemoteUnavailable
from shared.fhir import FhirClient
from shared.messages import (
    EvidenceSeries,
    Finding,
    InferenceCompleted,
    ModelRef,
    ResultsPosted,
    StudyRef,
)
from shared.registry import Registry, load_registry

REGISTRY = load_registry(Path(__file__).resolve().parents[3] / "registry" / "models.yaml")


class FakeFhir:
    """Answers a transaction as a server would: one `Type/id/_history/1` location per entry; a
    search for the run's claim finds `claims`; an update is recorded."""

    def __init__(self, claims: list[dict[str, Any]] | None = None) -> None:
        self.transactions: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.claims = claims or []

    async def update_resource(self, resource: dict[str, Any]) -> dict[str, Any]:
        self.updates.append(resource)
        return resource

    async def execute(
        self, path: str, method: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        assert (path, method) == ("Task", "get")
        return {"resourceType": "Bundle", "entry": [{"resource": c} for c in self.claims]}

    async def transaction(
        self, bundle: dict[str, Any], *, representation: bool = False
    ) -> dict[str, Any]:
        self.transactions.append(bundle)
        return {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [
                {
                    "response": {
                        "status": "201 Created",
                        "location": f"{entry['resource']['resourceType']}/id-{i}/_history/1",
                    }
                }
                for i, entry in enumerate(bundle["entry"])
            ],
        }


def _handler(registry: Registry, fhir: FakeFhir) -> MapResults:
    return MapResults(registry, cast(FhirClient, fhir), None)


def _event(present: bool, patient: str | None = "Patient/p") -> InferenceCompleted:
    findings = [Finding(finding_key="intracranial-hemorrhage", present=present, probability=0.8)]
    if present:
        findings.append(Finding(finding_key="hemorrhage-volume", present=True, value=3.0))
    return InferenceCompleted(
        study=StudyRef(study_instance_uid="1.2.3", imaging_study="ImagingStudy/s", patient=patient),
        model=ModelRef(id="ich-reference", version="1"),
        findings=tuple(findings),
        inference_duration_ms=5.0,
    )


def _shadow(registry: Registry) -> Registry:
    return Registry(
        models=tuple(model.model_copy(update={"rollout": "shadow"}) for model in registry.models)
    )


async def test_shadow_rollout_posts_nothing_and_publishes_nothing() -> None:
    """A shadow model's run sends no transaction and returns no event."""
    fhir = FakeFhir()
    assert await _handler(_shadow(REGISTRY), fhir)(_event(present=True)) == []
    assert fhir.transactions == []


async def test_active_rollout_posts_one_transaction_and_publishes_the_references() -> None:
    """An active model's run sends one transaction and publishes results.posted with the
    references the server answered, in the event's finding order."""
    fhir = FakeFhir()
    event = _event(present=True)
    events = await _handler(REGISTRY, fhir)(event)
    assert len(fhir.transactions) == 1
    assert len(events) == 1
    posted = events[0]
    assert isinstance(posted, ResultsPosted)
    assert posted.device == "Device/id-0"
    assert [f.observation for f in posted.findings] == ["Observation/id-1", "Observation/id-2"]
    assert posted.diagnostic_report == "DiagnosticReport/id-3"
    assert posted.provenance == "Provenance/id-4"
    assert posted.rollout_mode == "active"
    assert (posted.correlation_id, posted.causation_id) == (event.correlation_id, event.message_id)
    # the AI Provenance, once written, is pinned to the versions the transaction wrote
    (provenance,) = fhir.updates
    assert provenance["id"] == "id-4"
    assert [t["reference"] for t in provenance["target"]] == [
        "DiagnosticReport/id-3/_history/1",
        "Observation/id-1/_history/1",
        "Observation/id-2/_history/1",
    ]
    assert provenance["agent"][0]["who"]["reference"] == "Device/id-0"


async def test_critical_only_for_a_present_finding_of_a_critical_mapping() -> None:
    """ICH (critical in the registry) present → critical; its volume (not critical) → not; ICH
    absent → not critical."""
    fhir = FakeFhir()
    present = await _handler(REGISTRY, fhir)(_event(present=True))
    absent = await _handler(REGISTRY, fhir)(_event(present=False))
    assert isinstance(present[0], ResultsPosted) and isinstance(absent[0], ResultsPosted)
    assert [f.critical for f in present[0].findings] == [True, False]
    assert [f.critical for f in absent[0].findings] == [False]


async def test_unknown_model_is_dead_lettered() -> None:
    """A model the registry does not declare is a PermanentError; nothing is sent."""
    fhir = FakeFhir()
    event = _event(present=True).model_copy(update={"model": ModelRef(id="nope", version="9")})
    with pytest.raises(PermanentError, match="nope"):
        await _handler(REGISTRY, fhir)(event)
    assert fhir.transactions == []


async def test_a_finding_the_model_does_not_have_is_dead_lettered_saying_which() -> None:
    """A finding key the model's registry entry does not list (a corrupted or forged message)
    is an InvalidMessage naming it, not a KeyError dead-lettered as a bug; nothing is sent."""
    fhir = FakeFhir()
    event = _event(present=False)
    forged = event.model_copy(
        update={"findings": (*event.findings, Finding(finding_key="01.2", present=True))}
    )
    with pytest.raises(InvalidMessage, match=r"findings.finding_key \['01.2'\] not among"):
        await _handler(REGISTRY, fhir)(forged)
    assert fhir.transactions == []


async def test_study_without_patient_is_not_posted() -> None:
    """Results without a subject would be orphans in the record: InvalidMessage, nothing sent."""
    fhir = FakeFhir()
    with pytest.raises(InvalidMessage, match="no Patient"):
        await _handler(REGISTRY, fhir)(_event(present=True, patient=None))
    assert fhir.transactions == []


async def test_run_retracted_while_it_ran_posts_nothing() -> None:
    """A run whose claim a retraction cancelled (its images were deleted in the PACS while the
    model read them) writes nothing to the record and announces nothing."""
    fhir = FakeFhir(claims=[{"resourceType": "Task", "status": "cancelled"}])
    assert await _handler(REGISTRY, fhir)(_event(present=True)) == []
    assert fhir.transactions == []


async def test_run_with_its_claim_in_progress_posts_its_results() -> None:
    fhir = FakeFhir(claims=[{"resourceType": "Task", "status": "in-progress"}])
    assert len(await _handler(REGISTRY, fhir)(_event(present=True))) == 1
    assert len(fhir.transactions) == 1


def _run_with_evidence() -> tuple[InferenceCompleted, dict[str, Any]]:
    """An ICH run on a phantom head CT that names its evidence, and the DICOM JSON metadata
    of its first instance (what the PACS answers for the SR's Patient and Study modules)."""
    phantom = head_ct(seed=5, slices=4, size=32)
    info = describe_study(phantom, scenario="mapper-handlers", seed=5)
    images = list(iter_instances(phantom, info))
    header = images[0]
    del header.PixelData
    event = InferenceCompleted(
        study=StudyRef(
            study_instance_uid=info.study_instance_uid,
            imaging_study="ImagingStudy/s",
            patient="Patient/p",
        ),
        model=ModelRef(id="ich-reference", version="1"),
        findings=(Finding(finding_key="intracranial-hemorrhage", present=False, probability=0.1),),
        inference_duration_ms=5.0,
        evidence=(
            EvidenceSeries(
                series_instance_uid=info.series_instance_uid,
                sop_class_uid=str(images[0].SOPClassUID),
                sop_instance_uids=tuple(str(image.SOPInstanceUID) for image in images),
            ),
        ),
    )
    return event, header.to_json_dict()


class _FhirThatWaitsForThePacs(FakeFhir):
    """Holds the transaction until the PACS has been asked for the SR's evidence (so the SR is
    being built meanwhile), then answers it, or fails as a server that went away."""

    def __init__(self, asked: asyncio.Event, *, fails: bool) -> None:
        super().__init__()
        self.asked = asked
        self.fails = fails

    async def transaction(
        self, bundle: dict[str, Any], *, representation: bool = False
    ) -> dict[str, Any]:
        await asyncio.wait_for(self.asked.wait(), timeout=10)
        if self.fails:
            raise RemoteUnavailable("FHIR transaction", url="http://fhir/", status=503)
        return await super().transaction(bundle)


class _Pacs:
    """Answers the evidence's metadata; records each STOW and how many transactions the FHIR
    server had answered by then."""

    def __init__(self, header: dict[str, Any], fhir: FakeFhir, asked: asyncio.Event) -> None:
        self.header, self.fhir, self.asked = header, fhir, asked
        self.stored: list[int] = []

    async def retrieve_instance_metadata(self, *_: str) -> dict[str, Any]:
        self.asked.set()
        return self.header

    async def store_instances(self, instances: list[bytes]) -> dict[str, object]:
        self.stored.append(len(self.fhir.transactions))
        return {}


async def test_the_sr_is_built_while_the_transaction_runs_and_stored_after_it() -> None:
    """The SR's evidence is read from the PACS while the FHIR server holds the transaction
    (it answers only once it was), and the SR is stored once, after the transaction."""
    event, header = _run_with_evidence()
    asked = asyncio.Event()
    fhir = _FhirThatWaitsForThePacs(asked, fails=False)
    pacs = _Pacs(header, fhir, asked)
    handler = MapResults(REGISTRY, cast(FhirClient, fhir), cast(DicomWebClient, pacs))
    (posted,) = await handler(event)
    assert isinstance(posted, ResultsPosted)
    assert pacs.stored == [1]


async def test_no_sr_reaches_the_pacs_when_the_transaction_fails() -> None:
    """A failed FHIR transaction fails the message (retried whole) and the SR built meanwhile
    is not stored: the PACS never holds AI results the record does not."""
    event, header = _run_with_evidence()
    asked = asyncio.Event()
    fhir = _FhirThatWaitsForThePacs(asked, fails=True)
    pacs = _Pacs(header, fhir, asked)
    handler = MapResults(REGISTRY, cast(FhirClient, fhir), cast(DicomWebClient, pacs))
    with pytest.raises(RemoteUnavailable):
        await handler(event)
    assert pacs.stored == []
