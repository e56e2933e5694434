"""Typed settings shared by every service, read once at start-up from the environment.

Variables use the prefix `RADMESH_` and `__` between nesting levels, e.g.
`RADMESH_BROKER__URL`, `RADMESH_FHIR__BEARER_TOKEN`, `RADMESH_DICOMWEB__PASSWORD`.
The defaults point at the local infrastructure that `make infra-up` starts.
A service's own settings live in `services/<service>/settings.py` (prefix `RADMESH_<SERVICE>_`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "BrokerSettings",
    "DicomWebSettings",
    "FhirSettings",
    "OidcSettings",
    "RadmeshSettings",
    "ServiceSettings",
    "SmartBackendSettings",
    "StorageSettings",
    "TelemetrySettings",
]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BrokerSettings(_Section):
    """RabbitMQ: where it is, and the retry/dead-letter policy of every service queue."""

    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    exchange: str = "radmesh"
    dead_letter_exchange: str = "radmesh.dead-letter"
    # Each service's queues are `<queue_prefix>.<service>` (and `….dead-letter`, `….delay.<ms>`):
    # another prefix gives a mesh queues of its own on a shared broker (the tests' meshes).
    queue_prefix: str = Field(default="radmesh", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
    retry_delays_seconds: tuple[float, ...] = Field(default=(1.0, 5.0, 25.0, 120.0))
    delivery_limit: int = Field(default=10, ge=1)
    prefetch_count: int = Field(default=4, ge=1)
    # A publish not confirmed in this time fails as BrokerUnavailable (retried by the caller).
    publish_timeout_seconds: float = Field(default=10.0, gt=0)
    # On SIGTERM a service stops taking messages and waits this long for those it is handling;
    # what is still unfinished then goes back to its queue unacknowledged (redelivered, and
    # every stage is idempotent). Keep it below the orchestrator's grace period (k8s: 60 s).
    graceful_stop_seconds: float = Field(default=30.0, gt=0)
    # This often a consuming service reads the depth of its own queues (work, retry delays,
    # dead letters) into the radmesh_queue_depth gauge (0: never).
    depth_interval_seconds: float = Field(default=15.0, ge=0)


class SmartBackendSettings(_Section):
    """SMART Backend Services (shared/smart_auth.py): OAuth 2.0 client credentials with a JWT
    assertion signed by the client's private key, for every call to the FHIR server."""

    client_id: str
    # The private key (PEM, RSA for RS384 or EC P-384 for ES384): a file, or the key itself
    # (from a secret).
    private_key_file: Path | None = None
    private_key: SecretStr | None = None
    algorithm: Literal["RS384", "ES384"] = "RS384"
    key_id: str | None = None  # the `kid` of the key in the client's JWKS, if it has one
    # None: the FHIR server's /.well-known/smart-configuration names it.
    token_url: str | None = None
    scopes: str = "system/*.rs system/*.cruds"
    refresh_before_seconds: float = Field(default=60.0, ge=0)
    failure_backoff_seconds: float = Field(default=30.0, gt=0)


class FhirSettings(_Section):
    """The FHIR R4 server radmesh reads studies from and writes results to."""

    base_url: str = "http://127.0.0.1:8080/fhir"
    bearer_token: SecretStr | None = None  # a static token; `smart` gets them instead
    smart: SmartBackendSettings | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    # A PEM bundle of the certificate authorities to trust for https:// (the site's own CA);
    # None: the system's.
    ca_bundle: Path | None = None


class DicomWebSettings(_Section):
    """The PACS's DICOMweb root (QIDO-RS, WADO-RS, STOW-RS)."""

    base_url: str = "http://127.0.0.1:8042/dicom-web"
    username: str | None = "radmesh"
    password: SecretStr | None = SecretStr("radmesh-dev")
    timeout_seconds: float = Field(default=60.0, gt=0)
    ca_bundle: Path | None = None  # PEM bundle of CAs to trust for https://; None: the system's


