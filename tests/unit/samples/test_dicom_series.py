"""Unit tests of the synthetic CT series generator (samples.dicom_series)."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from samples import dicom_series
from samples.dicom_series import StudyInfo

UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


@dataclass(frozen=True)
class FakePhantom:
    """A small phantom with the fields of samples.phantoms.Phantom."""

    body_part: str
    volume_hu: npt.NDArray[np.int16]
    spacing_mm: tuple[float, float, float]


def _phantom(
    seed: int = 0,
    *,
    shape: tuple[int, int, int] = (6, 40, 48),
    low: int = -1024,
    high: int = 2500,
    body_part: str = "HEAD",
    spacing: tuple[float, float, float] = (160.0 / 6, 0.859375, 0.859375),
) -> FakePhantom:
    rng = np.random.default_rng(seed)
    volume = rng.integers(low, high, size=shape, endpoint=True).astype(np.int16)
    return FakePhantom(body_part, volume, spacing)


def _series(
    phantom: FakePhantom, scenario: str = "head-normal", seed: int = 7
) -> tuple[StudyInfo, list[Dataset]]:
    info = dicom_series.describe_study(phantom, scenario=scenario, seed=seed)
    decoded: list[Dataset] = [
        pydicom.dcmread(io.BytesIO(raw)) for raw in dicom_series.iter_encoded(phantom, info)
    ]
    return info, decoded


def test_same_seed_and_scenario_give_identical_uids_and_bytes() -> None:
    """Generating twice with the same arguments yields the same UIDs and byte-identical files."""
    phantom = _phantom()
    info_a = dicom_series.describe_study(phantom, scenario="head-normal", seed=3)
    info_b = dicom_series.describe_study(phantom, scenario="head-normal", seed=3)
    assert info_a == info_b
    assert list(dicom_series.iter_encoded(phantom, info_a)) == list(
        dicom_series.iter_encoded(phantom, info_b)
    )


def test_uids_differ_between_seeds_scenarios_and_geometries() -> None:
    """Another seed, scenario or volume shape gives another study (no UID collisions)."""
    phantom = _phantom()
    base = dicom_series.describe_study(phantom, scenario="head-normal", seed=3)
    others = [
        dicom_series.describe_study(phantom, scenario="head-normal", seed=4),
        dicom_series.describe_study(phantom, scenario="head-bleed", seed=3),
        dicom_series.describe_study(_phantom(shape=(8, 40, 48)), scenario="head-normal", seed=3),
    ]
    for other in others:
        assert other.study_instance_uid != base.study_instance_uid
        assert other.series_instance_uid != base.series_instance_uid
        assert other.accession_number != base.accession_number or other.seed != base.seed
    sop_uids = {base.sop_instance_uid(i) for i in range(base.slices)}
    assert len(sop_uids) == base.slices


def test_uids_are_valid_dicom_uids_under_2_25_root() -> None:
    """Every UID is a valid DICOM UID (digits and dots, no leading zeros, at most 64 chars)."""
    info, datasets = _series(_phantom())
    uids = [info.study_instance_uid, info.series_instance_uid, info.frame_of_reference_uid]
    uids += [str(ds.SOPInstanceUID) for ds in datasets]
    for uid in uids:
        assert uid.startswith("2.25.")
        assert len(uid) <= 64
        assert UID_RE.match(uid), uid
    assert len(set(uids)) == len(uids)


def test_patient_is_the_same_for_a_seed_across_scenarios() -> None:
    """One synthetic patient per seed: head and chest studies of a seed share the patient."""
    head = dicom_series.describe_study(_phantom(), scenario="head-normal", seed=11)
    chest = dicom_series.describe_study(
        _phantom(body_part="CHEST"), scenario="chest-normal", seed=11
    )
    assert head.patient == chest.patient
    assert head.study_instance_uid != chest.study_instance_uid


def test_positions_step_by_slice_spacing_along_the_normal() -> None:
    """ImagePositionPatient steps by the slice spacing along z, slice 0 most inferior."""
    phantom = _phantom()
    _, datasets = _series(phantom)
    dz, dy, dx = phantom.spacing_mm
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    steps = np.diff(positions, axis=0)
    np.testing.assert_allclose(steps, np.tile([0.0, 0.0, dz], (len(steps), 1)), atol=1e-6)
    for index, ds in enumerate(datasets):
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert float(ds.SliceLocation) == pytest.approx(positions[index][2], abs=1e-9)
        assert float(ds.SliceThickness) == pytest.approx(dz, abs=1e-9)
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([dy, dx], abs=1e-9)
        assert ds.InstanceNumber == index + 1
        assert ds.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
    # centred in x and y
    assert positions[0][0] == pytest.approx(-(phantom.volume_hu.shape[2] - 1) * dx / 2)
    assert positions[0][1] == pytest.approx(-(phantom.volume_hu.shape[1] - 1) * dy / 2)


def test_highdicom_builds_a_consistent_volume_from_the_series() -> None:
    """highdicom accepts the series as one regularly spaced volume with the phantom's HU."""
    phantom = _phantom()
    _, datasets = _series(phantom)
    volume = hd.get_volume_from_series(datasets, apply_modality_transform=True)
    assert volume.spacing == pytest.approx(phantom.spacing_mm, abs=1e-6)
    # axis 0 pointing to the head (H), rows to posterior (P), columns to the left (L): the
    # phantom's own layout (slice 0 most inferior)
    volume = volume.to_patient_orientation("HPL")
    np.testing.assert_allclose(
        volume.affine[:3, :3], np.diag(phantom.spacing_mm)[::-1, :], atol=1e-6
    )
    array = np.asarray(volume.array)
    np.testing.assert_array_equal(array.astype(np.int32), phantom.volume_hu.astype(np.int32))


