"""The radmesh demo: three studies arrive the way a hospital's PACS and EHR would send them, the
running mesh reads them, and this prints what reached the clinical record and how long each
stage took. Run by `make demo` (which starts the infrastructure and the six services first).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from samples.load import LoadResult, Settings, load_study
from samples.mesh_watch import MeshWatcher, StudyProgress
from shared.fhir import FhirClient
from shared.settings import RadmeshSettings

__all__ = ["DEMO_SCENARIOS", "run_demo"]

DEMO_SCENARIOS = ("head-bleed", "chest-nodules", "head-normal")


def _say(line: str = "") -> None:
    print(line, flush=True)


def _display(concept: dict[str, Any] | None) -> str:
    if not concept:
        return "-"
    codings = concept.get("coding") or [{}]
    return str(concept.get("text") or codings[0].get("display") or codings[0].get("code"))


def _value(observation: dict[str, Any]) -> str:
    if "valueQuantity" in observation:
        quantity = observation["valueQuantity"]
        return (
            f"{quantity.get('value')} {quantity.get('unit') or quantity.get('code') or ''}".strip()
        )
    if "valueCodeableConcept" in observation:
        return _display(observation["valueCodeableConcept"])
    return "-"


def _probability(observation: dict[str, Any]) -> str:
    for component in observation.get("component", []):
        value = component.get("valueQuantity", {}).get("value")
        if isinstance(value, int | float):
            return f" p={value:.2f}"
    return ""


def _seeded(loaded: LoadResult) -> str:
    """The phantom's ground truth, e.g. "3 nodules seeded" (what a perfect model would find)."""
    if not loaded.seeded_lesions:
        return "no lesion seeded"
    return (
        ", ".join(
            f"{count} {kind}{'s' if count != 1 else ''}"
            for kind, count in sorted(loaded.seeded_lesions.items())
        )
        + " seeded"
    )


async def _report(fhir: FhirClient, loaded: LoadResult, progress: StudyProgress) -> None:
    base = fhir.url.rstrip("/")
    _say(f"== {loaded.scenario}: study {loaded.study_instance_uid} ({_seeded(loaded)})")
    _say(f"   {base}/{loaded.imaging_study_id}")
    for posted in progress.of_type("results.posted"):
        report = await fhir.read_resource(posted.diagnostic_report)
        _say(
            f"   DiagnosticReport {report['status']}: {_display(report.get('code'))} — "
            f"{report.get('conclusion', '')}"
        )
        _say(f"     {base}/{posted.diagnostic_report}")
        for finding in posted.findings:
            observation = await fhir.read_resource(finding.observation)
            flag = "  CRITICAL" if finding.critical else ""
            _say(
                f"     Observation {observation['status']}: {_display(observation.get('code'))} = "
                f"{_value(observation)}{_probability(observation)}{flag}  ({finding.observation})"
            )
        _say(f"     Device {posted.device}, Provenance {posted.provenance}")
        task = progress.tasks.get(posted.diagnostic_report)
        _say(f"     verification: {task} ({base}/{task})" if task else "     verification: no Task")
    for alert in progress.of_type("alert.raised"):
        communication = await fhir.read_resource(alert.communication)
        recipients = ", ".join(r.get("reference", "?") for r in communication.get("recipient", []))
        _say(
            f"   ALERT Communication {alert.communication} (priority {communication.get('priority')}) → {recipients}"
        )
        _say(f"         CommunicationRequest {alert.communication_request}")
        if alert.consult_service_request:
            _say(f"         consult ServiceRequest {alert.consult_service_request}")
        if alert.flag:
            _say(f"         Flag {alert.flag} on the patient (open critical AI finding)")
    if not progress.of_type("alert.raised"):
        _say("   no alert (no critical finding)")
    stages = progress.stage_seconds()
    detected = progress.first("study.detected")
    last = progress.events[-1] if progress.events else None
    if detected is not None and last is not None:
        # ImagingStudy first stored (version 1) → the subscriber's study.detected: the hook.
        first_version = await fhir.read_resource(f"{loaded.imaging_study_id}/_history/1")
        stored = datetime.fromisoformat(first_version["meta"]["lastUpdated"].replace("Z", "+00:00"))
        stages = {"hook": (detected.created_at - stored).total_seconds(), **stages}
        stages["total"] = (last.created_at - stored).total_seconds()
    _say("   stages: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in stages.items()))


async def run_demo(
    settings: RadmeshSettings,
    scenarios: tuple[str, ...] = DEMO_SCENARIOS,
    *,
    seed: int | None = None,
    slices: int = 32,
    size: int = 256,
    timeout_seconds: float = 300.0,
) -> tuple[list[LoadResult], dict[str, StudyProgress], list[StudyProgress]]:
    """Load the scenarios, wait for the mesh, print the outcome; returns loads, progress, incomplete."""
    load_settings = Settings.from_env()
    fhir = FhirClient(settings.fhir)
    watcher = MeshWatcher(settings.broker.url, settings.broker.exchange, fhir)
    await watcher.start()
    # A fresh seed each run gives new studies (the same seed twice would be recognised as done).
    seed = seed if seed is not None else int(time.time()) % 1_000_000
    loaded: list[LoadResult] = []
    try:
        for offset, scenario in enumerate(scenarios):
            _say(f"-- loading {scenario} ({slices} slices of {size}x{size}, seed {seed + offset})")
            result = await asyncio.to_thread(
                load_study,
                scenario,
                settings=load_settings,
                seed=seed + offset,
                slices=slices,
                size=size,
                out=lambda line: _say(f"   {line}"),
            )
            watcher.track(result.study_instance_uid)
            loaded.append(result)
        started = time.perf_counter()
        _say(f"-- waiting for the mesh (up to {timeout_seconds:.0f} s)")
        incomplete = await watcher.wait(timeout_seconds)
        _say(f"-- mesh finished in {time.perf_counter() - started:.1f} s after the last load")
        _say()
        for result in loaded:
            await _report(fhir, result, watcher.studies[result.study_instance_uid])
            _say()
        for progress in incomplete:
            _say(
                f"!! study {progress.study_instance_uid} incomplete: {'; '.join(progress.missing())}"
            )
        if incomplete:
            _say("!! see `radmesh status` and `radmesh dlq list <service>` for dead letters")
        else:
            _say(
                "-- the results wait for a radiologist: `make mesh-up`, then open "
                "http://127.0.0.1:8095/review and sign in as rad1 / radmesh-dev "
                "(clinicians, e.g. clin1, see the open alerts)"
            )
        return loaded, watcher.studies, incomplete
    finally:
        await watcher.stop()
        await fhir.close()


def main(
    seed: int | None = None,
    slices: int = 32,
    size: int = 256,
    scenarios: tuple[str, ...] = DEMO_SCENARIOS,
) -> int:
    settings = RadmeshSettings()
    _, _, incomplete = asyncio.run(
        run_demo(settings, scenarios, seed=seed, slices=slices, size=size)
    )
    return 1 if incomplete else 0
