"""Loyalty rules as plain values and functions, no I/O.

A member's ledger is derived from the facts the service has heard of (purchases,
refunds, activities, redemptions), replayed in the order they happened. Every
logical award has a key (``purchase:<order>``, ``refund:<order>``, ``review:<order>``…)
and the replay says how many points each key should amount to; the service
appends ledger entries for the difference from what the ledger already says.
So a refund before its order, a late first order or a duplicate all end in the
same balance as the in-order stream (DESIGN.md §5).

Rules that a fact was earned under (rate, tiers, campaigns, point values) are
captured on the fact when it is first heard of, so changing the rules later
never rewrites history.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from shared.events import FeedbackReceived, OrderPlaced, OrderRefunded, ReferralConverted
from shared.mongo import as_stored  # facts keep their moments as stored, so they sort the same once saved

# --- configuration -------------------------------------------------------------


@dataclass(frozen=True)
class Tier:
    name: str
    threshold: int  # purchase points in the tier window needed to hold it
    multiplier: Decimal


DEFAULT_TIERS = (
    Tier("bronze", 0, Decimal("1.0")),
    Tier("silver", 500, Decimal("1.25")),
    Tier("gold", 1500, Decimal("1.5")),
    Tier("vip", 5000, Decimal("2.0")),
)


@dataclass(frozen=True)
class Rules:
    """One shop's earning rules (DESIGN.md §7 defaults)."""

    rates: dict[str, Decimal] = field(default_factory=lambda: {c: Decimal(1) for c in ("EUR", "USD", "GBP", "CHF")})
    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    review_points: int = 50
    review_min_chars: int = 20
    survey_points: int = 20
    referrer_points: int = 500
    referee_points: int = 250
    two_sided_referrals: bool = True
    points_lifetime_days: int = 365
    tier_window_days: int = 365


@dataclass(frozen=True)
class Campaign:
    """Bonus points in a window: ×multiplier on the order (or on the scoped line items)."""

    campaign_id: str
    name: str
    starts_at: datetime
    ends_at: datetime
    multiplier: Decimal
    categories: frozenset[str] = frozenset()
    skus: frozenset[str] = frozenset()
    bonus_lifetime_days: int = 30

    def running_at(self, moment: datetime) -> bool:
        return self.starts_at <= moment < self.ends_at

    def covers(self, line: "Line") -> bool:
        if not self.categories and not self.skus:
            return True
        return line.sku in self.skus or (line.category is not None and line.category in self.categories)


# --- facts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    sku: str
    category: str | None
    amount: Decimal  # quantity × unit price


@dataclass(frozen=True)
class Purchase:
    order_id: str
    placed_at: datetime
    currency: str
    total: Decimal
    lines: tuple[Line, ...]
    rate: Decimal | None  # None: the currency earns nothing
    tiers: tuple[Tier, ...]
    campaigns: tuple[Campaign, ...]
    lifetime_days: int
    tier_window_days: int


@dataclass(frozen=True)
class Refund:
    refund_id: str
    order_id: str
    amount: Decimal
    refunded_at: datetime


@dataclass(frozen=True)
class Activity:
    """Points earned at one moment: for a review, a survey answer or a referral (or, in the replay, a purchase)."""

    key: str
    reason: str  # review | survey | referral
    points: int
    at: datetime
    lifetime_days: int
    order_id: str | None = None


@dataclass(frozen=True)
class Redemption:
    redemption_id: str
    reward_id: str
    points: int
    at: datetime


Fact = Purchase | Refund | Activity | Redemption


def fact_moment(fact: Fact) -> datetime:
    if isinstance(fact, Purchase):
        return fact.placed_at
    if isinstance(fact, Refund):
        return fact.refunded_at
    return fact.at


def fact_id(fact: Fact) -> str:
    if isinstance(fact, Purchase):
        return fact.order_id
    if isinstance(fact, Refund):
        return fact.refund_id
    if isinstance(fact, Activity):
        return fact.key
    return fact.redemption_id


_KIND_OF_FACT = {Purchase: "purchases", Refund: "refunds", Activity: "activities", Redemption: "redemptions"}


def fact_kind(fact: Fact) -> str:
    """The kind of a fact, as Facts names its fields: purchases, refunds, activities or redemptions."""
    return _KIND_OF_FACT[type(fact)]


