"""A shop's day as the events its backend sends, and what DESIGN.md §7 says the system must make of them.

`plan_shop_day` draws a repeatable day from a seed: customers ordering 1–5 line
items, most orders fulfilled, some refunded (in part, in full, or in two
parts), feedback from some customers (promoters, passives, detractors; some with
a review), and friends ordering for the first time with a referrer's code. The
feedback is published as followups would publish it, so the day can be sent
straight to the exchange.

The expected figures are worked out here by hand from DESIGN.md §7, independently
of the services' own code, so a test compares the system with the contract and
not with itself. Used by the end-to-end fault tests and `make bench`.
"""

import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from shared.events import (
    Customer,
    Envelope,
    FeedbackReceived,
    FeedbackReceivedEvent,
    LineItem,
    OrderFulfilled,
    OrderFulfilledEvent,
    OrderPlaced,
    OrderPlacedEvent,
    OrderRefunded,
    OrderRefundedEvent,
    Ratings,
    ShippingAddress,
)

# DESIGN.md §7, Loyalty.
TIERS = (
    ("bronze", 0, Decimal("1.0")),
    ("silver", 500, Decimal("1.25")),
    ("gold", 1500, Decimal("1.5")),
    ("vip", 5000, Decimal("2.0")),
)
TIER_WINDOW = timedelta(days=365)
REVIEW_POINTS, REVIEW_MIN_CHARS, SURVEY_POINTS = 50, 20, 20
REFERRER_POINTS, REFEREE_POINTS = 500, 250

PRODUCTS = (
    ("TEA-GREEN", "Green tea 100 g", "tea", "6.90"),
    ("TEA-BLACK", "Assam 250 g", "tea", "11.50"),
    ("POT-CAST", "Cast-iron teapot", "kitchen", "64.00"),
    ("MUG-RED", "Red mug", "kitchen", "12.50"),
    ("CUP-SET", "Six cups", "kitchen", "38.00"),
    ("SEED-HERB", "Herb seeds", "garden", "3.20"),
    ("POT-CLAY", "Clay plant pot", "garden", "17.90"),
    ("BOOK-TEA", "The tea book", "books", "24.00"),
)
CONSUMERS = {  # DESIGN.md §2: which services take each event (followups keeps the brief from the others' news)
    "OrderPlaced": ("orders", "followups", "loyalty", "referrals"),
    "OrderFulfilled": ("orders", "followups"),
    "OrderRefunded": ("orders", "followups", "loyalty", "referrals"),
    "OrderCancelled": ("orders", "followups", "loyalty", "referrals"),
    "FeedbackReceived": ("loyalty", "referrals"),
    "ReferralConverted": ("followups", "loyalty"),
    "ReferralInvited": ("followups",),
    "CustomerErased": ("followups", "loyalty", "referrals"),
    "CustomerSegmentChanged": ("followups",),
    "PointsAwarded": ("followups",),
    "PointsReversed": ("followups",),
    "PointsRedeemed": ("followups",),
    "PointsExpired": ("followups",),
    "TierChanged": ("followups",),
}
REVIEWS = ("Lovely tea, and it came beautifully packed.", "Fine.", "The pot arrived chipped, which was sad.")


@dataclass(frozen=True)
class Conversion:
    """A friend's first order carrying a referrer's code: what referrals must convert."""

    referrer: str
    referee: str
    order_id: str
    at: datetime


