"""deploy/kustomize/: rendered by `kubectl kustomize`, every object checked against the Kubernetes schemas."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.unit.deploy_support import DEPLOY, SERVICES, clean_env, must_be_given, tool, validated, variables

KUSTOMIZE = DEPLOY / "kustomize"
OVERLAY = "overlays/production"
# The oldest Kubernetes the manifests are meant for (the preStop sleep action is there from 1.30) and the newest known.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
PORTS = {"orders": 8001, "followups": 8002, "loyalty": 8003, "referrals": 8004}
IMAGE_USER = 10001  # the USER of deploy/Dockerfile

Objects = list[dict[str, Any]]


def render(folder: Path) -> Objects:
    command = tool("kubectl kustomize", "kustomize build")
    rendered = subprocess.run(
        [*command, str(folder)], capture_output=True, text=True, timeout=120, check=False, env=clean_env()
    )
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Objects]:
    """The base and the overlay as `kubectl apply -k` would send them, secrets.env filled from its example."""
    copy = tmp_path_factory.mktemp("kustomize") / "kustomize"
    shutil.copytree(KUSTOMIZE, copy)
    overlay = copy / OVERLAY
    (overlay / "secrets.env").write_text((overlay / "secrets.env.example").read_text())
    return {"base": render(copy / "base"), "overlay": render(overlay)}


def one(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def named(objects: Objects, kind: str, prefix: str) -> dict[str, Any]:
    """A generated object (its name ends in a content hash)."""
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, f"{kind}/{prefix}*: {len(found)} found"
    return found[0]


def container(objects: Objects, service: str) -> dict[str, Any]:
    pod = one(objects, "Deployment", service)["spec"]["template"]["spec"]
    [main] = pod["containers"]
    return dict(main)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("which", ["base", "overlay"])
def test_every_object_is_valid_kubernetes(rendered: dict[str, Objects], which: str, version: str) -> None:
    objects = rendered[which]
    assert objects
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{which} {obj['kind']}/{obj['metadata']['name']} on Kubernetes {version}: {error.message}")


@pytest.mark.parametrize("which", ["base", "overlay"])
@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_a_deployment_service_autoscaler_and_disruption_budget(
    rendered: dict[str, Objects], which: str, service: str
) -> None:
    objects = rendered[which]
    deployment = one(objects, "Deployment", service)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"

    exposed = one(objects, "Service", service)
    assert exposed["spec"]["selector"].items() <= pod_labels.items()
    assert [(p["port"], p["targetPort"]) for p in exposed["spec"]["ports"]] == [(PORTS[service], "http")]

    autoscaler = one(objects, "HorizontalPodAutoscaler", service)
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", service)
    assert 1 <= autoscaler["spec"]["minReplicas"] < autoscaler["spec"]["maxReplicas"]

    budget = one(objects, "PodDisruptionBudget", service)
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize("service", SERVICES)
def test_probes_resources_and_security_of_each_service(rendered: dict[str, Objects], service: str) -> None:
    objects = rendered["overlay"]
    main = container(objects, service)
    env = {item["name"]: item for item in main["env"]}
    assert env["HTTP_PORT"]["value"] == str(PORTS[service])
    assert main["ports"] == [{"name": "http", "containerPort": PORTS[service]}]
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert main[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    assert {"cpu", "memory"} <= set(main["resources"]["requests"])
    assert "memory" in main["resources"]["limits"]
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    pod = one(objects, "Deployment", service)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_USER
    # Long enough for the preStop pause and the drain (SHUTDOWN_GRACE_SECONDS, 15 s by default).
    assert pod["terminationGracePeriodSeconds"] >= 5 + 15


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_gets_every_setting_it_needs_and_none_it_does_not_read(
    rendered: dict[str, Objects], service: str
) -> None:
    objects = rendered["overlay"]
    main = container(objects, service)
    secret = named(objects, "Secret", "rapport-secrets")
    environment: dict[str, str] = {}
    for source in main.get("envFrom", []):
        config_map = one(objects, "ConfigMap", source["configMapRef"]["name"])
        environment.update(config_map["data"])
    for item in main["env"]:
        if "value" in item:
            environment[item["name"]] = item["value"]
            continue
        reference = item["valueFrom"]["secretKeyRef"]
        assert reference["name"] == secret["metadata"]["name"]
        assert reference["key"] in secret["data"] or reference.get("optional"), reference
        environment[item["name"]] = f"from-secret-{reference['key']}"
    assert set(environment) - variables(service) == set(), "not a setting of this service (typo?)"
    assert must_be_given(service) - set(environment) == set(), "give these in deploy/kustomize"
    settings = validated(service, environment)
    assert settings.crm_prefix == "crm"
    assert settings.log_format == "json"


def test_the_secrets_example_has_every_key_the_deployments_read() -> None:
    example = (KUSTOMIZE / OVERLAY / "secrets.env.example").read_text().splitlines()
    keys = {line.split("=", 1)[0] for line in example if line and not line.startswith("#")}
    read = set()
    for service in (*SERVICES, "console"):
        for doc in yaml.safe_load_all((KUSTOMIZE / "base" / f"{service}.yaml").read_text()):
            if doc["kind"] == "Deployment":
                for item in doc["spec"]["template"]["spec"]["containers"][0]["env"]:
                    if "valueFrom" in item:
                        read.add(item["valueFrom"]["secretKeyRef"]["key"])
    assert keys == read


def test_the_overlay_pins_images_and_runs_two_replicas_at_least(rendered: dict[str, Objects]) -> None:
    objects = rendered["overlay"]
    for service in SERVICES:
        image = container(objects, service)["image"]
        name, _, tag = image.rpartition(":")
        assert "/" in name, f"{image}: from a registry"
        assert tag
        assert tag != "latest"
        assert one(objects, "HorizontalPodAutoscaler", service)["spec"]["minReplicas"] >= 2
    namespaced = [o for o in objects if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {"rapport"}
    assert one(objects, "Namespace", "rapport")


def test_the_console_is_deployed_with_the_services_addresses(rendered: dict[str, Objects]) -> None:
    spec = container(rendered["overlay"], "console")
    assert spec["image"] == "registry.example.com/rapport/console:0.1.0"
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
    keys = {item["name"]: item["valueFrom"]["secretKeyRef"]["key"] for item in spec["env"] if "valueFrom" in item}
    assert keys["CONSOLE_API_KEY"] == "ADMIN_API_KEY"
    assert "RABBITMQ_URL" not in keys
