"""Deterministic synthetic CT series (CT Image Storage, explicit VR little endian) from a phantom.

Everything (UIDs, patient, accession number, dates) is derived from the seed and the scenario, so
the same arguments always give byte-identical instances and re-loading a study is idempotent.
Instances are yielded one at a time: a 300 x 512 x 512 series is never held encoded in memory.

Geometry (DICOM patient coordinates, LPS, head first supine, axial slices):
slice k of the phantom (k = 0 most inferior) is at z = z0 + k * slice_spacing, with
ImageOrientationPatient [1,0,0, 0,1,0], PixelSpacing [row spacing, column spacing] and the volume
centred on x = y = 0. Stored value = HU - RescaleIntercept (RescaleSlope 1, intercept -1024),
unsigned 16-bit when every HU >= -1024, otherwise signed 16-bit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, CTImageStorage, ExplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds

UID_NAMESPACE = "radmesh-samples/v1"
RESCALE_INTERCEPT = -1024
RESCALE_SLOPE = 1
MANUFACTURER = "SYNTHETIC"
MODEL_NAME = "radmesh phantom CT"
INSTITUTION_NAME = "RADMESH SYNTHETIC HOSPITAL"

_GIVEN = ("ALEX", "SAM", "ROBIN", "KIM", "NOA", "JULES", "ARIEL", "CAMILLE", "DREW", "EDEN")
_FAMILY = ("SYNTHOVA", "FICTIVO", "MOCKWELL", "TESTORY", "DUMMSON")
_PHYSICIANS = ("ORDER^ADA^^DR", "REFER^BEN^^DR", "CONSULT^CLEO^^DR", "REQUEST^DAN^^DR")

# (window centre, window width, explanation) per body part; the first is the default window.
_WINDOWS: dict[str, tuple[tuple[int, int, str], ...]] = {
    "HEAD": ((40, 80, "BRAIN"), (600, 2800, "BONE")),
    "CHEST": ((-600, 1500, "LUNG"), (40, 400, "MEDIASTINUM")),
}
_DESCRIPTIONS = {
    "HEAD": ("CT HEAD WO CONTRAST", "Axial {thickness}mm brain"),
    "CHEST": ("CT CHEST WO CONTRAST", "Axial {thickness}mm lung"),
}


class PhantomLike(Protocol):
    """What the generator needs of samples.phantoms.Phantom."""

    @property
    def body_part(self) -> str: ...

    @property
    def volume_hu(self) -> npt.NDArray[Any]: ...

    @property
    def spacing_mm(self) -> tuple[float, float, float]: ...


def _digest(*parts: object) -> bytes:
    text = "\x1f".join([UID_NAMESPACE, *(str(p) for p in parts)])
    return hashlib.sha256(text.encode("utf-8")).digest()


def _number(*parts: object) -> int:
    return int.from_bytes(_digest(*parts)[:8], "big")


def derive_uid(*parts: object) -> str:
    """A deterministic UID under the 2.25 (UUID-derived) root: 2.25.<128-bit integer>."""
    return f"2.25.{int.from_bytes(_digest(*parts)[:16], 'big')}"


@dataclass(frozen=True)
class PatientInfo:
    """A synthetic patient (one per seed)."""

    name: str
    patient_id: str
    birth_date: str  # YYYYMMDD
    sex: str  # "F" | "M"


@dataclass(frozen=True)
class StudyIdentity:
    """Whose study it is and where it was ordered, in place of what the seed derives: e.g. a
    test's canary patient, whose identifiers must never appear outside the PACS and the record."""

    patient: PatientInfo
    accession_number: str  # SH: 16 characters at most
    referring_physician: str  # PN, e.g. "FAMILY^GIVEN^^DR"
    institution_name: str = INSTITUTION_NAME
    # DICOM attributes as a sloppy modality writes them, over the record's values (keyword,
    # value): e.g. ("PatientName", "SMITH JOHN") without carets, or a birth date as 1950-01-31.
    written_as: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class StudyInfo:
    """Identifiers and descriptive attributes of one synthetic study with one CT series."""

    scenario: str
    seed: int
    patient: PatientInfo
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    study_id: str
    accession_number: str
    study_date: str  # YYYYMMDD
    study_time: str  # HHMMSS
    referring_physician: str
    study_description: str
    series_description: str
    series_number: int
    body_part: str
    slices: int
    rows: int
    columns: int
    spacing_mm: tuple[float, float, float]
    institution_name: str = INSTITUTION_NAME
    written_as: tuple[tuple[str, str], ...] = ()  # StudyIdentity.written_as

    def sop_instance_uid(self, index: int) -> str:
        """SOP Instance UID of slice `index` (0 = most inferior)."""
        return derive_uid(self.series_instance_uid, "instance", index)

    @property
    def started(self) -> dt.datetime:
        """Study date/time as a timezone-aware datetime (UTC)."""
        return dt.datetime.strptime(self.study_date + self.study_time, "%Y%m%d%H%M%S").replace(
            tzinfo=dt.UTC
        )

    @property
    def patient_age(self) -> str:
        """PatientAge (AS), e.g. '057Y', at the study date."""
        born = dt.datetime.strptime(self.patient.birth_date, "%Y%m%d").date()
        on = self.started.date()
        years = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
        return f"{years:03d}Y"


