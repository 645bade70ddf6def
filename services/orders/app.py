"""The orders service: customers' history, lifetime value and segments."""

from services.orders.handlers import HANDLERS
from shared.events import CustomerErasedEvent, OrderPlacedEvent
from shared.service import ServiceSpec

SPEC = ServiceSpec(
    name="orders",
    handlers=HANDLERS,
    publishes=(OrderPlacedEvent, CustomerErasedEvent),
)
