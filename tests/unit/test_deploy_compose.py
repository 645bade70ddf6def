"""deploy/docker-compose.yml, checked by Docker Compose itself (`docker-compose config`; no daemon needed)."""

import json
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.settings import ServiceSettings
from tests.unit.deploy_support import (
    DEPLOY,
    SERVICES,
    clean_env,
    must_be_given,
    tool,
    validated,
    variables,
)

COMPOSE_FILE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
PORTS = {"orders": 8001, "followups": 8002, "loyalty": 8003, "referrals": 8004}
INFRASTRUCTURE = ("rabbitmq", "mongodb", "mailpit")


def compose(env_file: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [*tool("docker-compose", "docker compose"), "--file", str(COMPOSE_FILE), "--env-file", str(env_file)]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=120, check=False, env=clean_env(**env)
    )


def make_env(target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEPLOY / "make-env.py"), str(ENV_EXAMPLE), str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#"))
    return {name: value for name, value in pairs}


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/.env as `make up` writes it the first time."""
    target = tmp_path_factory.mktemp("compose") / ".env"
    make_env(target)
    return target


@pytest.fixture(scope="module")
def stack(env_file: Path) -> dict[str, Any]:
    """The stack as Docker Compose resolves it: interpolated, merged, normalised."""
    rendered = compose(env_file, "config", "--format", "json")
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stderr == "", rendered.stderr  # no warning, e.g. about a variable that is not set
    config: dict[str, Any] = json.loads(rendered.stdout)
    return config


def test_docker_compose_accepts_the_file(env_file: Path) -> None:
    checked = compose(env_file, "config", "--quiet")
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""


def test_without_its_secrets_the_stack_refuses_to_start() -> None:
    refused = compose(ENV_EXAMPLE, "config", "--quiet")
    assert refused.returncode != 0
    for secret in ("RABBITMQ_PASSWORD", "MONGO_APP_PASSWORD", "MONGO_REPLICA_SET_KEY", "ADMIN_API_KEY"):
        assert f"required variable {secret} is missing a value" in refused.stderr


def test_every_variable_the_file_reads_is_in_env_example_and_used() -> None:
    text = COMPOSE_FILE.read_text().replace("$$", "")  # $$ is a literal $ for the container's shell
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    assert "$" not in re.sub(r"\$\{[^}]*\}", "", text), "use ${VAR} (braces) for every variable"
    example = env_example()
    assert used - set(example) == set(), "add them to deploy/.env.example"
    assert set(example) - used == set(), "deploy/.env.example sets variables no service reads"


def test_make_env_fills_each_secret_with_a_fresh_value_and_never_overwrites(tmp_path: Path) -> None:
    first, second = tmp_path / "first.env", tmp_path / "second.env"
    make_env(first)
    make_env(second)
    written = dict(line.split("=", 1) for line in first.read_text().splitlines() if line and line[0] != "#")
    others = dict(line.split("=", 1) for line in second.read_text().splitlines() if line and line[0] != "#")
    for name, value in env_example().items():
        if value == "" and "WEBHOOK_SECRET" not in name:  # SHOPIFY_WEBHOOK_SECRET and its _PREVIOUS
            assert re.fullmatch(r"[0-9a-f]{64}", written[name]), name
            assert written[name] != others[name], f"{name} must be random"
        elif value == "":
            assert written[name] == "", f"{name} comes from the shop platform, not from us"
        else:
            assert written[name] == value
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    before = first.read_text()
    assert "leaving it as it is" in make_env(first).stdout
    assert first.read_text() == before


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_gets_every_setting_it_needs_and_none_it_does_not_read(
    stack: dict[str, Any], service: str
) -> None:
    environment: dict[str, str] = stack["services"][service]["environment"]
    assert set(environment) - variables(service) == set(), "not a setting of this service (typo?)"
    assert must_be_given(service) - set(environment) == set(), "give these in deploy/docker-compose.yml"
    settings = validated(service, environment)
    assert settings.rabbitmq_url.startswith("amqp://rapport:")
    assert "@rabbitmq:5672/" in settings.rabbitmq_url
    assert settings.mongodb_url.startswith("mongodb://rapport:")
    assert "@mongodb:27017/?replicaSet=rs0&authSource=admin" in settings.mongodb_url
    assert settings.admin_api_key is not None
    assert len(settings.admin_api_key.get_secret_value()) == 64
    assert settings.http_port == PORTS[service]  # from the image; compose does not move it
    if service == "followups":
        assert environment["SMTP_URL"] == "smtp://mailpit:1025"
        assert len(environment["FEEDBACK_TOKEN_SECRET"]) == 64


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_can_be_scaled_on_one_host(stack: dict[str, Any], service: str) -> None:
    spec = stack["services"][service]
    assert "container_name" not in spec, "a fixed container name cannot have replicas"
    assert spec["deploy"]["replicas"] == 1
    [port] = spec["ports"]
    assert port["target"] == PORTS[service]
    assert port["host_ip"] == "127.0.0.1"
    first, last = (int(n) for n in port["published"].split("-"))
    assert last - first >= 9, "one host port per replica: publish a range, not a fixed port"


def test_a_replica_count_from_the_environment_is_honoured(env_file: Path) -> None:
    rendered = compose(env_file, "config", "--format", "json", LOYALTY_REPLICAS="3")
    assert rendered.returncode == 0, rendered.stderr
    assert json.loads(rendered.stdout)["services"]["loyalty"]["deploy"]["replicas"] == 3


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_is_built_from_its_target_restarted_and_health_checked(
    stack: dict[str, Any], service: str
) -> None:
    spec = stack["services"][service]
    assert spec["build"]["dockerfile"] == "deploy/Dockerfile"
    assert spec["build"]["target"] == service
    assert Path(spec["build"]["context"]) == DEPLOY.parent
    assert spec["image"] == f"rapport-{service}:dev"
    assert spec["restart"] == "unless-stopped"
    assert spec["healthcheck"]["test"] == ["CMD", "python", "-m", "shared.healthcheck"]
    needs = {"rabbitmq", "mongodb", "mailpit"} if service == "followups" else {"rabbitmq", "mongodb"}
    assert {name: dep["condition"] for name, dep in spec["depends_on"].items()} == dict.fromkeys(
        needs, "service_healthy"
    )
    assert spec["read_only"] is True
    assert spec["cap_drop"] == ["ALL"]


@pytest.mark.parametrize("name", INFRASTRUCTURE)
def test_the_infrastructure_is_pinned_kept_and_health_checked(stack: dict[str, Any], name: str) -> None:
    spec = stack["services"][name]
    image, _, tag = spec["image"].rpartition(":")
    assert image
    assert tag
    assert tag != "latest"
    assert spec["restart"] == "unless-stopped"
    assert spec["healthcheck"]["test"]


def test_rabbitmq_has_its_management_ui_and_credentials_from_env(stack: dict[str, Any], env_file: Path) -> None:
    rabbitmq = stack["services"]["rabbitmq"]
    assert rabbitmq["image"].endswith("-management")
    assert {port["target"] for port in rabbitmq["ports"]} == {5672, 15672}
    password = rabbitmq["environment"]["RABBITMQ_DEFAULT_PASS"]
    assert f"RABBITMQ_PASSWORD={password}" in env_file.read_text()
    assert any(volume["target"] == "/var/lib/rabbitmq" for volume in rabbitmq["volumes"])


def test_rabbitmq_refuses_messages_larger_than_the_services_keep(stack: dict[str, Any]) -> None:
    rabbitmq = stack["services"]["rabbitmq"]
    mounted = {volume["target"]: Path(volume["source"]) for volume in rabbitmq["volumes"] if volume["type"] == "bind"}
    conf = mounted["/etc/rabbitmq/conf.d/20-rapport.conf"]
    settings = dict(line.split(" = ") for line in conf.read_text().splitlines() if " = " in line)
    assert int(settings["max_message_size"]) == 16 * 1024 * 1024
    assert ServiceSettings().max_message_bytes < int(settings["max_message_size"])  # ours dead-letters first


def test_mongodb_is_a_one_node_replica_set_initiated_by_its_health_check(stack: dict[str, Any]) -> None:
    mongodb = stack["services"]["mongodb"]
    command = mongodb["command"]
    assert command[command.index("--replSet") + 1] == "rs0"
    assert "--keyFile" in command
    mounts = {volume["target"]: volume for volume in mongodb["volumes"]}
    assert {"/data/db", "/data/configdb"} <= set(mounts)
    script = Path(mounts["/opt/rapport/replica-set.js"]["source"]).read_text()
    assert "/opt/rapport/replica-set.js" in " ".join(mongodb["healthcheck"]["test"])
    # The member's address is the one the services' MONGODB_URL names.
    assert '_id: "rs0"' in script
    assert 'host: "mongodb:27017"' in script
    users = Path(mounts["/docker-entrypoint-initdb.d/create-app-user.js"]["source"]).read_text()
    listed = re.search(r"const services = \[(.*?)\];", users)
    assert listed is not None
    assert tuple(re.findall(r'"([a-z]+)"', listed.group(1))) == SERVICES


def test_mailpit_catches_the_followups_mail_and_shows_it(stack: dict[str, Any]) -> None:
    mailpit = stack["services"]["mailpit"]
    assert mailpit["image"].startswith("axllent/mailpit:")
    assert [port["target"] for port in mailpit["ports"]] == [8025]


def test_the_console_calls_each_service_by_its_name_and_keeps_the_key(stack: dict[str, Any]) -> None:
    console = stack["services"]["console"]
    assert console["build"]["target"] == "console"
    environment = console["environment"]
    assert {environment[f"{name.upper()}_URL"] for name in PORTS} == {f"http://{n}:{p}" for n, p in PORTS.items()}
    assert environment["ADMIN_API_KEY"]  # the console's key falls back to it (CONSOLE_API_KEY unset)
    assert "RABBITMQ_URL" not in environment  # it talks to the services' APIs only
    [published] = console["ports"]
    assert (published["target"], published["host_ip"]) == (8000, "127.0.0.1")
