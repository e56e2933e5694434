"""The generated narrative (`text`, status `generated`) of the Observations and DiagnosticReports
radmesh writes: what a person reading the record sees, made from the resource's own content
every time it is written, so it says what the resource says after every change (a verdict, an
amendment, a retraction). Only what the resource holds goes in: its code, status, value,
probability, notes and conclusion; no subject, no identifiers."""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["NARRATED_TYPES", "concept_text", "quantity_text", "with_narrative"]

XHTML = "http://www.w3.org/1999/xhtml"
NARRATED_TYPES = frozenset({"Observation", "DiagnosticReport"})


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


def with_narrative(resource: dict[str, Any]) -> dict[str, Any]:
    """`resource` with its narrative generated from its current content (Observation and
    DiagnosticReport; any other resource is returned as it is)."""
    kind = resource.get("resourceType")
    if kind not in NARRATED_TYPES:
        return resource
    body = _observation_div(resource) if kind == "Observation" else _report_div(resource)
    return {
        **resource,
        "text": {"status": "generated", "div": f'<div xmlns="{XHTML}">{body}</div>'},
    }
