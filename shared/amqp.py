"""The one way to open an aio-pika connection of a service's own (consumer, outbox publisher)."""

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from yarl import URL

RECONNECT_SECONDS = 1.0  # a broker back after a restart is used again within a second


async def connect(rabbitmq_url: str, name: str) -> AbstractRobustConnection:
    """A robust connection (it reconnects and restores its channels by itself), named in the management UI."""
    url = URL(rabbitmq_url).update_query(name=name, reconnect_interval=RECONNECT_SECONDS)
    return await aio_pika.connect_robust(str(url))
