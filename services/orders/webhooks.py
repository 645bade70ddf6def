"""Platform webhooks: Shopify and WooCommerce tell an order's life; Rapport tells each fact once, through the outbox.

A request is verified against the platform's HMAC signature (the current secret, or the previous one
during a rotation; 401 otherwise), read for what it says (`shopify.read`, `woocommerce.read`), and, in
one transaction, checked against the facts told before, turned into the events not told yet
(`lifecycle.decide`) and published. A fact is known by what it says, not by the platform's delivery id
(WooCommerce's is shared by deliveries of one second): by the topic and Shopify's `X-Shopify-Event-Id`,
else by the topic and a digest of the body. The same fact again, under any delivery id, any number of
times, concurrently, answers 200 and changes nothing; a topic not translated answers 200 `ignored` and is
counted. These routes are public: the signature, not the admin key, says who is calling.
"""

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, Header, HTTPException, Request, status
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, Field, SecretStr

from services.orders import service, store
from services.orders.platforms import (
    Ignored,
    OrderNews,
    PrivacyRequest,
    UntranslatableWebhook,
    Webhook,
    shopify,
    signed_by_any,
    woocommerce,
)
from services.orders.settings import OrdersUnit, settings_of
from shared.http import PUBLIC_ANSWERS, error, field_error
from shared.service import Runtime, runtime

webhooks = APIRouter(tags=["webhooks"])
Rt = Annotated[Runtime, Depends(runtime)]
log = structlog.get_logger("rapport.orders.webhooks")

METRICS = CollectorRegistry()
IGNORED = Counter(
    "rapport_webhooks_ignored",
    "Webhooks answered 200 that stand for nothing here: test orders and notifications, topics not translated.",
    ["platform", "topic", "reason"],
    registry=METRICS,
)
_PING = re.compile(rb"webhook_id=\d+")


class Published(BaseModel):
    id: str = Field(examples=["shopify:order:450789469:placed"])
    type: str = Field(examples=["OrderPlaced"])


class Received(BaseModel):
    """What a webhook became: the events told for it (none when it told nothing new), or why it was ignored."""

    duplicate: bool = Field(description="This fact was received before; nothing changed.")
    published: list[Published] = Field(description="The events told for it, through the outbox.")
    note: str | None = Field(None, description="Why nothing was told, when nothing was (say, not paid yet).")
    ignored: str | None = Field(
        None, description="Set when the webhook stands for nothing here: `test` (a test order), `topic not translated`."
    )


class Ping(BaseModel):
    """WooCommerce checking the URL when a webhook is saved."""

    ping: Literal[True]


class FieldProblem(BaseModel):
    loc: list[str | int] = Field(examples=[["body", "line_items", "0", "price"]])
    msg: str = Field(examples=["line_items.0.price is missing"])
    type: str = Field(examples=["value_error"])


class Untranslatable(BaseModel):
    """FastAPI's validation error shape, naming the field by its path in the platform's payload."""

    detail: list[FieldProblem]


_BODY = {"type": "object", "description": "The platform's resource (an Order, Fulfillment or Refund) as it posts it."}
ANSWERS: dict[int | str, dict[str, Any]] = {
    **PUBLIC_ANSWERS,
    400: error("A topic header is missing, or the body is not a JSON object."),
    401: error("The signature is missing or matches neither the current nor the previous secret."),
    422: {"model": Untranslatable, "description": "The payload lacks a field the translation needs (named)."},
    503: error("This platform's webhooks are off: no secret configured."),
}


@webhooks.post(
    "/webhooks/shopify",
    responses=ANSWERS,
    response_model_exclude_none=True,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _BODY}}}},
)
async def shopify_webhook(
    request: Request,
    rt: Rt,
    x_shopify_topic: Annotated[str | None, Header()] = None,
    x_shopify_hmac_sha256: Annotated[str | None, Header()] = None,
    x_shopify_event_id: Annotated[str | None, Header()] = None,
    x_shopify_shop_domain: Annotated[str | None, Header()] = None,
) -> Received:
    """Shopify's order topics, `fulfillments/create`, `refunds/create` and the mandatory privacy topics."""
    settings = settings_of(rt)
    body = await request.body()
    secrets = (settings.shopify_webhook_secret, settings.shopify_webhook_secret_previous)
    topic, payload = _verified("shopify", body, x_shopify_hmac_sha256, secrets, x_shopify_topic, "X-Shopify-Topic")
    shop = (x_shopify_shop_domain or "").strip().lower()
    # Every delivery of one merchant action shares its event id; without one, the body is the fact.
    fact = f"event:{x_shopify_event_id.strip()}" if x_shopify_event_id else f"body:{_digest(body)}"
    webhook = _read(lambda: shopify.read(topic, payload, shop=shop))
    return await _receive(rt, "shopify", topic, f"shopify:{shop}:{topic}:{fact}", webhook, shop or None)


