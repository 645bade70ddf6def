"""Run a service in-process against the real broker and MongoDB, with an HTTP client for its API."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from shared.service import Runtime, ServiceSpec, build_app
from shared.settings import ServiceSettings


@asynccontextmanager
async def running_service(
    spec: ServiceSpec, settings: ServiceSettings
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    app = build_app(spec, settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{spec.name}") as http:
            yield app.state.runtime, http
