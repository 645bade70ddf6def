"""What the deploy/ tests share: where the validators are, and what settings each service reads."""

import importlib
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SERVICES = ("orders", "followups", "loyalty", "referrals")


# How to ask a validator on PATH whether it is really there (`docker compose` needs the plugin).
_PROBES = {
    "docker compose": ["compose", "version"],
    "docker-compose": ["version"],
    "kubectl kustomize": ["version", "--client"],
    "kustomize build": ["version"],
}


def tool(*candidates: str) -> list[str]:
    """The command of the first validator found: the virtual environment's pinned one first, then PATH.

    The pinned ones come with `make install` (pyproject.toml [dev]); a machine without them fails the
    test with the way to get them rather than skipping the check.
    """
    for candidate in candidates:
        command = candidate.split()
        found = Path(sys.executable).parent / command[0]
        if found.exists():
            return [str(found), *command[1:]]
        on_path = shutil.which(command[0])
        if on_path and _answers([on_path, *_PROBES.get(candidate, ["--version"])]):
            return [on_path, *command[1:]]
    pytest.fail(f"none of {candidates} is installed: run `make install` (pyproject.toml [dev] pins them)")


def _answers(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=30, check=False).returncode == 0
    except OSError:
        return False


def clean_env(**extra: str) -> dict[str, str]:
    """An environment that does not leak this shell's settings into the rendering (compose reads it)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", str(ROOT)), **extra}


def settings_class(service: str) -> type[ServiceSettings]:
    """The settings class `services.<service>.settings` defines."""
    module = importlib.import_module(f"services.{service}.settings")
    found = [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, ServiceSettings) and cls is not ServiceSettings and cls.__module__ == module.__name__
    ]
    assert len(found) == 1, f"services/{service}/settings.py should define one settings class, found {found}"
    return found[0]


def variables(service: str) -> set[str]:
    """The environment variables the service reads (pydantic-settings: field names, upper case)."""
    return {name.upper() for name in settings_class(service).model_fields}


def must_be_given(service: str) -> set[str]:
    """Variables a deployment has to set: unset by default (secrets), or pointing at localhost."""
    needed = set()
    for name, field in settings_class(service).model_fields.items():
        if field.default is None or (isinstance(field.default, str) and "localhost" in field.default):
            needed.add(name.upper())
    return needed


def validated(service: str, environment: dict[str, str]) -> ServiceSettings:
    """The service's settings built from exactly `environment` (as its process would see it)."""
    cls = settings_class(service)
    return cls.model_validate({name.lower(): value for name, value in environment.items()})
