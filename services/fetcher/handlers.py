"""study.detected → the series each model needs, streamed into the blob store → study.fetched."""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog

from services.fetcher.pacs import PacsDirectory
from services.fetcher.series_selection import select_series
from shared.dicomweb import DicomWebClient, RetrievedInstance, SeriesInfo
from shared.errors import PermanentError, TransientError
from shared.iocm import rejected_series
from shared.messages import Event, SeriesManifest, StudyDetected, StudyFetched
from shared.registry import Registry
from shared.storage import BlobStore

log = structlog.get_logger(__name__)


async def _without_rejected(
    dicomweb: DicomWebClient, study_uid: str, series: list[SeriesInfo]
) -> tuple[list[SeriesInfo], int]:
    """The series no IOCM rejection note in the PACS rejects (a series with any rejected
    instance is left out whole: a model never reads images the site took back), and how many
    were left out."""
    rejected = rejected_series(
        await dicomweb.rejection_notes(
            study_uid, [(info.series_instance_uid, info.modality) for info in series]
        )
    )
    kept = [info for info in series if info.series_instance_uid not in rejected]
    if len(kept) < len(series):
        log.warning(
            "series_left_out",
            reason="rejected by an IOCM rejection note in the PACS",
            series=len(series) - len(kept),
        )
    return kept, len(series) - len(kept)


class FetchStudy:
    """Handler of study.detected: one study.fetched per model, each series fetched once."""

    def __init__(
        self,
        registry: Registry,
        dicomweb: DicomWebClient,
        store: BlobStore,
        pacs: PacsDirectory | None = None,
    ) -> None:
        self.registry = registry
        self.pacs = pacs or PacsDirectory(dicomweb)
        self.store = store

    async def __call__(self, event: StudyDetected) -> Sequence[Event]:
        study_uid = event.study.study_instance_uid
        started = time.perf_counter()
        dicomweb = self.pacs.client_for(event.study.dicomweb_base_url)
        series = await dicomweb.search_series(study_uid)
        if not series:
            raise PermanentError(f"the PACS has no series for study {study_uid}")
        series, rejected = await _without_rejected(dicomweb, study_uid, series)
        fetched: dict[str, list[RetrievedInstance]] = {}
        caused: list[Event] = []
        for model_ref in event.models:
            try:
                model = self.registry.get(model_ref.id, model_ref.version)
            except KeyError as error:
                raise PermanentError(str(error)) from error
            chosen = await select_series(dicomweb, study_uid, series, model.selector)
            if chosen is None:
                left_out = f" ({rejected} series rejected in the PACS left out)" if rejected else ""
                raise PermanentError(
                    f"no series of study {study_uid} matches the selector of {model.id} "
                    f"{model.version}{left_out}"
                )
            if chosen.series_instance_uid not in fetched:
                fetched[chosen.series_instance_uid] = await self._fetch(dicomweb, event, chosen)
            manifest = _manifest(chosen, fetched[chosen.series_instance_uid])
            caused.append(
                event.follow(
                    StudyFetched,
                    study=event.study,
                    model=model_ref,
                    series=(manifest,),
                    fetch_duration_ms=round((time.perf_counter() - started) * 1000, 1),
                )
            )
        return caused

    async def _fetch(
        self, dicomweb: DicomWebClient, event: StudyDetected, series: SeriesInfo
    ) -> list[RetrievedInstance]:
        started = time.perf_counter()
        prefix = (
            f"{event.correlation_id}/{event.study.study_instance_uid}/{series.series_instance_uid}"
        )
        instances = await dicomweb.retrieve_series(
            event.study.study_instance_uid, series.series_instance_uid, self.store, prefix
        )
        seconds = time.perf_counter() - started
        size = sum(instance.size_bytes for instance in instances)
        log.info(
            "series_fetched",
            series_instance_uid=series.series_instance_uid,
            instances=len(instances),
            megabytes=round(size / 1e6, 1),
            seconds=round(seconds, 2),
            megabytes_per_second=round(size / 1e6 / seconds, 1) if seconds else None,
        )
        if not instances:
            raise PermanentError(
                f"WADO-RS returned no instances for series {series.series_instance_uid}"
            )
        if series.number_of_instances > len(instances):
            # The PACS listed more than it served: still receiving the series, or lost some.
            # A model must not read a partial volume: retried, then dead-lettered saying so.
            raise TransientError(
                f"series {series.series_instance_uid}: QIDO-RS lists "
                f"{series.number_of_instances} instances, WADO-RS returned {len(instances)}; "
                "fetched again later (the PACS may still be receiving the series)"
            )
        # The claim check also lies beside the pixels, for operators and for replays.
        self.store.write_bytes(
            f"{prefix}/manifest.json",
            _manifest(series, instances).model_dump_json(indent=1).encode(),
        )
        return instances


def _manifest(series: SeriesInfo, instances: list[RetrievedInstance]) -> SeriesManifest:
    return SeriesManifest(
        series_instance_uid=series.series_instance_uid,
        modality=series.modality,
        body_part_examined=series.body_part_examined,
        # not the Series Description: free text a technologist may have typed a name into, and
        # no later stage reads it (the series were chosen by it already)
        instances=tuple(
            instance.blob()
            for instance in sorted(instances, key=lambda item: item.instance_number or 0)
        ),
    )
