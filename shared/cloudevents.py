"""CloudEvents over AMQP as the spec writes them (DESIGN.md §4): which mode a message is in, and its event.

- Structured mode: the body is the whole event, content type `application/cloudevents+json` or
  `application/json` (parameters such as `; charset=utf-8` allowed), or none at all.
- Binary mode: the body is the event's `data`, every other attribute is an application property named
  `cloudEvents_<attr>` (the AMQP binding's choice), `cloudEvents:<attr>` (its older spelling) or `ce-<attr>`
  (Knative's RabbitMQ binding); the content type is the data's (`datacontenttype`).

Anything else is refused with a reason that names what is wrong. Services publish in structured mode.
"""

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.events import Envelope, InvalidEvent, parse_event

BINARY_PREFIXES = ("cloudEvents_", "cloudEvents:", "ce-", "ce_")
STRUCTURED = "application/cloudevents"
JSON = "application/json"


def media_type(content_type: str | None) -> str | None:
    """`application/json; charset=utf-8` → `application/json` (lower-case, parameters dropped)."""
    if content_type is None or not content_type.strip():
        return None
    return content_type.split(";", 1)[0].strip().lower()


def binary_attributes(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The CloudEvents attributes carried as application properties (binary mode), by attribute name."""
    found: dict[str, Any] = {}
    for name, value in (headers or {}).items():
        for prefix in BINARY_PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                attribute = name[len(prefix) :].lower()
                found[attribute] = _attribute(value)
                if attribute == "imported" and found[attribute] in ("true", "false"):  # headers may carry it as text
                    found[attribute] = found[attribute] == "true"
                break
    return found


def _attribute(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, datetime):  # an AMQP timestamp: seconds in UTC
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return value


def read_event(body: bytes, content_type: str | None, headers: Mapping[str, Any] | None) -> Envelope[Any]:
    """The event an AMQP message carries, in either mode; raises InvalidEvent naming what is wrong."""
    media = media_type(content_type)
    attributes = binary_attributes(headers)
    if media is not None and media.startswith(STRUCTURED):
        if media != f"{STRUCTURED}+json":
            raise InvalidEvent(
                f"content_type: {media} is not JSON; this service reads {STRUCTURED}+json", "content_type"
            )
        return parse_event(body)
    if "specversion" in attributes:
        return _binary(body, media, attributes)
    if media is None or media == JSON:
        return parse_event(body)
    raise InvalidEvent(
        f"content_type: {media} is neither a structured CloudEvent ({JSON} or {STRUCTURED}+json) nor binary mode "
        f"(no cloudEvents_specversion / ce-specversion property)",
        "content_type",
    )


def _binary(body: bytes, media: str | None, attributes: dict[str, Any]) -> Envelope[Any]:
    if media not in (None, JSON):
        raise InvalidEvent(f"content_type: the data of a binary-mode event must be {JSON}, not {media}", "content_type")
    try:
        data = json.loads(body)
    except ValueError as error:
        raise InvalidEvent(f"data: the body of a binary-mode event is not valid JSON: {error}", "data") from None
    return parse_event({**attributes, "datacontenttype": JSON, "data": data})
