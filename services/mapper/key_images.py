"""One model run's key images → a DICOM Key Object Selection document for the PACS (pure, no I/O).

A located present finding lies on a slice (the image its SR group's probability cites): those
slices are the run's key images, the ones a radiologist opens first. They are listed in a Key
Object Selection (TID 2010) titled (113000, DCM, "Of Interest") from CID 7010, observed by the
algorithm as a device, its description naming the findings and saying the selection is the
AI's (the run's SR says whether a radiologist verified it). It is stored beside the run's SR
and rejected with it (rejection_note.py), so no key image of a rejected or retracted run keeps
standing. A run with no located present finding has no key images and no document. Its UIDs
derive from the run, so a redelivered message stores the same instance again.
"""

from __future__ import annotations

import highdicom as hd
from pydicom import Dataset

from services.mapper.object_uids import run_object_uids
from services.mapper.rejection_note import key_object_document
from services.mapper.structured_report import device_observer_uid
from shared.codes import DEVICE, OF_INTEREST
from shared.messages import InferenceCompleted
from shared.registry import Algorithm

__all__ = ["KEY_IMAGES_SERIES_NUMBER", "key_image_selection", "key_images_uids"]

KEY_IMAGES_SERIES_NUMBER = 9003
_PATIENT_AND_STUDY = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def key_images_uids(
    study_instance_uid: str, model: Algorithm, generation: int = 1
) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the key-image selection of one run."""
    return run_object_uids("radmesh-key-images", study_instance_uid, model, generation)


def _image(header: Dataset, series_uid: str, sop_class_uid: str, sop_uid: str) -> Dataset:
    """One key image as the document references it: the header's Patient and Study attributes,
    the image's UIDs, and its size (all slices of a series share it), which makes it an IMAGE."""
    image = Dataset()
    for keyword in _PATIENT_AND_STUDY:
        if keyword in header:
            setattr(image, keyword, header.data_element(keyword).value)  # type: ignore[union-attr]
    image.SeriesInstanceUID = series_uid
    image.SOPClassUID = sop_class_uid
    image.SOPInstanceUID = sop_uid
    image.Rows = header.Rows
    image.Columns = header.Columns
    return image


def key_image_selection(
    event: InferenceCompleted, model: Algorithm, header: Dataset
) -> hd.ko.KeyObjectSelectionDocument | None:
    """The run's key-image document, or None without a located present finding. `header` is
    one instance's metadata of the series the model read (Patient, Study, image size)."""
    sop_classes = {series.series_instance_uid: series.sop_class_uid for series in event.evidence}
    images: dict[str, Dataset] = {}
    shown: list[str] = []
    for finding in event.findings:
        if not finding.present or finding.center_voxel is None or not finding.sop_instance_uids:
            continue
        series_uid = str(finding.series_instance_uid or header.SeriesInstanceUID)
        sop_class = str(sop_classes.get(series_uid, header.SOPClassUID))
        for sop_uid in finding.sop_instance_uids:
            images.setdefault(sop_uid, _image(header, series_uid, sop_class, sop_uid))
        shown.append(f"{model.finding(finding.finding_key).codes[0].display} {finding.index + 1}")
    if not images:
        return None
    observer = hd.sr.ObserverContext(
        observer_type=DEVICE.dicom(),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_observer_uid(model), name=model.id[:64]
        ),
    )
    description = f"AI-selected key images ({model.id} {model.version}): {', '.join(shown)}"
    content = hd.ko.KeyObjectSelection(
        document_title=OF_INTEREST.dicom(),
        referenced_objects=list(images.values()),
        observer_device_context=observer,
        description=description[:1024],
    )
    return key_object_document(
        content,
        list(images.values()),
        uids=key_images_uids(event.study.study_instance_uid, model, event.model.generation),
        series_number=KEY_IMAGES_SERIES_NUMBER,
    )
