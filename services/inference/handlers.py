"""study.fetched → volume → model server → findings → inference.completed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy.typing as npt
import structlog

from services.inference.findings import Placement, decode_findings, output_names
from services.inference.input_checks import input_notes
from services.inference.volumes import first_input_slice, prepare_input, read_volume
from shared.errors import InvalidMessage, PermanentError, RadmeshError, TransientError
from shared.inference_protocol import InferenceClient
from shared.messages import (
    Event,
    EvidenceSeries,
    InferenceCompleted,
    SeriesManifest,
    StudyFetched,
)
from shared.metrics import MODEL_INFERENCE_SECONDS
from shared.registry import ModelEntry, Registry
from shared.storage import BlobStore

log = structlog.get_logger(__name__)


class RunModel:
    """Handler of study.fetched: one model, one series, one inference.completed."""

    def __init__(self, registry: Registry, store: BlobStore) -> None:
        self.registry = registry
        self.store = store
        self._clients: dict[str, InferenceClient] = {}

    def _client(self, model: ModelEntry) -> InferenceClient:
        key = f"{model.endpoint.url}|{model.endpoint.timeout_seconds}"
        if key not in self._clients:
            self._clients[key] = InferenceClient(model.endpoint.url, model.endpoint.timeout_seconds)
        return self._clients[key]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()

    async def __call__(self, event: StudyFetched) -> Sequence[Event]:
        try:
            model = self.registry.get(event.model.id, event.model.version)
        except KeyError as error:
            raise PermanentError(str(error)) from error
        if not event.series:  # the fetcher names the one series the model reads
            raise InvalidMessage("study.fetched names no series: there is nothing to read")
        series = event.series[0]
        started = time.perf_counter()
        volume = await asyncio.to_thread(read_volume, self.store, series)
        read_ms = (time.perf_counter() - started) * 1000
        notes = input_notes(volume.quality, model.input_checks, f"{model.id} {model.version}")
        inputs = await asyncio.to_thread(prepare_input, volume, model.preprocessing)
        infer_started = time.perf_counter()
        outputs = await self._infer_with_retries(model, inputs)
        infer_ms = (time.perf_counter() - infer_started) * 1000
        placement = Placement(
            volume.sop_instance_uids,
            first_input_slice(volume, model.preprocessing),
            volume.geometry,
        )
        findings = decode_findings(model, outputs, series.series_instance_uid, placement)
        log.info(
            "model_run",
            model=model.id,
            version=model.version,
            volume_shape=list(volume.hounsfield.shape),
            input_notes=list(notes),
            read_ms=round(read_ms, 1),
            infer_ms=round(infer_ms, 1),
            findings=[
                f"{f.finding_key}[{f.index}]={'present' if f.present else 'absent'}"
                for f in findings
            ],
        )
        return [
            event.follow(
                InferenceCompleted,
                study=event.study,
                model=event.model,
                findings=findings,
                inference_duration_ms=round(infer_ms, 1),
                input_notes=notes,
                evidence=evidence_of(series),
            )
        ]

    async def _infer_with_retries(
        self, model: ModelEntry, inputs: dict[str, npt.NDArray[Any]]
    ) -> dict[str, npt.NDArray[Any]]:
        client = self._client(model)
        attempts = model.endpoint.retries + 1
        timing = MODEL_INFERENCE_SECONDS.labels
        for attempt in range(1, attempts + 1):
            started = time.perf_counter()
            try:
                outputs = await client.infer(
                    model.endpoint.model_name,
                    inputs,
                    output_names(model),
                    version=model.endpoint.model_version,
                )
            except RadmeshError as error:
                timing(model.id, model.version, type(error).__name__).observe(
                    time.perf_counter() - started
                )
                if not isinstance(error, TransientError) or attempt == attempts:
                    raise
                log.warning("model_call_retry", model=model.id, attempt=attempt, error=str(error))
                await asyncio.sleep(0.5 * 2 ** (attempt - 1))
                continue
            timing(model.id, model.version, "ok").observe(time.perf_counter() - started)
            return outputs
        raise AssertionError("unreachable")


def evidence_of(series: SeriesManifest) -> tuple[EvidenceSeries, ...]:
    """The instances the model read, one entry per SOP class, in the manifest's order: the
    mapper's SR names them as evidence without asking the PACS for their metadata."""
    by_class: dict[str, list[str]] = {}
    for instance in series.instances:
        by_class.setdefault(instance.sop_class_uid, []).append(instance.sop_instance_uid)
    return tuple(
        EvidenceSeries(
            series_instance_uid=series.series_instance_uid,
            sop_class_uid=sop_class_uid,
            sop_instance_uids=tuple(sop_instance_uids),
        )
        for sop_class_uid, sop_instance_uids in by_class.items()
    )
