"""Settings every service reads from the environment (DESIGN.md §6)."""

import sys
from typing import Annotated, Literal, TypeVar

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.keys import ApiKey, KeyRing, digest, parse_api_keys
from shared.topology import Topology


def _empty_is_unset(value: object) -> object:
    return None if value == "" or (isinstance(value, SecretStr) and not value.get_secret_value()) else value


# A key or secret that may be left unset; an empty one is unset too, never a key that anyone can sign with.
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_empty_is_unset)]


class ServiceSettings(BaseSettings):
    """The base every service's settings extend; field names are the variables' names.

    A variable set to the empty string counts as unset (compose files pass `${X:-}`).
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True, env_ignore_empty=True)

    rabbitmq_url: str = Field("amqp://guest:guest@localhost:5672/", description="Broker.")
    mongodb_url: str = Field(
        "mongodb://localhost:27017/?replicaSet=rs0",
        description="MongoDB replica set (one node is enough; transactions need a replica set).",
    )
    crm_prefix: str = Field(
        "crm", pattern=r"^[a-z][a-z0-9_-]{0,39}$", description="Prefix of exchange, queue and database names."
    )
    http_port: int = Field(8000, ge=1, le=65535, description="HTTP API port.")
    http_host: str = Field("0.0.0.0", description="Address the HTTP API listens on.")
    admin_api_key: OptionalSecret = Field(
        None, description="Bearer key for the HTTP API (an `admin` key named admin); see also API_KEYS."
    )
    api_keys: str = Field(
        "",
        description="Named, scoped keys, comma-separated `name:read|write|admin:sha256:<hex>` (python -m shared.keys).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_format: Literal["json", "console"] = Field("json", description="Log format.")

    # Group commit (DESIGN.md §5): the prefetch (two batches) bounds what is in flight.
    batch_size: int = Field(
        100, ge=1, le=1000, description="Largest commit batch; the consumer prefetches twice this many messages."
    )
    batch_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="How long a batch waits for company before it commits."
    )
    retry_backoff_seconds: float = Field(
        0.2, ge=0, le=60, description="First back-off before a failed message is redelivered; doubles each time."
    )
    shutdown_grace_seconds: float = Field(15.0, ge=0, description="How long SIGTERM waits for in-flight messages.")
    max_request_bytes: int = Field(
        1_048_576, ge=1024, description="Largest HTTP request body; a larger one is refused with 413 unread."
    )
    max_message_bytes: int = Field(
        1_048_576, ge=1024, description="Largest message body a consumer reads; a larger one is dead-lettered."
    )
    consumer_stall_seconds: float = Field(
        60.0, gt=0, description="/readyz says `stalled` when messages have waited this long with no batch finished."
    )

    @field_validator("api_keys")
    @classmethod
    def _keys_are_well_formed(cls, value: str) -> str:
        parse_api_keys(value)
        return value

    @property
    def topology(self) -> Topology:
        return Topology(self.crm_prefix)

    @property
    def key_ring(self) -> KeyRing:
        """Every key the API takes: API_KEYS, and ADMIN_API_KEY as one admin key named admin."""
        keys = parse_api_keys(self.api_keys)
        if self.admin_api_key is not None:
            keys = (ApiKey("admin", "admin", digest(self.admin_api_key.get_secret_value())), *keys)
        return KeyRing(keys)


S = TypeVar("S", bound=ServiceSettings)


def settings_from_environment(kind: type[S]) -> S:
    """Read the settings; on a bad value, name the variable and why, and exit 2 (no traceback)."""
    try:
        return kind()
    except ValidationError as error:
        for problem in error.errors():
            variable = str(problem["loc"][0]).upper() if problem["loc"] else "?"
            print(f"{variable}: {problem['msg']}", file=sys.stderr)  # not the value: it may be a secret
        raise SystemExit(2) from None
