"""deploy/Dockerfile without a Docker daemon: hadolint, its stages read as data, and its install step rehearsed."""

import re
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.local_mongod import free_port
from tests.unit.deploy_support import DEPLOY, ROOT, SERVICES, clean_env, settings_class, tool

DOCKERFILE = DEPLOY / "Dockerfile"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arguments for instruction, arguments in self.instructions if instruction == keyword]


def stages() -> dict[str, Stage]:
    """The Dockerfile's stages by name, each with its instructions (continuation lines joined)."""
    found: dict[str, Stage] = {}
    current: Stage | None = None
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction == "FROM":
            base, _, name = arguments.partition(" AS ")
            current = found[name] = Stage(name, base)
        elif current is not None:
            current.instructions.append((instruction, " ".join(arguments.split())))
    return found


def test_hadolint_finds_nothing_to_say() -> None:
    linted = subprocess.run(
        [*tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=clean_env(),
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert linted.stdout == ""


@pytest.mark.parametrize("service", [*SERVICES, "console"])
def test_one_target_per_service_runs_it_on_its_port_with_a_health_check(service: str) -> None:
    stage = stages()[service]
    assert stage.base == "runtime"
    assert stage.all("CMD") == [f'["python", "-m", "services.{service}"]']
    port = settings_class(service).model_fields["http_port"].default
    assert stage.all("ENV") == [f"HTTP_PORT={port}"]
    assert stage.all("EXPOSE") == [str(port)]
    [healthcheck] = stage.all("HEALTHCHECK")
    assert healthcheck.endswith('CMD ["python", "-m", "shared.healthcheck"]')


def test_the_runtime_is_small_and_runs_as_a_user_without_privileges() -> None:
    found = stages()
    build, runtime = found["build"], found["runtime"]
    assert build.base == runtime.base == "${PYTHON_IMAGE}", "the venv's python must be the same in both"
    [user] = runtime.all("USER")
    uid, _, gid = user.partition(":")
    assert int(uid) >= 1000
    assert int(gid) >= 1000  # numeric, so Kubernetes can check runAsNonRoot
    copies = runtime.all("COPY")
    assert copies == ["--from=build /opt/rapport /opt/rapport"], "only the virtual environment comes over"
    for stage in (runtime, *(found[service] for service in SERVICES)):
        for command in stage.all("RUN"):
            for builder in ("apt-get", "pip ", "gcc", "build-essential"):
                assert builder not in command, f"{stage.name}: {command}"
    assert any("pip uninstall --yes setuptools pip" in command for command in build.all("RUN"))


def test_the_build_context_leaves_out_secrets_and_local_state() -> None:
    ignored = {line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"}
    assert {"**/.env", "deploy/kustomize/overlays/*/secrets.env", ".git", ".venv", ".data", "tests"} <= ignored
    copied = {
        source
        for stage in stages().values()
        for arguments in stage.all("COPY")
        if not arguments.startswith("--from")
        for source in arguments.split()[:-1]
    }
    assert copied == {"pyproject.toml", "constraints.txt", "README.md", "shared", "services"}
    assert copied.isdisjoint(ignored)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The package as the image installs it: built like `pip install .` does, from what the Dockerfile copies."""
    context = tmp_path_factory.mktemp("context")
    for name in ("pyproject.toml", "constraints.txt", "README.md"):
        shutil.copy(ROOT / name, context / name)
    for package in ("shared", "services"):
        shutil.copytree(ROOT / package, context / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    [path] = out.glob("rapport-*.whl")
    return zipfile.ZipFile(path)


def test_the_installed_package_has_every_module_and_template(wheel: zipfile.ZipFile) -> None:
    installed = set(wheel.namelist())
    needed = {
        path.relative_to(ROOT).as_posix()
        for package in ("shared", "services")
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert needed - installed == set()
    for service in SERVICES:
        assert f"services/{service}/__main__.py" in installed
    assert "shared/healthcheck.py" in installed
    assert "shared/deadletters.py" in installed
    assert any(name.startswith("services/followups/templates/en/") for name in installed)
    assert "services/console/templates/today.html" in installed
    assert "services/console/locales/fa.json" in installed
    assert "services/console/static/console.css" in installed


def test_the_installed_package_carries_no_test_or_dev_only_code(wheel: zipfile.ZipFile) -> None:
    modules = [name for name in wheel.namelist() if name.endswith(".py")]
    assert not [name for name in modules if name.startswith("tests/") or "/testing/" in name]
    dev_only = ("aiosmtpd", "testcontainers", "fiftyone", "pytest", "playwright")
    importing = {
        name
        for name in modules
        for line in wheel.read(name).decode().splitlines()
        if re.match(rf"\s*(from|import) ({'|'.join(dev_only)})\b", line)
    }
    assert importing == set()


class _Service(BaseHTTPRequestHandler):
    ready = True

    def do_GET(self) -> None:
        status = 200 if self.path == "/readyz" and _Service.ready else 503
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b'{"broker": "ok"}' if status == 200 else b'{"broker": "unreachable"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_service() -> Iterator[int]:
    """An HTTP server on loopback that answers /readyz like a service whose broker comes and goes."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Service)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        _Service.ready = True


def healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.healthcheck"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=clean_env(HTTP_PORT=str(port)),
    )


def test_the_health_check_passes_only_while_the_service_is_ready(fake_service: int) -> None:
    ready = healthcheck(fake_service)
    assert (ready.returncode, ready.stdout) == (0, '200 {"broker": "ok"}\n')
    _Service.ready = False
    unready = healthcheck(fake_service)
    assert (unready.returncode, unready.stdout) == (1, '503 {"broker": "unreachable"}\n')
    nobody = healthcheck(free_port())
    assert nobody.returncode == 1
    assert "Connection refused" in nobody.stdout