def synthetic_patient(seed: int) -> PatientInfo:
    """The synthetic patient of a seed: clearly fake name, ID, birth date and sex."""
    n = _number("patient", seed)
    given = _GIVEN[n % len(_GIVEN)]
    family = _FAMILY[(n // 7) % len(_FAMILY)]
    birth = dt.date(1940, 1, 1) + dt.timedelta(days=(n // 97) % (365 * 60))
    return PatientInfo(
        name=f"{family}^{given}",
        patient_id=f"RMS{(n // 11) % 10**8:08d}",
        birth_date=birth.strftime("%Y%m%d"),
        sex="F" if (n >> 5) % 2 else "M",
    )


def describe_study(
    phantom: PhantomLike, *, scenario: str, seed: int, identity: StudyIdentity | None = None
) -> StudyInfo:
    """All identifiers of the study generated from `phantom` for (scenario, seed); the patient,
    accession number, referring physician, institution (and the attributes as a sloppy modality
    writes them) are `identity`'s when it is given (the UIDs stay the seed's).

    The shape of the volume is part of the study's identity, so loading the same scenario with
    another --slices/--size gives another study instead of mixing two geometries in one series.
    """
    slices, rows, columns = (int(v) for v in phantom.volume_hu.shape)
    spacing = tuple(float(v) for v in phantom.spacing_mm)
    body_part = str(phantom.body_part).upper()
    key = (scenario, seed, slices, rows, columns, *spacing)
    n = _number("study", *key)
    study_uid = derive_uid("study", *key)
    when = dt.datetime(2024, 1, 1, 7, 0) + dt.timedelta(
        days=n % 365, minutes=(n // 365) % (12 * 60)
    )
    study_description, series_description = _DESCRIPTIONS.get(
        body_part, (f"CT {body_part}", "Axial {thickness}mm")
    )
    series_description = series_description.format(thickness=f"{spacing[0]:.3g}")
    info = StudyInfo(
        scenario=scenario,
        seed=seed,
        patient=synthetic_patient(seed),
        study_instance_uid=study_uid,
        series_instance_uid=derive_uid(study_uid, "series", 1),
        frame_of_reference_uid=derive_uid(study_uid, "frame-of-reference"),
        study_id=f"S{(n // 13) % 10**6:06d}",
        accession_number=f"RMA{(n // 17) % 10**9:09d}",
        study_date=when.strftime("%Y%m%d"),
        study_time=when.strftime("%H%M%S"),
        referring_physician=_PHYSICIANS[(n // 19) % len(_PHYSICIANS)],
        study_description=study_description,
        series_description=series_description,
        series_number=1,
        body_part=body_part,
        slices=slices,
        rows=rows,
        columns=columns,
        spacing_mm=(spacing[0], spacing[1], spacing[2]),
    )
    if identity is None:
        return info
    return replace(
        info,
        patient=identity.patient,
        accession_number=identity.accession_number,
        referring_physician=identity.referring_physician,
        institution_name=identity.institution_name,
        written_as=identity.written_as,
    )


def _ds(value: float) -> str:
    """A DS string (<= 16 chars) keeping as much precision as DS allows."""
    if value == 0:
        return "0"
    return format_number_as_ds(float(value))


def slice_position(info: StudyInfo, index: int) -> tuple[float, float, float]:
    """ImagePositionPatient (x, y, z) in mm of the first voxel of slice `index`."""
    dz, dy, dx = info.spacing_mm
    x0 = -(info.columns - 1) * dx / 2.0
    y0 = -(info.rows - 1) * dy / 2.0
    z0 = -(info.slices - 1) * dz / 2.0
    return (x0, y0, z0 + index * dz)


def stored_pixel_representation(volume_hu: npt.NDArray[Any]) -> int:
    """0 (unsigned) when every stored value HU + 1024 fits in [0, 65535], else 1 (signed)."""
    lo, hi = int(volume_hu.min()), int(volume_hu.max())
    return 0 if lo >= RESCALE_INTERCEPT and hi - RESCALE_INTERCEPT <= 65535 else 1


def _base_dataset(info: StudyInfo) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = info.study_date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = info.study_time
    ds.AccessionNumber = info.accession_number
    ds.Modality = "CT"
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = info.institution_name
    ds.ReferringPhysicianName = info.referring_physician
    ds.StationName = "SYNTHCT01"
    ds.StudyDescription = info.study_description
    ds.SeriesDescription = info.series_description
    ds.ManufacturerModelName = MODEL_NAME
    ds.PatientName = info.patient.name
    ds.PatientID = info.patient.patient_id
    ds.IssuerOfPatientID = "RADMESH-SAMPLES"
    ds.PatientBirthDate = info.patient.birth_date
    ds.PatientSex = info.patient.sex
    ds.PatientAge = info.patient_age
    ds.PatientIdentityRemoved = "NO"
    ds.BodyPartExamined = info.body_part
    ds.SliceThickness = _ds(info.spacing_mm[0])
    ds.SpacingBetweenSlices = _ds(info.spacing_mm[0])
    ds.KVP = "120"
    ds.SoftwareVersions = "radmesh-samples 1"
    ds.ProtocolName = info.study_description
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    _add_image_attributes(ds, info)
    for keyword, value in info.written_as:
        setattr(ds, keyword, value)
    return ds


def _add_image_attributes(ds: Dataset, info: StudyInfo) -> None:
    ds.StudyInstanceUID = info.study_instance_uid
    ds.SeriesInstanceUID = info.series_instance_uid
    ds.StudyID = info.study_id
    ds.SeriesNumber = info.series_number
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = info.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = info.rows
    ds.Columns = info.columns
    ds.PixelSpacing = [_ds(info.spacing_mm[1]), _ds(info.spacing_mm[2])]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    windows = _WINDOWS.get(info.body_part, ((40, 400, "SOFT TISSUE"),))
    ds.WindowCenter = [str(c) for c, _, _ in windows]
    ds.WindowWidth = [str(w) for _, w, _ in windows]
    ds.WindowCenterWidthExplanation = [e for _, _, e in windows]
    ds.RescaleIntercept = str(RESCALE_INTERCEPT)
    ds.RescaleSlope = str(RESCALE_SLOPE)
    ds.RescaleType = "HU"


def iter_instances(
    phantom: PhantomLike, info: StudyInfo, missing_slices: Collection[int] = ()
) -> Iterator[Dataset]:
    """Yield the CT instances of `phantom` one at a time (slice 0, the most inferior, first),
    leaving out the slices `missing_slices` (a series with gaps, as if lost in transfer)."""
    volume = phantom.volume_hu
    if volume.ndim != 3:
        raise ValueError(f"volume_hu must be (slices, rows, columns), got shape {volume.shape}")
    if volume.shape != (info.slices, info.rows, info.columns):
        raise ValueError("phantom does not match the StudyInfo it was described with")
    pixel_representation = stored_pixel_representation(volume)
    dtype = np.dtype("<u2") if pixel_representation == 0 else np.dtype("<i2")
    for index in range(info.slices):
        if index in missing_slices:
            continue
        ds = _base_dataset(info)
        sop_uid = UID(info.sop_instance_uid(index))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "RADMESH_SAMPLES"
        ds.file_meta = meta
        ds.SOPInstanceUID = sop_uid
        ds.InstanceCreationDate = info.study_date
        ds.InstanceCreationTime = info.study_time
        ds.InstanceNumber = index + 1
        position = slice_position(info, index)
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(position[2])
        ds.PixelRepresentation = pixel_representation
        stored = volume[index].astype(np.int32) - RESCALE_INTERCEPT
        ds.PixelData = np.ascontiguousarray(stored.astype(dtype)).tobytes()
        ds["PixelData"].VR = "OW"
        yield ds


def encode(ds: Dataset) -> bytes:
    """The instance as a DICOM Part 10 file (explicit VR little endian)."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def iter_encoded(
    phantom: PhantomLike, info: StudyInfo, missing_slices: Collection[int] = ()
) -> Iterator[bytes]:
    """Yield the Part 10 bytes of each instance, one at a time (`missing_slices` left out)."""
    for ds in iter_instances(phantom, info, missing_slices):
        yield encode(ds)
