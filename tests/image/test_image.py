"""The container image `make image` builds (deploy/image/build.sh, podman, no Docker engine): one
service started from it becomes ready against the local broker, passes the image's own health
check (`radmesh probe`), runs as the unprivileged user 10001 and exits 0 on SIGTERM.

The fetcher runs on the host's network with a port (8191) and queues (`radmesh.image-test-…`)
of its own, so neither `make mesh-up`'s services nor another test's mesh are disturbed; its
queues and exchange are deleted afterwards. Run by `make image-test` (not by `make test`)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tomllib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import aiohttp
import pytest
from aio_pika.exceptions import AMQPError

from tests.broker_objects import delete_broker_objects
from tests.conftest import Infrastructure
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.image]

ROOT = Path(__file__).resolve().parents[2]
PODMAN = ROOT / "deploy" / "image" / "podman.sh"  # podman with the project's storage and settings
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"localhost/radmesh:{VERSION}"
SERVICE = "fetcher"
PORT = 8191  # not the mesh's 8090-8095
READY_SECONDS = 60.0
STOP_SECONDS = 30  # podman stop's grace period before SIGKILL (which would exit 137)


def podman(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(PODMAN), *arguments],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def inspect(container: str, template: str) -> str:
    result = podman("inspect", "--format", template, container)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def logs(container: str, lines: int = 40) -> str:
    result = podman("logs", "--tail", str(lines), container)
    return (result.stdout + result.stderr).strip()


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
async def container(infra: Infrastructure) -> AsyncIterator[str]:
    """The fetcher started from the image (detached, host network); removed afterwards."""
    if podman("image", "exists", IMAGE).returncode != 0:
        pytest.fail(
            f"image {IMAGE} not built: run `make image` (deploy/image/build.sh) first "
            "(`make image-test` does both)"
        )
    try:
        connection = await aio_pika.connect(infra.amqp_url, timeout=5)
    except (OSError, TimeoutError, AMQPError) as error:
        pytest.fail(f"RabbitMQ does not answer at 127.0.0.1 ({error}): run `make infra-up`")
    await connection.close()
    if not port_free(PORT):
        pytest.fail(f"port {PORT} is taken: stop what listens there (the test's fetcher needs it)")
    tag = uuid.uuid4().hex[:8]
    name = f"radmesh-image-test-{tag}"
    prefix = f"radmesh.image-test-{tag}"
    user, password = infra.orthanc_auth
    settings = {
        "RADMESH_SERVICE": SERVICE,
        "RADMESH_FETCHER_PORT": str(PORT),
        "RADMESH_BROKER__URL": infra.amqp_url,
        "RADMESH_BROKER__EXCHANGE": prefix,
        "RADMESH_BROKER__QUEUE_PREFIX": prefix,
        "RADMESH_DICOMWEB__BASE_URL": infra.orthanc_dicomweb_url,
        "RADMESH_DICOMWEB__USERNAME": user,
        "RADMESH_DICOMWEB__PASSWORD": password,
    }
    # `-e NAME` takes the value from podman's environment: no password on a command line.
    flags = [flag for variable in settings for flag in ("-e", variable)]
    started = podman(
        "run", "-d", "--name", name, "--network=host", *flags, IMAGE,
        env={**os.environ, **settings},
    )  # fmt: skip
    assert started.returncode == 0, f"podman run failed: {started.stderr}"
    try:
        yield name
    finally:
        podman("rm", "--force", "--time", "0", name)
        await delete_broker_objects(infra.amqp_url, prefix)


async def test_a_service_from_the_image_is_ready_healthy_unprivileged_and_stops_cleanly(
    container: str,
) -> None:
    url = f"http://127.0.0.1:{PORT}/readyz"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:

        async def ready() -> bool:
            if inspect(container, "{{.State.Running}}") != "true":
                pytest.fail(f"the container exited before it was ready:\n{logs(container)}")
            try:
                async with http.get(url) as response:
                    return response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False  # not listening yet

        try:
            await until(ready, f"{SERVICE} in {IMAGE} answers {url}", READY_SECONDS)
        except pytest.fail.Exception as failed:
            pytest.fail(f"{failed}\n{logs(container)}")
        async with http.get(url) as response:
            assert await response.json() == {"status": "ready", "service": SERVICE}

    # The image runs as radmesh (10001:10001), never root: the configuration and the process.
    assert inspect(container, "{{.Config.User}}") == "10001:10001"
    uid = podman("exec", container, "id", "-u")
    assert uid.stdout.strip() == "10001", uid.stderr

    # The image's HEALTHCHECK (`radmesh probe`, the service's own /readyz on loopback).
    assert json.loads(inspect(container, "{{json .Config.Healthcheck.Test}}")) == [
        "CMD",
        "radmesh",
        "probe",
    ]
    health = podman("healthcheck", "run", container)
    assert health.returncode == 0, f"health check failed: {health.stdout}{health.stderr}"
    assert inspect(container, "{{.State.Health.Status}}") == "healthy"
    probe = podman("exec", container, "radmesh", "probe")
    assert probe.returncode == 0 and f"{SERVICE} ready" in probe.stdout, probe.stderr

    # SIGTERM (the image's STOPSIGNAL): the service stops consuming and exits 0, well within
    # the grace period (a SIGKILL after it would be exit code 137).
    assert inspect(container, "{{.Config.StopSignal}}") in ("15", "SIGTERM")
    stopped = podman("stop", "--time", str(STOP_SECONDS), container)
    assert stopped.returncode == 0, stopped.stderr
    assert inspect(container, "{{.State.Status}}") == "exited"
    exit_code = inspect(container, "{{.State.ExitCode}}")
    assert exit_code == "0", f"exit code {exit_code} on SIGTERM:\n{logs(container)}"
    assert '"event": "service_stopped"' in logs(container), logs(container)
