"""HTTP pieces every service shares: the API-key guard, the request body limit and the health routes."""

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from shared.audit import ACTOR_HEADER, Call, current_call
from shared.keys import ApiKey, KeyRing, Scope


def calling_key(request: Request) -> ApiKey | None:
    """The API key a request to a public route came with, checked by the guard (None: no key)."""
    key = getattr(request.state, "api_key", None)
    return key if isinstance(key, ApiKey) else None


# A route that only an `admin` key may call says so in its OpenAPI: `@api.post(..., openapi_extra=ADMIN_ONLY)`.
ADMIN_ONLY: dict[str, Any] = {"x-rapport-scope": "admin"}
_READING = frozenset({"GET", "HEAD", "OPTIONS"})


class ApiGuard:
    """Authentication before anything else: a request to a route that is not public needs a key whose scope
    covers it (GET: read; any other method: write; `ADMIN_ONLY` routes: admin), checked before the body is read
    or validated, so an unauthenticated request gets 401 whatever it sends.

    A public route (a signed webhook, a token page) needs no key; one presented anyway is checked like any
    other, and the route finds it in `request.state.api_key`.

    A call that may change state is named for the audit trail (`shared.audit.current_call`): the key's name,
    the person the console acts for (`X-Rapport-Actor`), the route and its path parameters.
    """

    def __init__(
        self, app: ASGIApp, *, keys: KeyRing, protected: Sequence[BaseRoute], public: Sequence[BaseRoute]
    ) -> None:
        self.app = app
        self.keys = keys
        self.protected = protected  # the routes behind a key
        self.public = public  # the routes anyone may call (health, signed webhooks, token pages, the docs)

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        route, params = _matching(self.public, scope)
        if route is not None and "authorization" not in headers:
            await self.app(scope, receive, send)  # anyone may call it; its own signature or token decides
            return
        if route is None:
            route, params = _matching(self.protected, scope)
        path = getattr(route, "path", None)
        key = self._key(headers.get("authorization"))
        if not self.keys.keys:
            await _answer(send, 403, "the API is disabled until ADMIN_API_KEY or API_KEYS is set")
            return
        if key is None:
            await _answer(send, 401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
            return
        method = scope["method"]
        needed: Scope = "read" if method in _READING else "write"
        if (getattr(route, "openapi_extra", None) or {}).get("x-rapport-scope") == "admin":
            needed = "admin"
        if not key.allows(needed):
            await _answer(send, 403, f"the key {key.name!r} has the {key.scope} scope; this needs {needed}")
            return
        scope.setdefault("state", {})["api_key"] = key  # a public route called with a key may ask who it is
        if needed == "read":
            await self.app(scope, receive, send)
            return
        acting_for = (headers.get(ACTOR_HEADER) or "").strip()[:200]
        actor = f"{key.name}/{acting_for}" if acting_for.isprintable() and acting_for else key.name
        call = Call(actor, f"{method} {path or scope['path']}", {k: str(v) for k, v in params.items()})
        token = current_call.set(call)
        try:
            await self.app(scope, receive, send)
        finally:
            current_call.reset(token)

    def _key(self, authorization: str | None) -> ApiKey | None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.keys.identify(token.strip())


def _matching(routes: Sequence[BaseRoute], scope: AsgiScope) -> tuple[BaseRoute | None, dict[str, Any]]:
    """The route a request is for (a path match with another method counts), and its path parameters."""
    partial: BaseRoute | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match == Match.FULL:
            return route, child.get("path_params", {})
        if match == Match.PARTIAL and partial is None:
            partial = route
    return partial, {}


async def _answer(send: Send, status_code: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status_code, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class ErrorBody(BaseModel):
    """Every refusal but a validation error: what is wrong, naming the field when one is (`field: reason`)."""

    detail: str = Field(examples=["reward_id: no active reward 'mug'"])


def error(description: str) -> dict[str, Any]:
    """An answer for a route's `responses`: `responses={404: error("no such customer")}`."""
    return {"model": ErrorBody, "description": description}


# What any guarded route may answer besides its own answers; the guard and the body limit give them.
GUARDED_ANSWERS: dict[int | str, dict[str, Any]] = {
    401: error("No key, or a key the service does not know."),
    403: error("The key's scope does not cover this call, or the API has no keys configured."),
    413: error("The body is larger than MAX_REQUEST_BYTES."),
}
# A public route checks its own signature or token (and a key, when one comes), and is bounded the same way.
PUBLIC_ANSWERS: dict[int | str, dict[str, Any]] = {
    401: error("A wrong signature, token or key."),
    413: GUARDED_ANSWERS[413],
}


# What a customer's export answers when the service holds nothing on them (GET /customers/{customer_id}/export).
NOTHING_HELD = error("The service holds nothing on this customer: never heard of, or erased.")


def nothing_held(customer_id: str, *, erased: bool) -> HTTPException:
    """The 404 of an export that finds nothing: the customer was erased, or is not known here."""
    return HTTPException(
        status.HTTP_404_NOT_FOUND, f"customer_id: {customer_id!r} {'was erased' if erased else 'is not known'}"
    )


def field_error(field: str, message: str, value: Any = None) -> RequestValidationError:
    """A 422 shaped as FastAPI's documented validation error, for a rule a route checks itself."""
    location = ("body", *field.split(".")) if field else ("body",)
    return RequestValidationError([{"loc": location, "msg": message, "type": "value_error", "input": value}])


def answer_405_with_every_method(router: APIRouter) -> None:
    """A 405 lists every method of its path (Starlette lists only those of the path's first route).

    Adds, once per path served by several routes, a hidden route refusing the other methods.
    """
    shown = [route for route in router.routes if isinstance(route, APIRoute) and route.include_in_schema]
    hidden = {route.path for route in router.routes if isinstance(route, APIRoute) and not route.include_in_schema}
    methods: dict[str, set[str]] = {}
    for route in shown:
        methods.setdefault(route.path, set()).update(route.methods or ())
    for path, allowed in methods.items():
        if path in hidden or sum(route.path == path for route in shown) < 2:
            continue
        others = sorted({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} - allowed)
        router.add_api_route(path, _refusing(", ".join(sorted(allowed))), methods=others, include_in_schema=False)


def _refusing(allow: str) -> Callable[[], Awaitable[Response]]:
    async def not_allowed() -> Response:
        return JSONResponse({"detail": "Method Not Allowed"}, status.HTTP_405_METHOD_NOT_ALLOWED, {"Allow": allow})

    return not_allowed


def health_routes(
    readiness: Callable[[], Awaitable[dict[str, str]]],
    metrics: Callable[[], Awaitable[bytes]],
) -> APIRouter:
    """/healthz, /readyz and /metrics: open to probes and scrapers, and free of personal data."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @router.get("/readyz", responses={503: {"description": "A part is not ready; each part's state, as for 200."}})
    async def readyz(response: Response) -> dict[str, str]:
        checks = await readiness()  # each part's state: "ok", or what is wrong with it
        if any(state != "ok" for state in checks.values()):
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return checks

    @router.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
    )
    async def prometheus(request: Request) -> Response:
        return Response(await metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return router


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Answer 413 to a request whose body is over `max_bytes`, without reading further.

    A declared `Content-Length` over the limit is refused before any of the body is read; a body sent in
    chunks is counted as it arrives and refused the moment it passes the limit. So a 100 MB upload costs
    no more memory than the limit, whatever route it is for (a webhook's signature is checked after this).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"body: larger than {self.max_bytes} bytes (MAX_REQUEST_BYTES)"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status.HTTP_413_CONTENT_TOO_LARGE,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
