"""The generated narrative (`text`, status `generated`) of every resource radmesh writes (the
results' in full, the Device's, Provenance's, Task's, alerts' and consult's as a short summary;
shared.fhir's client adds it to each resource it sends), and the report's `presentedForm` (a
small HTML document, the report as a clinician's viewer shows an attachment): what a person reading the record sees, made from the
resource's own content every time it is written, so it says what the resource says after every
change (a verdict, an amendment, a retraction). Only what the resource holds goes in: its code,
status, value, probability, notes and conclusion, the report's times and coded conclusion; no
subject, no identifiers."""

from __future__ import annotations

import base64
from html import escape
from typing import Any

__all__ = [
    "NARRATED_TYPES",
    "PRESENTED_FORM_TITLE",
    "concept_text",
    "narrated",
    "presented_form_html",
    "quantity_text",
    "with_narrative",
]

XHTML = "http://www.w3.org/1999/xhtml"
# The results have narratives of their own; the other resources radmesh writes get one line per
# field a reader looks for (what, status, who, when, the message), from _SUMMARY_FIELDS.
_SUMMARISED_TYPES = frozenset(
    {
        "Device",
        "Provenance",
        "Task",
        "Communication",
        "CommunicationRequest",
        "ServiceRequest",
        "Flag",
    }
)
NARRATED_TYPES = frozenset({"Observation", "DiagnosticReport"}) | _SUMMARISED_TYPES


def concept_text(concept: dict[str, Any] | None) -> str:
    """A CodeableConcept as a person reads it: its text, else a coding's display, else a code."""
    if not concept:
        return ""
    if concept.get("text"):
        return str(concept["text"])
    return next(
        (str(c["display"]) for c in concept.get("coding", []) if c.get("display")),
        next((str(c["code"]) for c in concept.get("coding", []) if c.get("code")), ""),
    )


def quantity_text(quantity: dict[str, Any]) -> str:
    """A Quantity as a person reads it: `7.5 mL`."""
    value = quantity.get("value")
    unit = quantity.get("unit") or quantity.get("code") or ""
    return f"{value:g} {unit}".strip() if isinstance(value, int | float) else str(value)


def _value_text(observation: dict[str, Any]) -> str:
    if "valueCodeableConcept" in observation:
        return concept_text(observation["valueCodeableConcept"])
    if "valueQuantity" in observation:
        return quantity_text(observation["valueQuantity"])
    return "no value"


def _observation_div(observation: dict[str, Any]) -> str:
    code = escape(concept_text(observation.get("code")) or "Observation")
    value = escape(_value_text(observation))
    status = escape(str(observation.get("status", "")))
    parts = [f"<p><b>{code}</b>: {value} (status: {status})</p>"]
    for component in observation.get("component", []):
        if "valueQuantity" in component:
            name = escape(concept_text(component.get("code")))
            parts.append(f"<p>{name}: {escape(quantity_text(component['valueQuantity']))}</p>")
    parts += [
        f"<p>{escape(str(note['text']))}</p>"
        for note in observation.get("note", [])
        if isinstance(note, dict) and note.get("text")
    ]
    return "".join(parts)


def _report_div(report: dict[str, Any]) -> str:
    code = escape(concept_text(report.get("code")) or "Report")
    status = escape(str(report.get("status", "")))
    parts = [f"<p><b>{code}</b> (status: {status})</p>"]
    if report.get("conclusion"):
        parts.append(f"<p>{escape(str(report['conclusion']))}</p>")
    return "".join(parts)


PRESENTED_FORM_TITLE = "AI results report"
_STATUS_WORDS = {
    "preliminary": "preliminary: not verified by a radiologist",
    "final": "final: verified by a radiologist",
    "amended": "amended by a radiologist",
    "cancelled": "cancelled: rejected by a radiologist",
    "entered-in-error": "entered in error: withdrawn, do not use",
}