@pytest.mark.parametrize(
    ("low", "high", "representation"),
    [(-1024, 3071, 0), (-2048, 3071, 1), (-1000, 30000, 0)],
)
def test_hu_round_trip_stored_times_slope_plus_intercept(
    low: int, high: int, representation: int
) -> None:
    """pixel * RescaleSlope + RescaleIntercept equals the phantom HU exactly, signed or not."""
    phantom = _phantom(low=low, high=high)
    _, datasets = _series(phantom)
    for index, ds in enumerate(datasets):
        assert ds.PixelRepresentation == representation
        assert float(ds.RescaleSlope) == 1.0
        assert float(ds.RescaleIntercept) == -1024.0
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu, phantom.volume_hu[index].astype(np.int32))


def test_written_files_are_valid_ct_image_storage_in_explicit_vr_little_endian() -> None:
    """Each instance writes and reads back as Part 10 CT Image Storage with the CT modules."""
    info, datasets = _series(_phantom(), scenario="head-bleed")
    required = [
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
        "StudyInstanceUID", "StudyID", "AccessionNumber", "StudyDate", "StudyTime",
        "ReferringPhysicianName", "StudyDescription",
        "Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "BodyPartExamined",
        "FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient",
        "SliceThickness", "PixelSpacing", "SliceLocation", "InstanceNumber",
        "ImageType", "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns",
        "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelData",
        "RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth", "KVP",
        "SOPClassUID", "SOPInstanceUID",
    ]  # fmt: skip
    for index, ds in enumerate(datasets):
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPClassUID == CTImageStorage
        assert ds.SOPInstanceUID == info.sop_instance_uid(index)
        missing = [k for k in required if k not in ds or ds[k].value in (None, "")]
        assert not missing, missing
        assert ds.Modality == "CT"
        assert ds.BodyPartExamined == "HEAD"
        assert ds.AccessionNumber == info.accession_number
        assert ds.StudyInstanceUID == info.study_instance_uid
        assert len(ds.PixelData) == ds.Rows * ds.Columns * 2
        # every value fits its VR (pydicom raises on write for invalid values)
        with pydicom.config.strict_reading():
            pydicom.dcmread(io.BytesIO(dicom_series.encode(ds)))


def test_instances_are_generated_lazily() -> None:
    """iter_encoded is a generator: the first instance is available before the others exist."""
    phantom = _phantom(shape=(5, 32, 32))
    info = dicom_series.describe_study(phantom, scenario="head-normal", seed=1)
    stream = dicom_series.iter_encoded(phantom, info)
    first = next(stream)
    assert pydicom.dcmread(io.BytesIO(first)).InstanceNumber == 1
    assert sum(1 for _ in stream) == 4


def test_mismatched_phantom_is_refused() -> None:
    """A StudyInfo described from another geometry cannot be used with this phantom."""
    info = dicom_series.describe_study(_phantom(), scenario="head-normal", seed=1)
    with pytest.raises(ValueError, match="does not match"):
        next(dicom_series.iter_instances(_phantom(shape=(4, 40, 48)), info))


def test_real_phantom_series_round_trips() -> None:
    """A head phantom from samples.phantoms gives a series with its HU and spacing."""
    phantoms = pytest.importorskip("samples.phantoms")
    phantom = phantoms.head_ct(5, slices=4, size=64, bleed=True)
    info = dicom_series.describe_study(phantom, scenario="head-bleed", seed=5)
    datasets = list(dicom_series.iter_instances(phantom, info))
    assert len(datasets) == 4
    hu = np.stack([ds.pixel_array.astype(np.int32) - 1024 for ds in datasets])
    np.testing.assert_array_equal(hu, phantom.volume_hu.astype(np.int32))
    assert float(datasets[1].ImagePositionPatient[2]) - float(
        datasets[0].ImagePositionPatient[2]
    ) == pytest.approx(phantom.spacing_mm[0], abs=1e-6)


def test_an_identity_names_the_patient_order_and_site_and_missing_slices_are_left_out() -> None:
    """A study identity (a test's canary patient) is what the headers name — patient,
    accession, referring physician, institution, and attributes as a sloppy modality writes
    them — while the UIDs stay the seed's; the missing slices are not generated."""
    phantom = _phantom()
    seeded = dicom_series.describe_study(phantom, scenario="head-normal", seed=3)
    identity = dicom_series.StudyIdentity(
        patient=dicom_series.PatientInfo("Canary^Tweety", "MRN-C", "19230417", "F"),
        accession_number="ACC-C",
        referring_physician="Refer^Petra^^DR",
        institution_name="Canary Infirmary",
        written_as=(("PatientName", "CANARY TWEETY"),),
    )
    info = dicom_series.describe_study(phantom, scenario="head-normal", seed=3, identity=identity)
    assert info.study_instance_uid == seeded.study_instance_uid
    datasets = list(dicom_series.iter_instances(phantom, info, missing_slices={1, 2}))
    assert [int(ds.InstanceNumber) for ds in datasets] == [1, 4, 5, 6]
    first = datasets[0]
    assert (str(first.PatientName), first.PatientID, first.PatientBirthDate) == (
        "CANARY TWEETY",
        "MRN-C",
        "19230417",
    )
    assert (first.AccessionNumber, str(first.ReferringPhysicianName)) == (
        "ACC-C",
        "Refer^Petra^^DR",
    )
    assert first.InstitutionName == "Canary Infirmary"
