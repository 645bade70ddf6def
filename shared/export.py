"""A customer's data from all four services in one machine-readable document (GDPR Art. 15 and 20).

    python -m shared.export CUSTOMER_ID [--out FILE]

Each service answers `GET /customers/{customer_id}/export` (an admin key) with everything it holds on the
customer, read through its own store; no service reads another's database, and this gatherer only calls the
four HTTP APIs. The document is

    {"customer_id": ..., "exported_at": ..., "services": {"orders": {...}, "followups": {...}, ...},
     "missing": [...]}

A service that holds nothing on the customer (404) is in `services` as null; one that could not answer
(down, refusing the key, failing) is left out of `services` and named in `missing`, and the command exits 1:
a partial copy of someone's data must not pass for a whole one. The console calls `gather_export` itself.

Settings (environment): ORDERS_URL, FOLLOWUPS_URL, LOYALTY_URL, REFERRALS_URL (defaults
http://127.0.0.1:8001 … 8004) and RAPPORT_API_KEY (an admin key; ADMIN_API_KEY is taken when it is unset).
"""

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("orders", "followups", "loyalty", "referrals")


class ExportSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, env_ignore_empty=True)

    orders_url: str = Field("http://127.0.0.1:8001", description="Base URL of the orders service.")
    followups_url: str = Field("http://127.0.0.1:8002", description="Base URL of the followups service.")
    loyalty_url: str = Field("http://127.0.0.1:8003", description="Base URL of the loyalty service.")
    referrals_url: str = Field("http://127.0.0.1:8004", description="Base URL of the referrals service.")
    rapport_api_key: SecretStr | None = Field(None, description="An admin key of the four services.")
    admin_api_key: SecretStr | None = Field(None, description="Taken when RAPPORT_API_KEY is unset.")
    export_timeout_seconds: float = Field(30.0, gt=0, description="How long each service may take to answer.")

    @property
    def urls(self) -> dict[str, str]:
        return {service: str(getattr(self, f"{service}_url")) for service in SERVICES}

    @property
    def api_key(self) -> str | None:
        key = self.rapport_api_key or self.admin_api_key
        return None if key is None else key.get_secret_value()


class CustomerData(BaseModel):
    """One customer's data as all four services hold it."""

    customer_id: str
    exported_at: datetime
    services: dict[str, dict[str, Any] | None] = Field(
        description="Each service's export; null where it holds nothing on the customer."
    )
    missing: list[str] = Field(description="Services that could not answer: the document is not complete.")
    problems: dict[str, str] = Field(default_factory=dict, exclude=True)  # why each missing one is missing


class _Missing(Exception):
    pass


def _names_the_customer(answer: httpx.Response) -> bool:
    try:
        detail = answer.json().get("detail")
    except (ValueError, AttributeError):
        return False
    return isinstance(detail, str) and detail.startswith("customer_id:")


async def _export_of(http: httpx.AsyncClient, base_url: str, customer_id: str) -> dict[str, Any] | None:
    url = f"{base_url.rstrip('/')}/customers/{quote(customer_id, safe='')}/export"
    try:
        answer = await http.get(url)
    except httpx.HTTPError as error:
        raise _Missing(f"unreachable at {base_url}: {error!r}") from error
    if answer.status_code == 404 and _names_the_customer(answer):
        return None  # the service holds nothing on them (a 404 of a service without the route is no answer)
    if answer.status_code != 200:
        raise _Missing(f"answered {answer.status_code}: {answer.text[:200]}")
    try:
        body = answer.json()
    except ValueError as error:
        raise _Missing("answered 200 without JSON") from error
    if not isinstance(body, dict):
        raise _Missing("answered 200 with JSON that is not an object")
    return body


async def gather_export(
    customer_id: str,
    *,
    urls: Mapping[str, str],
    api_key: str,
    timeout: float = 30.0,
) -> CustomerData:
    """Ask each service in `urls` (by name) for everything it holds on the customer, all at once."""
    headers = {"Authorization": f"Bearer {api_key}", "X-Rapport-Actor": "export"}
    async with httpx.AsyncClient(headers=headers, timeout=timeout) as http:
        answers = await asyncio.gather(
            *(_export_of(http, url, customer_id) for url in urls.values()), return_exceptions=True
        )
    services: dict[str, dict[str, Any] | None] = {}
    problems: dict[str, str] = {}
    for service, answer in zip(urls, answers, strict=True):
        if isinstance(answer, _Missing):
            problems[service] = str(answer)
        elif isinstance(answer, BaseException):
            raise answer
        else:
            services[service] = answer
    return CustomerData(
        customer_id=customer_id,
        exported_at=datetime.now(UTC),
        services=services,
        missing=list(problems),
        problems=problems,
    )


def _write(document: str, out: Path | None) -> None:
    if out is None:
        print(document)
        return
    # Someone's personal data: readable by its owner only.
    descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(document + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("customer_id", help="The shop's id of the customer.")
    parser.add_argument("--out", type=Path, help="Write the document here (mode 600) instead of to stdout.")
    args = parser.parse_args(argv)
    try:
        settings = ExportSettings()
    except ValidationError as error:
        for invalid in error.errors():
            print(f"{str(invalid['loc'][0]).upper()}: {invalid['msg']}", file=sys.stderr)
        return 2
    if settings.api_key is None:
        print("RAPPORT_API_KEY: an admin key of the services is required", file=sys.stderr)
        return 2
    data = asyncio.run(
        gather_export(
            args.customer_id, urls=settings.urls, api_key=settings.api_key, timeout=settings.export_timeout_seconds
        )
    )
    _write(json.dumps(data.model_dump(mode="json"), ensure_ascii=False, indent=2), args.out)
    for service, problem in data.problems.items():
        print(f"{service}: {problem}", file=sys.stderr)
    if data.missing:
        print(f"incomplete: {', '.join(data.missing)} did not answer", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
