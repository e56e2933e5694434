"""Reading IOCM rejection notes (shared.iocm), from a KOS made with highdicom."""

from __future__ import annotations

import highdicom as hd
from pydicom import Dataset
from pydicom.uid import CTImageStorage, generate_uid

from shared.iocm import rejection_notes


def _image(study: str, series: str) -> Dataset:
    image = Dataset()
    image.SOPClassUID = CTImageStorage
    image.SOPInstanceUID = generate_uid()
    image.StudyInstanceUID = study
    image.SeriesInstanceUID = series
    image.PatientID = "X"
    image.PatientName = "X^Y"
    image.PatientBirthDate = ""
    image.PatientSex = "O"
    image.StudyDate = "20261201"
    image.StudyTime = "120000"
    image.StudyID = "1"
    image.AccessionNumber = "A1"
    image.ReferringPhysicianName = ""
    return image


def _note(title: str, manufacturer: str, images: list[Dataset]) -> Dataset:
    return hd.ko.KeyObjectSelectionDocument(
        evidence=images,
        content=hd.ko.KeyObjectSelection(
            document_title=hd.sr.CodedConcept(title, "DCM", "Rejected for Quality Reasons"),
            referenced_objects=images,
            observer_person_context=hd.sr.ObserverContext(
                observer_type=hd.sr.CodedConcept("121006", "DCM", "Person"),
                observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                    name="QA^Tech"
                ),
            ),
        ),
        series_instance_uid=generate_uid(),
        series_number=900,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=manufacturer,
    )


def test_a_sites_rejection_note_names_its_code_and_the_rejected_series() -> None:
    study = generate_uid()
    images = [_image(study, "1.2.3.1"), _image(study, "1.2.3.1"), _image(study, "1.2.3.2")]
    note = _note("113001", "Site QA", images)
    (found,) = rejection_notes([note.to_json_dict()])
    assert found.code == "113001"
    assert found.series_instance_uids == {"1.2.3.1", "1.2.3.2"}
    assert found.sop_instance_uid == note.SOPInstanceUID


def test_radmesh_own_notes_and_other_key_objects_are_not_rejections_of_images() -> None:
    study = generate_uid()
    images = [_image(study, "1.2.3.1")]
    own = _note("113001", "radmesh", images)
    key_images = _note("113000", "Site", images)  # "Of Interest": a key-image note
    assert rejection_notes([own.to_json_dict(), key_images.to_json_dict()]) == []
