"""Settings of the followups service (DESIGN.md §6)."""

from pydantic import Field

from shared.settings import ServiceSettings


class FollowupsSettings(ServiceSettings):
    http_port: int = Field(8002, ge=1, le=65535, description="HTTP API port.")
