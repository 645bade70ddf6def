"""Settings of the referrals service (DESIGN.md §6)."""

from pydantic import Field

from shared.settings import ServiceSettings


class ReferralsSettings(ServiceSettings):
    http_port: int = Field(8004, ge=1, le=65535, description="HTTP API port.")
