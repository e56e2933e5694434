"""The notifier against the real FHIR server: alerts for critical findings reach the ordering
Practitioner, once, nothing is written for a result without a critical finding, and a
rejected report's alerts are withdrawn."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import structlog
import structlog.testing
import yaml

from services.notifier.app import build_app
from services.notifier.handlers import FollowUpAlerts, RaiseAlerts
from services.notifier.settings import NotifierSettings
from services.verification.acknowledgements import AlertDesk
from services.verification.verdicts import Reviewer
from shared.alert_report import collect_alerts
from shared.bus import Bus
from shared.fhir import FhirClient
from shared.messages import AlertRaised, FindingRejected, FindingVerified, StudyRef
from shared.metrics import exposition
from shared.registry import Registry
from shared.settings import BrokerSettings, FhirSettings, RadmeshSettings
from tests.conftest import Infrastructure
from tests.integration.fhir_seed import (
    SeededStudy,
    search_resources,
    seed_study,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REGISTRY_PATH = ROOT / "registry" / "models.yaml"


def _alert_identifier(seeded: SeededStudy, resource_type: str) -> str:
    run = f"{seeded.study_instance_uid}/{seeded.model.id}/{seeded.model.version}"
    return f"urn:radmesh:{resource_type.lower()}|{run}/intracranial-hemorrhage/0"


async def test_critical_finding_alerts_the_ordering_practitioner(
    fhir: FhirClient, registry: Registry
) -> None:
    """A present intracranial hemorrhage yields a completed stat alert Communication from the
    model's Device to the ServiceRequest's requester about the Observation and the report, an
    active CommunicationRequest to the same Practitioner, a stat neurosurgery consult
    ServiceRequest based on the study's order, and an active Flag on the patient; the alert
    text names no patient."""
    seeded = await seed_study(fhir, critical=True)
    events = await RaiseAlerts(registry, fhir)(seeded.results_posted())

    assert len(events) == 1
    alert = events[0]
    assert isinstance(alert, AlertRaised)
    assert alert.diagnostic_report == seeded.diagnostic_report

    communication = dict(await fhir.execute(alert.communication, "get"))
    assert communication["status"] == "completed"
    assert communication["priority"] == "stat"
    assert communication["category"][0]["coding"][0]["code"] == "alert"
    assert communication["recipient"] == [{"reference": seeded.practitioner}]
    assert communication["sender"] == {"reference": seeded.device}
    assert communication["subject"] == {"reference": seeded.patient}
    assert [ref["reference"] for ref in communication["about"]] == [
        seeded.observations[0],
        seeded.diagnostic_report,
    ]
    text = communication["payload"][0]["contentString"]
    assert "Intracranial hemorrhage" in text
    assert "0.93" in text
    for patient_data in ("Test", "Seed", seeded.patient.split("/")[1], seeded.study_instance_uid):
        assert patient_data not in text

    request = dict(await fhir.execute(alert.communication_request, "get"))
    assert request["status"] == "active"
    sent = dict(await fhir.execute(alert.communication, "get"))
    assert sent["basedOn"] == [{"reference": alert.communication_request}]
    assert request["priority"] == "stat"
    assert request["recipient"] == [{"reference": seeded.practitioner}]
    assert request["category"][0]["coding"][0]["code"] == "alert"

    assert alert.consult_service_request is not None
    consult = dict(await fhir.execute(alert.consult_service_request, "get"))
    assert (consult["status"], consult["intent"], consult["priority"]) == (
        "active",
        "proposal",  # an AI proposes the consult; a clinician orders it
        "stat",
    )
    assert consult["code"]["coding"][0]["code"] == "44383000"
    assert "neurosurgery" in consult["code"]["text"]
    assert consult["subject"] == {"reference": seeded.patient}
    assert consult["basedOn"] == [{"reference": seeded.service_request}]
    assert consult["reasonReference"] == [{"reference": seeded.observations[0]}]

    assert alert.flag is not None  # the patient's chart shows an open critical AI finding
    flag = dict(await fhir.execute(alert.flag, "get"))
    assert (flag["status"], flag["subject"]) == ("active", {"reference": seeded.patient})
    assert flag["code"]["text"].startswith("Open critical AI finding: Intracranial hemorrhage")
    assert "end" not in flag["period"]


async def test_duplicate_results_posted_creates_no_second_alert(
    fhir: FhirClient, registry: Registry
) -> None:
    """The same results.posted handled twice (a redelivery) leaves one Communication, one
    CommunicationRequest and one consult ServiceRequest, and both alert.raised name them."""
    seeded = await seed_study(fhir, critical=True)
    event = seeded.results_posted()
    handler = RaiseAlerts(registry, fhir)
    first = await handler(event)
    second = await handler(event)

    assert [e.model_dump(include={"communication", "communication_request"}) for e in first] == [
        e.model_dump(include={"communication", "communication_request"}) for e in second
    ]
    for resource_type in ("Communication", "CommunicationRequest", "ServiceRequest"):
        found = await search_resources(
            fhir, resource_type, identifier=_alert_identifier(seeded, resource_type)
        )
        assert len(found) == 1, resource_type
    assert len(await search_resources(fhir, "Communication", subject=seeded.patient)) == 1


async def test_result_without_critical_finding_raises_no_alert(
    fhir: FhirClient, registry: Registry
) -> None:
    """A result whose hemorrhage is absent publishes nothing and writes no Communication,
    CommunicationRequest or consult for the patient (only the seeded order stays)."""
    seeded = await seed_study(fhir, critical=False)
    events = await RaiseAlerts(registry, fhir)(seeded.results_posted())

    assert events == []
    assert await search_resources(fhir, "Communication", subject=seeded.patient) == []
    assert await search_resources(fhir, "CommunicationRequest", subject=seeded.patient) == []
    orders = await search_resources(fhir, "ServiceRequest", subject=seeded.patient)
    assert [f"ServiceRequest/{order['id']}" for order in orders] == [seeded.service_request]


async def test_shadow_rollout_raises_no_alert(fhir: FhirClient, registry: Registry) -> None:
    """A shadow-mode result never reaches the clinical record, even with a critical finding."""
    seeded = await seed_study(fhir, critical=True)
    events = await RaiseAlerts(registry, fhir)(seeded.results_posted(rollout_mode="shadow"))

    assert events == []
    assert await search_resources(fhir, "Communication", subject=seeded.patient) == []


async def test_order_without_requester_alerts_the_fallback_recipient_or_nobody(
    fhir: FhirClient, registry: Registry
) -> None:
    """When the study's ServiceRequest names no requester the alert is still written: to the
    configured fallback recipient if there is one, otherwise without recipient."""
    fallback = await fhir.execute(
        "Organization", "post", data={"resourceType": "Organization", "name": "Radiology"}
    )
    fallback_reference = f"Organization/{fallback['id']}"

    with_fallback = await seed_study(fhir, critical=True, with_requester=False)
    events = await RaiseAlerts(registry, fhir, fallback_reference)(with_fallback.results_posted())
    assert len(events) == 1
    assert isinstance(events[0], AlertRaised)
    communication = dict(await fhir.execute(events[0].communication, "get"))
    assert communication["recipient"] == [{"reference": fallback_reference}]

    without = await seed_study(fhir, critical=True, with_requester=False)
    events = await RaiseAlerts(registry, fhir)(without.results_posted())
    assert len(events) == 1
    assert isinstance(events[0], AlertRaised)
    communication = dict(await fhir.execute(events[0].communication, "get"))
    request = dict(await fhir.execute(events[0].communication_request, "get"))
    assert "recipient" not in communication
    assert "recipient" not in request
    assert communication["status"] == "completed"


def _rejected(
    seeded: SeededStudy, verifier: str, reason_code: str = "false-positive"
) -> FindingRejected:
    return FindingRejected(
        study=StudyRef(
            study_instance_uid=seeded.study_instance_uid,
            imaging_study=seeded.imaging_study,
            patient=seeded.patient,
            service_request=seeded.service_request,
        ),
        task="Task/rejected-in-test",
        diagnostic_report=seeded.diagnostic_report,
        verifier=verifier,
        reason="False positive: the finding is not there: calcified falx",
        reason_code=reason_code,
    )


async def test_rejected_report_withdraws_its_alert_once(
    fhir: FhirClient, registry: Registry, infra: Infrastructure
) -> None:
    """finding.rejected for a report whose bleed raised an alert: the CommunicationRequest and
    the stat consult are revoked, the patient's Flag closed, and one withdrawal Communication (in response to the alert)
    tells the same recipient it was withdrawn and why, from the radiologist; handling the event
    again writes nothing more."""
    seeded = await seed_study(fhir, critical=True)
    (alert,) = await RaiseAlerts(registry, fhir)(seeded.results_posted())
    assert isinstance(alert, AlertRaised) and alert.consult_service_request
    radiologist = seeded.practitioner  # any Practitioner stands in for the one who rejected
    withdraw = FollowUpAlerts(fhir, infra.fhir_base_url).withdraw
    event = _rejected(seeded, radiologist)
    assert await withdraw(event) == []
    await withdraw(event)

    assert (await fhir.execute(alert.communication_request, "get"))["status"] == "revoked"
    assert (await fhir.execute(alert.consult_service_request, "get"))["status"] == "revoked"
    assert alert.flag is not None
    flag = dict(await fhir.execute(alert.flag, "get"))
    assert flag["status"] == "inactive" and "end" in flag["period"]
    original = dict(await fhir.execute(alert.communication, "get"))
    assert original["status"] == "completed"  # what was sent stays as sent
    withdrawals = await search_resources(
        fhir, "Communication", identifier=f"{_alert_identifier(seeded, 'Communication')}/withdrawal"
    )
    assert len(withdrawals) == 1
    (withdrawal,) = withdrawals
    assert withdrawal["inResponseTo"] == [{"reference": alert.communication}]
    assert withdrawal["recipient"] == original["recipient"]
    assert withdrawal["sender"] == {"reference": radiologist}
    assert withdrawal["priority"] == "stat"
    text = withdrawal["payload"][0]["contentString"]
    assert text.startswith("WITHDRAWN")
    assert "calcified falx" in text and "consult it requested is revoked" in text
    for patient_data in ("Test", "Seed", seeded.patient.split("/")[1], seeded.study_instance_uid):
        assert patient_data not in text


async def test_rejected_report_without_alerts_changes_nothing(
    fhir: FhirClient, infra: Infrastructure
) -> None:
    """A rejected report that raised no alert (no critical finding) writes no withdrawal."""
    seeded = await seed_study(fhir, critical=False)
    assert (
        await FollowUpAlerts(fhir, infra.fhir_base_url).withdraw(
            _rejected(seeded, seeded.practitioner)
        )
        == []
    )
    withdrawals = await search_resources(
        fhir, "Communication", identifier=f"{_alert_identifier(seeded, 'Communication')}/withdrawal"
    )
    assert withdrawals == []


async def test_verified_report_tells_the_alert_recipient_once_that_a_radiologist_confirmed_it(
    fhir: FhirClient, registry: Registry, infra: Infrastructure
) -> None:
    """finding.verified for a report whose bleed raised an alert: one confirmation
    Communication (clinician-asserted, in response to the alert) to the same recipient, from
    the radiologist; the alert itself stays open for acknowledgement; a redelivery writes no
    second confirmation."""
    seeded = await seed_study(fhir, critical=True)
    (alert,) = await RaiseAlerts(registry, fhir)(seeded.results_posted())
    assert isinstance(alert, AlertRaised)
    verified = FindingVerified(
        study=_rejected(seeded, seeded.practitioner).study,
        task="Task/verified-in-test",
        diagnostic_report=seeded.diagnostic_report,
        verifier=seeded.practitioner,
        provenance="Provenance/verified-in-test",
        amended=True,
    )
    confirm = FollowUpAlerts(fhir, infra.fhir_base_url).confirm
    assert await confirm(verified) == []
    await confirm(verified)
    confirmations = await search_resources(
        fhir,
        "Communication",
        identifier=f"{_alert_identifier(seeded, 'Communication')}/confirmation",
    )
    assert len(confirmations) == 1
    (confirmation,) = confirmations
    original = dict(await fhir.execute(alert.communication, "get"))
    assert confirmation["inResponseTo"] == [{"reference": alert.communication}]
    assert confirmation["recipient"] == original["recipient"]
    assert [s["code"] for s in confirmation["meta"]["security"]] == ["CLINAST_AIRPT"]
    assert "CONFIRMED" in confirmation["payload"][0]["contentString"]
    assert "amended measurement" in confirmation["payload"][0]["contentString"]
    assert (await fhir.execute(alert.communication_request, "get"))["status"] == "active"


async def _queue_depth(infra: Infrastructure, name: str) -> int:
    connection = await aio_pika.connect_robust(infra.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def _until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.2)


async def test_an_unacknowledged_alert_escalates_on_its_deadlines_through_a_restart_and_stops_when_acknowledged(
    fhir: FhirClient, infra: Infrastructure, tmp_path: Path
) -> None:
    """A registry whose bleed escalates every 2.4 s: to the requester, then the fallback, then
    the fallback again. The notifier raises the alert and is stopped; the first timer comes
    due while it is down (the message waits in its queue) and the restarted notifier escalates
    to the requester, in response to the alert; nobody acknowledges, so the second step goes
    to the fallback. The alert is then acknowledged: when the third timer comes due nothing
    more is sent."""
    document = yaml.safe_load(REGISTRY_PATH.read_text())
    for model in document["models"]:
        for finding in model["findings"]:
            if finding.get("escalation"):
                finding["escalation"] = [
                    {"after_minutes": 0.04, "recipient": "requester"},
                    {"after_minutes": 0.04, "recipient": "fallback"},
                    {"after_minutes": 0.04, "recipient": "fallback"},
                ]
    registry_path = tmp_path / "models.yaml"
    registry_path.write_text(yaml.safe_dump(document))
    tag = uuid.uuid4().hex[:8]
    service = f"notifier-test-{tag}"
    settings = RadmeshSettings(
        broker=BrokerSettings(url=infra.amqp_url, exchange=f"radmesh.test-{tag}"),
        fhir=FhirSettings(base_url=infra.fhir_base_url),
        registry_path=registry_path,
    )
    on_call = await fhir.create_resource(
        {"resourceType": "Practitioner", "name": [{"family": "On-call", "given": ["Radiologist"]}]}
    )
    own = NotifierSettings(fallback_recipient=f"Practitioner/{on_call['id']}")
    seeded = await seed_study(fhir, critical=True)
    publisher = Bus(settings.broker, f"test-publisher-{tag}")
    await publisher.start()
    notifier = build_app(settings, own, service)
    await notifier.start()
    escalation = f"{_alert_identifier(seeded, 'Communication')}/escalation"
    try:
        await publisher.publish(seeded.results_posted())

        await _until(
            _found(fhir, "CommunicationRequest", _alert_identifier(seeded, "CommunicationRequest")),
            "the notifier raises the alert",
        )
        await notifier.stop()  # down when the first deadline comes

        async def first_timer_waiting() -> bool:
            return await _queue_depth(infra, f"radmesh.{service}") >= 1

        await _until(
            first_timer_waiting, "the first deadline's message waits in the notifier's queue"
        )
        assert await search_resources(fhir, "Communication", identifier=f"{escalation}/1") == []
        notifier = build_app(settings, own, service)
        with structlog.testing.capture_logs() as logs:
            await notifier.start()

            await _until(
                _found(fhir, "Communication", f"{escalation}/1"),
                "the restarted notifier escalates to the requester",
            )
            (first,) = await search_resources(fhir, "Communication", identifier=f"{escalation}/1")
            (request,) = await search_resources(
                fhir,
                "CommunicationRequest",
                identifier=_alert_identifier(seeded, "CommunicationRequest"),
            )
            (original,) = await search_resources(
                fhir, "Communication", identifier=_alert_identifier(seeded, "Communication")
            )
            assert first["recipient"] == [{"reference": seeded.practitioner}]
            assert first["inResponseTo"] == [{"reference": f"Communication/{original['id']}"}]
            assert first["payload"][0]["contentString"].startswith("ESCALATION 1 of 3")

            await _until(
                _found(fhir, "Communication", f"{escalation}/2"),
                "nobody acknowledged: the alert goes to the fallback",
            )
            (second,) = await search_resources(fhir, "Communication", identifier=f"{escalation}/2")
            assert second["recipient"] == [{"reference": own.fallback_recipient}]
            await AlertDesk(fhir, infra.fhir_base_url).acknowledge(
                str(request["id"]), Reviewer(seeded.practitioner, "Dr Orderer"), datetime.now(UTC)
            )
            timers = f"radmesh.{service}.delay.2400ms"

            async def third_timer_handled() -> bool:
                return (
                    await _queue_depth(infra, timers) == 0
                    and await _queue_depth(infra, f"radmesh.{service}") == 0
                )

            await _until(third_timer_handled, "the third deadline comes and is handled")
            await _until(
                _logged(logs, "escalation_stopped"), "the notifier sees the acknowledgement"
            )
        assert await search_resources(fhir, "Communication", identifier=f"{escalation}/3") == []
        step_2 = 'finding="intracranial-hemorrhage",model="ich-reference/1",step="2"'
        assert f"radmesh_alert_escalations_total{{{step_2}}}" in exposition().decode()
    finally:
        await notifier.stop()
        await publisher.stop()
        await _delete_queues(infra, service)


async def _delete_queues(infra: Infrastructure, service: str) -> None:
    """The test notifier's own queues: its queue, dead letters and timers."""
    connection = await aio_pika.connect_robust(infra.amqp_url)
    try:
        channel = await connection.channel()
        for name in (
            f"radmesh.{service}",
            f"radmesh.{service}.dead-letter",
            *(f"radmesh.{service}.delay.{ms}ms" for ms in (1000, 2400, 5000, 25000, 120000)),
        ):
            await channel.queue_delete(name)
    finally:
        await connection.close()