@dataclass
class ShopDay:
    events: list[Envelope[Any]]  # in the order they happened by the shop's clock
    conversions: list[Conversion] = field(default_factory=list)

    def data(self, event_type: type[Envelope[Any]]) -> list[Any]:
        return [event.data for event in self.events if isinstance(event, event_type)]

    @property
    def orders(self) -> list[OrderPlaced]:
        return self.data(OrderPlacedEvent)

    @property
    def customers(self) -> list[str]:
        return sorted({order.customer.customer_id for order in self.orders})

    @property
    def refunded_orders(self) -> set[str]:
        return {refund.order_id for refund in self.data(OrderRefundedEvent)}

    @property
    def fully_refunded_orders(self) -> set[str]:
        """Orders whose refunds add up to their total: only those cancel what is pending (DESIGN.md §7)."""
        refunded: defaultdict[str, Decimal] = defaultdict(Decimal)
        for refund in self.data(OrderRefundedEvent):
            refunded[refund.order_id] += refund.amount
        return {order.order_id for order in self.orders if refunded[order.order_id] >= order.total}

    @property
    def fulfilled_orders(self) -> set[str]:
        return {done.order_id for done in self.data(OrderFulfilledEvent)}

    @property
    def promoters(self) -> set[str]:
        """Customers whose feedback makes a happy moment (NPS 9–10): each is invited once (90 days apart)."""
        return {f.customer_id for f in self.data(FeedbackReceivedEvent) if f.nps is not None and f.nps >= 9}

    def orders_count(self) -> Counter[str]:
        return Counter(order.customer.customer_id for order in self.orders)

    def net_spent(self) -> dict[str, Decimal]:
        """Per customer, EUR: order totals less refunds, an order's refunds never past its total (docs/orders.md)."""
        refunded: defaultdict[str, Decimal] = defaultdict(Decimal)
        for refund in self.data(OrderRefundedEvent):
            refunded[refund.order_id] += refund.amount
        spent: defaultdict[str, Decimal] = defaultdict(Decimal)
        for order in self.orders:
            spent[order.customer.customer_id] += order.total - min(refunded[order.order_id], order.total)
        return dict(spent)

    def expected_balances(self, extra_feedback: Iterable[FeedbackReceived] = ()) -> dict[str, int]:
        """Loyalty balances by DESIGN.md §7, replayed in the order things happened (§5: arrival order must not matter).

        Purchase points floor(total × tier multiplier), the tier held before the order from purchase points (net
        of refunds) of the last 365 days; a refund takes back floor(points × refunded so far / total) in all; a
        review (20+ characters) 50 and an NPS answer 20, once per order; a referral 500 to the referrer and 250
        to the friend. Nothing here is old enough to expire.
        """
        moments: list[tuple[datetime, int, str, Any]] = []
        for order in self.orders:
            moments.append((order.placed_at, 0, order.order_id, order))
        for feedback in [*self.data(FeedbackReceivedEvent), *extra_feedback]:
            moments.append((feedback.received_at, 1, feedback.feedback_id, feedback))
        for conversion in self.conversions:
            moments.append((conversion.at, 1, conversion.order_id, conversion))
        for refund in self.data(OrderRefundedEvent):
            moments.append((refund.refunded_at, 2, refund.refund_id, refund))
        balances: defaultdict[str, int] = defaultdict(int)
        earned: dict[str, tuple[str, datetime, int, Decimal]] = {}  # order → customer, placed_at, points, total
        orders_of: defaultdict[str, list[str]] = defaultdict(list)
        refunded: defaultdict[str, Decimal] = defaultdict(Decimal)
        reversed_: defaultdict[str, int] = defaultdict(int)
        rewarded: set[str] = set()  # review:<order>, survey:<order>
        for moment, _, _, what in sorted(moments, key=lambda m: m[:3]):
            if isinstance(what, OrderPlaced):
                customer = what.customer.customer_id
                qualifying = sum(
                    earned[order_id][2] - reversed_[order_id]
                    for order_id in orders_of[customer]
                    if moment - TIER_WINDOW < earned[order_id][1] < moment
                )
                multiplier = [m for _, threshold, m in TIERS if qualifying >= threshold][-1]
                points = _floor(what.total * multiplier)
                earned[what.order_id] = (customer, moment, points, what.total)
                orders_of[customer].append(what.order_id)
                balances[customer] += points
            elif isinstance(what, OrderRefunded):
                customer, _, points, total = earned[what.order_id]  # a refund follows its order here
                refunded[what.order_id] += what.amount
                target = _floor(points * min(refunded[what.order_id], total) / total)
                balances[customer] -= target - reversed_[what.order_id]
                reversed_[what.order_id] = target
            elif isinstance(what, FeedbackReceived):
                about = what.order_id or what.feedback_id
                if len((what.comment or "").strip()) >= REVIEW_MIN_CHARS and f"review:{about}" not in rewarded:
                    rewarded.add(f"review:{about}")
                    balances[what.customer_id] += REVIEW_POINTS
                if what.nps is not None and f"survey:{about}" not in rewarded:
                    rewarded.add(f"survey:{about}")
                    balances[what.customer_id] += SURVEY_POINTS
            else:
                balances[what.referrer] += REFERRER_POINTS
                balances[what.referee] += REFEREE_POINTS
        return dict(balances)