@dataclass(frozen=True)
class Facts:
    """Everything heard of about one member; each fact is known once, by its id."""

    purchases: tuple[Purchase, ...] = ()
    refunds: tuple[Refund, ...] = ()
    activities: tuple[Activity, ...] = ()
    redemptions: tuple[Redemption, ...] = ()

    def adding(self, *new: Fact) -> "Facts | None":
        """These facts added to the known ones; None when all were known (a repeat changes nothing)."""
        grown: dict[str, tuple[Any, ...]] = {}
        for fact in new:
            kind = fact_kind(fact)
            known = grown.get(kind, getattr(self, kind))
            if all(fact_id(k) != fact_id(fact) for k in known):
                grown[kind] = (*known, fact)
        return replace(self, **grown) if grown else None


# --- rules ------------------------------------------------------------------------


def floor_points(amount: Decimal) -> int:
    return int(amount.to_integral_value(rounding=ROUND_FLOOR))


def tier_for(points: int, tiers: Sequence[Tier]) -> Tier:
    """The highest tier whose threshold `points` reaches."""
    held = tiers[0]
    for tier in sorted(tiers, key=lambda t: t.threshold):
        if points >= tier.threshold:
            held = tier
    return held


def next_tier(points: int, tiers: Sequence[Tier]) -> tuple[Tier, int] | None:
    """The next tier up and the points still missing, or None at the top."""
    for tier in sorted(tiers, key=lambda t: t.threshold):
        if points < tier.threshold:
            return tier, tier.threshold - points
    return None


def scoped_amount(campaign: Campaign, lines: Sequence[Line], total: Decimal) -> Decimal:
    """The part of the order total a campaign applies to; discounts shrink every line alike."""
    if not campaign.categories and not campaign.skus:
        return total
    gross = sum((line.amount for line in lines), Decimal(0))
    if gross <= 0:
        return Decimal(0)
    covered = sum((line.amount for line in lines if campaign.covers(line)), Decimal(0))
    return total * covered / gross


def purchase_points(
    total: Decimal,
    rate: Decimal | None,
    tier_multiplier: Decimal,
    campaigns: Sequence[Campaign],
    lines: Sequence[Line],
) -> tuple[int, dict[str, int]]:
    """Base points and the bonus per campaign for one order.

    points = floor(rate × tier multiplier × (total + Σ scoped part × (campaign multiplier − 1)));
    with one campaign over the whole order that is DESIGN.md's
    floor(total × rate × tier multiplier × campaign multiplier). Overlapping
    campaigns add their bonuses; the bonus is split between them in proportion,
    the remainder of the floor going to the first.
    """
    if rate is None:
        return 0, {}
    base = floor_points(total * rate * tier_multiplier)
    extras = {c.campaign_id: scoped_amount(c, lines, total) * (c.multiplier - 1) for c in campaigns}
    extras = {cid: extra for cid, extra in extras.items() if extra > 0}
    with_bonus = floor_points(rate * tier_multiplier * (total + sum(extras.values(), Decimal(0))))
    bonus_total = with_bonus - base
    if bonus_total <= 0 or not extras:
        return base, {}
    weight = sum(extras.values(), Decimal(0))
    split = {cid: floor_points(Decimal(bonus_total) * extra / weight) for cid, extra in extras.items()}
    first = next(iter(split))
    split[first] += bonus_total - sum(split.values())
    return base, {cid: points for cid, points in split.items() if points > 0}


def refund_reversal(order_points: int, order_total: Decimal, refunded: Decimal) -> int:
    """Points to take back for `refunded` (cumulative) of an order: never past the award."""
    if order_total <= 0 or order_points <= 0:
        return 0
    return floor_points(Decimal(order_points) * min(refunded, order_total) / order_total)


def feedback_activities(feedback: FeedbackReceived, rules: Rules) -> list[Activity]:
    """A review (a comment of review_min_chars+) and a survey answer (NPS) earn once per order each."""
    about = feedback.order_id or f"feedback-{feedback.feedback_id}"
    lifetime, at, order_id = rules.points_lifetime_days, as_stored(feedback.received_at), feedback.order_id
    earned = []
    comment = (feedback.comment or "").strip()
    if feedback.comment is not None and len(comment) >= rules.review_min_chars and rules.review_points > 0:
        earned.append(Activity(f"review:{about}", "review", rules.review_points, at, lifetime, order_id))
    if feedback.nps is not None and rules.survey_points > 0:
        earned.append(Activity(f"survey:{about}", "survey", rules.survey_points, at, lifetime, order_id))
    return earned


