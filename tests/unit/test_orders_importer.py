"""A shop's history (issue 14, part 4): the platforms' export CSVs read, grouped and turned into imported events."""

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.orders.importer.__main__ import arguments, moment_given
from services.orders.importer.exports import (
    HistoricLine,
    NotThisExport,
    UnreadableOrder,
    read_customer_ids,
    read_orders,
)
from services.orders.importer.history import (
    TOLD_BY_WEBHOOKS,
    Tally,
    less_what_was_told,
    merged_lines,
    told_by_webhooks,
    translate,
)
from services.orders.importer.run import Checkpoint, WrongCheckpoint
from services.orders.platforms.common import stand_in_sku
from shared.events import OrderCancelledEvent, OrderPlacedEvent, OrderRefundedEvent, parse_event

pytestmark = pytest.mark.unit

HISTORY = Path(__file__).parents[1] / "fixtures" / "history"
SHOPIFY = HISTORY / "shopify_orders_export.csv"
WOOCOMMERCE = HISTORY / "woocommerce_orders_export.csv"
CEST = timezone(timedelta(hours=2))


def shopify_orders(text: str | None = None) -> list:  # type: ignore[type-arg]
    lines = (text if text is not None else SHOPIFY.read_text(encoding="utf-8-sig")).splitlines(keepends=True)
    return list(read_orders("shopify", lines, shop_timezone=UTC))


def customer_ids() -> dict[str, str]:
    return read_customer_ids((HISTORY / "shopify_customers_export.csv").read_text().splitlines(keepends=True))


def test_shopify_rows_of_one_order_are_grouped_and_its_fields_come_from_the_first_row() -> None:
    orders = shopify_orders()
    assert [order.order_number for order, _ in orders] == [
        "#1014", "#1012", "#1011", "#1006", "#1008", "#1007", "#1009", "#1005", "#1004", "#1003", "#1002", "#1001",
    ]  # fmt: skip
    assert sum(rows for _, rows in orders) == 15  # the file's rows below the header
    order, rows = orders[0]
    assert rows == 2
    assert (order.order_id, order.status, order.currency, order.total, order.refunded) == (
        "5600000001014",
        "partially_refunded",
        "EUR",
        Decimal("60.00"),
        Decimal("20.00"),
    )
    assert order.placed_at == datetime(2026, 10, 15, 14, 0, 3, tzinfo=CEST)
    assert order.fulfilled_at == datetime(2026, 10, 16, 10, 2, 40, tzinfo=CEST)
    assert [(line.sku, line.quantity, line.unit_price) for line in order.lines] == [
        ("MUG-RED", 3, Decimal("12.50")),
        ("STRAINER", 1, Decimal("22.50")),
    ]
    assert (order.first_name, order.last_name, order.accepts_marketing) == ("Eva", "Nováková", True)
    assert order.shipping.postal_code == "040 01"  # Shopify's "'040 01", written so a spreadsheet keeps it text


def test_shopify_orders_become_imported_events_with_their_own_dates_and_ids() -> None:
    outcomes = [translate(order, customer_ids()) for order, _ in shopify_orders()]
    by_number = {outcome.order.order_number: outcome for outcome in outcomes}
    eva = by_number["#1014"]
    assert eva.customer_id == "7001234567890"  # the customers export names Eva's account
    assert [event.id for event in eva.events] == [
        "shopify:order:5600000001014:placed",
        "shopify:order:5600000001014:fulfilled",
        "shopify:order:5600000001014:refunded",
    ]
    assert all(event.imported is True and event.source == "orders" for event in eva.events)
    placed, fulfilled, refunded = eva.events
    assert isinstance(placed, OrderPlacedEvent)
    assert isinstance(refunded, OrderRefundedEvent)
    assert placed.time == placed.data.placed_at == datetime(2026, 10, 15, 14, 0, 3, tzinfo=CEST)
    assert fulfilled.time == datetime(2026, 10, 16, 10, 2, 40, tzinfo=CEST)
    # The export does not date refunds: the order's last dated fact, its fulfilment.
    assert refunded.data.refunded_at == refunded.time == fulfilled.time
    assert (refunded.data.amount, refunded.data.refund_id) == (Decimal("20.00"), "5600000001014:history")
    assert placed.data.order_number == "#1014"
    assert placed.data.customer.accepts_marketing is True
    # Each event reads back as the contract's own, imported flag and all.
    again = parse_event(placed.model_dump(mode="json"))
    assert again == placed
    assert again.imported is True

    assert by_number["#1002"].customer_id == "guest:peter.horvath@example.com"  # no account in the customers export
    marta = by_number["#1006"].events[0]
    assert isinstance(marta, OrderPlacedEvent)
    assert [(line.sku, line.name) for line in marta.data.line_items] == [
        ("SET-CEREMONY", "Tea ceremony set"),
        ("no-sku:gift-wrapping", "Gift wrapping"),  # no sku: a stand-in from its name
    ]
    assert marta.data.referral_code == "MARTA-FRIEND"  # from Note Attributes
    assert marta.subject == "7001234567891"  # the customers export's e-mail was written in capitals
    zoe = by_number["#1005"]
    assert [type(event) for event in zoe.events] == [OrderPlacedEvent, OrderCancelledEvent]  # cancelled, not refunded
    assert by_number["#1007"].events[-1].data.amount == Decimal("35.00")
    # A POS sale with no e-mail still counts: a customer of that one order, with an address nobody mails.
    pos = by_number["#1008"].events[0]
    assert isinstance(pos, OrderPlacedEvent)
    assert pos.subject == "guest:shopify:order:5600000001008"
    assert pos.data.customer.email.endswith("@no-email.example")
    assert [line.sku for line in pos.data.line_items] == ["no-sku:custom-sale"]


