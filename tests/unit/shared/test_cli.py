"""The radmesh command: a service refuses to start on an invalid registry; registry check says why."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shared.cli import main

ROOT = Path(__file__).resolve().parents[3]


def test_service_refuses_to_start_with_an_invalid_registry(tmp_path: Path) -> None:
    """`radmesh run fetcher` with a registry missing required fields exits 2 naming them,
    before it connects to anything."""
    registry = tmp_path / "models.yaml"
    registry.write_text("models:\n  - id: ich-reference\n")
    completed = subprocess.run(
        [sys.executable, "-m", "shared.cli", "run", "fetcher"],
        cwd=ROOT,
        env={"RADMESH_REGISTRY_PATH": str(registry), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert "radmesh will not start" in completed.stderr
    assert "models.0.rollout: Field required" in completed.stderr


def test_production_refuses_the_development_secrets_and_names_them() -> None:
    """`radmesh run verification` with RADMESH_ENVIRONMENT=production, the development
    identity provider and PACS password exits 2 naming both settings, before it connects to
    anything."""
    completed = subprocess.run(
        [sys.executable, "-m", "shared.cli", "run", "verification"],
        cwd=ROOT,
        env={"RADMESH_ENVIRONMENT": "production", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert "RADMESH_OIDC__ISSUER" in completed.stderr
    assert "RADMESH_DICOMWEB__PASSWORD" in completed.stderr
    assert "radmesh-dev" not in completed.stderr  # names the settings, never the values


def test_registry_check_lists_the_models_or_the_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0 with the models of the shipped registry; exit 1 with the problems of a bad one."""
    assert main(["registry", "check", str(ROOT / "registry" / "models.yaml")]) == 0
    assert "ich-reference 1  rollout=active" in capsys.readouterr().out
    bad = tmp_path / "models.yaml"
    bad.write_text("models: []\nextra: 1\n")
    assert main(["registry", "check", str(bad)]) == 1
    assert "extra: Extra inputs are not permitted" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_probe_says_whether_the_service_named_by_radmesh_service_is_ready(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`radmesh probe` (the image's health check) reads the service from RADMESH_SERVICE and
    its port from that service's settings: 0 while /readyz answers 200, 1 on a 503 or when
    nothing listens, each saying which; no service at all is a usage error."""
    port = _free_port()
    monkeypatch.setenv("RADMESH_SERVICE", "mapper")
    monkeypatch.setenv("RADMESH_MAPPER_PORT", str(port))
    assert main(["probe"]) == 1
    assert "mapper not answering" in capsys.readouterr().err
    status = {"code": 200}

    class Readyz(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the name http.server calls
            self.send_response(status["code"] if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None  # the test's output stays quiet

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Readyz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert main(["probe"]) == 0
        assert "mapper ready" in capsys.readouterr().out
        status["code"] = 503
        assert main(["probe"]) == 1
        assert "answered 503" in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()
    monkeypatch.delenv("RADMESH_SERVICE")
    with pytest.raises(SystemExit) as usage:
        main(["probe"])
    assert usage.value.code == 2
    assert "set RADMESH_SERVICE" in capsys.readouterr().err