def referral_activities(referral: ReferralConverted, rules: Rules) -> list[tuple[str, Activity]]:
    """Referral points per side, as (customer id, activity); affiliates are paid a commission, not points."""
    sides = (
        [("referrer", referral.referrer_customer_id, rules.referrer_points)] if referral.program == "customer" else []
    )
    sides.append(("referee", referral.referee_customer_id, rules.referee_points if rules.two_sided_referrals else 0))
    return [
        (
            customer_id,
            Activity(
                f"referral:{referral.referral_id}:{side}",
                "referral",
                points,
                as_stored(referral.converted_at),
                rules.points_lifetime_days,
                referral.order_id,
            ),
        )
        for side, customer_id, points in sides
        if points > 0
    ]


def purchase_of(order: OrderPlaced, rules: Rules, campaigns: Sequence[Campaign]) -> Purchase:
    """The purchase fact, with the rules in force for it: its currency's rate and the campaigns running then."""
    return Purchase(
        order_id=order.order_id,
        placed_at=as_stored(order.placed_at),
        currency=order.currency,
        total=order.total,
        lines=tuple(Line(i.sku, i.category, i.unit_price * i.quantity) for i in order.line_items),
        rate=rules.rates.get(order.currency),
        tiers=rules.tiers,
        campaigns=tuple(c for c in campaigns if c.running_at(order.placed_at)),
        lifetime_days=rules.points_lifetime_days,
        tier_window_days=rules.tier_window_days,
    )


def facts_of(
    data: OrderPlaced | OrderRefunded | FeedbackReceived | ReferralConverted,
    rules: Rules,
    campaigns: Sequence[Campaign],
) -> list[tuple[str, Fact]]:
    """What an event tells loyalty, as (customer id, fact) pairs."""
    if isinstance(data, OrderPlaced):
        return [(data.customer.customer_id, purchase_of(data, rules, campaigns))]
    if isinstance(data, OrderRefunded):
        return [(data.customer_id, Refund(data.refund_id, data.order_id, data.amount, as_stored(data.refunded_at)))]
    if isinstance(data, FeedbackReceived):
        return [(data.customer_id, activity) for activity in feedback_activities(data, rules)]
    return [*referral_activities(data, rules)]


# --- the replay ---------------------------------------------------------------------


@dataclass
class Lot:
    """Earned points that can be spent and that expire."""

    key: str
    earned_at: datetime
    expires_at: datetime
    remaining: int
    order_id: str | None


@dataclass
class Order:
    """What the replay keeps of a purchase: its award, and how much of it refunds took back."""

    placed_at: datetime
    total: Decimal
    points: int  # base and bonus points it earned
    window_days: int  # the tier window it was placed under
    refunded: Decimal = Decimal(0)
    reversed: int = 0


Place = tuple[datetime, int, str]  # where a fact stands in the member's timeline: (moment, kind, id)


@dataclass
class Checkpoint:
    """The replay's state right after the member's latest fact.

    A new fact that comes later in the timeline (as almost every live event does)
    continues from here, so handling it costs the same however long the member's
    history; an earlier one makes the service replay the member's facts in full.
    """

    last: Place | None = None  # None before any fact
    seen: set[str] = field(default_factory=set)  # every fact heard of, as "<kind>:<id>"
    lots: list[Lot] = field(default_factory=list)  # earned points not yet spent, taken back or expired
    orders: dict[str, Order] = field(default_factory=dict)
    pending_refunds: dict[str, list[Refund]] = field(default_factory=dict)  # of orders not known yet, or placed later

    def unheard(self, facts: Sequence["Fact"]) -> list["Fact"]:
        """The facts not heard of before (a repeat changes nothing)."""
        return [fact for fact in facts if seen_id(fact) not in self.seen]


@dataclass
class Ledger:
    """What the member's ledger should say, as of `now`."""

    amounts: dict[str, int]  # key → signed points (earns positive, reversals/redemptions/expiries negative)
    reasons: dict[str, str]  # key → reason of its entries, for the keys this replay went through
    order_of_key: dict[str, str | None]
    expiry_of_key: dict[str, datetime]
    lots: list[Lot]
    tier: Tier
    qualifying_points: int
    next_review_at: datetime | None
    checkpoint: Checkpoint

    @property
    def balance(self) -> int:
        return sum(self.amounts.values())

    def expiring_between(self, start: datetime, end: datetime) -> list[Lot]:
        return sorted(
            (lot for lot in self.lots if lot.remaining > 0 and start < lot.expires_at <= end),
            key=lambda lot: lot.expires_at,
        )


_ORDER_OF_KINDS = {Purchase: 0, Activity: 1, Refund: 2, Redemption: 3}


