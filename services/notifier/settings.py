"""The notifier's own settings (prefix RADMESH_NOTIFIER_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RADMESH_NOTIFIER_", extra="ignore", frozen=True)

    port: int = 8094
    # Who receives a critical alert when the study's ServiceRequest names no requester, e.g.
    # "PractitionerRole/<on-call radiologist>" or "Organization/<radiology department>". Unset:
    # the alert is still written, without recipient, and a warning is logged (see handlers.py).
    fallback_recipient: str | None = Field(
        default=None,
        pattern=r"^(Practitioner|PractitionerRole|Organization|CareTeam|HealthcareService)/[A-Za-z0-9\-.]{1,64}$",
    )
    # HL7 v2 results out (services/notifier/hl7_results.py): an ORU^R01 per report state to
    # this MLLP receiver (an EHR's interface engine); unset: none is sent.
    hl7_results_host: str | None = None
    hl7_results_port: int = Field(default=2575, ge=1, le=65535)
    hl7_results_timeout_seconds: float = Field(default=10.0, gt=0)
    hl7_receiving_application: str = Field(default="EHR", max_length=180)  # MSH-5
    hl7_receiving_facility: str = Field(default="", max_length=180)  # MSH-6
    hl7_sending_facility: str = Field(default="RADIOLOGY", max_length=180)  # MSH-4
