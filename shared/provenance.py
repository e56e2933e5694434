"""Provenance targets pinned to the versions a transaction wrote.

A Provenance says which *version* of a record an activity produced (FHIR R4 Provenance.target:
"SHOULD be version specific"; HL7 AI Transparency on FHIR: the AI Provenance names what the AI
asserted, and a verdict's Provenance what the radiologist changed). The versions are known only
once the server has written them, so radmesh writes each Provenance in the same transaction as
its targets (atomically: there is never a target without its Provenance) and then, from the
transaction-response's Locations (`Type/id/_history/<version>`), updates it with its targets
pinned to those versions: one PUT, portable to any R4 server, no server extension. A server
that pins them itself (HAPI FHIR with `Provenance.target` among its auto-versioned reference
paths, as radmesh's development server has it) is seen in the transaction-response's returned
Provenance (`Prefer: return=representation`), and then no PUT is sent.

Only a Provenance the transaction *created* is pinned: one it found (a redelivered message's
conditional create) keeps the versions of its first write, which later verdicts may have moved
on from. The pinning PUT failing is logged (`provenance_targets_not_pinned`) and not raised: the
Provenance stands, unpinned, and the results go on to their reviewers.
"""

from __future__ import annotations

import copy
from typing import Any

import structlog

from shared.errors import RadmeshError
from shared.fhir import FhirClient, reference_of

__all__ = ["pin_provenance_targets", "pinned_provenances"]

log = structlog.get_logger(__name__)


def _version(answer: dict[str, Any]) -> str | None:
    location = str((answer.get("response") or {}).get("location") or "")
    if "/_history/" not in location:
        return None
    return location.split("/_history/", maxsplit=1)[1].strip("/").split("/")[0] or None


def _literal(value: Any, resolved: dict[str, str]) -> Any:
    """`value` with every reference to a fullUrl of the bundle made the `Type/id` it became."""
    if isinstance(value, dict):
        return {
            key: (
                resolved.get(item, item)
                if key == "reference" and isinstance(item, str)
                else _literal(item, resolved)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_literal(item, resolved) for item in value]
    return value


def pinned_provenances(bundle: dict[str, Any], response: dict[str, Any]) -> list[dict[str, Any]]:
    """Each Provenance the transaction created (its entry answered `201`) and the server did not
    pin itself, ready to PUT: its id the server's, its targets `Type/id/_history/<version>` as
    the transaction wrote them, every other reference to an entry of the bundle (a `urn:uuid:`
    fullUrl) literal. A target whose version the response does not give is left as it was."""
    requests = bundle.get("entry") or []
    answers = response.get("entry") or []
    if len(requests) != len(answers):
        return []
    resolved: dict[str, str] = {}
    versions: dict[str, str] = {}
    for request, answer in zip(requests, answers, strict=True):
        if not (answer.get("response") or {}).get("location"):
            continue
        reference = reference_of(answer)
        resolved[str(request.get("fullUrl"))] = reference
        version = _version(answer)
        if version is not None:
            versions[reference] = f"{reference}/_history/{version}"
    pinned = []
    for request, answer in zip(requests, answers, strict=True):
        resource = request.get("resource") or {}
        status = str((answer.get("response") or {}).get("status") or "")
        if resource.get("resourceType") != "Provenance" or not status.startswith("201"):
            continue
        provenance = _literal(copy.deepcopy(resource), resolved)
        provenance["id"] = reference_of(answer).split("/")[1]
        provenance["target"] = [
            {**target, "reference": versions.get(str(target.get("reference")), target["reference"])}
            if target.get("reference")
            else target
            for target in provenance.get("target", [])
        ]
        if not _pinned_already(provenance, answer.get("resource")):
            pinned.append(provenance)
    return pinned


def _pinned_already(provenance: dict[str, Any], written: Any) -> bool:
    """Whether the Provenance as the server wrote it (the transaction-response's `resource`,
    when it returns one) names every target at the version `provenance` pins it to: the server
    versioned them itself. A target left unversioned here may carry any version there."""
    if not isinstance(written, dict) or written.get("resourceType") != "Provenance":
        return False
    ours = [str(target.get("reference") or "") for target in provenance.get("target", [])]
    theirs = [str((target or {}).get("reference") or "") for target in written.get("target", [])]
    return len(ours) == len(theirs) and all(
        mine == stored or ("/_history/" not in mine and stored.split("/_history/")[0] == mine)
        for mine, stored in zip(ours, theirs, strict=True)
    )


async def pin_provenance_targets(
    fhir: FhirClient, bundle: dict[str, Any], response: dict[str, Any]
) -> list[str]:
    """PUT each Provenance the transaction created with its targets pinned (see the module);
    returns the references of those pinned."""
    done = []
    for provenance in pinned_provenances(bundle, response):
        reference = f"Provenance/{provenance['id']}"
        try:
            await fhir.update_resource(provenance)
        except RadmeshError as error:
            log.warning(
                "provenance_targets_not_pinned",
                provenance=reference,
                reason=str(error),
                action="the Provenance stands with unversioned targets",
            )
            continue
        done.append(reference)
    return done