def test_shopify_test_and_unpaid_orders_are_skipped_with_their_reasons() -> None:
    tally = Tally()
    for order, rows in shopify_orders():
        tally.add(translate(order), rows)
    assert tally.skipped == Counter(
        {
            "test order (Shopify's test gateway)": 1,
            "unpaid (financial status pending)": 1,
            "unpaid (financial status expired)": 1,
        }
    )
    assert (tally.orders, tally.fulfilments, tally.refunds, tally.cancellations) == (9, 6, 2, 1)
    # Without the customers export, Eva and Márta are known by e-mail: six customers either way.
    assert len(tally.customers) == 6
    assert "guest:eva@example.sk" in tally.customers


def test_woocommerce_one_row_per_item_export_reads_statuses_guests_coupons_and_the_shops_time_zone() -> None:
    lines = WOOCOMMERCE.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    orders = list(read_orders("woocommerce", lines, shop_timezone=ZoneInfo("Europe/Vienna")))
    assert [(order.order_id, rows) for order, rows in orders] == [
        ("731", 1), ("728", 3), ("725", 1), ("722", 1), ("720", 1), ("715", 1),
    ]  # fmt: skip
    outcomes = {order.order_id: translate(order) for order, _ in orders}
    assert outcomes["722"].skipped == "unpaid (on hold, awaiting payment)"
    assert outcomes["720"].skipped == "payment failed"
    guest = outcomes["728"].events[0]
    assert isinstance(guest, OrderPlacedEvent)
    assert guest.subject == "guest:tomas.dvorak@example.cz"  # customer_id 0: a guest, known by e-mail
    assert guest.data.discount_codes == ["SUMMER5"]
    assert guest.data.shipping_address is None  # local pickup: no address to ship to
    assert [line.sku for line in guest.data.line_items] == ["MUG-RED", "no-sku:engraving", "TEA-BLACK"]
    # "2026-08-02 09:15:40" in the shop's zone (Vienna, summer time).
    assert guest.data.placed_at == datetime(2026, 8, 2, 7, 15, 40, tzinfo=UTC)
    assert outcomes["731"].customer_id == "12"
    refund = outcomes["715"].events[-1]
    assert isinstance(refund, OrderRefundedEvent)
    assert (refund.id, refund.data.amount) == ("woocommerce:order:715:refunded", Decimal("12.00"))
    assert [event.id for event in outcomes["725"].events] == [
        "woocommerce:order:725:placed",
        "woocommerce:order:725:refunded",
    ]


def test_a_file_that_is_not_the_export_named_is_refused_naming_what_is_missing() -> None:
    with pytest.raises(NotThisExport, match="Financial Status"):
        list(read_orders("shopify", WOOCOMMERCE.read_text().splitlines(keepends=True), shop_timezone=UTC))


def test_an_unreadable_value_names_its_column_and_line() -> None:
    text = SHOPIFY.read_text(encoding="utf-8-sig").replace("60.00,,0.00,Standard", "sixty,,0.00,Standard", 1)
    with pytest.raises(UnreadableOrder) as raised:
        shopify_orders(text)
    assert (raised.value.column, raised.value.line) == ("Total", 2)


def test_lines_without_sku_get_a_stable_stand_in_and_alike_lines_add_up() -> None:
    assert stand_in_sku("  Custom   Sale ") == stand_in_sku("custom sale!") == "no-sku:custom-sale"
    assert stand_in_sku("Čaj – 100 g") == "no-sku:čaj-100-g"
    assert stand_in_sku("") == "no-sku:unnamed"
    lines = (
        HistoricLine(None, "Gift wrap", 1, Decimal("2.00")),
        HistoricLine(None, "Gift wrap", 2, Decimal("2.00")),
        HistoricLine("MUG", "Mug", 0, Decimal("9.00")),  # removed when the order was edited
    )
    assert [(line.sku, line.quantity) for line in merged_lines(lines)] == [("no-sku:gift-wrap", 3)]


