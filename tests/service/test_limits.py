"""Bounded everything (issue 15): a request body over MAX_REQUEST_BYTES is refused with 413 before it is read,
whether its length is declared or it arrives in chunks, on every route (a signed webhook's included)."""

from collections.abc import AsyncIterator
from dataclasses import replace

from services.orders.app import SPEC as ORDERS
from services.orders.settings import OrdersSettings
from shared.settings import ServiceSettings
from tests.service.probe import probe_spec
from tests.support.running import running_service

LIMIT = 4096
ADMIN = {"Authorization": "Bearer test-admin-key"}  # authentication comes first: a stranger gets 401


async def chunks(total: int, size: int = 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        sent += size
        yield b"x" * size


async def test_a_declared_body_over_the_limit_is_refused_with_413_and_one_under_it_goes_through(
    service_name: str, settings: ServiceSettings
) -> None:
    small = settings.model_copy(update={"max_request_bytes": LIMIT})
    async with running_service(probe_spec(service_name), small) as (_, http):
        refused = await http.post("/orders-seen/x", content=b"x" * (LIMIT + 1), headers=ADMIN)
        assert refused.status_code == 413
        assert refused.json() == {"detail": f"body: larger than {LIMIT} bytes (MAX_REQUEST_BYTES)"}
        allowed = await http.post("/orders-seen/x", content=b"x" * LIMIT, headers=ADMIN)
        assert allowed.status_code == 405  # the route answers for itself: it takes no POST


async def test_a_huge_webhook_with_a_bad_signature_is_refused_before_it_is_read(
    service_name: str, settings: ServiceSettings
) -> None:
    orders = OrdersSettings(**{**settings.model_dump(), "max_request_bytes": LIMIT, "shopify_webhook_secret": "s3cret"})
    async with running_service(replace(ORDERS, name=service_name), orders) as (_, http):
        headers = {"X-Shopify-Topic": "orders/create", "X-Shopify-Hmac-Sha256": "forged", "X-Shopify-Webhook-Id": "w1"}
        declared = await http.post("/webhooks/shopify", content=b"{" + b" " * 10 * LIMIT + b"}", headers=headers)
        assert declared.status_code == 413
        streamed = await http.post("/webhooks/shopify", content=chunks(10 * LIMIT), headers=headers)
        assert streamed.status_code == 413
        small_forged = await http.post("/webhooks/shopify", content=b"{}", headers=headers)
        assert small_forged.status_code == 401  # under the limit, the signature decides
