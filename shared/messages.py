"""The events radmesh services exchange over RabbitMQ, each a versioned pydantic model.

Every event carries the envelope fields (`message_id`, `correlation_id` — one per study run —,
`causation_id`, `schema_version`, `created_at`) next to its own payload, in one flat JSON body.
The routing key of an event is its `event_type` (`study.detected`, …). A service derives the
events it publishes from the one it consumes with `Event.follow`, which keeps the correlation
id and records the cause.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from shared.errors import InvalidMessage
from shared.identifiers import (
    DICOM_UID_MAX_LENGTH,
    DICOM_UID_PATTERN,
    FHIR_DATETIME_PATTERN,
    fhir_reference_pattern,
    study_run_value,
)
from shared.iocm import IocmCode, RetractionSource
from shared.masks import box_shape, unpack_mask

__all__ = [
    "EVENT_TYPES",
    "AlertEscalationDue",
    "AlertRaised",
    "BlobInstance",
    "Event",
    "EvidenceSeries",
    "FhirDateTime",
    "Finding",
    "FindingMask",
    "FindingRejected",
    "FindingVerified",
    "InferenceCompleted",
    "ModelRef",
    "PostedFinding",
    "ResultsPosted",
    "ResultsRetracted",
    "SeriesManifest",
    "StructuredReportDetected",
    "StudyDetected",
    "StudyFetched",
    "StudyRef",
    "StudyRetracted",
    "parse_event",
    "validation_problems",
]


EventT = TypeVar("EventT", bound="Event")

# Instances of one series an SR may name as evidence (a 0.5 mm whole-body CT has ~4,000).
MAX_EVIDENCE_INSTANCES = 20_000

# Identifiers in messages are checked where they cross the process boundary: a UID goes into
# QIDO/WADO paths and a reference into FHIR writes, so neither may be anything but what it says.
DicomUid = Annotated[
    str, StringConstraints(pattern=DICOM_UID_PATTERN, max_length=DICOM_UID_MAX_LENGTH)
]
FhirDateTime = Annotated[str, StringConstraints(pattern=FHIR_DATETIME_PATTERN, max_length=40)]
ImagingStudyReference = Annotated[
    str, StringConstraints(pattern=fhir_reference_pattern("ImagingStudy"))
]
PatientReference = Annotated[str, StringConstraints(pattern=fhir_reference_pattern("Patient"))]
ServiceRequestReference = Annotated[
    str, StringConstraints(pattern=fhir_reference_pattern("ServiceRequest"))
]
EncounterReference = Annotated[str, StringConstraints(pattern=fhir_reference_pattern("Encounter"))]
ObservationReference = Annotated[
    str, StringConstraints(pattern=fhir_reference_pattern("Observation"))
]
DiagnosticReportReference = Annotated[
    str, StringConstraints(pattern=fhir_reference_pattern("DiagnosticReport"))
]
DeviceReference = Annotated[str, StringConstraints(pattern=fhir_reference_pattern("Device"))]
ProvenanceReference = Annotated[
    str, StringConstraints(pattern=fhir_reference_pattern("Provenance"))
]
CommunicationReference = Annotated[
    str, StringConstraints(pattern=fhir_reference_pattern("Communication"))
]
CommunicationRequestReference = Annotated[
    str, StringConstraints(pattern=fhir_reference_pattern("CommunicationRequest"))
]
TaskReference = Annotated[str, StringConstraints(pattern=fhir_reference_pattern("Task"))]
FlagReference = Annotated[str, StringConstraints(pattern=fhir_reference_pattern("Flag"))]
VerifierReference = Annotated[
    str, StringConstraints(pattern=fhir_reference_pattern("Practitioner", "PractitionerRole"))
]


class _Model(BaseModel):
    # NaN and Infinity are no JSON numbers (RFC 8259) and no measurement: pydantic reads them
    # from JSON text unless told not to, and they reached FHIR writes as such
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Event(_Model):
    """Base of every event: the envelope. Subclasses set `event_type` and `schema_version`."""

    event_type: ClassVar[str]
    schema_version: int
    message_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    correlation_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    causation_id: uuid.UUID | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def follow(self, event_class: type[EventT], **payload: Any) -> EventT:
        """A new event caused by this one, in the same study run (same correlation id)."""
        return event_class(
            correlation_id=self.correlation_id, causation_id=self.message_id, **payload
        )

    def to_json(self) -> bytes:
        """The message body as published."""
        return self.model_dump_json().encode()


class ModelRef(_Model):
    """One AI model of the registry, at one version, and which run of it on the study this is
    (`shared.identifiers.run_parts`: a retracted run is followed by the next generation)."""

    id: str
    version: str
    generation: int = Field(default=1, ge=1, le=1000)

    def run_value(self, study_instance_uid: str) -> str:
        """The run value of this model's run on the study (`study_run_value`)."""
        return study_run_value(study_instance_uid, self.id, self.version, self.generation)


