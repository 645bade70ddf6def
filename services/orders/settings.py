"""Settings of the orders service (DESIGN.md §6)."""

from pydantic import Field

from shared.settings import ServiceSettings


class OrdersSettings(ServiceSettings):
    http_port: int = Field(8001, ge=1, le=65535, description="HTTP API port.")
