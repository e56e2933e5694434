"""The `radmesh` command: operations on a running mesh.

radmesh registry check [PATH]        validate the model registry (exit 1 listing every problem)
radmesh status                       queue depths, consumers and dead letters per service; each
                                     service's messages, handler time and remote failures
radmesh dlq list SERVICE             the dead letters of a service, with their reasons
radmesh dlq replay SERVICE [--limit N]   send them back to that service's queue
radmesh route STUDY_UID              which models read which series of a study in the PACS, and why not
radmesh rerun STUDY_UID --reason TEXT   retract a study's AI results and analyse it again
radmesh dev-token ACCOUNT            an access token of a development account (last line)
radmesh report alerts [--hours H] [--plot PATH]   critical alerts: time to acknowledge, escalations
radmesh probe [SERVICE]              exit 0 if the service here answers /readyz (a container's health check)

`run` and `probe` take the service from RADMESH_SERVICE when it is not named (the container image).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import runpy
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.alert_report import collect_alerts, plot_alerts, summarise, summary_text
from shared.auth import IdentityProviderUnavailable, Unauthenticated, development_token
from shared.dead_letters import SERVICES, list_dead_letters, queue_status, replay
from shared.dicomweb import DicomWebClient
from shared.errors import ConfigurationError, RadmeshError
from shared.fhir import FhirClient
from shared.identifiers import is_dicom_uid
from shared.registry import ImportedAlgorithm, ModelEntry, load_registry
from shared.routing import route_lines, study_series
from shared.service_status import read_summary, summary_line
from shared.settings import RadmeshSettings, ServiceSettings

__all__ = ["main"]

ALL_SERVICES = ("subscriber", *SERVICES)


def _registry_check(settings: RadmeshSettings, path: Path | None) -> int:
    registry_path = path or settings.registry_path
    try:
        registry = load_registry(registry_path)
    except ConfigurationError as error:
        print(error, file=sys.stderr)
        return 1
    print(
        f"{registry_path}: {len(registry.models)} models and "
        f"{len(registry.imports)} imported products valid"
    )
    for entry in (*registry.models, *registry.imports):
        approval = entry.approval.approved_on.isoformat() if entry.approval else "unapproved"
        findings = ", ".join(finding.key for finding in entry.findings)
        print(f"  {entry.id} {entry.version}  rollout={entry.rollout}  approved={approval}")
        if isinstance(entry, ModelEntry):
            where = f"endpoint {entry.endpoint.url} ({entry.endpoint.model_name})"
        elif isinstance(entry, ImportedAlgorithm):
            identity = entry.recognised_by
            where = (
                f"imported from SRs by {identity.manufacturer} {identity.manufacturer_model_name}"
            )
        print(f"    {where}; findings: {findings}")
    return 0


def _status(settings: RadmeshSettings) -> int:
    statuses = asyncio.run(
        queue_status(
            settings.broker.url,
            retry_delays_seconds=settings.broker.retry_delays_seconds,
            prefix=settings.broker.queue_prefix,
        )
    )
    print(f"{'queue':40} {'messages':>9} {'consumers':>9} {'oldest':>10}")
    for status in statuses:
        messages = "-" if status.messages is None else str(status.messages)
        consumers = "-" if status.consumers is None else str(status.consumers)
        oldest = "-" if status.oldest_seconds is None else f"{status.oldest_seconds:.0f} s"
        print(f"{status.queue:40} {messages:>9} {consumers:>9} {oldest:>10}")
    dead = sum(status.messages or 0 for status in statuses if status.queue.endswith("dead-letter"))
    waiting = sum(status.messages or 0 for status in statuses if ".delay." in status.queue)
    print(f"waiting for a retry: {waiting}")
    print(f"dead letters: {dead}" + ("  (radmesh dlq list SERVICE)" if dead else ""))
    print(
        f"\n{'service':14} {'handled':>8} {'retried':>8} {'dead':>6} {'p90':>9} {'remote✗':>8}"
        "   (since each started; its /metrics on this host)"
    )
    for service in ALL_SERVICES:
        port = _service_settings_class(service)().port
        print(summary_line(read_summary(service, port)))
    return 0


def _dlq_list(settings: RadmeshSettings, service: str) -> int:
    letters = asyncio.run(
        list_dead_letters(settings.broker.url, service, prefix=settings.broker.queue_prefix)
    )
    if not letters:
        print(f"no dead letters for {service}")
    for letter in letters:
        print(
            f"{letter.dead_lettered_at or '?'}  {letter.routing_key}  message {letter.message_id}  "
            f"run {letter.correlation_id}  attempts {letter.attempts}  {letter.error_type}\n"
            f"    reason: {letter.reason}"
        )
    return 0


def _dlq_replay(settings: RadmeshSettings, service: str, limit: int | None) -> int:
    count = asyncio.run(replay(settings.broker.url, service, limit, settings.broker.queue_prefix))
    print(f"replayed {count} dead letters to {settings.broker.queue_prefix}.{service}")
    return 0


async def _report_alerts(settings: RadmeshSettings, hours: float, plot: Path) -> int:
    since = datetime.now(UTC) - timedelta(hours=hours)
    fhir = FhirClient(settings.fhir)
    try:
        alerts = await collect_alerts(fhir, since)
    except RadmeshError as error:
        print(f"report alerts: the FHIR server could not be read: {error}", file=sys.stderr)
        return 1
    finally:
        await fhir.close()
    summaries = summarise(alerts)
    print(summary_text(summaries, since))
    print(f"plot: {plot_alerts(alerts, summaries, plot)}")
    return 0


async def _route(settings: RadmeshSettings, study_instance_uid: str) -> int:
    if not is_dicom_uid(study_instance_uid):
        print(f"route: {study_instance_uid!r} is not a DICOM UID", file=sys.stderr)
        return 2
    registry = load_registry(settings.registry_path)
    dicomweb = DicomWebClient(settings.dicomweb)
    try:
        series = await study_series(dicomweb, study_instance_uid)
    except RadmeshError as error:
        print(f"route: the PACS could not be asked: {error}", file=sys.stderr)
        return 1
    finally:
        await dicomweb.close()
    if not series:
        print(f"route: the PACS has no series for study {study_instance_uid}", file=sys.stderr)
        return 1
    print("\n".join(route_lines(registry, series)))
    return 0


def _rerun(settings: RadmeshSettings, arguments: argparse.Namespace) -> int:
    if not is_dicom_uid(arguments.study_instance_uid):
        print(f"rerun: {arguments.study_instance_uid!r} is not a DICOM UID", file=sys.stderr)
        return 2
    # The subscriber's own announcing, run in this shell (imported here: a service's module).
    rerun = importlib.import_module("services.subscriber.rerun").rerun
    try:
        return int(
            asyncio.run(
                rerun(
                    settings,
                    arguments.study_instance_uid,
                    arguments.reason,
                    include_verified=arguments.include_verified,
                    wait_seconds=arguments.wait,
                )
            )
        )
    except RadmeshError as error:
        print(f"rerun: not done ({type(error).__name__}): {error}", file=sys.stderr)
        return 1


def _dev_token(settings: RadmeshSettings, account: str, password: str) -> int:
    if settings.environment != "development":
        print("dev-token: only in development (RADMESH_ENVIRONMENT)", file=sys.stderr)
        return 2
    try:
        token = asyncio.run(development_token(settings.oidc, account, password))
    except Unauthenticated as error:
        print(f"dev-token: {error}", file=sys.stderr)
        return 1
    except IdentityProviderUnavailable as error:
        print(f"dev-token: the identity provider is unavailable: {error}", file=sys.stderr)
        return 1
    print(f"access token of {account} from {settings.oidc.issuer}:", file=sys.stderr)
    print(token)
    return 0


def _service_settings_class(service: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"services.{service}.settings")
    return next(
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value is not ServiceSettings
    )


def _probe(service: str) -> int:
    """GET the service's own /readyz on loopback (its port from its settings): 0 when ready."""
    port = _service_settings_class(service)().port
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5):  # loopback only
            print(f"{service} ready ({url})")
            return 0
    except urllib.error.HTTPError as error:
        print(f"{service} not ready: {url} answered {error.code}", file=sys.stderr)
    except OSError as error:
        print(f"{service} not answering at {url}: {error}", file=sys.stderr)
    return 1


