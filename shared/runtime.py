"""How every service runs: its HTTP server (health, readiness, its own routes), its lifetime, and
a clean stop on SIGTERM/SIGINT.

A service's `app.py` builds a `ServiceApp` (wiring only); its `__main__.py` configures logging and
tracing and calls `run_service`. `/healthz` answers 200 while the process runs; `/readyz` answers
200 while the broker answers and every server the service requires takes a connection
(shared/readiness.py), 503 naming what is unreachable otherwise (messages keep being taken:
what fails on an unreachable server is retried per message); `/metrics` serves the Prometheus
metrics (shared/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import ValidationError

from shared.bus import Bus
from shared.errors import ConfigurationError
from shared.metrics import METRICS_CONTENT_TYPE, exposition
from shared.operation_outcome import outcome_response
from shared.readiness import Dependency, unreachable
from shared.settings import RadmeshSettings, ServiceSettings
from shared.telemetry import configure_logging, configure_tracing

__all__ = [
    "Periodic",
    "ServiceApp",
    "bus_service",
    "run_service",
    "service_main",
    "start_http",
]

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)

log = structlog.get_logger(__name__)


@dataclass
class ServiceApp:
    """What a service's app.py hands to the runtime."""

    name: str
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]
    # what keeps the service from being ready (the broker, a required server); empty: ready
    unready: Callable[[], Awaitable[Sequence[str]]]
    routes: Sequence[web.RouteDef] = field(default_factory=list)
    middlewares: Sequence[Middleware] = field(default_factory=list)


class Periodic:
    """A background job of a service: `step` on start, then every `interval_seconds`, until
    stop. A failure it is told to tolerate is logged (`failure_event`) and the next round
    comes; any other ends the job, logged as a bug. An interval of 0 never starts it."""

    def __init__(
        self,
        step: Callable[[], Awaitable[object]],
        interval_seconds: float,
        failure_event: str,
        tolerated: tuple[type[Exception], ...] = (Exception,),
    ) -> None:
        self.step = step
        self.interval_seconds = interval_seconds
        self.failure_event = failure_event
        self.tolerated = tolerated
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.step()
            except self.tolerated as error:
                log.error(self.failure_event, error=str(error)[:300])
            await asyncio.sleep(self.interval_seconds)

    async def start(self) -> None:
        if self.interval_seconds > 0:
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def bus_service(
    name: str,
    bus: Bus,
    *,
    on_start: Sequence[Callable[[], Awaitable[object]]] = (),
    close: Sequence[Callable[[], Awaitable[None]]] = (),
    routes: Sequence[web.RouteDef] = (),
    middlewares: Sequence[Middleware] = (),
    requires: Sequence[Dependency] = (),
) -> ServiceApp:
    """The ServiceApp of a service built around its bus: start connects and declares the queues
    of what it consumes, then runs `on_start`; stop closes the bus, then `close`; it is ready
    while the broker answers a ping and each server it `requires` takes a connection."""

    async def start() -> None:
        await bus.start()
        await bus.declare()
        for step in on_start:
            await step()

    async def stop() -> None:
        await bus.stop()
        for closer in close:
            await closer()

    async def unready() -> list[str]:
        broker, servers = await asyncio.gather(bus.broker.ping(timeout=2.0), unreachable(requires))
        return ([] if broker else ["the broker"]) + servers

    return ServiceApp(
        name=name,
        start=start,
        stop=stop,
        unready=unready,
        routes=list(routes),
        middlewares=list(middlewares),
    )


_ISSUE_CODES = {
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    413: "too-long",
}


@web.middleware
async def _operation_outcomes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is a FHIR OperationOutcome: aiohttp's own (unknown route, wrong method,
    body too large) and an unexpected exception (500, logged with its traceback)."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return outcome_response(
            error.status,
            _ISSUE_CODES.get(error.status, "invalid"),
            f"{error.reason}: {request.method} {request.path}",
        )
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path)
        return outcome_response(500, "exception", "internal error; see the service's log")


def _http_application(app: ServiceApp) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": app.name})

    async def readyz(_request: web.Request) -> web.Response:
        unready = list(await app.unready())
        if not unready:
            return web.json_response({"status": "ready", "service": app.name})
        return web.json_response(
            {"status": "not ready", "service": app.name, "unreachable": unready}, status=503
        )

    application = web.Application(
        middlewares=[_operation_outcomes, *app.middlewares],
        client_max_size=64 << 20,
    )

    async def metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=exposition())
        response.headers["Content-Type"] = METRICS_CONTENT_TYPE
        return response

    application.add_routes(
        [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics)]
    )
    application.add_routes(list(app.routes))
    return application


async def start_http(app: ServiceApp, host: str, port: int) -> web.AppRunner:
    """Serve the service's HTTP routes (plus health) on host:port; returns the runner to clean up."""
    runner = web.AppRunner(_http_application(app), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run_service(app: ServiceApp, host: str, port: int) -> None:
    """Start the service and its HTTP server, run until SIGTERM/SIGINT, then stop both."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    started = loop.time()
    await app.start()
    runner = await start_http(app, host, port)
    log.info(
        "service_started",
        http=f"http://{host}:{port}",
        startup_ms=round((loop.time() - started) * 1000, 1),
    )
    try:
        await stopping.wait()
    finally:
        log.info("service_stopping")
        await runner.cleanup()
        await app.stop()
        log.info("service_stopped")


def service_main(
    name: str,
    build_app: Callable[[RadmeshSettings, SettingsT], ServiceApp],
    settings_class: type[SettingsT],
) -> None:
    """The body of every `services/<name>/__main__.py`: settings once, logging, tracing, run.
    Invalid settings or an invalid model registry stop the service before it consumes anything,
    with the problems listed and exit status 2."""
    try:
        settings = RadmeshSettings()
        own = settings_class()
    except ValidationError as error:
        print(f"radmesh {name}: invalid settings, not starting:\n{error}", file=sys.stderr)
        raise SystemExit(2) from error
    development = settings.development_secrets() + own.development_secrets()
    if settings.environment != "development" and development:
        print(
            f"radmesh {name}: RADMESH_ENVIRONMENT={settings.environment} but these secrets are "
            f"still the development defaults, not starting: {', '.join(development)}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    configure_logging(name, settings.telemetry)
    provider = configure_tracing(name, settings.telemetry)
    try:
        app = build_app(settings, own)
    except ConfigurationError as error:
        log.error("service_not_started", reason=str(error))
        print(f"radmesh {name}: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    try:
        asyncio.run(run_service(app, own.host, own.port))
    finally:
        provider.shutdown()  # flush the last spans