def test_an_order_over_the_contracts_500_lines_is_skipped_not_cut() -> None:
    order, _ = shopify_orders()[0]
    many = tuple(HistoricLine(f"SKU-{n}", f"Item {n}", 1, Decimal("1.00")) for n in range(501))
    assert translate(replace(order, lines=many)).skipped == "over 500 line items"
    assert translate(replace(order, lines=())).skipped == "no line items"
    assert len(translate(replace(order, lines=many[:500])).events[0].data.line_items) == 500


def test_the_checkpoint_belongs_to_one_export(tmp_path: Path) -> None:
    state = tmp_path / "orders.csv.import-state.json"
    checkpoint = Checkpoint.load(state, "a" * 64)
    assert (checkpoint.orders_done, checkpoint.finished) == (0, False)
    checkpoint.save(7)
    again = Checkpoint.load(state, "a" * 64)
    assert (again.orders_done, again.finished) == (7, False)
    with pytest.raises(WrongCheckpoint):
        Checkpoint.load(state, "b" * 64)


def test_two_orders_of_one_name_are_told_apart_by_their_id() -> None:
    # Shopify lets an imported order reuse a Name: the Id on an order's first row starts a new order.
    text = SHOPIFY.read_text(encoding="utf-8-sig").replace("#1012,", "#1014,")
    orders = shopify_orders(text)
    assert [(order.order_number, order.order_id, rows) for order, rows in orders[:2]] == [
        ("#1014", "5600000001014", 2),
        ("#1014", "5600000001012", 1),
    ]


def test_orders_placed_once_the_webhooks_were_connected_are_left_to_them() -> None:
    """An export taken after connecting the webhooks holds orders they told already, with the refunds they told
    one by one; imported again as one sum those refunds would count twice, so such orders are skipped."""
    orders = [order for order, _ in shopify_orders()]
    placed = sorted(order.placed_at for order in orders)
    connected = placed[len(placed) // 2]
    outcomes = [translate(order, placed_before=connected) for order in orders]
    told_by_webhooks = [o for o in outcomes if o.skipped == TOLD_BY_WEBHOOKS]
    assert {o.order.order_id for o in told_by_webhooks} == {o.order_id for o in orders if o.placed_at >= connected}
    assert all(not o.events for o in told_by_webhooks)
    before = [o for o in outcomes if o.order.placed_at < connected]
    assert [o.skipped for o in before] == [translate(o.order).skipped for o in before]  # the rest as without it


@pytest.mark.parametrize(
    ("typed", "moment"),
    [
        ("2026-11-28", datetime(2026, 11, 28, tzinfo=ZoneInfo("Europe/Bratislava"))),
        ("2026-11-28T10:00", datetime(2026, 11, 28, 10, tzinfo=ZoneInfo("Europe/Bratislava"))),
        ("2026-11-28T10:00:00+00:00", datetime(2026, 11, 28, 10, tzinfo=UTC)),
        ("last tuesday", None),
    ],
)
def test_placed_before_is_read_in_the_shops_time_zone(typed: str, moment: datetime | None) -> None:
    assert moment_given(typed, ZoneInfo("Europe/Bratislava")) == moment
    assert arguments(["shopify", "export.csv", "--placed-before", typed]).placed_before == typed


def test_a_history_refund_is_published_less_what_the_webhooks_told_of_it() -> None:
    [order] = [order for order, _ in shopify_orders() if order.refunded > 0 and order.cancelled_at is None][:1]
    outcome = translate(order)
    [refund] = [e for e in outcome.events if isinstance(e, OrderRefundedEvent)]
    whole, currency = refund.data.amount, refund.data.currency
    others = [e for e in outcome.events if not isinstance(e, OrderRefundedEvent)]

    def refunded(told: dict[str, Decimal]) -> list[Decimal]:
        kept = less_what_was_told(outcome, told)
        assert [e for e in kept.events if not isinstance(e, OrderRefundedEvent)] == others
        return [e.data.amount for e in kept.events if isinstance(e, OrderRefundedEvent)]

    assert refunded({}) == [whole]
    assert refunded({currency: Decimal("0.01")}) == [whole - Decimal("0.01")]
    assert refunded({currency: whole}) == []
    assert refunded({currency: whole * 2}) == []
    assert refunded({"JPY": whole}) == [whole]  # told in another currency: not this refund
    history = {"refund_id": f"{order.order_id}:history", "amount": "5.00", "currency": currency}
    webhook = {"refund_id": "990", "amount": "2.50", "currency": currency}
    assert told_by_webhooks(order.order_id, [history, webhook, webhook | {"refund_id": "991"}]) == {
        currency: Decimal("5.00")
    }
