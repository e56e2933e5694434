"""services.mapper.third_party_sr: another product's TID 1500 SR read into the registry's
findings, from SRs made the way vendors make them (tests/vendor_sr.py), through a Part 10 and a
DICOM JSON round trip as the PACS gives them back."""

from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom import Dataset
from pydicom.filewriter import dcmwrite

from samples.dicom_series import describe_study, iter_instances
from samples.phantoms import head_ct
from services.mapper.structured_report import dataset_from_metadata
from services.mapper.third_party_sr import (
    ProducingEquipment,
    makers,
    read_measurement_report,
)
from shared.errors import PermanentError
from shared.registry import load_registry
from tests.vendor_sr import (
    VENDOR_MANUFACTURER,
    VENDOR_MODEL_NAME,
    VENDOR_VERSION,
    image_level_sr,
    volumetric_sr,
)

REGISTRY = load_registry(Path(__file__).resolve().parents[3] / "registry" / "models.yaml")
PRODUCT = REGISTRY.imported(VENDOR_MANUFACTURER, VENDOR_MODEL_NAME, VENDOR_VERSION)


@pytest.fixture(scope="module")
def images() -> list[Dataset]:
    phantom = head_ct(seed=9, slices=8, size=32)
    info = describe_study(phantom, scenario="third-party-sr-unit", seed=9)
    return list(iter_instances(phantom, info))[:4]


def _as_the_pacs_returns_it(document: Dataset) -> Dataset:
    """Part 10 bytes → DICOM JSON (WADO-RS metadata) → the Dataset the mapper reads."""
    buffer = io.BytesIO()
    dcmwrite(buffer, document, enforce_file_format=True)
    buffer.seek(0)
    return dataset_from_metadata(pydicom.dcmread(buffer).to_json_dict())


def test_the_product_is_named_by_contributing_equipment_else_general_equipment(
    images: list[Dataset],
) -> None:
    """IHE AIR's Contributing Equipment (purpose Processing Equipment) names the maker first,
    the images' acquisition equipment not at all; an SR without it is named by its General
    Equipment; an SR naming no model is nobody's."""
    expected = ProducingEquipment(VENDOR_MANUFACTURER, VENDOR_MODEL_NAME, VENDOR_VERSION)
    found = makers(_as_the_pacs_returns_it(volumetric_sr(images)))
    assert found[0] == expected
    assert str(images[0].Manufacturer) not in {maker.manufacturer for maker in found}
    legacy = _as_the_pacs_returns_it(image_level_sr(images))
    assert "ContributingEquipmentSequence" not in legacy
    assert makers(legacy) == [expected]
    del legacy.ManufacturerModelName
    assert makers(legacy) == []


def test_a_located_finding_keeps_its_point_tracking_uid_probability_and_volume(
    images: list[Dataset],
) -> None:
    """The planar ROI group becomes a present hemorrhage with the SR's tracking UID, its
    SCOORD3D point and frame of reference, the probability, and the volume that depends on it;
    the evidence is the SR's evidence sequence."""
    document = volumetric_sr(images, probability=0.91, volume_ml=6.2, centre_slice=2)
    content = read_measurement_report(_as_the_pacs_returns_it(document), PRODUCT)
    hemorrhage, volume = content.findings
    written = hd.sr.Comprehensive3DSR.from_dataset(document).content
    assert isinstance(written, hd.sr.MeasurementReport)
    (group,) = written.get_planar_roi_measurement_groups()
    assert (hemorrhage.finding_key, hemorrhage.index, hemorrhage.present) == (
        "intracranial-hemorrhage",
        0,
        True,
    )
    assert hemorrhage.probability == pytest.approx(0.91)
    assert hemorrhage.tracking_uid == str(group.tracking_uid)
    assert hemorrhage.frame_of_reference_uid == str(images[2].FrameOfReferenceUID)
    x, y, z = (float(v) for v in images[2].ImagePositionPatient)
    assert hemorrhage.center_patient == pytest.approx((x + 10.0, y + 12.0, z))
    assert hemorrhage.series_instance_uid == str(images[0].SeriesInstanceUID)
    assert (volume.finding_key, volume.value, volume.unit) == ("hemorrhage-volume", 6.2, "mL")
    assert volume.tracking_uid == hemorrhage.tracking_uid
    (series,) = content.evidence
    assert series.sop_instance_uids == tuple(str(image.SOPInstanceUID) for image in images)
    assert content.unmapped == 0


def test_an_absent_evaluation_gives_an_absent_finding_without_a_volume(
    images: list[Dataset],
) -> None:
    """Qualitative evaluation Absent (SCT 272519000): the finding is absent, nothing measured."""
    content = read_measurement_report(
        _as_the_pacs_returns_it(volumetric_sr(images, present=False, probability=0.07)), PRODUCT
    )
    (hemorrhage,) = content.findings
    assert hemorrhage.present is False
    assert hemorrhage.probability == pytest.approx(0.07)


def test_an_image_level_group_names_its_images_and_a_percent_becomes_a_probability(
    images: list[Dataset],
) -> None:
    """The legacy shape: source images become the finding's instances, 84 % becomes 0.84, and
    the group whose Finding the registry does not map is counted, not imported."""
    content = read_measurement_report(_as_the_pacs_returns_it(image_level_sr(images)), PRODUCT)
    (hemorrhage,) = content.findings
    assert hemorrhage.probability == pytest.approx(0.84)
    assert hemorrhage.sop_instance_uids == tuple(str(i.SOPInstanceUID) for i in images[:2])
    assert hemorrhage.center_patient is None
    assert content.unmapped == 1


def test_a_measurement_in_another_unit_refuses_the_report(images: list[Dataset]) -> None:
    """A volume in cm3 where the registry maps mL is refused, not stored as a wrong number."""
    document = volumetric_sr(images, volume_unit="cm3")
    with pytest.raises(PermanentError, match="in 'cm3', the registry maps it in 'mL'"):
        read_measurement_report(_as_the_pacs_returns_it(document), PRODUCT)


def test_a_document_that_is_no_measurement_report_is_refused(images: list[Dataset]) -> None:
    """An image is not an SR: refused with the reason."""
    with pytest.raises(PermanentError, match="cannot hold a TID 1500 Measurement Report"):
        read_measurement_report(images[0], PRODUCT)