class StudyRef(_Model):
    """The study a run is about: its DICOM identity and its FHIR records (references, not copies)."""

    study_instance_uid: DicomUid
    imaging_study: ImagingStudyReference | None = None  # on the FHIR server
    patient: PatientReference | None = None
    service_request: ServiceRequestReference | None = None  # the order the study is basedOn
    encounter: EncounterReference | None = None
    dicomweb_base_url: str | None = None  # from the ImagingStudy's dicom-wado-rs Endpoint
    # when the study was done (ImagingStudy.started, a FHIR dateTime): the results' effective
    started: FhirDateTime | None = None


class StudyDetected(Event):
    """subscriber → fetcher: a study is ready and these models apply to it."""

    event_type: ClassVar[str] = "study.detected"
    schema_version: Literal[1] = 1
    study: StudyRef
    models: tuple[ModelRef, ...]
    source: Literal["fhir-rest-hook", "pacs-stable-study", "hl7-order", "reconcile", "manual"]


class BlobInstance(_Model):
    """One stored DICOM instance in the blob store (claim check: pixels never ride the broker):
    `size_bytes` from `offset` of the blob `blob_key` (the fetcher writes a series' instances
    one after another into one blob; an instance alone in its blob is at offset 0)."""

    sop_instance_uid: DicomUid
    sop_class_uid: DicomUid
    instance_number: int | None = None
    blob_key: str
    offset: int = Field(default=0, ge=0)
    size_bytes: int = Field(ge=0)


class SeriesManifest(_Model):
    """One fetched series and where its instances are in the blob store."""

    series_instance_uid: DicomUid
    modality: str
    body_part_examined: str | None = None
    # Left empty by the fetcher (free text that may hold patient data); kept for older senders.
    series_description: str | None = None
    instances: tuple[BlobInstance, ...]


class StudyFetched(Event):
    """fetcher → inference: the series one model needs are in the blob store (one event per model)."""

    event_type: ClassVar[str] = "study.fetched"
    schema_version: Literal[1] = 1
    study: StudyRef
    model: ModelRef
    series: tuple[SeriesManifest, ...]
    fetch_duration_ms: float


# A finding's mask as the message carries it (base64 of zlib-compressed packed bits; a 60-slice
# 150×150 box of solid blood is ~1 KB): derived labels of a bounded box, not pixel data.
MAX_MASK_CHARACTERS = 1_000_000


class FindingMask(_Model):
    """The voxels of a finding as the model segmented them (services/mapper/segmentation.py
    stores them as a DICOM SEG): a box of the series volume and, for each of its slices, the
    SOP Instance UID of the image it is on."""

    # z0, y0, x0, z1, y1, x1: inclusive voxel indices of the volume (slices ordered by
    # position, as center_voxel)
    box: tuple[int, int, int, int, int, int]
    sop_instance_uids: tuple[DicomUid, ...] = Field(min_length=1, max_length=MAX_EVIDENCE_INSTANCES)
    # the box's voxels (1: inside the finding), C order (z, y, x), np.packbits → zlib → base64
    bits: str = Field(min_length=1, max_length=MAX_MASK_CHARACTERS)

    @model_validator(mode="after")
    def _fits(self) -> FindingMask:
        z0, y0, x0, z1, y1, x1 = self.box
        if min(self.box) < 0 or z1 < z0 or y1 < y0 or x1 < x0:
            raise ValueError("box must be z0, y0, x0, z1, y1, x1 with each end ≥ its start ≥ 0")
        if len(self.sop_instance_uids) != z1 - z0 + 1:
            raise ValueError("sop_instance_uids must name one image per slice of the box")
        try:
            unpack_mask(self.bits, box_shape(self.box))
        except ValueError as error:
            raise ValueError(str(error)) from None
        return self


