"""Test-wide fixtures: where the local infrastructure answers (ports from the same env vars as deploy/lib.sh)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.settings import TelemetrySettings
from shared.telemetry import configure_tracing

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Infrastructure:
    """Addresses of the servers `make infra-up` starts (see deploy/lib.sh for the defaults)."""

    amqp_url: str
    orthanc_url: str
    orthanc_dicomweb_url: str
    orthanc_auth: tuple[str, str]
    orthanc_dicom_port: int
    pacs_hook_url: str
    pacs_hook_secret: str
    fhir_base_url: str  # open: the tests' own view of the FHIR server
    fhir_smart_base_url: str  # the same server, SMART Backend Services tokens required
    smart_key_dir: Path  # the radmesh-services client's key pair (and a wrong one)
    triton_http_url: str
    triton_grpc_address: str
    oidc_issuer: str  # the development Keycloak's realm radmesh


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@pytest.fixture(scope="session")
def infra() -> Infrastructure:
    """The infrastructure's addresses; integration tests probe their own server before use."""
    orthanc_port = _env("RADMESH_ORTHANC_HTTP_PORT", "8042")
    orthanc_url = f"http://127.0.0.1:{orthanc_port}"
    return Infrastructure(
        amqp_url=f"amqp://guest:guest@127.0.0.1:{_env('RADMESH_RABBITMQ_PORT', '5672')}/",
        orthanc_url=orthanc_url,
        orthanc_dicomweb_url=f"{orthanc_url}/dicom-web",
        orthanc_auth=(
            _env("RADMESH_ORTHANC_USER", "radmesh"),
            _env("RADMESH_ORTHANC_PASSWORD", "radmesh-dev"),
        ),
        orthanc_dicom_port=int(_env("RADMESH_ORTHANC_DICOM_PORT", "4242")),
        pacs_hook_url=_env("RADMESH_PACS_HOOK_URL", "http://127.0.0.1:8090/pacs/stable-study"),
        pacs_hook_secret=_env("RADMESH_PACS_HOOK_SECRET", "radmesh-dev-pacs-secret"),
        fhir_base_url=f"http://127.0.0.1:{_env('RADMESH_FHIR_PORT', '8080')}/fhir",
        fhir_smart_base_url=f"http://127.0.0.1:{_env('RADMESH_FHIR_SMART_PORT', '8081')}/fhir",
        smart_key_dir=Path(_env("RADMESH_RUN_DIR", str(ROOT / ".run"))) / "keycloak" / "smart",
        triton_http_url=f"http://127.0.0.1:{_env('RADMESH_TRITON_HTTP_PORT', '8000')}",
        triton_grpc_address=f"127.0.0.1:{_env('RADMESH_TRITON_GRPC_PORT', '8001')}",
        oidc_issuer=f"http://127.0.0.1:{_env('RADMESH_KEYCLOAK_PORT', '8180')}/realms/radmesh",
    )


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """This process's tracer provider, exporting to memory (OpenTelemetry allows one per process)."""
    exporter = InMemorySpanExporter()
    configure_tracing("tests", TelemetrySettings(), exporter=exporter)
    return exporter
