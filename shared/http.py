"""HTTP pieces every service shares: the admin-key guard and the health routes."""

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

bearer = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def is_admin(credentials: HTTPAuthorizationCredentials | None, key: SecretStr | None) -> bool:
    """Whether the request's bearer token is the admin key (compared in constant time)."""
    if key is None or not key.get_secret_value() or credentials is None:
        return False
    return hmac.compare_digest(credentials.credentials.encode(), key.get_secret_value().encode())


def admin_guard(key: SecretStr | None) -> Callable[..., None]:
    """A dependency that lets a request through only with `Authorization: Bearer <ADMIN_API_KEY>`."""

    def require_admin(credentials: Credentials) -> None:
        if key is None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "the API is disabled until ADMIN_API_KEY is set")
        if not is_admin(credentials, key):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_admin


def health_routes(
    readiness: Callable[[], Awaitable[dict[str, bool]]],
    metrics: Callable[[], Awaitable[bytes]],
) -> APIRouter:
    """/healthz, /readyz and /metrics: open to probes and scrapers, and free of personal data."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @router.get("/readyz")
    async def readyz(response: Response) -> dict[str, str]:
        checks = await readiness()
        if not all(checks.values()):
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {name: "ok" if up else "unreachable" for name, up in checks.items()}

    @router.get("/metrics")
    async def prometheus(request: Request) -> Response:
        return Response(await metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return router