@webhooks.post(
    "/webhooks/woocommerce",
    responses=ANSWERS,
    response_model_exclude_none=True,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _BODY},
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "properties": {"webhook_id": {"type": "integer"}}},
                },
            },
        }
    },
)
async def woocommerce_webhook(
    request: Request,
    rt: Rt,
    x_wc_webhook_topic: Annotated[str | None, Header()] = None,
    x_wc_webhook_signature: Annotated[str | None, Header()] = None,
    x_wc_webhook_source: Annotated[str | None, Header()] = None,
) -> Received | Ping:
    """WooCommerce `order.created`, `order.updated` (refunds inside), `order.deleted`, `order.restored`."""
    settings = settings_of(rt)
    body = await request.body()
    if x_wc_webhook_signature is None and _PING.fullmatch(body.strip()):
        return Ping(ping=True)  # WooCommerce checks the URL this way, unsigned, when a webhook is saved
    secrets = (settings.woocommerce_webhook_secret, settings.woocommerce_webhook_secret_previous)
    topic, payload = _verified(
        "woocommerce", body, x_wc_webhook_signature, secrets, x_wc_webhook_topic, "X-WC-Webhook-Topic"
    )
    source = (x_wc_webhook_source or "").strip().lower()
    # Never the delivery id: WooCommerce's is a hash of the webhook id and the second, shared within one.
    webhook = _read(lambda: woocommerce.read(topic, payload))
    return await _receive(rt, "woocommerce", topic, f"woocommerce:{source}:{topic}:body:{_digest(body)}", webhook, None)


def _verified(
    platform: str,
    body: bytes,
    signature: str | None,
    secrets: tuple[SecretStr | None, SecretStr | None],
    topic: str | None,
    topic_header: str,
) -> tuple[str, dict[str, Any]]:
    current, previous = secrets
    if current is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"{platform} webhooks are off: no secret configured")
    keys = [secret.get_secret_value() for secret in (current, previous) if secret is not None]
    if not signed_by_any(body, signature, keys):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "signature: missing or does not match the body")
    if not topic or not topic.strip():
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{topic_header}: the webhook topic header is missing")
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"body: not JSON ({error})") from error
    if not isinstance(payload, dict):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "body: not a JSON object")
    return topic.strip().lower(), payload


def _read(read: Callable[[], Webhook]) -> Webhook:
    try:
        return read()
    except UntranslatableWebhook as untranslatable:
        raise field_error(untranslatable.field or "", untranslatable.reason) from untranslatable


async def _receive(rt: Runtime, platform: str, topic: str, fact: str, webhook: Webhook, shop: str | None) -> Received:
    if isinstance(webhook, Ignored):
        IGNORED.labels(platform=platform, topic=topic, reason=webhook.reason).inc()
        log.info("webhook_ignored", platform=platform, topic=topic, reason=webhook.reason)
        return Received(duplicate=False, published=[], ignored=webhook.reason)

    if isinstance(webhook, PrivacyRequest) and webhook.topic == "shop/redact":
        return await _redact_shop(rt, webhook.shop)

    def tell(webhook: OrderNews | PrivacyRequest) -> Callable[[OrdersUnit], Awaitable[str | None]]:
        if isinstance(webhook, OrderNews):
            return lambda unit: service.tell_order_news(unit, webhook, shop)
        return lambda unit: service.answer_privacy_request(unit, webhook)

    async def receive(unit: OrdersUnit) -> Received:
        note = await tell(webhook)(unit)
        published = [Published(id=event.id, type=event.type) for event in unit.pending_events]
        return Received(duplicate=False, published=published, note=None if published else note)

    received = await store.once_per_fact(rt, fact, topic, receive)
    outcome = received or Received(duplicate=True, published=[])
    log.info("webhook_received", platform=platform, topic=topic, fact=fact, **outcome.model_dump(exclude_none=True))
    return outcome


async def _redact_shop(rt: Runtime, shop: str) -> Received:
    """Erase every customer that came from the shop, a batch per transaction (erasing twice changes nothing)."""
    published: list[Published] = []

    async def erase_batch(unit: OrdersUnit) -> list[Published]:
        await service.erase_shop_customers(unit, shop)
        return [Published(id=event.id, type=event.type) for event in unit.pending_events]

    while batch := await rt.transaction(erase_batch):
        published.extend(batch)
    log.info("shop_redacted", shop=shop, erased=len(published))
    return Received(duplicate=False, published=published)


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
