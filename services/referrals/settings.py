"""Settings of the referrals service (DESIGN.md §6, §7 "Referrals")."""

from decimal import Decimal

from pydantic import Field

from shared.settings import ServiceSettings
from shared.unit import Unit


class ReferralsSettings(ServiceSettings):
    http_port: int = Field(8004, ge=1, le=65535, description="HTTP API port.")
    invite_every_days: float = Field(
        90, gt=0, description="A happy customer is asked to refer friends at most once in this many days."
    )
    default_commission_rate: Decimal = Field(
        Decimal("0.10"), ge=0, le=1, description="Affiliate commission on an order's total, unless set per affiliate."
    )


# What every use case of the referrals service gets: the transaction, its clock and these settings, typed.
ReferralsUnit = Unit[ReferralsSettings]
