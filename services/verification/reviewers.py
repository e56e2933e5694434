"""The signed-in radiologist as a FHIR Practitioner: who a verdict is recorded in the name of.

A token that names the user's FHIR resource (the `fhirUser` claim, SMART's convention, e.g.
"Practitioner/123") is taken at its word once the Practitioner is found on the FHIR server.
Otherwise the Practitioner identified by the token's issuer and subject
(`identifier` = `<issuer>|<sub>`) is used, created on first sign-in with the name the token
carries. Resolved Practitioners are remembered for the life of the process.
"""

from __future__ import annotations

import structlog

from services.verification.verdicts import Reviewer
from shared.auth import Principal
from shared.errors import RemoteRejected
from shared.fhir import FhirClient

__all__ = ["ReviewerDirectory", "UnknownReviewer"]

log = structlog.get_logger(__name__)


class UnknownReviewer(Exception):
    """The token's fhirUser names a Practitioner the FHIR server does not have (403)."""


class ReviewerDirectory:
    def __init__(self, fhir: FhirClient) -> None:
        self.fhir = fhir
        self._known: dict[tuple[str, str], Reviewer] = {}

    async def reviewer(self, principal: Principal) -> Reviewer:
        key = (principal.issuer, principal.subject)
        known = self._known.get(key)
        if known is None:
            known = await self._resolve(principal)
            self._known[key] = known
        return known

    async def _resolve(self, principal: Principal) -> Reviewer:
        display = principal.name or principal.label
        if principal.fhir_user and principal.fhir_user.startswith("Practitioner/"):
            try:
                await self.fhir.read_resource(principal.fhir_user)
            except RemoteRejected as error:
                if error.status in (404, 410):
                    raise UnknownReviewer(
                        f"the token names {principal.fhir_user}, which the FHIR server does "
                        "not have"
                    ) from error
                raise
            return Reviewer(reference=principal.fhir_user, display=display)
        name: dict[str, object] = {"use": "official", "text": display}
        if principal.family_name:
            name["family"] = principal.family_name
        if principal.given_name:
            name["given"] = [principal.given_name]
        practitioner = {
            "resourceType": "Practitioner",
            "identifier": [{"system": principal.issuer, "value": principal.subject}],
            "active": True,
            "name": [name],
        }
        found, created = await self.fhir.create_once(
            practitioner, f"identifier={principal.issuer}|{principal.subject}"
        )
        reference = f"Practitioner/{found['id']}"
        log.info("reviewer_resolved", user=principal.label, practitioner=reference, created=created)
        return Reviewer(reference=reference, display=display)