def _floor(amount: Decimal) -> int:
    return int(amount.to_integral_value(rounding=ROUND_FLOOR))


def customer_ids(tag: str, customers: int) -> list[str]:
    return [f"cus-{tag}-{n:05d}" for n in range(customers)]


def referrers_of(tag: str, customers: int) -> list[str]:
    """The customers of a day who share a code (one in twenty); issue their codes before planning the day."""
    return customer_ids(tag, customers)[: max(1, customers // 20)]


def plan_shop_day(
    seed: int,
    *,
    tag: str,
    customers: int,
    orders: int,
    codes: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> ShopDay:
    """A repeatable day of `orders` orders by `customers` customers, all of it in the week before `now`.

    `codes` maps referrers (`referrers_of`) to their codes; as many friends as there are referrers then place
    their first order with one of them.
    """
    rng = random.Random(seed)  # noqa: S311 - a repeatable shop day, not a secret
    now = now or datetime.now(UTC)
    start = now - timedelta(days=7)
    everyone = customer_ids(tag, customers)
    ids = itertools.count()
    # Every order is placed in the first three days, so fulfilment, refunds and feedback fit before `now`.
    placed = sorted(start + timedelta(seconds=rng.uniform(0, 3 * 86400)) for _ in range(orders))
    buyers = [rng.choice(everyone) for _ in range(orders)]
    events: list[Envelope[Any]] = []
    conversions: list[Conversion] = []
    friends = _friends(rng, everyone, buyers, codes or {})
    first_seen: set[str] = set()
    for n, (customer_id, placed_at) in enumerate(zip(buyers, placed, strict=True)):
        order_id = f"ord-{tag}-{n:06d}"
        code = None
        if customer_id not in first_seen and customer_id in friends:
            referrer = friends[customer_id]
            code = (codes or {})[referrer]
            conversions.append(Conversion(referrer, customer_id, order_id, placed_at))
        first_seen.add(customer_id)
        order = order_placed(
            customer_id, order_id, _line_items(rng), at=placed_at, code=code, event_id=f"{tag}-e{next(ids)}"
        )
        events.append(order)
        events.extend(_what_follows(rng, order.data, tag, ids))
    events.sort(key=_moment)
    return ShopDay(events, conversions)


def _friends(rng: random.Random, everyone: list[str], buyers: list[str], codes: Mapping[str, str]) -> dict[str, str]:
    """Friend → referrer: customers who order and share no code, each brought by one referrer."""
    referrers = sorted(codes)
    candidates = sorted(set(buyers) - set(referrers))
    rng.shuffle(candidates)
    return {friend: referrers[n % len(referrers)] for n, friend in enumerate(candidates[: len(referrers)])}


def _line_items(rng: random.Random) -> list[LineItem]:
    chosen = rng.sample(PRODUCTS, rng.randint(1, 5))
    return [
        LineItem(sku=sku, name=name, quantity=rng.randint(1, 3), unit_price=Decimal(price), category=category)
        for sku, name, category, price in chosen
    ]


def _what_follows(rng: random.Random, order: OrderPlaced, tag: str, ids: Iterator[int]) -> list[Envelope[Any]]:
    """Fulfilment (80 %), then maybe a refund (10 %: a quarter, half, all, or in two parts) and feedback (20 %)."""
    follows: list[Envelope[Any]] = []
    customer_id = order.customer.customer_id
    if rng.random() >= 0.8:
        return follows
    fulfilled_at = order.placed_at + timedelta(hours=rng.uniform(2, 30))
    follows.append(order_fulfilled(customer_id, order.order_id, at=fulfilled_at, event_id=f"{tag}-e{next(ids)}"))
    if rng.random() < 0.1:
        shares = rng.choice([["0.25"], ["0.5"], ["1"], ["0.3", "0.7"]])
        refunded_at = fulfilled_at + timedelta(hours=rng.uniform(1, 40))
        for n, share in enumerate(shares):
            amount = (order.total * Decimal(share)).quantize(Decimal("0.01"), rounding=ROUND_FLOOR)
            refund_id = f"ref-{order.order_id}-{n}"
            at = refunded_at + timedelta(hours=n)
            follows.append(
                order_refunded(customer_id, order.order_id, amount, at=at, refund_id=refund_id, event_id=refund_id)
            )
    if rng.random() < 0.2:
        nps = rng.choice([10, 9, 9, 8, 7, 5, 2, None])
        overall = 5 if nps is None or nps >= 9 else 4 if nps >= 7 else 2
        received_at = fulfilled_at + timedelta(hours=rng.uniform(2, 60))
        feedback = FeedbackReceived(
            feedback_id=f"fb-{order.order_id}",
            customer_id=customer_id,
            order_id=order.order_id,
            ratings=Ratings(overall=overall),
            nps=nps,
            comment=rng.choice([None, *REVIEWS]),
            channel="email",
            received_at=received_at,
        )
        # As followups publishes it after a customer answered the feedback link.
        follows.append(
            FeedbackReceivedEvent.new(feedback, source="followups", subject=customer_id, event_id=f"{tag}-e{next(ids)}")
        )
    return follows


def _moment(event: Envelope[Any]) -> datetime:
    data = event.data
    for name in ("placed_at", "fulfilled_at", "refunded_at", "received_at"):
        if hasattr(data, name):
            moment: datetime = getattr(data, name)
            return moment
    return event.time


# --- single events, as a shop backend sends them --------------------------------------------------


def order_placed(
    customer_id: str,
    order_id: str,
    items: list[LineItem],
    *,
    at: datetime,
    email: str | None = None,
    code: str | None = None,
    event_id: str | None = None,
    **customer: Any,
) -> OrderPlacedEvent:
    """An order; `customer` takes the Customer fields (first_name, city, phone…) and `shipping_address`."""
    address = customer.pop("shipping_address", None) or ShippingAddress(
        line1=f"{customer_id} Street 1", postal_code="040 01", city=customer.get("city") or "Košice", country="SK"
    )
    data = OrderPlaced(
        order_id=order_id,
        customer=Customer(customer_id=customer_id, email=email or f"{customer_id}@example.com", **customer),
        placed_at=at,
        currency="EUR",
        total=sum((item.unit_price * item.quantity for item in items), Decimal("0.00")),
        line_items=items,
        referral_code=code,
        shipping_address=address,
    )
    return OrderPlacedEvent.new(data, source="shop", subject=customer_id, correlationid=order_id, event_id=event_id)


def order_fulfilled(
    customer_id: str, order_id: str, *, at: datetime, event_id: str | None = None
) -> OrderFulfilledEvent:
    data = OrderFulfilled(order_id=order_id, customer_id=customer_id, fulfilled_at=at)
    return OrderFulfilledEvent.new(data, source="shop", subject=customer_id, correlationid=order_id, event_id=event_id)


def order_refunded(
    customer_id: str,
    order_id: str,
    amount: Decimal,
    *,
    at: datetime,
    refund_id: str,
    event_id: str | None = None,
) -> OrderRefundedEvent:
    data = OrderRefunded(
        refund_id=refund_id, order_id=order_id, customer_id=customer_id, amount=amount, currency="EUR", refunded_at=at
    )
    return OrderRefundedEvent.new(data, source="shop", subject=customer_id, correlationid=order_id, event_id=event_id)
