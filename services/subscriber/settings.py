"""The subscriber's own settings (prefix RADMESH_SUBSCRIBER_)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class SubscriberSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RADMESH_SUBSCRIBER_", extra="ignore", frozen=True)

    port: int = 8090
    # HL7 v2 orders (ORM^O01, OMI^O23) over MLLP, on `host` (hl7_orders.py); 0 turns it off.
    mllp_port: int = Field(default=2575, ge=0, le=65535)
    # The address the FHIR server calls back (the Subscription's channel.endpoint is
    # `{public_url}/fhir`); the PACS calls `{public_url}/pacs/stable-study`.
    public_url: str = "http://127.0.0.1:8090"
    # Sent by the FHIR server as `Authorization: Bearer <secret>` (the Subscription's channel.header).
    hook_secret: SecretStr = SecretStr("radmesh-dev-hook-secret")
    # Key of the PACS webhook's HMAC-SHA256 signature (header X-Radmesh-Signature: sha256=<hex>).
    pacs_hook_secret: SecretStr = SecretStr("radmesh-dev-pacs-secret")
    # A signed PACS event emitted longer ago than this is refused (401), as is an event id seen
    # within it (409): a captured request cannot be replayed.
    pacs_hook_max_age_seconds: float = 300.0
    subscription_criteria: str = "ImagingStudy?status=available"
    # The Subscription asked for (subscription.py): `auto` takes a Subscriptions Backport IG
    # topic-based one when the server advertises the IG and this topic, else an R4 criteria one.
    subscription_kind: Literal["auto", "topic", "criteria"] = "auto"
    subscription_topic: str = "http://radmesh.org/fhir/SubscriptionTopic/imaging-study-available"
    # A study announced by this replica is not announced again for this long while its run is in
    # flight (the FHIR hook and the PACS stable event usually both arrive for one new study).
    # Across replicas a duplicate run is still harmless: every write is idempotent.
    reannounce_after_seconds: float = 600.0
    # On start, look for available studies updated in the last hours (those that arrived while
    # no subscriber was listening); 0 turns the start-up reconciliation off.
    reconcile_hours: float = 24.0
    # Then, while running, look this often for available studies updated since the last look
    # (what a lost hook would have announced); claimed or finished runs are skipped. 0: off.
    reconcile_interval_seconds: float = 300.0
    # At each sweep, a run claimed longer ago than this and not finished is announced again
    # (stale_claims.py), at most `redrive_claims_attempts` times before its claim is `failed`.
    # 0: off (the development scripts: the shared FHIR server holds the tests' old claims).
    redrive_claims_after_minutes: float = Field(default=30.0, ge=0)
    redrive_claims_attempts: int = Field(default=3, ge=1)
    # This often, a run claimed longer ago than this and never announced (its claim still
    # `ready`: the subscriber stopped between the claim and the publish) is announced. 0: off.
    unannounced_claims_after_seconds: float = Field(default=60.0, ge=0)
    ensure_subscription: bool = True
    # Claim each model's run on the FHIR server (a Task with a unique identifier) before
    # announcing it, so that hooks, notifications, sweeps and replicas start one run together.
    claim_runs: bool = True
    # How long start-up waits for the FHIR server to activate the Subscription (HAPI does so
    # asynchronously, within a second or two, and delivers nothing before).
    subscription_activation_seconds: float = 30.0
    # How long start-up keeps asking a FHIR server that is down or slow (a HAPI just booted
    # answers its first Subscription after several seconds) before the subscriber gives up and
    # exits saying why; each try is logged.
    subscription_startup_seconds: float = Field(default=120.0, ge=0)
