"""The event contract accepts every sample payload and rejects bad ones, naming the field."""

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared.events import CATALOGUE, InvalidEvent, OrderPlacedEvent, PointsAwardedEvent, parse_event

SAMPLES = Path(__file__).parents[1] / "fixtures" / "events"


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    return loaded


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_event_type_accepts_its_sample(name: str) -> None:
    raw = sample(name)
    event = parse_event(json.dumps(raw))
    assert type(event) is CATALOGUE[name]
    assert event.id == raw["id"]
    # What goes back on the wire is the same contract JSON, less the unknown fields.
    known = type(event.data).model_fields
    assert event.model_dump(mode="json", exclude_none=True)["data"] == {
        key: value for key, value in raw["data"].items() if key in known
    }


def test_every_event_has_a_sample() -> None:
    assert {p.stem for p in SAMPLES.glob("*.json")} == set(CATALOGUE)


def test_money_is_decimal_and_serialises_as_a_string() -> None:
    event = parse_event(sample("OrderPlaced"))
    assert isinstance(event, OrderPlacedEvent)
    assert event.data.total == Decimal("49.90")
    assert event.model_dump(mode="json")["data"]["total"] == "49.90"


def test_unknown_fields_are_ignored() -> None:
    raw = sample("OrderPlaced")
    raw["data"]["something_new"] = {"added": "later"}
    raw["brand_new_attribute"] = 1
    assert parse_event(raw).data.order_id == "ord_5001"


def _set(path: str, value: Any) -> Any:
    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = raw
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value(target[last]) if callable(value) else value

    return mutate


_DELETE = object()

BAD_PAYLOADS = [
    # (sample, mutation, field the error must name)
    ("OrderPlaced", _set("data.total", 49.9), "data.total"),
    ("OrderPlaced", _set("data.total", "49,90"), "data.total"),
    ("OrderPlaced", _set("data.total", "-5.00"), "data.total"),
    ("OrderPlaced", _set("data.currency", "eur"), "data.currency"),
    ("OrderPlaced", _set("data.currency", "XYZ"), "data.currency"),
    ("OrderPlaced", _set("data.customer.email", "not-an-email"), "data.customer.email"),
    ("OrderPlaced", _set("data.customer.locale", "klingon-forever"), "data.customer.locale"),
    ("OrderPlaced", _set("data.customer.country", "sk"), "data.customer.country"),
    ("OrderPlaced", _set("data.line_items", lambda items: items * 251), "data.line_items"),
    ("OrderPlaced", _set("data.line_items", []), "data.line_items"),
    ("OrderPlaced", _set("data.line_items.0.quantity", 0), "data.line_items.0.quantity"),
    ("OrderPlaced", _set("data.order_id", _DELETE), "data.order_id"),
    ("OrderPlaced", _set("data.placed_at", "2026-11-02T10:15:00"), "data.placed_at"),
    ("OrderPlaced", _set("time", "2026-11-02T10:15:00"), "time"),
    # Timestamps only as RFC 3339 strings with an offset (issue 15): no epoch numbers, no other formats.
    ("OrderPlaced", _set("data.placed_at", 1700000000), "data.placed_at"),
    ("OrderPlaced", _set("data.placed_at", 1700000000.5), "data.placed_at"),
    ("OrderPlaced", _set("data.placed_at", "1700000000"), "data.placed_at"),
    ("OrderPlaced", _set("data.placed_at", "2026-11-02"), "data.placed_at"),
    ("OrderPlaced", _set("data.placed_at", "2026-11-02 10:15:00+01:00"), "data.placed_at"),
    ("OrderPlaced", _set("data.placed_at", "Mon, 02 Nov 2026 10:15:00 +0100"), "data.placed_at"),
    ("OrderPlaced", _set("data.placed_at", "2026-11-02T10:15:00+0100"), "data.placed_at"),
    ("OrderPlaced", _set("data.placed_at", True), "data.placed_at"),
    ("OrderPlaced", _set("time", 1700000000), "time"),
    ("OrderFulfilled", _set("data.fulfilled_at", 1700000000), "data.fulfilled_at"),
    ("OrderRefunded", _set("data.refunded_at", -1), "data.refunded_at"),
    ("PointsAwarded", _set("data.expires_at", 1700000000), "data.expires_at"),
    ("OrderPlaced", _set("data.line_items.0.quantity", "2"), "data.line_items.0.quantity"),
    ("OrderPlaced", _set("data.line_items.0.quantity", 2.0), "data.line_items.0.quantity"),
    ("FeedbackReceived", _set("data.nps", "9"), "data.nps"),
    ("OrderPlaced", _set("id", "x" * 129), "id"),
    ("OrderPlaced", _set("type", "OrderTeleported"), "type"),
    ("OrderPlaced", _set("imported", "yes"), "imported"),
    ("OrderPlaced", _set("data.customer.accepts_marketing", "true"), "data.customer.accepts_marketing"),
    ("OrderCancelled", _set("data.cancelled_at", 1700000000), "data.cancelled_at"),
    ("CustomerSegmentChanged", _set("data.to_segment", ""), "data.to_segment"),
    ("OrderRefunded", _set("data.amount", 12.5), "data.amount"),
    ("FeedbackReceived", _set("data.ratings.overall", 6), "data.ratings.overall"),
    ("FeedbackReceived", _set("data.ratings.product", 0), "data.ratings.product"),
    ("FeedbackReceived", _set("data.nps", 11), "data.nps"),
    ("FeedbackReceived", _set("data.comment", "x" * 5001), "data.comment"),
    ("FeedbackReceived", _set("data.channel", "pigeon"), "data.channel"),
    ("PointsAwarded", _set("data.points", 0), "data.points"),
    ("ReferralConverted", _set("data.program", "pyramid"), "data.program"),
]