def _found(fhir: FhirClient, resource_type: str, identifier: str) -> Callable[[], Awaitable[bool]]:
    async def exists() -> bool:
        return bool(await search_resources(fhir, resource_type, identifier=identifier))

    return exists


def _logged(logs: list[MutableMapping[str, Any]], event: str) -> Callable[[], Awaitable[bool]]:
    async def seen() -> bool:
        return any(entry.get("event") == event for entry in logs)

    return seen


async def test_the_alert_report_reads_time_to_acknowledge_back_from_the_record(
    fhir: FhirClient, registry: Registry, infra: Infrastructure, tmp_path: Path
) -> None:
    """Two bleeds' alerts, one acknowledged: the report read back from the FHIR server has both,
    the acknowledged one with its minutes, the other open; `radmesh report alerts` prints the
    summary and writes the plot."""
    since = datetime.now(UTC) - timedelta(seconds=5)
    keys = []
    for acknowledge in (True, False):
        seeded = await seed_study(fhir, critical=True)
        (alert,) = await RaiseAlerts(registry, fhir)(seeded.results_posted())
        assert isinstance(alert, AlertRaised)
        keys.append(_alert_identifier(seeded, "Communication").split("|", 1)[1])
        if acknowledge:
            await AlertDesk(fhir, infra.fhir_base_url).acknowledge(
                alert.communication_request.split("/")[1],
                Reviewer(seeded.practitioner, "Dr Orderer"),
                datetime.now(UTC),
            )
    outcomes = {a.key: a for a in await collect_alerts(fhir, since)}
    acknowledged, still_open = outcomes[keys[0]], outcomes[keys[1]]
    assert acknowledged.minutes_to_acknowledge is not None
    assert 0 <= acknowledged.minutes_to_acknowledge < 5
    assert still_open.acknowledged is None and not still_open.withdrawn

    plot = tmp_path / "alerts.png"
    completed = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "shared.cli",
            "report",
            "alerts",
            "--hours",
            "1",
            "--plot",
            str(plot),
        ],
        cwd=ROOT,
        env={**os.environ, "RADMESH_FHIR__BASE_URL": infra.fhir_base_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "intracranial-hemorrhage" in completed.stdout
    assert plot.read_bytes()[:4] == b"\x89PNG"