class Finding(_Model):
    """One output of a model, decoded: the registry says how it becomes FHIR."""

    finding_key: str  # the registry's name for the output, e.g. "intracranial-hemorrhage"
    index: int = 0  # position among findings with the same key (deterministic identifiers)
    present: bool
    probability: float | None = None
    value: float | None = None
    unit: str | None = None
    # the finding's centre as (z, y, x) voxel indices of the series volume (slices ordered by
    # position, counted from the volume's first slice even when the model read fewer)
    center_voxel: tuple[float, float, float] | None = None
    # the same centre in the DICOM patient coordinate system (mm), in the series' frame of
    # reference: the SR's SCOORD3D point (none without one frame of reference to name)
    center_patient: tuple[float, float, float] | None = None
    frame_of_reference_uid: DicomUid | None = None
    series_instance_uid: DicomUid | None = None
    sop_instance_uids: tuple[DicomUid, ...] = ()
    # the Tracking UID of the finding's measurement group in the third-party SR it was read
    # from (None: radmesh's own SR names the group by a UID derived from the run)
    tracking_uid: DicomUid | None = None
    mask: FindingMask | None = None  # a present finding the model segmented


class EvidenceSeries(_Model):
    """Instances of one series and SOP class that a model read: the SR's evidence, as the
    fetcher's manifest names them (the mapper needs no per-instance metadata from the PACS)."""

    series_instance_uid: DicomUid
    sop_class_uid: DicomUid
    sop_instance_uids: tuple[DicomUid, ...] = Field(min_length=1, max_length=MAX_EVIDENCE_INSTANCES)


class InferenceCompleted(Event):
    """inference → mapper: what one model found in one study."""

    event_type: ClassVar[str] = "inference.completed"
    schema_version: Literal[1] = 1
    study: StudyRef
    model: ModelRef
    findings: tuple[Finding, ...]
    inference_duration_ms: float
    # What a reader of the results must know about the input the model read (lossy pixels,
    # slice gaps): the model's input_checks flag rather than refuse it (no patient data).
    input_notes: tuple[str, ...] = ()
    # What the model read (empty from senders before it existed: the mapper then reads the
    # series' metadata from the PACS instead).
    evidence: tuple[EvidenceSeries, ...] = Field(default=(), max_length=16)
    # The SOP Instance UID of the third-party SR these findings were read from
    # (services/mapper/imports.py): the Provenance names it, and no SR of radmesh's is written.
    source_report: DicomUid | None = None


class StructuredReportDetected(Event):
    """subscriber → mapper: the PACS holds an SR document of the study that radmesh did not
    write (its Manufacturer is not radmesh's); the mapper reads it and, when the registry
    imports the product that made it, maps its findings like a model's."""

    event_type: ClassVar[str] = "structured-report.detected"
    schema_version: Literal[1] = 1
    study: StudyRef
    series_instance_uid: DicomUid
    sop_instance_uid: DicomUid
    sop_class_uid: DicomUid


class PostedFinding(_Model):
    """A finding as written to the FHIR server."""

    finding_key: str
    index: int
    observation: ObservationReference
    present: bool
    probability: float | None = None
    critical: bool = False


class ResultsPosted(Event):
    """mapper → notifier, verification: the preliminary results are on the FHIR server."""

    event_type: ClassVar[str] = "results.posted"
    schema_version: Literal[1] = 1
    study: StudyRef
    model: ModelRef
    diagnostic_report: DiagnosticReportReference
    device: DeviceReference
    provenance: ProvenanceReference
    findings: tuple[PostedFinding, ...]
    rollout_mode: Literal["shadow", "preliminary", "active"]
    # The verification Task, when the mapper wrote it in the results' own transaction
    # (shared/verification_task.py); None: the verification service writes it.
    verification_task: TaskReference | None = None


