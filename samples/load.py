"""Load sample studies the way a hospital's PACS and EHR would hold them.

* Images: synthetic CT series (samples.phantoms + samples.dicom_series) stored in Orthanc with
  batched STOW-RS.
* Records: Patient, Practitioner, ServiceRequest, Endpoint and ImagingStudy on the FHIR server,
  in one transaction Bundle of conditional creates (re-loading is idempotent).
* Real scanner files: a handful of CT/MR files shipped with pydicom / pydicom-data, for
  robustness (compressed transfer syntaxes, multi-frame, vendor quirks).

Progress goes to stdout; patient names and IDs are never printed.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import CTImageStorage

from samples import dicom_series, fhir_records, phantoms
from samples.dicomweb import DicomWebClient, StowError, StowProgress

Printer = Callable[[str], None]


@dataclass(frozen=True)
class Scenario:
    """A named sample study."""

    name: str
    description: str
    make: Callable[[int, int, int], phantoms.Phantom]  # (seed, slices, size) -> phantom


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "head-bleed",
            "non-contrast head CT with an intracranial haemorrhage",
            lambda seed, slices, size: phantoms.head_ct(seed, slices=slices, size=size, bleed=True),
        ),
        Scenario(
            "head-normal",
            "non-contrast head CT, no finding",
            lambda seed, slices, size: phantoms.head_ct(seed, slices=slices, size=size),
        ),
        Scenario(
            "chest-nodules",
            "chest CT with three lung nodules",
            lambda seed, slices, size: phantoms.chest_ct(seed, slices=slices, size=size, nodules=3),
        ),
        Scenario(
            "chest-nodule",
            "chest CT with one lung nodule",
            lambda seed, slices, size: phantoms.chest_ct(seed, slices=slices, size=size, nodules=1),
        ),
        Scenario(
            "chest-normal",
            "chest CT, no finding",
            lambda seed, slices, size: phantoms.chest_ct(seed, slices=slices, size=size),
        ),
    )
}

# Real scanner files shipped by pydicom / pydicom-data: CT and MR, uncompressed, JPEG 2000,
# JPEG-LS, multi-frame (enhanced) and vendor files with overlays. All have distinct SOP UIDs.
REAL_FILES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "693_J2KR.dcm",
    "MR2_UNCR.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "eCT_Supplemental.dcm",
    "MR-SIEMENS-DICOM-WithOverlays.dcm",
)


@dataclass(frozen=True)
class Settings:
    """Where to load: same environment variables and defaults as deploy/lib.sh."""

    orthanc_url: str
    orthanc_auth: tuple[str, str]
    fhir_base_url: str

    @property
    def dicomweb_root(self) -> str:
        return f"{self.orthanc_url}/dicom-web"

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get
        return cls(
            orthanc_url=f"http://127.0.0.1:{env('RADMESH_ORTHANC_HTTP_PORT', '8042')}",
            orthanc_auth=(
                env("RADMESH_ORTHANC_USER", "radmesh"),
                env("RADMESH_ORTHANC_PASSWORD", "radmesh-dev"),
            ),
            fhir_base_url=f"http://127.0.0.1:{env('RADMESH_FHIR_PORT', '8080')}/fhir",
        )


@dataclass(frozen=True)
class LoadResult:
    """What a load did (no patient-identifying data)."""

    scenario: str
    study_instance_uid: str
    series_instance_uid: str
    accession_number: str
    instances: int
    stow: StowProgress
    generate_seconds: float
    imaging_study_id: str | None  # "ImagingStudy/<id>" or None when FHIR was skipped
    fhir_ids: dict[str, str]
    fhir_created: dict[str, bool]
    # Ground truth of the phantom: how many lesions of each kind were seeded ("nodule": 3).
    seeded_lesions: dict[str, int] = field(default_factory=dict)


def _quiet(_: str) -> None:
    return None


def load_study(
    scenario: str,
    *,
    settings: Settings,
    seed: int = 1,
    slices: int = 32,
    size: int = 256,
    batch_size: int = 24,
    with_fhir: bool = True,
    with_imaging_study: bool = True,
    identity: dicom_series.StudyIdentity | None = None,
    missing_slices: Collection[int] = (),
    out: Printer = _quiet,
) -> LoadResult:
    """Generate `scenario`, store it in Orthanc (STOW-RS) and register it on the FHIR server:
    the order and the ImagingStudy, or (`with_imaging_study=False`, `--pacs-only`) the order
    only, as a site without DICOM-to-FHIR sync has it; `with_fhir=False`: the images only.
    `identity`: the patient, accession, referring physician and institution instead of the
    seed's (dicom_series.StudyIdentity); `missing_slices`: slice indices never stored (a series
    with gaps)."""
    if scenario not in SCENARIOS:
        raise KeyError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    t0 = time.perf_counter()
    phantom = SCENARIOS[scenario].make(seed, slices, size)
    info = dicom_series.describe_study(phantom, scenario=scenario, seed=seed, identity=identity)
    generate_seconds = time.perf_counter() - t0
    seeded: dict[str, int] = dict(Counter(str(lesion.kind) for lesion in phantom.lesions))
    out(
        f"{scenario}: {info.slices} x {info.rows} x {info.columns} CT {info.body_part} "
        f"(seed {seed}) phantom in {generate_seconds:.1f} s"
    )
    client = DicomWebClient(settings.dicomweb_root, settings.orthanc_auth)

    def report(p: StowProgress) -> None:
        out(
            f"  stored {p.instances:4d}/{info.slices} instances  "
            f"{p.instances_per_second:6.1f} inst/s  {p.megabytes_per_second:6.1f} MB/s"
        )

    progress = client.store(
        dicom_series.iter_encoded(phantom, info, missing_slices),
        batch_size=batch_size,
        study_uid=info.study_instance_uid,
        on_batch=report,
    )
    out(
        f"STOW-RS: {progress.instances} instances, {progress.bytes / 1e6:.1f} MB in "
        f"{progress.seconds:.2f} s ({progress.instances_per_second:.1f} inst/s, "
        f"{progress.megabytes_per_second:.1f} MB/s)"
    )
    del phantom
    ids: dict[str, str] = {}
    created: dict[str, bool] = {}
    if with_fhir:
        refs = [
            fhir_records.InstanceRef(info.sop_instance_uid(i), str(CTImageStorage), i + 1)
            for i in range(info.slices)
            if i not in missing_slices
        ]
        bundle = fhir_records.imaging_study_bundle(
            info, refs, dicomweb_root=settings.dicomweb_root, with_imaging_study=with_imaging_study
        )
        t1 = time.perf_counter()
        result = fhir_records.post_transaction(settings.fhir_base_url, bundle)
        ids, created = result.ids, result.created
        summary = ", ".join(
            f"{kind} {'created' if created.get(kind) else 'existing'}" for kind in ids
        )
        out(f"FHIR transaction in {time.perf_counter() - t1:.2f} s: {summary}")
    return LoadResult(
        scenario=scenario,
        study_instance_uid=info.study_instance_uid,
        series_instance_uid=info.series_instance_uid,
        accession_number=info.accession_number,
        instances=progress.instances,
        stow=progress,
        generate_seconds=generate_seconds,
        imaging_study_id=ids.get("ImagingStudy"),
        fhir_ids=ids,
        fhir_created=created,
        seeded_lesions=seeded,
    )


@dataclass(frozen=True)
class RealFileResult:
    """Outcome of storing one real scanner file."""

    name: str
    modality: str
    sop_class_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str
    sop_instance_uid: str
    error: str | None


def real_files(names: tuple[str, ...] = REAL_FILES) -> Iterator[tuple[str, Path]]:
    """(name, path) of the shipped test files that are present locally (never downloads)."""
    for name in names:
        path = get_testdata_file(name, download=False)
        if isinstance(path, str):
            yield name, Path(path)


def load_real(
    *, settings: Settings, names: tuple[str, ...] = REAL_FILES, out: Printer = _quiet
) -> list[RealFileResult]:
    """Store each real scanner file with its own STOW-RS request; failures are reported."""
    client = DicomWebClient(settings.dicomweb_root, settings.orthanc_auth)
    results: list[RealFileResult] = []
    for name, path in real_files(names):
        data = path.read_bytes()
        header = pydicom.dcmread(path, stop_before_pixels=True)
        error: str | None = None
        t0 = time.perf_counter()
        try:
            client.store_batch([data])
        except (StowError, OSError) as exc:
            error = str(exc)
        result = RealFileResult(
            name=name,
            modality=str(header.get("Modality", "")),
            sop_class_uid=str(header.get("SOPClassUID", "")),
            transfer_syntax_uid=str(header.file_meta.get("TransferSyntaxUID", "")),
            study_instance_uid=str(header.get("StudyInstanceUID", "")),
            sop_instance_uid=str(header.get("SOPInstanceUID", "")),
            error=error,
        )
        results.append(result)
        status = "stored" if error is None else f"FAILED: {error}"
        out(
            f"  {name:36s} {result.modality:3s} {header.SOPClassUID.name:28s} "
            f"{header.file_meta.TransferSyntaxUID.name:34s} {len(data) / 1e3:8.1f} kB "
            f"{(time.perf_counter() - t0) * 1e3:6.0f} ms  {status}"
        )
    return results


def delete_study(settings: Settings, study_uid: str) -> None:
    """Remove a study from Orthanc (every resource its StudyInstanceUID resolves to)."""
    lookup = requests.post(
        f"{settings.orthanc_url}/tools/lookup",
        data=study_uid,
        auth=settings.orthanc_auth,
        timeout=30,
    )
    lookup.raise_for_status()
    for hit in lookup.json():
        requests.delete(
            f"{settings.orthanc_url}{hit['Path']}", auth=settings.orthanc_auth, timeout=120
        ).raise_for_status()
