"""The console's only way to the shop's data: the four services' HTTP APIs, called with the key kept here.

A read that fails (the service is down, slow or refuses) comes back as a `Reading` that says so, and the page
marks that part missing instead of failing. A change is sent in the acting person's name (X-Rapport-Actor), so
each service's audit trail says who did it.
"""

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import structlog
from prometheus_client.parser import text_string_to_metric_families

from shared.audit import ACTOR_HEADER

log = structlog.get_logger("rapport.console")

Service = Literal["orders", "followups", "loyalty", "referrals"]
SERVICES: tuple[Service, ...] = ("orders", "followups", "loyalty", "referrals")
# What Operations shows of each service's /metrics (what is set aside it asks GET /dead-letters: a counter of
# dead-lettered messages starts again at 0 with every restart, the queue does not).
SHOWN_METRICS = frozenset({"rapport_outbox_backlog"})
Problem = Literal["unavailable", "not_found", "refused"]


@dataclass(frozen=True)
class Reading:
    """What a service answered to a read: its JSON, or what went wrong (`problem`)."""

    service: Service
    data: Any = None
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class Change:
    """What a service answered to a change: done, or refused with the reason per field (`fields`) or overall."""

    service: Service
    status: int
    data: Any = None
    detail: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class ServiceCalls:
    def __init__(self, urls: Mapping[str, str], key: str | None, timeout: float) -> None:
        self.urls = dict(urls)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=20)
        self.http = httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits)

    async def close(self) -> None:
        await self.http.aclose()

    async def read(
        self, service: Service, path: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Reading:
        """`timeout`: for a report that reads every customer, longer than the client's default."""
        try:
            answer = await self.http.get(
                f"{self.urls[service]}{path}",
                params=_present(params),
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except httpx.HTTPError as failure:
            log.warning("service_unavailable", service=service, path=path, error=type(failure).__name__)
            return Reading(service, problem="unavailable")
        if answer.status_code == 404:
            return Reading(service, problem="not_found")
        if answer.status_code in (401, 403):
            log.error("service_refused_key", service=service, path=path, status=answer.status_code)
            return Reading(service, problem="refused")
        if answer.status_code >= 300:
            log.warning("service_failed", service=service, path=path, status=answer.status_code)
            return Reading(service, problem="unavailable")
        return Reading(service, data=answer.json())

    async def metrics(self, service: Service) -> dict[str, float] | None:
        """The service's Prometheus figures the Operations page shows (summed over labels), or None when away."""
        try:
            answer = await self.http.get(f"{self.urls[service]}/metrics")
        except httpx.HTTPError:
            return None
        if not answer.is_success:
            return None
        figures: dict[str, float] = {}
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                if sample.name in SHOWN_METRICS:
                    figures[sample.name] = figures.get(sample.name, 0.0) + sample.value
        return figures

    async def read_all(self, *reads: tuple[Service, str, Mapping[str, Any] | None]) -> list[Reading]:
        """Several reads at once: a page waits for the slowest, not for the sum."""
        return list(await asyncio.gather(*(self.read(service, path, params) for service, path, params in reads)))

    async def change(
        self,
        service: Service,
        method: str,
        path: str,
        actor: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Change:
        sent_headers = {ACTOR_HEADER: _printable(actor), **(headers or {})}
        try:
            answer = await self.http.request(method, f"{self.urls[service]}{path}", json=body, headers=sent_headers)
        except httpx.HTTPError as failure:
            log.warning("service_unavailable", service=service, path=path, error=type(failure).__name__)
            return Change(service, 503, detail="unavailable")
        try:
            data = answer.json()
        except ValueError:
            data = None
        if answer.is_success:
            return Change(service, answer.status_code, data=data)
        return Change(service, answer.status_code, data=data, detail=_detail(data), fields=_fields(data))


def _present(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if params is None else {k: v for k, v in params.items() if v is not None and v != ""}


def _printable(actor: str) -> str:
    return "".join(c for c in actor if c.isprintable())[:200].encode("ascii", "replace").decode()


def _detail(data: Any) -> str | None:
    detail = data.get("detail") if isinstance(data, dict) else None
    return detail if isinstance(detail, str) else None


def _fields(data: Any) -> dict[str, str]:
    """The fields a refusal names: FastAPI's `detail: [{loc, msg}]`, or a `field: reason` detail."""
    detail = data.get("detail") if isinstance(data, dict) else None
    named: dict[str, str] = {}
    if isinstance(detail, list):
        for problem in detail:
            location = [str(part) for part in problem.get("loc", ()) if part not in ("body", "query", "path")]
            named.setdefault(".".join(location) or "form", str(problem.get("msg", "")))
    elif isinstance(detail, str) and ": " in detail:
        name, _, reason = detail.partition(": ")
        if name.replace("_", "").replace(".", "").isalnum():
            named[name] = reason
    return named
