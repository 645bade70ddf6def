"""Broker topology of DESIGN.md §4, every name derived from CRM_PREFIX."""

from dataclasses import dataclass

from faststream.rabbit import ExchangeType, QueueType, RabbitExchange, RabbitQueue

# Deliveries of one message before it is dead-lettered. The consumer dead-letters
# on the last one with the error; the queue's own limit is the safety net for a
# message that crashes the process before it can be acked.
MAX_DELIVERIES = 5


@dataclass(frozen=True)
class Topology:
    prefix: str

    @property
    def events(self) -> RabbitExchange:
        return RabbitExchange(
            f"{self.prefix}.events", type=ExchangeType.TOPIC, durable=True, arguments=self.events_arguments
        )

    @property
    def events_arguments(self) -> dict[str, str]:
        """What every declaration of the events exchange must say (the broker refuses one that differs)."""
        return {"alternate-exchange": self.unrouted.name}

    @property
    def unrouted(self) -> RabbitExchange:
        """Where the events exchange sends an event whose routing key no queue binds: kept, not dropped."""
        return RabbitExchange(f"{self.prefix}.unrouted", type=ExchangeType.FANOUT, durable=True)

    @property
    def unrouted_queue(self) -> RabbitQueue:
        return RabbitQueue(f"{self.prefix}.unrouted", durable=True, queue_type=QueueType.QUORUM)

    @property
    def announcements(self) -> RabbitExchange:
        """Bound to the events exchange under each announced event's key (shared/events.py `ANNOUNCED`), with no
        queue of its own: an announcement that no outside system listens to is routed here and ends, instead of
        being kept as unrouted; a system that binds the key on the events exchange gets each one as before."""
        return RabbitExchange(f"{self.prefix}.announcements", type=ExchangeType.FANOUT, durable=True)

    @property
    def dead_letters(self) -> RabbitExchange:
        return RabbitExchange(f"{self.prefix}.dlx", type=ExchangeType.TOPIC, durable=True)

    def queue_name(self, service: str) -> str:
        return f"{self.prefix}.{service}"

    def queue(self, service: str, routing_key: str = "") -> RabbitQueue:
        name = self.queue_name(service)
        return RabbitQueue(
            name,
            durable=True,
            queue_type=QueueType.QUORUM,
            routing_key=routing_key,
            arguments={
                "x-dead-letter-exchange": self.dead_letters.name,
                "x-dead-letter-routing-key": name,
                "x-delivery-limit": MAX_DELIVERIES,
            },
        )

    def dead_letter_queue(self, service: str) -> RabbitQueue:
        name = self.queue_name(service)
        return RabbitQueue(f"{name}.dlq", durable=True, queue_type=QueueType.QUORUM, routing_key=name)

    def database(self, service: str) -> str:
        return f"{self.prefix}_{service}"
