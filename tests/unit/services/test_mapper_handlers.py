"""services.mapper.handlers: rollout, what is posted and published, with a fake FHIR server."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from services.mapper.handlers import MapResults
from shared.errors import InvalidMessage, PermanentError
from shared.fhir import FhirClient
from shared.messages import Finding, InferenceCompleted, ModelRef, ResultsPosted, StudyRef
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

    async def transaction(self, bundle: dict[str, Any]) -> dict[str, Any]:
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