class AlertRaised(Event):
    """notifier: a critical finding was sent to the ordering provider."""

    event_type: ClassVar[str] = "alert.raised"
    schema_version: Literal[1] = 1
    study: StudyRef
    diagnostic_report: DiagnosticReportReference
    communication: CommunicationReference
    communication_request: CommunicationRequestReference
    consult_service_request: ServiceRequestReference | None = None
    # The patient's Flag "open critical AI finding" (none when the study has no patient).
    flag: FlagReference | None = None


class AlertEscalationDue(Event):
    """notifier → itself, through a delay queue (a durable timer): the deadline of an alert's
    escalation step has come; unless the alert was acknowledged or withdrawn, it escalates."""

    event_type: ClassVar[str] = "alert.escalation-due"
    schema_version: Literal[1] = 1
    study: StudyRef
    model: ModelRef
    finding_key: str
    communication: CommunicationReference
    communication_request: CommunicationRequestReference
    step: int = Field(ge=1)  # 1-based, into the finding's registry escalation chain


class FindingVerified(Event):
    """verification: a radiologist accepted a report (or accepted it with an amended
    measurement); its results are final."""

    event_type: ClassVar[str] = "finding.verified"
    schema_version: Literal[1] = 1
    study: StudyRef
    task: TaskReference
    diagnostic_report: DiagnosticReportReference
    verifier: VerifierReference
    provenance: ProvenanceReference
    amended: bool = False


class FindingRejected(Event):
    """verification: a radiologist rejected a report; its results are cancelled or entered in
    error, and the alerts raised on it are to be withdrawn."""

    event_type: ClassVar[str] = "finding.rejected"
    schema_version: Literal[1] = 1
    study: StudyRef
    task: TaskReference
    diagnostic_report: DiagnosticReportReference
    verifier: VerifierReference
    reason: str  # the words, for people
    # The coded reason (services/verification/verdicts.py REJECT_REASONS); None from older senders.
    reason_code: str | None = None
    provenance: ProvenanceReference | None = None


class StudyRetracted(Event):
    """subscriber → verification: images of a study were deleted or rejected in the PACS, or
    its patient changed; the AI results made from them are to be retracted (shared.iocm)."""

    event_type: ClassVar[str] = "study.retracted"
    schema_version: Literal[1] = 1
    study: StudyRef
    # The series whose images changed; empty: the whole study.
    series_instance_uids: tuple[DicomUid, ...] = Field(default=(), max_length=1000)
    source: RetractionSource
    reason_code: IocmCode
    reason: str = Field(max_length=1000)  # the words, for people; no patient data


class ResultsRetracted(Event):
    """verification → notifier, mapper: one run's results were retracted (entered in error,
    its verification Task and claim cancelled); its alerts are to be withdrawn and its SR
    rejected in the PACS."""

    event_type: ClassVar[str] = "results.retracted"
    schema_version: Literal[1] = 1
    study: StudyRef
    diagnostic_report: DiagnosticReportReference
    task: TaskReference | None = None  # the verification Task
    provenance: ProvenanceReference | None = None
    source: RetractionSource
    reason_code: IocmCode
    reason: str = Field(max_length=1000)
    # Whether the run's SR can still be in the PACS (not when the whole study was deleted).
    sr_in_pacs: bool = True


EVENT_TYPES: dict[str, type[Event]] = {
    event_class.event_type: event_class
    for event_class in (
        StudyDetected,
        StudyFetched,
        InferenceCompleted,
        StructuredReportDetected,
        ResultsPosted,
        AlertRaised,
        AlertEscalationDue,
        FindingVerified,
        FindingRejected,
        StudyRetracted,
        ResultsRetracted,
    )
}


def validation_problems(error: ValidationError, *, limit: int = 5, root: str = "<body>") -> str:
    """The first problems of a pydantic error as `field.path: message` (never the input values,
    which can hold patient data)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in detail['loc']) or root}: {detail['msg']}"
        for detail in error.errors()[:limit]
    )


def parse_event(event_class: type[EventT], body: bytes) -> EventT:
    """Validate a message body against its event model; raise InvalidMessage saying what is wrong."""
    try:
        return event_class.model_validate_json(body)
    except ValidationError as error:
        problems = validation_problems(error)
        raise InvalidMessage(f"{event_class.event_type} message is invalid: {problems}") from error
