"""Settings of the orders service (DESIGN.md §6)."""

from pydantic import Field

from shared.service import Runtime
from shared.settings import OptionalSecret, ServiceSettings
from shared.types import Currency
from shared.unit import Unit


class OrdersSettings(ServiceSettings):
    http_port: int = Field(8001, ge=1, le=65535, description="HTTP API port.")
    reporting_currency: Currency = Field(
        "EUR", description="Currency whose net spend ranks customers (RFM monetary score, `sort=spent`)."
    )
    segment_interval_seconds: float = Field(
        900.0, gt=0, description="How often every customer's RFM scores and segment are recomputed."
    )
    shopify_webhook_secret: OptionalSecret = Field(
        None, description="Shopify app's client secret: verifies X-Shopify-Hmac-Sha256; unset refuses the webhooks."
    )
    shopify_webhook_secret_previous: OptionalSecret = Field(
        None,
        description="The Shopify secret before a rotation, accepted beside the current one while Shopify still signs"
        " with it (up to an hour); unset it afterwards.",
    )
    woocommerce_webhook_secret: OptionalSecret = Field(
        None, description="WooCommerce webhook secret: verifies X-WC-Webhook-Signature; unset refuses the webhooks."
    )
    woocommerce_webhook_secret_previous: OptionalSecret = Field(
        None, description="The WooCommerce secret before a change, accepted beside the current one meanwhile."
    )


def settings_of(rt: Runtime) -> OrdersSettings:
    """The settings a running orders service was built with, typed: how routes and jobs read them."""
    settings: OrdersSettings = rt.transactions.settings  # the same object its units carry as `unit.settings`
    return settings


# What every use case of the orders service gets: the transaction, its clock and these settings, typed.
OrdersUnit = Unit[OrdersSettings]
