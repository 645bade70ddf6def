"""CloudEvents over AMQP in both modes (DESIGN.md §4): what is read, and why the rest is refused."""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.cloudevents import read_event
from shared.events import InvalidEvent, OrderPlacedEvent

SAMPLE: dict[str, Any] = json.loads((Path(__file__).parents[1] / "fixtures/events/OrderPlaced.json").read_text())
BODY = json.dumps(SAMPLE).encode()


def binary(prefix: str, **overrides: Any) -> tuple[bytes, dict[str, Any]]:
    """The sample as a binary-mode message: data in the body, the other attributes as properties."""
    attributes = {key: value for key, value in SAMPLE.items() if key not in {"data", "datacontenttype"}}
    headers = {f"{prefix}{key}": value for key, value in (attributes | overrides).items() if value is not None}
    return json.dumps(SAMPLE["data"]).encode(), headers


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        "application/cloudevents+json",
        "application/cloudevents+json; charset=utf-8",
    ],
)
def test_structured_mode_is_read_with_or_without_parameters(content_type: str | None) -> None:
    event = read_event(BODY, content_type, {})
    assert isinstance(event, OrderPlacedEvent)
    assert event.id == SAMPLE["id"]


def test_a_datacontenttype_with_parameters_is_json_and_published_back_plain() -> None:
    body = json.dumps(SAMPLE | {"datacontenttype": "application/json; charset=utf-8"}).encode()
    event = read_event(body, "application/json", None)
    assert event.datacontenttype == "application/json"
    assert json.loads(event.model_dump_json())["datacontenttype"] == "application/json"


@pytest.mark.parametrize("prefix", ["cloudEvents_", "cloudEvents:", "ce-"])
def test_binary_mode_reads_the_attributes_from_the_properties_and_the_data_from_the_body(prefix: str) -> None:
    body, headers = binary(prefix)
    event = read_event(body, "application/json", headers)
    assert isinstance(event, OrderPlacedEvent)
    assert (event.id, event.type, event.source, event.subject) == (
        SAMPLE["id"],
        "OrderPlaced",
        SAMPLE["source"],
        SAMPLE["subject"],
    )
    assert event.data.order_id == SAMPLE["data"]["order_id"]


@pytest.mark.parametrize("imported", [True, "true"])
def test_binary_mode_carries_the_imported_extension_attribute(imported: object) -> None:
    body, headers = binary("ce-", imported=imported)
    assert read_event(body, "application/json", headers).imported is True


def test_binary_mode_takes_an_amqp_timestamp_as_the_time() -> None:
    body, headers = binary("cloudEvents_", time=datetime(2026, 11, 2, 9, 15))  # AMQP timestamps carry no zone
    assert read_event(body, "application/json", headers).time == datetime(2026, 11, 2, 9, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "reason"),
    [
        (BODY, "text/plain", {}, "content_type: text/plain is neither a structured CloudEvent"),
        (BODY, "application/xml", {}, "content_type: application/xml is neither"),
        (BODY, "application/cloudevents+xml", {}, "content_type: application/cloudevents+xml is not JSON"),
        (
            binary("ce-")[0],
            "application/xml",
            binary("ce-")[1],
            "content_type: the data of a binary-mode event must be",
        ),
        (b"not json", "application/json", binary("ce-")[1], "data: the body of a binary-mode event is not valid JSON"),
        (
            binary("ce-")[0],
            "application/json",
            binary("ce-", type=None)[1],
            "type: missing: every event names its type",
        ),
        (
            binary("ce-")[0],
            "application/json",
            binary("ce-", time=1700000000)[1],
            "time: timestamp must be an RFC 3339",
        ),
        (json.dumps(SAMPLE["data"]).encode(), "application/json", {}, "type: missing: every event names its type"),
        (json.dumps(SAMPLE | {"type": "OrderShipped"}).encode(), None, {}, "type: 'OrderShipped' is not an event"),
        (json.dumps(SAMPLE | {"datacontenttype": "text/csv"}).encode(), None, {}, "datacontenttype: "),
    ],
    ids=[
        "text",
        "xml",
        "ce-xml",
        "binary-xml-data",
        "binary-bad-json",
        "binary-no-type",
        "binary-epoch",
        "bare-data",
        "unknown-type",
        "csv-data",
    ],
)
def test_anything_else_is_refused_with_a_reason_naming_what_is_wrong(
    body: bytes, content_type: str | None, headers: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidEvent) as refused:
        read_event(body, content_type, headers)
    assert refused.value.reason.startswith(reason), refused.value.reason
