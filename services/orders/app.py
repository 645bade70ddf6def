"""The orders service: customers' history, lifetime value and segments; platform webhooks; erasure."""

from services.orders.api import api
from services.orders.handlers import HANDLERS
from services.orders.jobs import score_customers_regularly
from services.orders.service import prefetch_orders
from services.orders.store import ensure_indexes
from services.orders.webhooks import webhooks
from shared.events import (
    CustomerErasedEvent,
    CustomerSegmentChangedEvent,
    OrderFulfilledEvent,
    OrderPlacedEvent,
    OrderRefundedEvent,
)
from shared.service import ServiceSpec

SPEC = ServiceSpec(
    name="orders",
    source="orders",
    handlers=HANDLERS,
    publishes=(
        OrderPlacedEvent,
        OrderFulfilledEvent,
        OrderRefundedEvent,
        CustomerErasedEvent,
        CustomerSegmentChangedEvent,
    ),
    api=api,
    public_api=webhooks,
    ensure_indexes=ensure_indexes,
    background=(score_customers_regularly,),
    prefetch=prefetch_orders,
)