@pytest.mark.parametrize(("name", "mutate", "field"), BAD_PAYLOADS, ids=[f"{n}:{f}" for n, _, f in BAD_PAYLOADS])
def test_bad_payload_is_rejected_naming_the_field(name: str, mutate: Any, field: str) -> None:
    raw = copy.deepcopy(sample(name))
    mutate(raw)
    with pytest.raises(InvalidEvent) as rejected:
        parse_event(json.dumps(raw))
    assert rejected.value.field == field
    assert rejected.value.reason.startswith(f"{field}: ")


def test_501_line_items_are_too_many_and_500_are_fine() -> None:
    raw = sample("OrderPlaced")
    item = raw["data"]["line_items"][0]
    raw["data"]["line_items"] = [item] * 500
    assert len(parse_event(raw).data.line_items) == 500
    raw["data"]["line_items"] = [item] * 501
    with pytest.raises(InvalidEvent, match="at most 500"):
        parse_event(raw)


@pytest.mark.parametrize("body", [b"not json at all", b"", b"[1, 2]", b'{"specversion": "1.0"'])
def test_a_body_that_is_not_an_event_object_is_rejected(body: bytes) -> None:
    with pytest.raises(InvalidEvent) as rejected:
        parse_event(body)
    assert rejected.value.reason


def test_missing_required_field_is_named() -> None:
    raw = sample("OrderFulfilled")
    del raw["data"]["fulfilled_at"]
    with pytest.raises(InvalidEvent) as rejected:
        parse_event(raw)
    assert rejected.value.reason == "data.fulfilled_at: Field required"


def test_new_event_continues_the_correlation_chain_of_its_cause() -> None:
    cause = parse_event(sample("OrderPlaced"))
    award = PointsAwardedEvent.new(
        parse_event(sample("PointsAwarded")).data, source="loyalty", subject="cus_1001", cause=cause
    )
    assert award.causationid == cause.id
    assert award.correlationid == "ord_5001"
    assert award.id != cause.id
    assert award.time.tzinfo is not None
    assert parse_event(award.model_dump_json()) == award
    assert award.imported is None  # a live order causes live events


def test_what_an_imported_event_causes_is_imported_too() -> None:
    history = parse_event(sample("OrderPlaced") | {"imported": True})
    points = parse_event(sample("PointsAwarded")).data
    award = PointsAwardedEvent.new(points, source="loyalty", subject="cus_1001", cause=history)
    assert award.imported is True
    assert parse_event(award.model_dump_json()).imported is True
    assert PointsAwardedEvent.new(points, source="loyalty").imported is None  # no cause (a scheduled expiry): live


@pytest.mark.parametrize(
    "moment",
    ["2026-11-02T10:15:00+01:00", "2026-11-02T09:15:00Z", "2026-11-02t09:15:00.123456z", "2026-11-02T10:15:00.5-03:30"],
)
def test_rfc_3339_timestamps_with_an_offset_are_accepted(moment: str) -> None:
    raw = sample("OrderPlaced")
    raw["data"]["placed_at"] = moment
    raw["time"] = moment
    event = parse_event(json.dumps(raw))
    assert event.data.placed_at.tzinfo is not None
    assert parse_event(event.model_dump_json()) == event


@pytest.mark.parametrize("locale", ["en", "hu-HU", "sk-SK", "fa-IR", "hy-AM", "lv-LV", "zh-Hant-TW", "es-419"])
def test_real_locales_are_accepted(locale: str) -> None:
    raw = sample("OrderPlaced")
    raw["data"]["customer"]["locale"] = locale
    assert parse_event(raw).data.customer.locale == locale
