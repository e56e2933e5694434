"""How radmesh marks what an AI asserted and what a radiologist then decided: the security
labels of HL7 AI Transparency on FHIR (STU1 ballot, `meta.security`), and the words of the
preliminary texts that a verdict rewrites. One home for both, so the writer (mapper, notifier)
and the rewriter (verification) cannot drift apart.

- `AI_ASSERTED`: v3-ObservationValue `AIAST`, on everything an AI wrote and nobody verified;
- `CLINICIAN_ASSERTED_FROM_AI`: the IG's `AddedProvenanceCS#CLINAST_AIRPT` "Clinician Asserted
  from AI Reported", which replaces AIAST when a radiologist accepts or amends the result.
"""

from __future__ import annotations

from typing import Any

from shared.codes import AIAST, CLINAST_AIRPT

__all__ = [
    "AI_ASSERTED",
    "CLINICIAN_ASSERTED_FROM_AI",
    "PRELIMINARY_CONCLUSION",
    "PRELIMINARY_NOTE",
    "UNVERIFIED",
    "relabelled",
    "verified_text",
]

# The codes live in shared.codes; these are their FHIR Codings, as meta.security takes them.
AI_ASSERTED = AIAST.fhir()
CLINICIAN_ASSERTED_FROM_AI = CLINAST_AIRPT.fhir()
UNVERIFIED = "not verified by a radiologist"
# The report's conclusion and each Observation's note begin with these until a verdict.
PRELIMINARY_CONCLUSION = f"AI result, preliminary, {UNVERIFIED}"
PRELIMINARY_NOTE = "AI-generated preliminary finding"


def verified_text(text: str, verifier: str, when: str) -> str:
    """A preliminary conclusion or note as it reads once `verifier` accepted it at `when`."""
    verified = f"verified by {verifier} on {when}"
    return (
        text.replace(PRELIMINARY_CONCLUSION, f"AI result, {verified}")
        .replace(PRELIMINARY_NOTE, "AI-generated finding")
        .replace(UNVERIFIED, verified)
    )


def relabelled(meta: dict[str, Any] | None, label: dict[str, str]) -> dict[str, Any]:
    """`meta` with the AI-provenance label (AIAST or CLINAST_AIRPT) replaced by `label`; other
    security labels and tags are kept."""
    own = {
        (label_["system"], label_["code"]) for label_ in (AI_ASSERTED, CLINICIAN_ASSERTED_FROM_AI)
    }
    kept = [
        s for s in (meta or {}).get("security", []) if (s.get("system"), s.get("code")) not in own
    ]
    return {**(meta or {}), "security": [*kept, dict(label)]}
