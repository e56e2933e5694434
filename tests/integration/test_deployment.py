"""The deployment files, checked offline with the tools a site would use: hadolint on the
Dockerfiles, `docker-compose config` on deploy/compose.yaml, promtool on the Prometheus config,
and the Kubernetes overlays rendered by kustomize and validated against the Kubernetes 1.32
schemas (kubernetes-validate, strict) and, for KEDA's and the RabbitMQ Cluster Operator's
resources, against their CustomResourceDefinitions (fetched by `make infra-up`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import REGISTRY

import shared.metrics  # noqa: F401 (its families, registered)
from shared.bus import ServiceQueues
from shared.dead_letters import SERVICES as CONSUMERS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = Path(os.environ.get("RADMESH_RUN_DIR", ROOT / ".run"))
TOOLS = RUN_DIR / "deployment-tools"
BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
ALL_SERVICES = ("subscriber", *CONSUMERS)
KUBERNETES_VERSION = "1.32.0"
# Every variable deploy/compose.yaml requires (compose.env.example lists them for a site).
COMPOSE_SECRETS = {
    "RABBITMQ_USER": "test-user",
    "RABBITMQ_PASSWORD": "test-rabbitmq-password",
    "ORTHANC_USER": "test-pacs-user",
    "ORTHANC_PASSWORD": "test-pacs-password",
    "RADMESH_HOOK_SECRET": "test-hook-secret",
    "RADMESH_PACS_HOOK_SECRET": "test-pacs-hook-secret",
    "RADMESH_ALERT_LINK_SECRET": "test-alert-link-secret",
    "KEYCLOAK_ADMIN_PASSWORD": "test-keycloak-password",
    "GRAFANA_ADMIN_PASSWORD": "test-grafana-password",
}


def _tool(name: str, *candidates: Path) -> str:
    for candidate in (*candidates, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail(f"{name} not found: `make infra-up` installs it (deploy/deployment-tools/up.sh)")


def _run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, check=False, capture_output=True, text=True, env=env, timeout=120
    )


def _render(overlay: str) -> list[dict[str, Any]]:
    """The overlay as kustomize renders it (kubectl's built-in one, or the standalone)."""
    kubectl = shutil.which("kubectl")
    command = (
        [kubectl, "kustomize"]
        if kubectl
        else [_tool("kustomize", TOOLS / "bin" / "kustomize"), "build"]
    )
    rendered = _run(*command, str(ROOT / "k8s" / "overlays" / overlay))
    assert rendered.returncode == 0, rendered.stderr
    return [document for document in yaml.safe_load_all(rendered.stdout) if document]


def _of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → the openAPIV3Schema of each CRD version fetched by infra-up."""
    crds = sorted((TOOLS / "crds").glob("*.yaml"))
    if not crds:
        pytest.fail(f"no CRDs in {TOOLS / 'crds'}: `make infra-up` fetches them")
    schemas = {}
    for path in crds:
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            api_version = f"{crd['spec']['group']}/{version['name']}"
            schemas[(api_version, crd["spec"]["names"]["kind"])] = version["schema"][
                "openAPIV3Schema"
            ]
    return schemas


def _containers(deployment: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from deployment["spec"]["template"]["spec"]["containers"]


def test_the_dockerfiles_pass_hadolint() -> None:
    """The radmesh image's Dockerfile and the development servers' pass hadolint, no warning."""
    dockerfiles = [
        ROOT / "Dockerfile",
        ROOT / "deploy" / "hapi-fhir" / "Dockerfile",
        ROOT / "deploy" / "model-server" / "Dockerfile",
    ]
    linted = _run(_tool("hadolint", BIN / "hadolint"), *map(str, dockerfiles))
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_image_runs_as_a_non_root_user_with_radmesh_run_as_its_entry_point() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["radmesh", "run"]' in text
    assert "USER 10001:10001" in text
    assert (
        'HEALTHCHECK --interval=15s --timeout=6s --start-period=30s --retries=3 CMD ["radmesh", "probe"]'
        in text
    )
    assert "[dev]" not in text  # no dev dependencies in the image


def test_the_compose_file_is_valid_and_takes_every_secret_from_the_environment() -> None:
    """`docker-compose config` accepts deploy/compose.yaml with the secrets set and refuses it,
    naming the variable, without them; the six services run the one image, read-only, each
    its own service; the file itself holds no secret."""
    compose = _tool("docker-compose")
    path = str(ROOT / "deploy" / "compose.yaml")
    base = {key: value for key, value in os.environ.items() if key not in COMPOSE_SECRETS}
    refused = _run(compose, "-f", path, "config", "-q", env=base)
    assert refused.returncode != 0
    assert "set RABBITMQ_USER" in refused.stderr or "RABBITMQ" in refused.stderr, refused.stderr
    accepted = _run(compose, "-f", path, "config", env={**base, **COMPOSE_SECRETS})
    assert accepted.returncode == 0, accepted.stderr
    config = yaml.safe_load(accepted.stdout)
    services = config["services"]
    assert set(ALL_SERVICES) | {
        "rabbitmq",
        "orthanc",
        "hapi-fhir",
        "model-server",
        "keycloak",
        "otel-collector",
        "jaeger",
        "prometheus",
        "grafana",
    } <= set(services)
    for name in ALL_SERVICES:
        service = services[name]
        assert service["image"] == "radmesh:0.1.0"
        assert service["read_only"] is True
        assert service["environment"]["RADMESH_SERVICE"] == name
        assert service["environment"]["RADMESH_MODEL_SERVER_URL"] == "http://model-server:8000"
    assert "test-rabbitmq-password" in services["fetcher"]["environment"]["RADMESH_BROKER__URL"]
    written = Path(path).read_text()
    for secret in ("radmesh-dev", "guest:guest"):
        assert secret not in written


def test_the_prometheus_config_scrapes_every_service_and_loads_the_alerting_rules() -> None:
    promtool = _tool("promtool", RUN_DIR / "prometheus" / "root" / "usr" / "bin" / "promtool")
    path = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    checked = _run(promtool, "check", "config", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(path.read_text())
    targets = {
        target.split(":")[0]
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert targets == set(ALL_SERVICES)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_each_kubernetes_overlay_renders_and_validates_against_the_schemas(
    overlay: str, tmp_path: Path
) -> None:
    """kustomize renders the overlay; every built-in resource passes kubernetes-validate
    --strict for Kubernetes 1.32, and every KEDA and RabbitMQ Cluster Operator resource its
    CRD's schema."""
    documents = _render(overlay)
    schemas = _crd_schemas()
    builtin: list[dict[str, Any]] = []
    custom: list[dict[str, Any]] = []
    for document in documents:
        key = (document["apiVersion"], document["kind"])
        (custom if key in schemas else builtin).append(document)
    unknown = {
        (d["apiVersion"], d["kind"]) for d in builtin if "." in d["apiVersion"].split("/")[0]
    } - {("networking.k8s.io/v1", "NetworkPolicy"), ("policy/v1", "PodDisruptionBudget")}
    assert not unknown, f"resources of kinds with no schema at hand: {unknown}"
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(builtin))
    validated = _run(
        _tool("kubernetes-validate", BIN / "kubernetes-validate"),
        "-k",
        KUBERNETES_VERSION,
        "--strict",
        "--quiet",
        str(rendered),
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "WARN" not in validated.stdout + validated.stderr
    problems = [
        f"{document['kind']}/{document['metadata']['name']} at "
        f"{'.'.join(map(str, error.absolute_path))}: {error.message[:200]}"
        for document in custom
        for error in jsonschema.Draft7Validator(
            schemas[(document["apiVersion"], document["kind"])]
        ).iter_errors(document)
    ]
    assert problems == []
    assert {d["kind"] for d in custom} >= {"ScaledObject", "TriggerAuthentication"}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_service_runs_locked_down_with_probes_and_a_disruption_budget(overlay: str) -> None:
    documents = _render(overlay)
    deployments = _of_kind(documents, "Deployment")
    budgets = _of_kind(documents, "PodDisruptionBudget")
    services = _of_kind(documents, "Service")
    for name in ALL_SERVICES:
        pod = deployments[name]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        (container,) = _containers(deployments[name])
        assert container["args"] == [name]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert {"requests", "limits"} <= set(container["resources"])
        mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert "/etc/radmesh/registry" in mounts
        assert name in budgets
        assert name in services
    registry = next(
        d
        for d in documents
        if d["kind"] == "ConfigMap" and "radmesh-registry" in d["metadata"]["name"]
    )
    assert registry["data"]["models.yaml"] == (ROOT / "registry" / "models.yaml").read_text()
    for name in ("fetcher", "inference"):  # the claim-check blob store, shared
        (container,) = _containers(deployments[name])
        assert "/var/lib/radmesh/blobs" in {m["mountPath"] for m in container["volumeMounts"]}
    claim = _of_kind(documents, "PersistentVolumeClaim")["radmesh-blobs"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_each_consumer_scales_on_the_depth_of_its_own_queue(overlay: str) -> None:
    """One KEDA ScaledObject per consuming service, on the queue the service really consumes
    (shared.bus.ServiceQueues), with a CPU trigger as the fallback."""
    scaled = _of_kind(_render(overlay), "ScaledObject")
    assert set(scaled) == set(CONSUMERS)
    for service, scaled_object in scaled.items():
        assert scaled_object["spec"]["scaleTargetRef"]["name"] == service
        triggers = {trigger["type"]: trigger for trigger in scaled_object["spec"]["triggers"]}
        assert triggers["rabbitmq"]["metadata"]["queueName"] == ServiceQueues(service).queue
        assert "cpu" in triggers


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_only_the_subscriber_takes_traffic_from_outside_the_namespace(overlay: str) -> None:
    """A default deny; the one policy admitting any source selects the subscriber; the review
    desk is admitted from the ingress controller's namespace and metrics from monitoring's."""
    policies = _of_kind(_render(overlay), "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
    }
    open_to_all = [
        name
        for name, policy in policies.items()
        for rule in policy["spec"].get("ingress", [])
        if "from" not in rule
    ]
    assert open_to_all == ["subscriber-from-anywhere"]
    selected = policies["subscriber-from-anywhere"]["spec"]["podSelector"]["matchLabels"]
    assert selected == {"app.kubernetes.io/name": "subscriber"}
    for name, policy in policies.items():
        for rule in policy["spec"].get("ingress", []):
            for source in rule.get("from", []):
                assert "ipBlock" not in source, name


def test_production_runs_a_rabbitmq_cluster_with_production_settings_and_no_generated_secret() -> (
    None
):
    prod = _render("prod")
    cluster = _of_kind(prod, "RabbitmqCluster")["radmesh-rabbitmq"]
    assert cluster["spec"]["replicas"] == 3
    settings = next(
        d for d in prod if d["kind"] == "ConfigMap" and "radmesh-settings" in d["metadata"]["name"]
    )
    assert settings["data"]["RADMESH_ENVIRONMENT"] == "production"
    assert _of_kind(prod, "Secret") == {}  # the site creates radmesh-secrets
    assert all(
        deployment["spec"]["replicas"] >= 2 for deployment in _of_kind(prod, "Deployment").values()
    )
    dev = _render("dev")
    assert any(name.startswith("radmesh-secrets") for name in _of_kind(dev, "Secret"))


def _erlang_settings(text: str) -> dict[str, str]:
    """The `{key, value}` pairs of an advanced.config's `rabbit` section, comments dropped."""
    terms = re.sub(r"%[^\n]*", "", text)
    return dict(re.findall(r"\{\s*([a-z_]+)\s*,\s*([0-9a-z_]+)\s*\}", terms))


def test_every_rabbitmq_radmesh_describes_gets_the_same_broker_settings() -> None:
    """deploy/rabbitmq/advanced.config (what `make infra-up` starts the broker with) reaches the
    Compose broker as a mounted file and both Kubernetes overlays' brokers with the same
    values: a retry waiting across a restart comes back in seconds everywhere."""
    expected = _erlang_settings((ROOT / "deploy" / "rabbitmq" / "advanced.config").read_text())
    assert expected["dead_letter_worker_publisher_confirm_timeout"] == "5000", expected
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    assert (
        "./rabbitmq/advanced.config:/etc/rabbitmq/advanced.config:ro"
        in compose["services"]["rabbitmq"]["volumes"]
    )
    dev = _render("dev")
    broker = _of_kind(dev, "StatefulSet")["rabbitmq"]["spec"]["template"]["spec"]
    mounted = {m["mountPath"]: m for m in broker["containers"][0]["volumeMounts"]}
    config_map = next(v["configMap"]["name"] for v in broker["volumes"] if v["name"] == "config")
    assert mounted["/etc/rabbitmq/advanced.config"]["subPath"] == "advanced.config"
    dev_config = _of_kind(dev, "ConfigMap")[config_map]["data"]["advanced.config"]
    prod_cluster = _of_kind(_render("prod"), "RabbitmqCluster")["radmesh-rabbitmq"]
    prod_config = prod_cluster["spec"]["rabbitmq"]["advancedConfig"]
    assert _erlang_settings(dev_config) == expected
    assert _erlang_settings(prod_config) == expected


def test_the_grafana_dashboard_queries_are_valid_promql_on_metrics_radmesh_exposes(
    tmp_path: Path,
) -> None:
    """Each panel query of deploy/grafana/radmesh.json parses as PromQL (promtool, as recording
    rules) and names only metric families shared.metrics defines: the dashboard cannot drift
    from the code."""
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "radmesh.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(expressions) >= 14
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"radmesh:dashboard_query_{n}", "expr": expr}
                    for n, expr in enumerate(expressions)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    promtool = _tool("promtool", RUN_DIR / "prometheus" / "root" / "usr" / "bin" / "promtool")
    checked = _run(promtool, "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    defined = {
        sample_name
        for family in REGISTRY.collect()
        if family.name.startswith("radmesh_")
        for sample_name in (
            family.name,
            f"{family.name}_total",
            f"{family.name}_bucket",
            f"{family.name}_count",
            f"{family.name}_sum",
        )
    }
    named = {name for expr in expressions for name in re.findall(r"\bradmesh_[a-z_]+", expr)}
    assert named <= defined, f"not metrics radmesh exposes: {sorted(named - defined)}"
    families = {name.removesuffix("_total") for name in named}
    assert len(families) >= 12
