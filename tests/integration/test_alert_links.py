"""Signed acknowledgement links in critical alerts (shared/alert_links.py,
services/verification/alert_link_page.py), against HAPI: the notifier puts the link into the
alert; opening it shows the alert; posting it acknowledges in the recipient's name, once, with
an AuditEvent; a forged, expired or foreign link acknowledges nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from services.notifier.handlers import RaiseAlerts
from services.verification.acknowledgements import AlertDesk
from services.verification.alert_link_page import AlertLinkPage
from services.verification.audit import AuditTrail
from shared.alert_links import AlertLink, sign_token
from shared.fhir import FhirClient
from shared.messages import AlertRaised
from shared.registry import Registry
from shared.settings import AlertLinkSettings
from tests.conftest import Infrastructure
from tests.integration.fhir_seed import SeededStudy, seed_study

pytestmark = pytest.mark.integration

SECRET = "test-alert-link-secret"


@pytest.fixture
async def link_server(fhir: FhirClient, infra: Infrastructure) -> AsyncIterator[str]:
    """The verification service's alert-link routes, on a port of their own."""
    settings = AlertLinkSettings(base_url=None, secret=SecretStr(SECRET))
    page = AlertLinkPage(AlertDesk(fhir, infra.fhir_base_url), AuditTrail(fhir), settings)
    app = web.Application()
    app.add_routes(page.routes())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _alerted(
    fhir: FhirClient, registry: Registry, base_url: str
) -> tuple[SeededStudy, AlertRaised, str]:
    seeded = await seed_study(fhir, critical=True)
    links = AlertLinkSettings(base_url=base_url, secret=SecretStr(SECRET))
    (alert,) = await RaiseAlerts(registry, fhir, links=links)(seeded.results_posted())
    assert isinstance(alert, AlertRaised)
    request = await fhir.read_resource(alert.communication_request)
    (attachment,) = [p["contentAttachment"] for p in request["payload"] if "contentAttachment" in p]
    return seeded, alert, str(attachment["url"])


async def test_the_alerts_signed_link_acknowledges_it_once_in_the_recipients_name(
    fhir: FhirClient, registry: Registry, link_server: str
) -> None:
    """The CommunicationRequest and the Communication carry the link; GET shows the alert and a
    button without acknowledging; POST completes the CommunicationRequest, clears the Flag and
    records the acknowledgement from the ordering Practitioner; a second POST records nothing
    more; the use is audited."""
    seeded, alert, url = await _alerted(fhir, registry, link_server)
    communication = await fhir.read_resource(alert.communication)
    assert url in {p.get("contentAttachment", {}).get("url") for p in communication["payload"]}
    assert url.startswith(f"{link_server}/alert-links/")
    async with aiohttp.ClientSession() as http:
        shown = await http.get(url)
        page = await shown.text()
        assert shown.status == 200, page
        assert "Intracranial hemorrhage" in page and "<button" in page
        assert (await fhir.read_resource(alert.communication_request))["status"] == "active"

        first = await http.post(url, headers={"Accept": "application/json"})
        done = await first.json()
        assert first.status == 200, done
        again = await http.post(url, headers={"Accept": "application/json"})
        assert again.status == 200
        assert (await again.json())["acknowledgement"] == done["acknowledgement"]
    assert (await fhir.read_resource(alert.communication_request))["status"] == "completed"
    assert alert.flag is not None
    assert (await fhir.read_resource(alert.flag))["status"] == "inactive"
    acknowledgement = await fhir.read_resource(done["acknowledgement"])
    assert acknowledgement["sender"]["reference"] == seeded.practitioner
    audits = await fhir.execute("AuditEvent", "get", params={"entity": alert.communication_request})
    assert any(
        entry["resource"].get("outcomeDesc") == "critical alert acknowledged via signed alert link"
        for entry in audits.get("entry", [])
    )


async def test_a_forged_expired_or_foreign_link_acknowledges_nothing(
    fhir: FhirClient, registry: Registry, link_server: str
) -> None:
    seeded, alert, url = await _alerted(fhir, registry, link_server)
    token = url.rsplit("/", 1)[1]
    key = f"{seeded.study_instance_uid}/{seeded.model.id}/{seeded.model.version}/intracranial-hemorrhage/0"
    now = datetime.now(UTC)
    expired = sign_token(AlertLink(key, seeded.practitioner, now - timedelta(minutes=1)), SECRET)
    foreign = sign_token(
        AlertLink(key, "Practitioner/someone-else", now + timedelta(hours=1)), SECRET
    )
    other_key = sign_token(AlertLink(key, seeded.practitioner, now + timedelta(hours=1)), "wrong")
    cases = {
        token[:-4] + "AAAA": "signature is wrong",
        other_key: "signature is wrong",
        expired: "expired",
        foreign: "not the alert's recipient",
        "not-a-token": "not a radmesh alert link",
    }
    async with aiohttp.ClientSession() as http:
        for bad, reason in cases.items():
            answer = await http.post(
                f"{link_server}/alert-links/{bad}", headers={"Accept": "application/json"}
            )
            outcome = await answer.json()
            assert answer.status == 403, (bad, outcome)
            assert reason in outcome["issue"][0]["diagnostics"]
    assert (await fhir.read_resource(alert.communication_request))["status"] == "active"