def place(fact: Fact) -> Place:
    return fact_moment(fact), _ORDER_OF_KINDS[type(fact)], fact_id(fact)


def seen_id(fact: Fact) -> str:
    return f"{fact_kind(fact)}:{fact_id(fact)}"


def replay(facts: Facts, now: datetime, current_tiers: Sequence[Tier] = DEFAULT_TIERS) -> Ledger:
    """Replay all of a member's facts in the order they happened and say what the ledger should hold."""
    every: list[Fact] = [*facts.purchases, *facts.activities, *facts.refunds, *facts.redemptions]
    return _Replay(None).run(every, now, current_tiers, recorded={})


def continue_replay(
    checkpoint: Checkpoint,
    recorded: dict[str, int],
    new: Sequence[Fact],
    now: datetime,
    current_tiers: Sequence[Tier] = DEFAULT_TIERS,
) -> Ledger | None:
    """The replay of a member's known facts and `new` ones, from the known ones' checkpoint.

    `new`: facts not heard of before (`Checkpoint.unheard`). `recorded` is what
    the ledger says per key. None when a new fact comes before the latest known
    one: then only the full replay can tell.
    """
    if checkpoint.last is not None and any(place(fact) <= checkpoint.last for fact in new):
        return None
    return _Replay(checkpoint).run(new, now, current_tiers, recorded)


class _Replay:
    """Goes through facts in timeline order, keeping what later facts and expiry need (a Checkpoint's parts)."""

    def __init__(self, start: Checkpoint | None) -> None:
        self.last: Place | None = start.last if start else None
        self.seen = set(start.seen) if start else set()
        self.lots = [replace(lot) for lot in start.lots] if start else []
        self.orders = {order_id: replace(order) for order_id, order in start.orders.items()} if start else {}
        self.pending_refunds = {o: list(r) for o, r in start.pending_refunds.items()} if start else {}
        # What this replay says about the keys it goes through; keys it does not touch keep what is recorded.
        self.amounts: dict[str, int] = {}
        self.reasons: dict[str, str] = {}
        self.order_of_key: dict[str, str | None] = {}
        self.expiry_of_key: dict[str, datetime] = {}

    def run(
        self, facts: Sequence[Fact], now: datetime, current_tiers: Sequence[Tier], recorded: dict[str, int]
    ) -> Ledger:
        for fact in sorted(facts, key=place):
            self.expire_until(fact_moment(fact))
            self.apply(fact)
            self.seen.add(seen_id(fact))
            self.last = place(fact)
        checkpoint = self.checkpoint()
        self.expire_until(now)
        for lot in self.lots:  # a lot that has not expired (any more: a late fact spent it) owes no expiry
            self.amounts.setdefault(f"expire:{lot.key}", 0)
            self.reasons.setdefault(f"expire:{lot.key}", "expiry")
            self.order_of_key.setdefault(f"expire:{lot.key}", lot.order_id)
        window = max((order.window_days for order in self.orders.values()), default=365)
        points_now = self.qualifying(now, window, strictly_before=False)
        upcoming = [lot.expires_at for lot in self.lots if lot.remaining > 0 and lot.expires_at > now]
        upcoming += [o.placed_at + timedelta(days=window) for o in self.orders.values()]
        amounts = {key: points for key, points in {**recorded, **self.amounts}.items() if points != 0}
        return Ledger(
            amounts=amounts,
            reasons=self.reasons,
            order_of_key=self.order_of_key,
            expiry_of_key=self.expiry_of_key,
            lots=self.lots,
            tier=tier_for(points_now, current_tiers),
            qualifying_points=points_now,
            next_review_at=min((at for at in upcoming if at > now), default=None),
            checkpoint=checkpoint,
        )

    def checkpoint(self) -> Checkpoint:
        """The state now; only the lots change after this (expiry up to `now`), so only they are copied."""
        lots = [replace(lot) for lot in self.lots if lot.remaining > 0]
        return Checkpoint(self.last, self.seen, lots, self.orders, self.pending_refunds)

    def apply(self, fact: Fact) -> None:
        if isinstance(fact, Purchase):
            self.purchase(fact)
        elif isinstance(fact, Activity):
            self.earn(fact)
        elif isinstance(fact, Refund):
            if fact.order_id in self.orders:
                self.take_back(fact)
            else:  # the order is not heard of yet, or came later by the shop's clock
                self.pending_refunds.setdefault(fact.order_id, []).append(fact)
        else:
            self.set(f"redeem:{fact.redemption_id}", -fact.points, "redemption", None)
            self.spend(fact.points)

    def set(self, key: str, points: int, reason: str, order_id: str | None) -> None:
        self.amounts[key] = points
        self.reasons[key] = reason
        self.order_of_key[key] = order_id

    def earn(self, earned: Activity) -> None:
        self.set(earned.key, earned.points, earned.reason, earned.order_id)
        self.expiry_of_key[earned.key] = earned.at + timedelta(days=earned.lifetime_days)
        self.lots.append(Lot(earned.key, earned.at, self.expiry_of_key[earned.key], earned.points, earned.order_id))

    def purchase(self, fact: Purchase) -> None:
        moment = fact.placed_at
        held = tier_for(self.qualifying(moment, fact.tier_window_days, strictly_before=True), fact.tiers)
        running = [c for c in fact.campaigns if c.running_at(moment)]
        base, bonuses = purchase_points(fact.total, fact.rate, held.multiplier, running, fact.lines)
        self.orders[fact.order_id] = Order(moment, fact.total, base + sum(bonuses.values()), fact.tier_window_days)
        if base > 0:
            key = f"purchase:{fact.order_id}"
            self.earn(Activity(key, "purchase", base, moment, fact.lifetime_days, fact.order_id))
        lifetimes = {c.campaign_id: c.bonus_lifetime_days for c in running}
        for campaign_id, bonus in bonuses.items():
            key = f"bonus:{fact.order_id}:{campaign_id}"
            self.earn(Activity(key, "bonus", bonus, moment, lifetimes[campaign_id], fact.order_id))
        for refund in self.pending_refunds.pop(fact.order_id, []):
            self.take_back(refund)

    def expire_until(self, moment: datetime) -> None:
        for lot in self.lots:
            if lot.remaining > 0 and lot.expires_at <= moment:
                self.set(f"expire:{lot.key}", -lot.remaining, "expiry", lot.order_id)
                lot.remaining = 0

    def qualifying(self, moment: datetime, window_days: int, *, strictly_before: bool) -> int:
        start = moment - timedelta(days=window_days)
        return sum(
            order.points - order.reversed
            for order in self.orders.values()
            if start < order.placed_at and (order.placed_at < moment if strictly_before else order.placed_at <= moment)
        )

    def take_back(self, refund: Refund) -> None:
        order_id, order = refund.order_id, self.orders[refund.order_id]
        order.refunded += refund.amount
        target = refund_reversal(order.points, order.total, order.refunded)
        delta = target - order.reversed
        if delta <= 0:
            return
        order.reversed = target
        self.set(f"refund:{order_id}", -target, "refund", order_id)
        owed = delta
        for lot in sorted((lot for lot in self.lots if lot.order_id == order_id), key=lambda lot: lot.expires_at):
            taken = min(owed, lot.remaining)
            lot.remaining -= taken
            owed -= taken

    def spend(self, points: int) -> None:
        """Redemptions spend the points that expire soonest first."""
        for lot in sorted(self.lots, key=lambda lot: (lot.expires_at, lot.earned_at)):
            taken = min(points, lot.remaining)
            lot.remaining -= taken
            points -= taken
            if points == 0:
                return


