"""A radiologist's verdict → the verified DICOM SR that supersedes the preliminary one (pure).

The AI's SR (structured_report.py) is stored PRELIMINARY and UNVERIFIED. When a radiologist
accepts the results (or accepts them with an amended measurement), a new SR instance is made
from it in the same series: `VerificationFlag` VERIFIED with the Verifying Observer (the
radiologist, their organization, when), `CompletionFlag` COMPLETE, the preliminary SR in the
Predecessor Documents Sequence, and an amended measurement's new value in its measurement group
(found by the group's Tracking Unique Identifier and the measurement's concept code). Its SOP
Instance UID derives from the run, so a redelivered finding.verified stores the same instance.
The preliminary SR is left as stored: a PACS keeps history, the predecessor link tells which
is current.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from shared.codes import TRACKING_UNIQUE_IDENTIFIER
from shared.identifiers import run_parts
from shared.registry import Algorithm

__all__ = ["Amendment", "verified_sr_uid", "verified_structured_report"]

_TRACKING_UID = TRACKING_UNIQUE_IDENTIFIER.code


@dataclass(frozen=True)
class Amendment:
    """A corrected measurement: in the group with this Tracking UID, the NUM item coded
    `code_value` gets `value`."""

    tracking_uid: str
    code_value: str
    value: float


def verified_sr_uid(study_instance_uid: str, model: Algorithm, generation: int = 1) -> str:
    """The SOP Instance UID of the verified SR of one run: the same on every delivery."""
    run = run_parts(study_instance_uid, model.id, model.version, generation)
    return generate_uid(entropy_srcs=["radmesh-sr", *run, "verified"])


def _dicom_datetime(moment: datetime) -> tuple[str, str]:
    return moment.strftime("%Y%m%d"), moment.strftime("%H%M%S")


def _code_value(item: Dataset) -> str | None:
    names = item.get("ConceptNameCodeSequence")
    return str(names[0].CodeValue) if names else None


def _group_tracking_uid(item: Dataset) -> str | None:
    for child in item.get("ContentSequence", []):
        if child.get("ValueType") == "UIDREF" and _code_value(child) == _TRACKING_UID:
            return str(child.UID)
    return None


def _amend(items: DicomSequence, amendments: list[Amendment], applied: set[Amendment]) -> None:
    """Walk the content tree; in each measurement group named by an amendment, set the value."""
    for item in items:
        tracking = _group_tracking_uid(item) if item.get("ValueType") == "CONTAINER" else None
        for amendment in amendments:
            if tracking != amendment.tracking_uid:
                continue
            for child in item.get("ContentSequence", []):
                if child.get("ValueType") == "NUM" and _code_value(child) == amendment.code_value:
                    child.MeasuredValueSequence[0].NumericValue = f"{amendment.value:g}"
                    applied.add(amendment)
        if "ContentSequence" in item:
            _amend(item.ContentSequence, amendments, applied)


def verified_structured_report(
    preliminary: Dataset,
    *,
    sop_instance_uid: str,
    verifier_name: str,
    organization: str,
    verified_at: datetime,
    amendments: list[Amendment] | None = None,
) -> tuple[Dataset, list[Amendment]]:
    """The verified SR made from the preliminary one, and the amendments it could apply (an
    amendment whose group or measurement the SR does not have is left out, for the caller to
    report)."""
    verified = copy.deepcopy(preliminary)
    date, time = _dicom_datetime(verified_at)
    verified.SOPInstanceUID = sop_instance_uid
    verified.InstanceNumber = int(preliminary.get("InstanceNumber") or 1) + 1
    verified.InstanceCreationDate, verified.InstanceCreationTime = date, time
    verified.ContentDate, verified.ContentTime = date, time
    verified.CompletionFlag = "COMPLETE"
    verified.VerificationFlag = "VERIFIED"
    observer = Dataset()
    observer.VerifyingObserverName = verifier_name
    observer.VerifyingOrganization = organization[:64]
    observer.VerificationDateTime = f"{date}{time}"
    observer.VerifyingObserverIdentificationCodeSequence = DicomSequence([])
    verified.VerifyingObserverSequence = DicomSequence([observer])
    predecessor_instance = Dataset()
    predecessor_instance.ReferencedSOPClassUID = preliminary.SOPClassUID
    predecessor_instance.ReferencedSOPInstanceUID = preliminary.SOPInstanceUID
    predecessor_series = Dataset()
    predecessor_series.SeriesInstanceUID = preliminary.SeriesInstanceUID
    predecessor_series.ReferencedSOPSequence = DicomSequence([predecessor_instance])
    predecessor = Dataset()
    predecessor.StudyInstanceUID = preliminary.StudyInstanceUID
    predecessor.ReferencedSeriesSequence = DicomSequence([predecessor_series])
    verified.PredecessorDocumentsSequence = DicomSequence([predecessor])
    applied: set[Amendment] = set()
    if amendments:
        _amend(verified.ContentSequence, amendments, applied)
    verified.file_meta = FileMetaDataset()
    verified.file_meta.MediaStorageSOPClassUID = verified.SOPClassUID
    verified.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    verified.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return verified, [a for a in amendments or [] if a in applied]
