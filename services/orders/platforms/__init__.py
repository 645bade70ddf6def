"""Shopify and WooCommerce webhooks read as news of an order, and told once as canonical events, with no I/O.

`shopify.read(topic, payload)` and `woocommerce.read(topic, payload)` say what a webhook is about
(`OrderNews`, a `PrivacyRequest`, or `Ignored`); `lifecycle.decide` turns an order's news into the
events not told yet; `signed_by_any` checks the HMAC header first.
"""

from services.orders.platforms import lifecycle, shopify, woocommerce
from services.orders.platforms.common import (
    Ignored,
    OrderNews,
    PrivacyRequest,
    RefundNews,
    Translation,
    UntranslatableWebhook,
    Webhook,
    signature_valid,
    signed_by_any,
)
from services.orders.platforms.lifecycle import Decision, KnownOrder, decide, known_order_key

__all__ = [
    "Decision",
    "Ignored",
    "KnownOrder",
    "OrderNews",
    "PrivacyRequest",
    "RefundNews",
    "Translation",
    "UntranslatableWebhook",
    "Webhook",
    "decide",
    "known_order_key",
    "lifecycle",
    "shopify",
    "signature_valid",
    "signed_by_any",
    "woocommerce",
]
