"""Settings of the loyalty service (DESIGN.md §6)."""

from pydantic import Field

from shared.settings import ServiceSettings


class LoyaltySettings(ServiceSettings):
    http_port: int = Field(8003, ge=1, le=65535, description="HTTP API port.")