def presented_form_html(report: dict[str, Any]) -> str:
    """The report as a small HTML document: its title, its status in words, the study's and the
    report's times, the conclusion and the coded findings."""
    title = escape(concept_text(report.get("code")) or "Report")
    status = str(report.get("status", ""))
    rows = [("Status", _STATUS_WORDS.get(status, status))]
    if report.get("effectiveDateTime"):
        rows.append(("Study time", str(report["effectiveDateTime"])))
    if report.get("issued"):
        rows.append(("Issued", str(report["issued"])))
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    codes = [concept_text(c) for c in report.get("conclusionCode", [])]
    findings = "".join(f"<li>{escape(text)}</li>" for text in codes if text)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title></head><body><h1>{title}</h1><table>{table}</table>"
        f"<p>{escape(str(report.get('conclusion', '')))}</p>"
        + (f"<h2>Coded findings</h2><ul>{findings}</ul>" if findings else "")
        + "</body></html>"
    )


def _presented_form(report: dict[str, Any]) -> list[dict[str, Any]]:
    document = presented_form_html(report).encode()
    return [
        {
            "contentType": "text/html",
            "language": "en",
            "data": base64.b64encode(document).decode("ascii"),
            "size": len(document),
            "title": PRESENTED_FORM_TITLE,
        }
    ]


def _texts(value: Any) -> list[str]:
    """What a person reads of a field: a concept's words, a string, a reference's display, a
    note's or payload's text, a device name; a list gives each of its items'."""
    if isinstance(value, list):
        return [text for item in value for text in _texts(item)]
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return [str(value)]
    found = ""
    if isinstance(value, dict):
        words = (value.get(key) for key in ("contentString", "text", "display", "name", "value"))
        found = next((str(word) for word in words if isinstance(word, str) and word), "")
        if not found and "coding" in value:
            found = concept_text(value)
        elif not found and "type" in value and "who" in value:  # a Provenance agent
            who = ", ".join(_texts(value["who"]))
            found = f"{concept_text(value['type'])}: {who}" if who else concept_text(value["type"])
    return [found] if found else []


# (label, field) in reading order; a field the resource lacks is left out. No subject, no
# identifiers: the narrative says what the record is, not whose.
_SUMMARY_FIELDS = (
    ("Device", "deviceName"),
    ("Type", "type"),
    ("Version", "version"),
    ("Manufacturer", "manufacturer"),
    ("Code", "code"),
    ("Category", "category"),
    ("Activity", "activity"),
    ("Status", "status"),
    ("Reason for status", "statusReason"),
    ("Intent", "intent"),
    ("Priority", "priority"),
    ("Description", "description"),
    ("Message", "payload"),
    ("Reason", "reason"),
    ("Agent", "agent"),
    ("Owner", "owner"),
    ("Requested", "authoredOn"),
    ("Sent", "sent"),
    ("Recorded", "recorded"),
    ("Note", "note"),
)


def _summary_div(resource: dict[str, Any]) -> str:
    parts = [f"<p><b>{escape(str(resource['resourceType']))}</b></p>"]
    for label, field in _SUMMARY_FIELDS:
        texts = _texts(resource.get(field))
        if texts:
            parts.append(f"<p>{label}: {escape('; '.join(texts))}</p>")
    if resource.get("target"):
        parts.append(f"<p>Records: {len(resource['target'])} resource(s)</p>")
    return "".join(parts)


def with_narrative(resource: dict[str, Any]) -> dict[str, Any]:
    """`resource` with its narrative (and a report's presentedForm) generated from its current
    content (the types in NARRATED_TYPES; any other resource is returned as it is)."""
    kind = resource.get("resourceType")
    if kind not in NARRATED_TYPES:
        return resource
    if kind == "Observation":
        body = _observation_div(resource)
    elif kind == "DiagnosticReport":
        body = _report_div(resource)
    else:
        body = _summary_div(resource)
    narrated = {
        **resource,
        "text": {"status": "generated", "div": f'<div xmlns="{XHTML}">{body}</div>'},
    }
    if kind == "DiagnosticReport":
        narrated["presentedForm"] = _presented_form(narrated)
    return narrated


def narrated(body: dict[str, Any]) -> dict[str, Any]:
    """A request body with every resource in it narrated: the resource itself, or each entry's
    resource of a Bundle (a transaction)."""
    if body.get("resourceType") != "Bundle":
        return with_narrative(body)
    entries = [
        {**entry, "resource": with_narrative(entry["resource"])}
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict)
        else entry
        for entry in body.get("entry") or []
    ]
    return {**body, "entry": entries} if entries else body
