"""Settings of the loyalty service (DESIGN.md §6)."""

from pydantic import Field

from shared.service import Runtime
from shared.settings import ServiceSettings
from shared.unit import Unit


class LoyaltySettings(ServiceSettings):
    http_port: int = Field(8003, ge=1, le=65535, description="HTTP API port.")
    expiry_interval_seconds: float = Field(60.0, gt=0, description="How often expiry and tier review run.")


# What every use case of the loyalty service gets: the transaction, its clock and these settings, typed.
LoyaltyUnit = Unit[LoyaltySettings]


def settings_of(rt: Runtime) -> LoyaltySettings:
    """The settings a running loyalty service was built with, typed: how routes and jobs read them."""
    settings: LoyaltySettings = rt.transactions.settings  # the same object its units carry as `unit.settings`
    return settings