# --- from replay to entries -------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One ledger entry to append: the difference between what a key should be and what it is."""

    key: str
    kind: str  # earn | reverse | redeem | expire | adjust
    reason: str
    points: int  # signed
    order_id: str | None
    expires_at: datetime | None


def entries_to_append(desired: Ledger, recorded: dict[str, int]) -> list[Entry]:
    """An entry for every key whose points differ from what the ledger records (a key the replay dropped is 0)."""
    entries = []
    for key in [*desired.amounts, *(key for key in recorded if key not in desired.amounts)]:
        delta = desired.amounts.get(key, 0) - recorded.get(key, 0)
        if delta == 0:
            continue
        entries.append(_entry(key, delta, desired, first=key not in recorded))
    return entries


def _entry(key: str, delta: int, desired: Ledger, *, first: bool) -> Entry:
    kind_of_prefix = {"refund": "reverse", "redeem": "redeem", "expire": "expire"}
    kind = kind_of_prefix.get(key.split(":", 1)[0], "earn")
    reason = desired.reasons.get(key, "adjustment")
    natural_sign = 1 if kind == "earn" else -1
    # A correction (a late fact changed an earlier award, or undid part of an expiry) is an adjustment.
    if delta * natural_sign < 0 or (kind == "earn" and not first):
        kind, reason = "adjust", "adjustment"
    return Entry(key, kind, reason, delta, desired.order_of_key.get(key), desired.expiry_of_key.get(key))
