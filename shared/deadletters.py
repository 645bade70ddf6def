"""A service's dead letters: list them, and move them back to the service's queue after a fix.

    python -m shared.deadletters list <service> [--limit N] [--json]
    python -m shared.deadletters replay <service> [--limit N] [--id MESSAGE_ID ...]

The service name `unrouted` means the events no service binds (`crm.unrouted`, the events exchange's
alternate exchange): `list unrouted` shows them with their routing key, `replay unrouted` publishes them to
the events exchange again with that key, once a service that binds it runs (what is still unrouted comes back).

(`make dead-letters SERVICE=loyalty`, `make replay-dead-letters SERVICE=loyalty`; in a container
`python -m shared.deadletters ...` with the container's own settings.) RABBITMQ_URL and CRM_PREFIX are
read the way the services read them.

`list` shows why each message was dead-lettered (`x-rapport-error`, `x-rapport-error-field`, or the
broker's own reason) with its ids and type, never its body: bodies carry customers' personal data.

Neither command requeues a message: on a quorum queue a requeue counts as a failed delivery, and from
RabbitMQ 4.0 on a quorum queue drops a message after 20 of them unless told otherwise. Each message is
taken, published again with publisher confirms, and acknowledged only after the broker confirmed the
copy, so a crash in between leaves at worst a duplicate, which the service's inbox absorbs. `list`
puts the messages it shows at the back of the dead-letter queue (a `--limit` listing shows the next
ones each time); `replay` publishes to the service's own queue through the default exchange, so the
event reaches that one service again and not every service bound to the events exchange.
"""

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue, DeliveryMode
from aio_pika.exceptions import AMQPError, ChannelClosed, ChannelInvalidStateError
from yarl import URL

from shared.consumer import DELIVERIES_HEADER, ERROR_FIELD_HEADER, ERROR_HEADER
from shared.settings import ServiceSettings
from shared.topology import Topology

REPLAYS_HEADER = "x-rapport-replays"
ROUTING_KEY_HEADER = "x-rapport-routing-key"  # an unrouted event's own key, kept when the listing moves it
UNROUTED = "unrouted"
# What the broker and the consumer wrote about the failed deliveries; a replayed message starts afresh.
_DEATH_HEADERS = frozenset(
    {
        ERROR_HEADER,
        ERROR_FIELD_HEADER,
        DELIVERIES_HEADER,
        ROUTING_KEY_HEADER,
        "x-delivery-count",
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)
_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


class DeadLetterError(Exception):
    """The command could not do its work (unknown queue, broker refused a publish); nothing was lost."""


@dataclass(frozen=True)
class DeadLetter:
    """What an operator needs to decide about one dead letter: ids, type and reason, no personal data."""

    message_id: str | None
    event_type: str | None
    correlation_id: str | None
    reason: str
    field: str | None
    deliveries: int | None
    replays: int


@dataclass(frozen=True)
class Replayed:
    replayed: list[str]
    left: int  # dead letters still waiting in the queue


def describe(message: AbstractIncomingMessage, headers: dict[str, Any] | None = None) -> DeadLetter:
    headers = headers if headers is not None else dict(message.headers or {})
    return DeadLetter(
        message_id=message.message_id,
        event_type=message.type,
        correlation_id=message.correlation_id,
        reason=_reason(headers),
        field=_text(headers.get(ERROR_FIELD_HEADER)),
        deliveries=_number(headers.get(DELIVERIES_HEADER)),
        replays=_number(headers.get(REPLAYS_HEADER)) or 0,
    )


async def list_dead_letters(rabbitmq_url: str, topology: Topology, service: str, limit: int | None) -> list[DeadLetter]:
    """The next `limit` (or all) dead letters of `service`; they go to the back of its dead-letter queue."""
    dlq_name = dead_letter_queue_name(topology, service)
    async with await _connect(rabbitmq_url) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        dlq = await _existing_queue(channel, dlq_name)
        found: list[DeadLetter] = []
        for _ in range(_budget(dlq, limit)):
            message = await dlq.get(no_ack=False, fail=False)
            if message is None:
                break
            headers = dict(message.headers or {})
            if service == UNROUTED:
                key = _routing_key(message)
                headers |= {ROUTING_KEY_HEADER: key, ERROR_HEADER: f"unrouted: no queue binds routing key {key!r}"}
            letter = describe(message, headers)
            found.append(letter)
            # Keep the broker's reason (from x-death, which the broker may not keep on a copy) in our own header.
            await _move(channel, message, routing_key=dlq_name, headers={ERROR_HEADER: letter.reason, **headers})
        return found


async def replay_dead_letters(
    rabbitmq_url: str,
    topology: Topology,
    service: str,
    *,
    limit: int | None = None,
    ids: Sequence[str] = (),
) -> Replayed:
    """Move `service`'s dead letters (the first `limit`, or those with the given message ids) back to its queue."""
    dlq_name, queue_name = dead_letter_queue_name(topology, service), topology.queue_name(service)
    async with await _connect(rabbitmq_url) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        dlq = await _existing_queue(channel, dlq_name)
        events = await channel.get_exchange(topology.events.name) if service == UNROUTED else None
        if events is None:
            await _existing_queue(channel, queue_name)
        wanted = set(ids)
        # One turn of the queue at most: what the service dead-letters again meanwhile waits for the next replay.
        turn = _budget(dlq, None if wanted else limit)
        replayed: list[str] = []
        for _ in range(turn):
            if limit is not None and len(replayed) >= limit:
                break
            message = await dlq.get(no_ack=False, fail=False)
            if message is None:
                break
            if wanted and message.message_id not in wanted:
                await _move(channel, message, routing_key=dlq_name, headers=dict(message.headers or {}))
                continue
            if events is not None:  # back through the events exchange, under its own key
                await _move(
                    channel, message, routing_key=_routing_key(message), headers=_fresh_headers(message), to=events
                )
            else:
                await _move(channel, message, routing_key=queue_name, headers=_fresh_headers(message))
            replayed.append(message.message_id or "-")
        left = await channel.declare_queue(dlq_name, passive=True)
        return Replayed(replayed, left.declaration_result.message_count or 0)


def _fresh_headers(message: AbstractIncomingMessage) -> dict[str, Any]:
    headers = {name: value for name, value in (message.headers or {}).items() if name not in _DEATH_HEADERS}
    headers[REPLAYS_HEADER] = (_number((message.headers or {}).get(REPLAYS_HEADER)) or 0) + 1
    return headers


def _routing_key(message: AbstractIncomingMessage) -> str:
    """The key an unrouted event was published with (kept in a header once a listing has moved it)."""
    return _text((message.headers or {}).get(ROUTING_KEY_HEADER)) or message.routing_key or ""


async def _move(
    channel: AbstractChannel,
    message: AbstractIncomingMessage,
    *,
    routing_key: str,
    headers: dict[str, Any],
    to: AbstractExchange | None = None,
) -> None:
    """Publish a copy to `routing_key`'s queue (or through exchange `to`), wait for the broker's confirm, then let
    go of the original."""
    copy = aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        timestamp=message.timestamp,
        app_id=message.app_id,
    )
    try:
        exchange = to or channel.default_exchange
        await exchange.publish(copy, routing_key=routing_key, mandatory=True, timeout=30)
    except (AMQPError, ChannelInvalidStateError, TimeoutError, ConnectionError) as error:
        # The original is not acked: it stays in (or returns to) the dead-letter queue.
        raise DeadLetterError(
            f"the broker did not take the copy of {message.message_id} for {routing_key}: {error!r}"
        ) from error
    await message.ack()


