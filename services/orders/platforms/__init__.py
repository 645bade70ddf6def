"""Shopify and WooCommerce webhooks translated into the canonical order events, with no I/O.

`shopify.translate(topic, payload, customer_id=...)` and `woocommerce.translate(topic, payload)`
return the `Translation`s a webhook stands for; `signature_valid` checks its HMAC header first.
"""

from services.orders.platforms import shopify, woocommerce
from services.orders.platforms.common import OrderNotKnownYet, Translation, UntranslatableWebhook, signature_valid

__all__ = ["OrderNotKnownYet", "Translation", "UntranslatableWebhook", "shopify", "signature_valid", "woocommerce"]
