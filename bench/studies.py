"""The benchmark's studies: one head CT phantom per size, stored again and again under new UIDs.

Generating a phantom is slow and not what is measured, so each size has one volume; every study
is that volume described with another seed (new Study/Series/SOP Instance UIDs, patient and
accession) and stored like any study: STOW-RS into Orthanc, then the order and the ImagingStudy on
the FHIR server (samples.load's records), which is what fires the mesh's hooks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from pydicom.uid import CTImageStorage

from samples import dicom_series, fhir_records, phantoms
from samples.dicomweb import DicomWebClient
from samples.load import Settings, delete_study

# The bench registry's echo model reads HEAD series; the studies of the script's own live burst
# are described as CHEST so that the mesh, running beside it, starts nothing for them.
FOR_THE_MESH = "HEAD"
NOT_FOR_THE_MESH = "CHEST"


@dataclass(frozen=True)
class Size:
    """A study size: slices of rows × columns."""

    slices: int
    matrix: int

    @property
    def label(self) -> str:
        return f"{self.slices}x{self.matrix}²"

    @classmethod
    def parse(cls, text: str) -> Size:
        """'64x256' → Size(64, 256)."""
        slices, _, matrix = text.partition("x")
        return cls(int(slices), int(matrix))


@dataclass(frozen=True)
class StoredStudy:
    study_instance_uid: str
    imaging_study: str  # "ImagingStudy/<id>"
    megabytes: float


class StudyMaker:
    """Stores copies of one phantom as new studies; remembers them so they can be deleted."""

    def __init__(self, settings: Settings, size: Size, seed: int) -> None:
        self.settings = settings
        self.size = size
        self._seed = seed
        self._phantom = phantoms.head_ct(seed, slices=size.slices, size=size.matrix)
        self._client = DicomWebClient(settings.dicomweb_root, settings.orthanc_auth)
        self.stored: list[str] = []

    def store(self, *, body_part: str = FOR_THE_MESH) -> StoredStudy:
        """One new study in the PACS, then its records on the FHIR server (in that order, as a
        site's DICOM-to-FHIR sync does it)."""
        self._seed += 1
        info = dicom_series.describe_study(self._phantom, scenario="bench", seed=self._seed)
        info = replace(info, body_part=body_part)
        progress = self._client.store(
            dicom_series.iter_encoded(self._phantom, info),
            batch_size=32,
            study_uid=info.study_instance_uid,
        )
        self.stored.append(info.study_instance_uid)
        refs = [
            fhir_records.InstanceRef(info.sop_instance_uid(i), str(CTImageStorage), i + 1)
            for i in range(info.slices)
        ]
        bundle = fhir_records.imaging_study_bundle(
            info, refs, dicomweb_root=self.settings.dicomweb_root
        )
        result = fhir_records.post_transaction(self.settings.fhir_base_url, bundle)
        return StoredStudy(
            study_instance_uid=info.study_instance_uid,
            imaging_study=result.ids["ImagingStudy"],
            megabytes=progress.bytes / 1e6,
        )

    def store_many(
        self,
        count: int,
        *,
        body_part: str = FOR_THE_MESH,
        on_stored: Callable[[StoredStudy], None] | None = None,
    ) -> tuple[list[StoredStudy], float]:
        """`count` new studies, one after the other; (the studies, seconds it took)."""
        started = time.perf_counter()
        studies = []
        for _ in range(count):
            study = self.store(body_part=body_part)
            studies.append(study)
            if on_stored is not None:
                on_stored(study)
        return studies, time.perf_counter() - started

    def delete_all(self) -> None:
        """Take this size's studies out of the PACS again (the disk is not for ever)."""
        for study_instance_uid in self.stored:
            delete_study(self.settings, study_instance_uid)
        self.stored.clear()
