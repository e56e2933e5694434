"""Every coded concept radmesh writes, in FHIR resources and in DICOM SR / Key Object Selection
documents: one home, so that no two writers can spell a concept differently. Each is a `Coding`
(FHIR system URI, code, display) named as its standard names it; `.fhir()` gives the FHIR Coding,
`.concept()` a CodeableConcept, `.dicom()` the DICOM coded concept (Code Value, Coding Scheme
Designator, Code Meaning). The findings' own codes are site data in the model registry
(registry/models.yaml), checked at start-up; radmesh's own code systems (`urn:radmesh:...`)
stay with the module that owns them.

Decisions where the standards differ:

- Absent. DICOM's value sets for a finding's presence, CID 240 "Present-Absent" and CID 241
  "Present-Absent Only", code absence as SCT 272519000 with the meaning "Absent" (CID 230
  "Yes-No", SCT 373066001 / 373067005, answers yes/no questions; a finding is present or absent,
  so the SR's TID 1501 qualitative evaluation takes CID 240). In SNOMED CT 272519000 is |Absence
  findings (qualifier value)|, the parent of the absence values, and 2667000 is |Absent
  (qualifier value)| itself; FHIR's presence/absence value sets take 2667000 (IPS "Results
  Presence/Absence" is `< 260411009 OR < 272519000`, which holds 2667000 and not 272519000;
  mCODE's PresentAbsentVS lists 52101004 / 2667000). So the SR says `ABSENCE_FINDINGS`
  (272519000, "Absent", as CID 240 spells it) and FHIR says `ABSENT` (2667000, "Absent");
  present is SCT 52101004 "Present" in both.
- Procedure Reported of TID 1500 is DCID 100 "Quantitative Diagnostic Imaging Procedures",
  which has no CT head or CT chest procedure: a CT study is reported as LN 25045-6 "CT
  unspecified body region" (the finding site says where), another modality as CID 100's
  "<modality> unspecified body region" or, last, SCT 363679005 "Imaging procedure". The FHIR
  DiagnosticReport keeps the registry's LOINC report code (24725-4 "CT Head", ...), which FHIR
  asks for and CID 100 does not hold.
- Body Part Examined ↔ SNOMED CT follows PS3.16 Annex L (anatomic regions of CID 4031 "Common
  Anatomic Regions", CID 4030, CID 4): CHEST 816094009 "Chest" and PELVIS 816092008 "Pelvis"
  since DICOM replaced 51185008 and 12921003; the Code Meaning is the display in FHIR too (a
  SNOMED CT synonym of the concept), so one code reads the same everywhere.
- AI Transparency on FHIR: `AIAST` "Artificial Intelligence asserted" exactly as
  v3-ObservationValue and the IG's ProvenanceVS spell it, the IG's `CLINAST_AIRPT`, and its AI
  Device type `Artificial-Intelligence` (AIdeviceTypeCS).
- IHE IOCM rejection titles and the key images' title "Of Interest" are DICOM CID 7010 "Key
  Object Selection Document Title" codes.

tests/unit/shared/test_codes.py checks every DICOM-scheme display here against pydicom's code
dictionary (PS3.16) and that no other module under shared/ or services/ writes a code itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import highdicom as hd

__all__ = [
    "ABSENCE_FINDINGS",
    "ABSENT",
    "ACCESSION_ID",
    "AIAST",
    "AI_DEVICE_TYPE",
    "ARTIFICIAL_INTELLIGENCE",
    "BODY_PART_BY_SNOMED",
    "CENTER_OF_MASS",
    "CLINAST_AIRPT",
    "CODE_MEANING_LENGTH",
    "COMMUNICATION_CATEGORY_ALERT",
    "CREATE",
    "CT_UNSPECIFIED_BODY_REGION",
    "DATA_RETENTION_POLICY_EXPIRED",
    "DCM",
    "DEVICE",
    "DICOM_WADO_RS",
    "FLAG_CATEGORY_CLINICAL",
    "IMAGING",
    "IMAGING_PROCEDURE",
    "INCORRECT_MODALITY_WORKLIST_ENTRY",
    "INFORMATION_RECIPIENT",
    "IOCM_REJECTION_TITLES",
    "LOINC",
    "MORPHOLOGICALLY_ABNORMAL_STRUCTURE",
    "NULLIFY",
    "OBJECT_ROLE_DOMAIN_RESOURCE",
    "OBJECT_ROLE_PATIENT",
    "OBJECT_ROLE_REPORT",
    "OF_INTEREST",
    "PERSON",
    "PRESENT",
    "PROBABILITY",
    "PROCESSING_EQUIPMENT",
    "PROVENANCE_AUTHOR",
    "PROVENANCE_VERIFIER",
    "RADIOLOGY",
    "RADLEX",
    "REJECTED_FOR_PATIENT_SAFETY_REASONS",
    "REJECTED_FOR_QUALITY_REASONS",
    "RESTFUL_INTERACTION",
    "RESTFUL_OPERATION",
    "REVISE",
    "SCHEME_DESIGNATORS",
    "SECURITY_SOURCE_APPLICATION_SERVER",
    "SNOMED_BY_BODY_PART",
    "SNOMED_CT",
    "SYSTEM_OBJECT",
    "TASK_APPROVE",
    "TRACKING_UNIQUE_IDENTIFIER",
    "UCUM",
    "VERIFIER",
    "Coding",
    "FindingSystem",
    "IocmCode",
    "dicom_modality",
    "procedure_reported",
    "ucum",
]

# Code systems: FHIR URIs, and the DICOM Coding Scheme Designators of those DICOM uses (PS3.16
# Section 8, Table 8-1).
SNOMED_CT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RADLEX = "http://radlex.org"
UCUM = "http://unitsofmeasure.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SCHEME_DESIGNATORS = {SNOMED_CT: "SCT", LOINC: "LN", RADLEX: "RADLEX", UCUM: "UCUM", DCM: "DCM"}
# The systems a registry finding may be coded in (shared.registry.Coding).
FindingSystem = Literal["http://snomed.info/sct", "http://radlex.org", "http://loinc.org"]
_THO = "http://terminology.hl7.org/CodeSystem"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"  # AuditEvent.subtype
CODE_MEANING_LENGTH = 64  # Code Meaning (0008,0104) is LO


@dataclass(frozen=True)
class Coding:
    """One coded concept: a FHIR Coding, and a DICOM code when its system is one DICOM uses."""

    system: str
    code: str
    display: str

    def fhir(self) -> dict[str, str]:
        """The FHIR Coding."""
        return {"system": self.system, "code": self.code, "display": self.display}

    def concept(self, text: str | None = None) -> dict[str, Any]:
        """A FHIR CodeableConcept of this one coding, with `text` when given."""
        concept: dict[str, Any] = {"coding": [self.fhir()]}
        if text is not None:
            concept["text"] = text
        return concept

    @property
    def scheme_designator(self) -> str:
        """The DICOM Coding Scheme Designator of the system (ValueError: DICOM has none)."""
        try:
            return SCHEME_DESIGNATORS[self.system]
        except KeyError:
            raise ValueError(f"no DICOM coding scheme for {self.system}") from None

    def dicom(self) -> hd.sr.CodedConcept:
        """The DICOM coded concept; the display, cut to 64 characters, as Code Meaning."""
        import highdicom as hd  # noqa: PLC0415 (only the DICOM writers pay for importing it)

        return hd.sr.CodedConcept(
            value=self.code,
            scheme_designator=self.scheme_designator,
            meaning=self.display[:CODE_MEANING_LENGTH],
        )


def ucum(unit: str) -> Coding:
    """A UCUM unit, its code as its display (as DICOM's measurement units are written)."""
    return Coding(UCUM, unit, unit)


def dicom_modality(modality: str) -> dict[str, str]:
    """An ImagingStudy modality Coding: DICOM DCM, the Modality (0008,0060) as code (CID 29/33)."""
    return {"system": DCM, "code": modality}


# --- Presence (see the module docstring for why absent differs) ---
PRESENT = Coding(SNOMED_CT, "52101004", "Present")  # SCT; DICOM CID 240/241; FHIR IPS
ABSENT = Coding(SNOMED_CT, "2667000", "Absent")  # FHIR: SNOMED CT |Absent (qualifier value)|
ABSENCE_FINDINGS = Coding(SNOMED_CT, "272519000", "Absent")  # DICOM SR: CID 240/241 "Absent"

# --- DICOM: TID 1500 measurement report, observers, equipment ---
PROBABILITY = Coding(DCM, "122157", "Probability")  # also the FHIR probability component
TRACKING_UNIQUE_IDENTIFIER = Coding(DCM, "112040", "Tracking Unique Identifier")
# CID 219 Geometry Graphical Representation: a finding's centroid as TID 1410's SCOORD3D POINT
CENTER_OF_MASS = Coding(DCM, "128138", "Center of Mass")
DEVICE = Coding(DCM, "121007", "Device")  # CID 270 Observer Type
PERSON = Coding(DCM, "121006", "Person")  # CID 270 Observer Type
PROCESSING_EQUIPMENT = Coding(DCM, "109102", "Processing Equipment")  # CID 7005
# --- DICOM SEG: a segmented finding's segment (CID 7150 category, CID 7162 algorithm family) ---
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Coding(
    SNOMED_CT, "49755003", "Morphologically Abnormal Structure"
)
ARTIFICIAL_INTELLIGENCE = Coding(DCM, "123110", "Artificial Intelligence")

# --- DICOM CID 100 Quantitative Diagnostic Imaging Procedures (TID 1500 Procedure Reported) ---
IMAGING_PROCEDURE = Coding(SNOMED_CT, "363679005", "Imaging procedure")
CT_UNSPECIFIED_BODY_REGION = Coding(LOINC, "25045-6", "CT unspecified body region")
_PROCEDURE_BY_MODALITY = {
    "CT": CT_UNSPECIFIED_BODY_REGION,
    "MR": Coding(LOINC, "25056-3", "MRI unspecified body region"),
    "PT": Coding(LOINC, "44136-0", "PET unspecified body region"),
    "NM": Coding(LOINC, "49118-3", "NM unspecified body region"),
    "CR": Coding(LOINC, "43468-8", "XR unspecified body region"),
    "DX": Coding(LOINC, "43468-8", "XR unspecified body region"),
}


def procedure_reported(modality: str | None) -> Coding:
    """The CID 100 procedure of a study of this modality: "<modality> unspecified body region",
    else "Imaging procedure"."""
    return _PROCEDURE_BY_MODALITY.get((modality or "").upper(), IMAGING_PROCEDURE)


# --- DICOM CID 7010 Key Object Selection Document Title: the AI's key images, IOCM's rejections ---
OF_INTEREST = Coding(DCM, "113000", "Of Interest")
REJECTED_FOR_QUALITY_REASONS = Coding(DCM, "113001", "Rejected for Quality Reasons")
REJECTED_FOR_PATIENT_SAFETY_REASONS = Coding(DCM, "113037", "Rejected for Patient Safety Reasons")
INCORRECT_MODALITY_WORKLIST_ENTRY = Coding(DCM, "113038", "Incorrect Modality Worklist Entry")
DATA_RETENTION_POLICY_EXPIRED = Coding(DCM, "113039", "Data Retention Policy Expired")
IOCM_REJECTION_TITLES = (
    REJECTED_FOR_QUALITY_REASONS,
    REJECTED_FOR_PATIENT_SAFETY_REASONS,
    INCORRECT_MODALITY_WORKLIST_ENTRY,
    DATA_RETENTION_POLICY_EXPIRED,
)
IocmCode = Literal["113001", "113037", "113038", "113039"]  # the codes of IOCM_REJECTION_TITLES

# --- PS3.16 Annex L: Body Part Examined ↔ SNOMED CT (CID 4031, 4030, 4) ---
SNOMED_BY_BODY_PART = {
    "HEAD": Coding(SNOMED_CT, "69536005", "Head"),
    "BRAIN": Coding(SNOMED_CT, "12738006", "Brain"),
    "CHEST": Coding(SNOMED_CT, "816094009", "Chest"),
    "LUNG": Coding(SNOMED_CT, "39607008", "Lung"),
    "ABDOMEN": Coding(SNOMED_CT, "818981001", "Abdomen"),
    "PELVIS": Coding(SNOMED_CT, "816092008", "Pelvis"),
}
# Read back, also from the codes DICOM used before (51185008, 12921003), which EHRs still send.
BODY_PART_BY_SNOMED = {
    **{coding.code: part for part, coding in SNOMED_BY_BODY_PART.items()},
    "51185008": "CHEST",
    "12921003": "PELVIS",
}

# --- HL7 AI Transparency on FHIR (meta.security) ---
AIAST = Coding(f"{_THO}/v3-ObservationValue", "AIAST", "Artificial Intelligence asserted")
CLINAST_AIRPT = Coding(
    "http://hl7.org/fhir/uv/aitransparency/CodeSystem/AddedProvenanceCS",
    "CLINAST_AIRPT",
    "Clinician Asserted from AI Reported",
)
# The IG's AI Device profile: Device.type from AIdeviceTypeVS (extensible)
AI_DEVICE_TYPE = Coding(
    "http://hl7.org/fhir/uv/aitransparency/CodeSystem/AIdeviceTypeCS",
    "Artificial-Intelligence",
    "All kinds of Artificial Intelligence",
)

# --- FHIR categories and types (terminology.hl7.org) ---
IMAGING = Coding(f"{_THO}/observation-category", "imaging", "Imaging")
RADIOLOGY = Coding(f"{_THO}/v2-0074", "RAD", "Radiology")  # DiagnosticReport.category
COMMUNICATION_CATEGORY_ALERT = Coding(f"{_THO}/communication-category", "alert", "Alert")
FLAG_CATEGORY_CLINICAL = Coding(f"{_THO}/flag-category", "clinical", "Clinical")
ACCESSION_ID = Coding(f"{_THO}/v2-0203", "ACSN", "Accession ID")  # Identifier.type
DICOM_WADO_RS = Coding(f"{_THO}/endpoint-connection-type", "dicom-wado-rs", "DICOM WADO-RS")
TASK_APPROVE = Coding(
    "http://hl7.org/fhir/CodeSystem/task-code", "approve", "Activate/approve the focal resource"
)

# --- Provenance: activity (v3-DataOperation, v3-ParticipationType) and agent type ---
CREATE = Coding(f"{_THO}/v3-DataOperation", "CREATE", "create")
REVISE = Coding(f"{_THO}/v3-DataOperation", "UPDATE", "revise")
NULLIFY = Coding(f"{_THO}/v3-DataOperation", "NULLIFY", "nullify")
VERIFIER = Coding(f"{_THO}/v3-ParticipationType", "VRF", "verifier")
INFORMATION_RECIPIENT = Coding(f"{_THO}/v3-ParticipationType", "IRCP", "information recipient")
PROVENANCE_VERIFIER = Coding(f"{_THO}/provenance-participant-type", "verifier", "Verifier")
PROVENANCE_AUTHOR = Coding(f"{_THO}/provenance-participant-type", "author", "Author")

# --- AuditEvent (IHE BALP) ---
RESTFUL_OPERATION = Coding(f"{_THO}/audit-event-type", "rest", "Restful Operation")
SECURITY_SOURCE_APPLICATION_SERVER = Coding(
    f"{_THO}/security-source-type", "4", "Application Server"
)
OBJECT_ROLE_PATIENT = Coding(f"{_THO}/object-role", "1", "Patient")
OBJECT_ROLE_REPORT = Coding(f"{_THO}/object-role", "3", "Report")
OBJECT_ROLE_DOMAIN_RESOURCE = Coding(f"{_THO}/object-role", "4", "Domain Resource")
SYSTEM_OBJECT = Coding(f"{_THO}/audit-entity-type", "2", "System Object")
