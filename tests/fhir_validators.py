"""Three independent FHIR R4 validators, as the end-to-end tests run them on every resource
radmesh wrote: HAPI FHIR's `$validate` (the Java reference implementation's validator, against
R4 core), fhir.resources (pydantic models; its R4B package has R4's structure for what radmesh
writes) and FHIR.js (the `fhir` npm package, installed by deploy/fhir-validators/up.sh). Each
returns `{label: [problem, ...]}` with the errors only; warnings are listed apart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

__all__ = ["Findings", "fhir_js", "fhir_resources", "hapi_validate"]

ROOT = Path(__file__).resolve().parents[1]
FHIR_JS = Path(os.environ.get("RADMESH_RUN_DIR", str(ROOT / ".run"))) / "fhir-validators"


@dataclass
class Findings:
    """What one validator said, per resource label: errors (fail a test) and warnings."""

    errors: dict[str, list[str]] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)

    def add(self, label: str, severity: str, text: str) -> None:
        if severity in ("error", "fatal"):
            self.errors.setdefault(label, []).append(text)
        elif severity == "warning":
            self.warnings.setdefault(label, []).append(text)

    def error_lines(self) -> list[str]:
        return [
            f"{label}: {text}" for label, texts in sorted(self.errors.items()) for text in texts
        ]


async def hapi_validate(fhir_base_url: str, resources: dict[str, dict[str, Any]]) -> Findings:
    """POST each resource to `[base]/[type]/$validate`; the OperationOutcome's issues."""
    findings = Findings()
    base = fhir_base_url.rstrip("/")
    async with aiohttp.ClientSession() as http:
        for label, resource in resources.items():
            response = await http.post(
                f"{base}/{resource['resourceType']}/$validate",
                json=resource,
                headers={"Content-Type": "application/fhir+json"},
            )
            outcome = await response.json(content_type=None)
            if outcome.get("resourceType") != "OperationOutcome":
                findings.add(label, "error", f"$validate answered {response.status}: {outcome}")
                continue
            for issue in outcome.get("issue", []):
                where = ", ".join(issue.get("expression", []))
                findings.add(
                    label, str(issue.get("severity")), f"{issue.get('diagnostics')} (at {where})"
                )
    return findings


def fhir_resources(resources: dict[str, dict[str, Any]]) -> Findings:
    """Each resource parsed by its fhir.resources R4B model; pydantic's errors, one per field."""
    findings = Findings()
    for label, resource in resources.items():
        try:
            get_fhir_model_class(str(resource.get("resourceType"))).model_validate(resource)
        except KeyError:
            findings.add(label, "error", f"unknown resource type {resource.get('resourceType')!r}")
        except ValidationError as error:
            for problem in error.errors():
                where = ".".join(str(part) for part in problem["loc"])
                findings.add(label, "error", f"{problem['msg']} (at {where})")
    return findings


def fhir_js(resources: dict[str, dict[str, Any]]) -> Findings:
    """FHIR.js's validate() over all resources in one node process (an unexpected property is
    an error there)."""
    script = FHIR_JS / "validate.js"
    if shutil.which("node") is None or not script.is_file():
        raise AssertionError(
            f"FHIR.js is not installed at {FHIR_JS} (deploy/fhir-validators/up.sh)"
        )
    completed = subprocess.run(
        ["node", str(script)],
        input=json.dumps(resources),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if completed.returncode != 0:
        raise AssertionError(f"FHIR.js failed (exit {completed.returncode}): {completed.stderr}")
    findings = Findings()
    for label, messages in json.loads(completed.stdout).items():
        for message in messages:
            findings.add(
                label, str(message["severity"]), f"{message['message']} (at {message['location']})"
            )
    return findings