class OidcSettings(_Section):
    """The identity provider whose access tokens radmesh's HTTP APIs accept
    (`RADMESH_OIDC__ISSUER`, `RADMESH_OIDC__AUDIENCE`, ...)."""

    issuer: str = "http://127.0.0.1:8180/realms/radmesh"
    audience: str = "radmesh"
    # None: the `jwks_uri` of the issuer's discovery document (<issuer>/.well-known/openid-configuration)
    jwks_url: str | None = None
    roles_claim: str = "realm_access.roles"  # a dotted path into the token's claims
    # A claim naming the user's FHIR resource (SMART's `fhirUser`, e.g. "Practitioner/123").
    fhir_user_claim: str = "fhirUser"
    algorithms: tuple[str, ...] = ("RS256", "PS256", "ES256")
    leeway_seconds: float = Field(default=10.0, ge=0)  # clock skew allowed on exp/iat/nbf
    # An unknown key id fetches the JWKS again, but not more often than this.
    jwks_refetch_seconds: float = Field(default=30.0, ge=0)
    timeout_seconds: float = Field(default=5.0, gt=0)
    # The public client the review page signs in with (authorization code + PKCE).
    page_client_id: str = "radmesh-review"


class StorageSettings(_Section):
    """The blob store for pixel data (claim check): a directory, a shared volume in Kubernetes."""

    blob_dir: Path = Path(".run/blobs")
    # Pixels (full DICOM, patient data included) of a run are deleted this long after its last
    # file was written; a message for a swept run fails with the reason (replay study.detected).
    retention_minutes: float = Field(default=60.0, gt=0)
    # How often the fetcher sweeps the store.
    sweep_interval_seconds: float = Field(default=300.0, gt=0)


class TelemetrySettings(_Section):
    """Logs and traces."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    otlp_endpoint: str | None = None  # e.g. http://127.0.0.1:4318/v1/traces; None: no export


class AlertLinkSettings(_Section):
    """Signed acknowledgement links in critical alerts (shared/alert_links.py): where the
    verification service answers them (None: alerts carry no link), the key the notifier and
    the verification service share, and how long a link stays valid."""

    base_url: str | None = "http://127.0.0.1:8095"
    secret: SecretStr = SecretStr("radmesh-dev-alert-link-secret")
    valid_hours: float = Field(default=24.0, gt=0, le=24 * 14)


class RadmeshSettings(BaseSettings):
    """Everything a service needs from its environment, validated once."""

    model_config = SettingsConfigDict(
        env_prefix="RADMESH_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    broker: BrokerSettings = BrokerSettings()
    fhir: FhirSettings = FhirSettings()
    dicomweb: DicomWebSettings = DicomWebSettings()
    storage: StorageSettings = StorageSettings()
    oidc: OidcSettings = OidcSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    alert_links: AlertLinkSettings = AlertLinkSettings()
    registry_path: Path = Path("registry/models.yaml")
    # Anything but `development` refuses to start with a secret still at its development
    # default (`RADMESH_ENVIRONMENT=production`).
    environment: Literal["development", "production"] = "development"

    def development_secrets(self) -> list[str]:
        """The shared settings still at a development default that must not reach production:
        the PACS password, the development identity provider (whose accounts and passwords are
        public), and the alert links' signing key."""
        found = []
        default = DicomWebSettings().password
        password = self.dicomweb.password
        if (
            default is not None
            and password is not None
            and password.get_secret_value() == default.get_secret_value()
        ):
            found.append("RADMESH_DICOMWEB__PASSWORD")
        if self.oidc.issuer == OidcSettings().issuer:
            found.append("RADMESH_OIDC__ISSUER")
        link_secret = AlertLinkSettings().secret.get_secret_value()
        if self.alert_links.secret.get_secret_value() == link_secret:
            found.append("RADMESH_ALERT_LINKS__SECRET")
        return found


class ServiceSettings(BaseSettings):
    """Base of a service's own settings: where its HTTP server (health, routes) listens.
    Each service subclasses it with its own prefix, e.g. `RADMESH_FETCHER_PORT`."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int

    def development_secrets(self) -> list[str]:
        """This service's secret settings still at their development defaults (by env name)."""
        prefix = str(self.model_config.get("env_prefix", ""))
        found = []
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if (
                isinstance(value, SecretStr)
                and isinstance(info.default, SecretStr)
                and value.get_secret_value() == info.default.get_secret_value()
            ):
                found.append(f"{prefix}{name.upper()}")
        return found