async def _connect(rabbitmq_url: str) -> aio_pika.abc.AbstractConnection:
    return await aio_pika.connect(str(URL(rabbitmq_url).update_query(name="rapport-deadletters")))


async def _existing_queue(channel: AbstractChannel, name: str) -> AbstractQueue:
    try:
        return await channel.declare_queue(name, passive=True)
    except ChannelClosed as error:
        raise DeadLetterError(f"there is no queue {name}: is the service name right, and has it run once?") from error


def _budget(queue: AbstractQueue, limit: int | None) -> int:
    waiting = queue.declaration_result.message_count or 0
    return waiting if limit is None else min(waiting, limit)


def dead_letter_queue_name(topology: Topology, service: str) -> str:
    if service == UNROUTED:
        return topology.unrouted_queue.name
    if not _SERVICE_NAME.match(service):
        raise DeadLetterError(f"{service!r} is not a service name")
    return topology.dead_letter_queue(service).name


def replayed_to(topology: Topology, service: str) -> str:
    """Where a replay sends `service`'s dead letters: its own queue, or the events exchange for unrouted ones."""
    return topology.events.name if service == UNROUTED else topology.queue_name(service)


def _reason(headers: dict[str, Any]) -> str:
    error = _text(headers.get(ERROR_HEADER))
    if error:
        return error
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        death = deaths[0]
        return f"broker: {_text(death.get('reason'))} in {_text(death.get('queue'))}"
    return "unknown (no x-rapport-error or x-death header)"


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes | bytearray) else str(value)


def _number(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _print_letters(queue: str, letters: list[DeadLetter], as_json: bool) -> None:
    if as_json:
        for letter in letters:
            print(json.dumps(asdict(letter), ensure_ascii=False))
        return
    print(f"{queue}: {len(letters)} dead letter(s) shown")
    for letter in letters:
        field = f" [{letter.field}]" if letter.field else ""
        counts = f"deliveries={letter.deliveries if letter.deliveries is not None else '-'} replays={letter.replays}"
        print(f"{letter.message_id or '-'}  {letter.event_type or '-'}  {counts}  {letter.reason}{field}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shared.deadletters",
        description="List a service's dead letters, or move them back to its queue after a fix.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("list", help="show dead letters: ids, type and reason (never the body)")
    show.add_argument("service", help="orders, followups, loyalty, referrals, or unrouted")
    show.add_argument("--limit", type=int, default=None, help="show at most N (the next N on each call)")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    replay = commands.add_parser("replay", help="move dead letters back to the service's queue")
    replay.add_argument("service", help="orders, followups, loyalty, referrals, or unrouted")
    replay.add_argument("--limit", type=int, default=None, help="replay at most N")
    replay.add_argument("--id", dest="ids", action="append", default=[], help="replay only this message id (repeat)")
    return parser


async def _run(args: argparse.Namespace) -> int:
    settings = ServiceSettings()
    topology = settings.topology
    if args.command == "list":
        letters = await list_dead_letters(settings.rabbitmq_url, topology, args.service, args.limit)
        _print_letters(dead_letter_queue_name(topology, args.service), letters, args.json)
        return 0
    result = await replay_dead_letters(settings.rabbitmq_url, topology, args.service, limit=args.limit, ids=args.ids)
    for message_id in result.replayed:
        print(f"replayed {message_id}")
    print(
        f"{len(result.replayed)} dead letter(s) moved back to {replayed_to(topology, args.service)}; "
        f"{result.left} left in {dead_letter_queue_name(topology, args.service)}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        print("--limit must be 1 or more", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args))
    except DeadLetterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