def _service(named: str | None, parser: argparse.ArgumentParser) -> str:
    service = named or os.environ.get("RADMESH_SERVICE", "")
    if service not in ALL_SERVICES:
        parser.error(
            f"name a service ({', '.join(ALL_SERVICES)}) or set RADMESH_SERVICE"
            + (f" (RADMESH_SERVICE={service!r} is none)" if service else "")
        )
    return service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="radmesh", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one service")
    run.add_argument("service", nargs="?", choices=ALL_SERVICES, default=None)
    probe = commands.add_parser("probe", help="exit 0 if the service here answers /readyz")
    probe.add_argument("service", nargs="?", choices=ALL_SERVICES, default=None)
    registry = commands.add_parser("registry", help="model registry")
    registry_commands = registry.add_subparsers(dest="registry_command", required=True)
    check = registry_commands.add_parser("check", help="validate the model registry")
    check.add_argument("path", nargs="?", type=Path, default=None)
    commands.add_parser("status", help="queue depths, consumers, dead letters")
    dlq = commands.add_parser("dlq", help="dead letters")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_commands.add_parser("list", help="list a service's dead letters")
    dlq_list.add_argument("service", choices=SERVICES)
    dlq_replay = dlq_commands.add_parser("replay", help="replay a service's dead letters")
    dlq_replay.add_argument("service", choices=SERVICES)
    dlq_replay.add_argument("--limit", type=int, default=None)
    route = commands.add_parser(
        "route", help="which models read which series of a study in the PACS, and why not"
    )
    route.add_argument("study_instance_uid")
    rerun = commands.add_parser(
        "rerun", help="retract a study's AI results (superseded) and analyse it again"
    )
    rerun.add_argument("study_instance_uid")
    rerun.add_argument(
        "--reason", required=True, help="why, for the record (no patient data): e.g. 'model fixed'"
    )
    rerun.add_argument(
        "--include-verified",
        action="store_true",
        help="also retract reports a radiologist already decided",
    )
    rerun.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for the retraction (120)"
    )
    dev_token = commands.add_parser(
        "dev-token", help="print an access token of a development account (rad1, clin1, ops1, ...)"
    )
    dev_token.add_argument("account")
    dev_token.add_argument("--password", default="radmesh-dev")
    report = commands.add_parser("report", help="reports read back from the FHIR server")
    report_commands = report.add_subparsers(dest="report_command", required=True)
    alerts = report_commands.add_parser(
        "alerts", help="critical alerts: time to acknowledge, escalations per step (+ a plot)"
    )
    alerts.add_argument("--hours", type=float, default=24 * 7, help="how far back (default 7 days)")
    alerts.add_argument("--plot", type=Path, default=Path(".run/reports/alerts.png"))
    arguments = parser.parse_args(argv)

    if arguments.command == "run":
        service = _service(arguments.service, parser)
        runpy.run_module(f"services.{service}", run_name="__main__", alter_sys=True)
        return 0
    if arguments.command == "probe":
        return _probe(_service(arguments.service, parser))
    settings = RadmeshSettings()
    commands_run: dict[str, Callable[[], int]] = {
        "registry": lambda: _registry_check(settings, arguments.path),
        "status": lambda: _status(settings),
        "report": lambda: asyncio.run(_report_alerts(settings, arguments.hours, arguments.plot)),
        "dev-token": lambda: _dev_token(settings, arguments.account, arguments.password),
        "route": lambda: asyncio.run(_route(settings, arguments.study_instance_uid)),
        "rerun": lambda: _rerun(settings, arguments),
        "dlq": lambda: (
            _dlq_list(settings, arguments.service)
            if arguments.dlq_command == "list"
            else _dlq_replay(settings, arguments.service, arguments.limit)
        ),
    }
    return commands_run[arguments.command]()


if __name__ == "__main__":
    sys.exit(main())
