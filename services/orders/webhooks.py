"""Platform webhooks: Shopify and WooCommerce orders become canonical events, through the outbox.

Each request is verified against the platform's HMAC signature (401 otherwise),
de-duplicated on the platform's delivery id, translated (422 naming the
platform's field when it cannot be), and every resulting event is published in
the same transaction that records the delivery. Events get ids made from the
platform's own ids, so a webhook delivered again under a new delivery id still
yields events the consumers' inboxes recognise. These routes are public: the
signature, not the admin key, says who is calling.
"""

import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, Header, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, SecretStr

from services.orders import store
from services.orders.platforms import (
    OrderNotKnownYet,
    Translation,
    UntranslatableWebhook,
    shopify,
    signature_valid,
    woocommerce,
)
from services.orders.settings import OrdersUnit, settings_of
from shared.events import (
    OrderPlaced,
)
from shared.http import error, field_error
from shared.service import Runtime, runtime

webhooks = APIRouter(tags=["webhooks"])
Rt = Annotated[Runtime, Depends(runtime)]
log = structlog.get_logger("rapport.orders.webhooks")

Translate = Callable[[OrdersUnit, str, dict[str, Any]], Any]


class Published(BaseModel):
    id: str
    type: str


class Received(BaseModel):
    """What a delivery became: its events, or nothing when the delivery was taken before."""

    duplicate: bool
    published: list[Published]


class Ping(BaseModel):
    """WooCommerce checking the URL when a webhook is saved."""

    ping: Literal[True]


# Every refusal a webhook can get besides a wrong signature (401) and an oversized body (413).
REFUSALS: dict[int | str, dict[str, Any]] = {
    400: error("A topic or delivery id header is missing, or the body is not a JSON object."),
    409: error("A refund for an order not received yet: the platform delivers it again later."),
    503: error("This platform's webhooks are off: no secret configured."),
}


@webhooks.post("/webhooks/shopify", responses=REFUSALS)
async def shopify_webhook(
    request: Request,
    rt: Rt,
    x_shopify_topic: Annotated[str | None, Header()] = None,
    x_shopify_hmac_sha256: Annotated[str | None, Header()] = None,
    x_shopify_webhook_id: Annotated[str | None, Header()] = None,
) -> Received:
    """Shopify `orders/create`, `orders/fulfilled` and `refunds/create`."""

    async def translate(unit: OrdersUnit, topic: str, payload: dict[str, Any]) -> list[Translation]:
        customer_id = None
        if topic == "refunds/create":  # a refund names its order, not its customer
            customer_id = await store.customer_of_order(unit, str(payload.get("order_id")))
        return shopify.translate(topic, payload, customer_id=customer_id)

    secret = settings_of(rt).shopify_webhook_secret
    body = await request.body()
    return await _receive(
        rt, "shopify", body, secret, x_shopify_hmac_sha256, x_shopify_topic, x_shopify_webhook_id, translate
    )


@webhooks.post("/webhooks/woocommerce", responses=REFUSALS)
async def woocommerce_webhook(
    request: Request,
    rt: Rt,
    x_wc_webhook_topic: Annotated[str | None, Header()] = None,
    x_wc_webhook_signature: Annotated[str | None, Header()] = None,
    x_wc_webhook_delivery_id: Annotated[str | None, Header()] = None,
) -> Received | Ping:
    """WooCommerce `order.created` and `order.updated` (fulfilment when completed, refunds)."""
    body = await request.body()
    if x_wc_webhook_topic is None and body.startswith(b"webhook_id="):
        return Ping(ping=True)  # WooCommerce checks the URL this way when a webhook is saved

    async def translate(unit: OrdersUnit, topic: str, payload: dict[str, Any]) -> list[Translation]:
        return woocommerce.translate(topic, payload)

    secret = settings_of(rt).woocommerce_webhook_secret
    return await _receive(
        rt, "woocommerce", body, secret, x_wc_webhook_signature, x_wc_webhook_topic, x_wc_webhook_delivery_id, translate
    )


async def _receive(
    rt: Runtime,
    platform: str,
    body: bytes,
    secret: SecretStr | None,
    signature: str | None,
    topic: str | None,
    delivery_id: str | None,
    translate: Translate,
) -> Received:
    if secret is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"{platform} webhooks are off: no secret configured")
    if not signature_valid(body, signature, secret.get_secret_value()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "signature: missing or does not match the body")
    if not topic:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "topic: the webhook topic header is missing")
    if not delivery_id:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "delivery id: the webhook id header is missing")
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"body: not JSON ({error})") from error
    if not isinstance(payload, dict):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "body: not a JSON object")
    delivery = f"{platform}:{delivery_id}"

    async def receive(unit: OrdersUnit) -> list[Published]:
        try:
            translations = await translate(unit, topic, payload)
        except UntranslatableWebhook as untranslatable:
            raise _refusal(untranslatable) from untranslatable
        events = [
            unit.publish(translation.data, subject=_subject(translation), event_id=translation.event_id)
            for translation in translations
        ]
        return [Published(id=e.id, type=e.type) for e in events]

    published = await store.once_per_delivery(rt, delivery, topic, receive)
    outcome = Received(duplicate=published is None, published=published or [])
    log.info("webhook_received", platform=platform, topic=topic, delivery=delivery, **outcome.model_dump())
    return outcome


def _refusal(untranslatable: UntranslatableWebhook) -> HTTPException | RequestValidationError:
    if isinstance(untranslatable, OrderNotKnownYet):
        # A refund raced ahead of its order's webhook: the platform retries a non-2xx answer later.
        return HTTPException(status.HTTP_409_CONFLICT, f"order_id: {untranslatable.reason}")
    return field_error(untranslatable.field or "", untranslatable.reason)


def _subject(translation: Translation) -> str:
    data = translation.data
    return data.customer.customer_id if isinstance(data, OrderPlaced) else data.customer_id
