"""services.mapper.segmentation: a segmented finding → a DICOM SEG, and the run's SR referencing
its segment; from synthetic images as WADO-RS metadata gives them (no pixels)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import cast

import highdicom as hd
import numpy as np
import pydicom
import pytest
import structlog
from pydicom import Dataset
from pydicom.filewriter import dcmwrite

from samples.dicom_series import describe_study, iter_instances
from samples.phantoms import head_ct
from services.mapper.handlers import store_structured_report
from services.mapper.segmentation import build_segmentation, segmentation_uids
from services.mapper.structured_report import build_structured_report, dataset_from_metadata
from shared.dicomweb import DicomWebClient
from shared.errors import PermanentError
from shared.masks import pack_mask
from shared.messages import (
    EvidenceSeries,
    Finding,
    FindingMask,
    InferenceCompleted,
    ModelRef,
    StudyRef,
)
from shared.registry import load_registry

REGISTRY = load_registry(Path(__file__).resolve().parents[3] / "registry" / "models.yaml")
MODEL = REGISTRY.get("ich-reference", "1")


@pytest.fixture(scope="module")
def images() -> list[Dataset]:
    phantom = head_ct(seed=3, slices=8, size=32)
    info = describe_study(phantom, scenario="segmentation-unit", seed=3)
    return [dataset_from_metadata(ds.to_json_dict()) for ds in iter_instances(phantom, info)]


def _mask() -> np.ndarray:
    mask = np.zeros((3, 4, 5), dtype=np.uint8)
    mask[0, 1, 1:4] = 1
    mask[2, 0:3, 2] = 1  # the middle slice holds nothing
    return mask


def _bleed(images: list[Dataset]) -> Finding:
    return Finding(
        finding_key="intracranial-hemorrhage",
        present=True,
        probability=0.9,
        series_instance_uid=str(images[0].SeriesInstanceUID),
        sop_instance_uids=(str(images[3].SOPInstanceUID),),
        mask=FindingMask(
            box=(2, 10, 20, 4, 13, 24),
            sop_instance_uids=tuple(str(image.SOPInstanceUID) for image in images[2:5]),
            bits=pack_mask(_mask()),
        ),
    )


def _part10(dataset: Dataset) -> Dataset:
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def test_the_seg_holds_the_mask_on_the_images_of_its_slices(images: list[Dataset]) -> None:
    """Read back with highdicom: one binary segment coded as the finding, its frames on the
    box's images (the empty slice left out), the mask's voxels where the box puts them, the
    run's deterministic UIDs."""
    study = str(images[0].StudyInstanceUID)
    seg = hd.seg.Segmentation.from_dataset(
        _part10(build_segmentation(study, MODEL, _bleed(images), images[2:5]))
    )
    assert (str(seg.SeriesInstanceUID), str(seg.SOPInstanceUID)) == segmentation_uids(study, MODEL)
    (description,) = seg.SegmentSequence
    assert description.SegmentedPropertyTypeCodeSequence[0].CodeValue == "1386000"
    assert description.SegmentAlgorithmType == "AUTOMATIC"
    frames = {
        str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        for frame in seg.PerFrameFunctionalGroupsSequence
    }
    assert frames == {str(images[2].SOPInstanceUID), str(images[4].SOPInstanceUID)}
    volume = seg.get_volume(combine_segments=True)
    assert int(np.count_nonzero(volume.array)) == int(_mask().sum())


def test_a_mask_beyond_the_images_or_without_its_slices_is_refused(images: list[Dataset]) -> None:
    """A box past the image edge, or fewer source images than box slices: no SEG, a reason."""
    study = str(images[0].StudyInstanceUID)
    with pytest.raises(PermanentError, match="needs 3 source images"):
        build_segmentation(study, MODEL, _bleed(images), images[2:4])
    wide = _bleed(images)
    assert wide.mask is not None
    outside = wide.model_copy(
        update={"mask": wide.mask.model_copy(update={"box": (2, 10, 30, 4, 13, 34)})}
    )
    with pytest.raises(PermanentError, match="beyond the 32×32 images"):
        build_segmentation(study, MODEL, outside, images[2:5])


def test_the_sr_group_of_a_segmented_finding_references_its_segment(
    images: list[Dataset],
) -> None:
    """The bleed's group is TID 1411 referencing segment 1 of the SEG on the source series; the
    SEG is among the SR's evidence."""
    study = str(images[0].StudyInstanceUID)
    bleed = _bleed(images)
    event = InferenceCompleted(
        study=StudyRef(study_instance_uid=study),
        model=ModelRef(id=MODEL.id, version=MODEL.version),
        findings=(bleed,),
        inference_duration_ms=1.0,
    )
    seg = build_segmentation(study, MODEL, bleed, images[2:5])
    report = build_structured_report(event, MODEL, images, event.created_at, segmentation=seg)
    content = hd.sr.Comprehensive3DSR.from_dataset(_part10(report)).content
    assert isinstance(content, hd.sr.MeasurementReport)
    assert content.get_planar_roi_measurement_groups() == []
    (group,) = content.get_volumetric_roi_measurement_groups()
    segment = group.referenced_segment
    assert segment is not None
    assert str(segment.referenced_sop_instance_uid) == str(seg.SOPInstanceUID)
    evidence = {
        str(item.ReferencedSOPInstanceUID)
        for study_item in report.CurrentRequestedProcedureEvidenceSequence
        for series in study_item.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert str(seg.SOPInstanceUID) in evidence


class _PacsWithoutTheEvidence:
    """A PACS that has no metadata for the instances the SR names, and records each STOW."""

    def __init__(self) -> None:
        self.stored: list[list[bytes]] = []

    async def retrieve_instance_metadata(self, *_: str) -> None:
        return None

    async def store_instances(self, instances: list[bytes]) -> dict[str, object]:
        self.stored.append(list(instances))
        return {}


async def test_a_seg_whose_sr_cannot_be_made_is_stored_alone(images: list[Dataset]) -> None:
    """The SR cannot be built (the PACS lacks its evidence's metadata): the error says so, and
    the SEG its Observation names is stored by itself."""
    study = str(images[0].StudyInstanceUID)
    bleed = _bleed(images)
    event = InferenceCompleted(
        study=StudyRef(study_instance_uid=study),
        model=ModelRef(id=MODEL.id, version=MODEL.version),
        findings=(bleed,),
        inference_duration_ms=1.0,
        evidence=(
            EvidenceSeries(
                series_instance_uid=str(images[0].SeriesInstanceUID),
                sop_class_uid=str(images[0].SOPClassUID),
                sop_instance_uids=tuple(str(image.SOPInstanceUID) for image in images),
            ),
        ),
    )
    seg = build_segmentation(study, MODEL, bleed, images[2:5])
    pacs = _PacsWithoutTheEvidence()
    with structlog.testing.capture_logs() as logs:
        stored = await store_structured_report(event, MODEL, cast(DicomWebClient, pacs), seg)
    assert stored is False
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "structured_report_not_stored"
    ]
    (alone,) = pacs.stored
    (document,) = alone
    assert pydicom.dcmread(io.BytesIO(document)).SOPInstanceUID == seg.SOPInstanceUID
