"""Prometheus metrics every service exports; each service gets its own registry."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class ServiceMetrics:
    def __init__(self, service: str, extra: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry()
        self.extra = extra
        self.consumed = Counter(
            "rapport_messages_consumed",
            "Events applied or skipped as duplicates.",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.failed = Counter(
            "rapport_messages_failed",
            "Handler failures (each one is retried or dead-lettered).",
            ["type"],
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "rapport_messages_dead_lettered",
            "Messages sent to the dead-letter queue.",
            ["reason"],
            registry=self.registry,
        )
        self.consumer_restarts = Counter(
            "rapport_consumer_restarts",
            "Times the consume loop failed outside a handler and was restarted (its messages go back to the queue).",
            registry=self.registry,
        )
        self.published = Counter(
            "rapport_outbox_published", "Events relayed from the outbox to the broker.", registry=self.registry
        )
        self.publish_failures = Counter(
            "rapport_outbox_publish_failures",
            "Outbox publishes that failed and will be retried.",
            registry=self.registry,
        )
        self.unrouted = Gauge(
            "rapport_unrouted_events",
            "Events waiting in <prefix>.unrouted: published with a routing key no service binds.",
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "rapport_outbox_backlog", "Outbox entries not yet published.", registry=self.registry
        )
        self.batch_size = Histogram(
            "rapport_commit_batch_size",
            "Messages per group commit.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=self.registry,
        )
        self.info = Gauge(
            "rapport_service_info", "Constant 1, labelled with the service.", ["service"], registry=self.registry
        )
        self.info.labels(service=service).set(1)

    def render(self) -> bytes:
        own = generate_latest(self.registry)
        return own + generate_latest(self.extra) if self.extra is not None else own
