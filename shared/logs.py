"""One structlog setup for every service: JSON in production, console for people."""

import logging
import sys
from typing import Any, Literal

import structlog

_SHARED_PROCESSORS: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.ExtraAdder(),
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(level: str = "INFO", fmt: Literal["json", "console"] = "json") -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*_SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED_PROCESSORS,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info if fmt == "json" else structlog.processors.StackInfoRenderer(),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiormq", "aio_pika", "pymongo", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def bind_event(event: Any) -> None:
    """Bind the ids of the event being applied to every log line until the next one."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        event_id=event.id,
        event_type=event.type,
        correlation_id=event.correlationid or event.id,
        subject=event.subject,
    )


def bind_message(event_id: str | None, correlation_id: str | None, event_type: str | None) -> None:
    """Bind the ids of the message being handled to every log line until the next one."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(event_id=event_id, correlation_id=correlation_id, event_type=event_type)
