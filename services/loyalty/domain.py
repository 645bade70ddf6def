"""Loyalty rules as plain values and functions, no I/O: the part of the service to read first.

A member's ledger is derived from the facts loyalty knows of (purchases, refunds,
activities, redemptions, the owner's adjustments), replayed in the order they happened. Every logical
award has a key (``purchase:<order>``, ``refund:<order>``, ``review:<order>``…) and
the replay says how many points each key should amount to. `decide` turns the
difference from what the ledger already records into the whole decision: the
ledger entries to append, the events they publish and the member's new state.
So a refund before its order, a late first order or a duplicate all end in the
same balance as the in-order stream (DESIGN.md §5).

The rules a fact was earned under (rate, tiers, campaigns, point values) are
captured on the fact when loyalty first learns of it, so changing the rules
later never rewrites history.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import Any, Literal

from shared.events import (
    FeedbackReceived,
    OrderCancelled,
    OrderPlaced,
    OrderRefunded,
    PointsAwarded,
    PointsExpired,
    PointsRedeemed,
    PointsReversed,
    ReferralConverted,
    TierChanged,
)
from shared.mongo import as_stored  # facts keep their moments as stored, so they sort the same once saved

# --- the scheme: what the shop configured ---------------------------------------------------


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
    active: bool = True  # False once the owner ended it: orders from then on earn no bonus from it

    def running_at(self, moment: datetime) -> bool:
        return self.starts_at <= moment < self.ends_at

    def covers(self, line: "Line") -> bool:
        if not self.categories and not self.skus:
            return True
        return line.sku in self.skus or (line.category is not None and line.category in self.categories)


@dataclass(frozen=True)
class Scheme:
    """The loyalty scheme in force: the shop's earning rules and the campaigns it runs."""

    rules: Rules = field(default_factory=Rules)
    campaigns: tuple[Campaign, ...] = ()


@dataclass(frozen=True)
class Reward:
    """Something in the catalogue a member can spend points on."""

    reward_id: str
    name: str
    points_price: int
    description: str | None = None
    active: bool = True


# --- facts: what loyalty knows of a member --------------------------------------------------


class Reason(StrEnum):
    """Why points moved, as the ledger and the events say."""

    PURCHASE = "purchase"
    BONUS = "bonus"
    REVIEW = "review"
    SURVEY = "survey"
    REFERRAL = "referral"
    REFUND = "refund"
    REDEMPTION = "redemption"
    EXPIRY = "expiry"
    ADJUSTMENT = "adjustment"


class EntryKind(StrEnum):
    """What a ledger entry does: earn, take back for a refund, spend, expire, or correct an earlier entry."""

    EARN = "earn"
    REVERSE = "reverse"
    REDEEM = "redeem"
    EXPIRE = "expire"
    ADJUST = "adjust"


@dataclass(frozen=True)
class Line:
    sku: str
    category: str | None
    amount: Decimal  # quantity × unit price


@dataclass(frozen=True)
class Purchase:
    """An order the customer placed (an OrderPlaced), with the rules in force when it was placed."""

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
class Cancellation:
    """The shop cancelled an order (an OrderCancelled): what it still counted for is taken back, once."""

    order_id: str
    cancelled_at: datetime


@dataclass(frozen=True)
class Activity:
    """Points earned at one moment: for a review, a survey answer or a referral (or, in the replay, a purchase)."""

    key: str
    reason: Reason
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


@dataclass(frozen=True)
class Adjustment:
    """The owner gave (points > 0) or took (points < 0) points by hand, in their own words (`note`).

    Given points expire like earned ones; taken points come off the soonest-expiring first and may take
    the balance below zero (as a refund may). Neither counts towards a tier: tiers come from purchases.
    """

    adjustment_id: str
    points: int  # signed, never 0
    note: str
    at: datetime
    lifetime_days: int


Fact = Purchase | Refund | Cancellation | Activity | Redemption | Adjustment
FactKind = Literal["purchases", "refunds", "cancellations", "activities", "redemptions", "adjustments"]
FACT_KINDS: tuple[FactKind, ...] = (
    "purchases",
    "refunds",
    "cancellations",
    "activities",
    "redemptions",
    "adjustments",
)


def fact_moment(fact: Fact) -> datetime:
    if isinstance(fact, Purchase):
        return fact.placed_at
    if isinstance(fact, Refund):
        return fact.refunded_at
    if isinstance(fact, Cancellation):
        return fact.cancelled_at
    return fact.at


def fact_id(fact: Fact) -> str:
    """The fact's id within its kind; an order is cancelled once, so a cancellation goes by its order's id."""
    if isinstance(fact, Purchase | Cancellation):
        return fact.order_id
    if isinstance(fact, Refund):
        return fact.refund_id
    if isinstance(fact, Activity):
        return fact.key
    if isinstance(fact, Adjustment):
        return fact.adjustment_id
    return fact.redemption_id


def fact_kind(fact: Fact) -> FactKind:
    """The kind of a fact, as Facts names its fields."""
    if isinstance(fact, Purchase):
        return "purchases"
    if isinstance(fact, Refund):
        return "refunds"
    if isinstance(fact, Cancellation):
        return "cancellations"
    if isinstance(fact, Activity):
        return "activities"
    if isinstance(fact, Adjustment):
        return "adjustments"
    return "redemptions"


@dataclass(frozen=True)
class Facts:
    """Everything known of one member (their history); each fact is known once, by its id."""

    purchases: tuple[Purchase, ...] = ()
    refunds: tuple[Refund, ...] = ()
    activities: tuple[Activity, ...] = ()
    redemptions: tuple[Redemption, ...] = ()
    cancellations: tuple[Cancellation, ...] = ()
    adjustments: tuple[Adjustment, ...] = ()

    def every(self) -> list[Fact]:
        return [
            *self.purchases,
            *self.refunds,
            *self.cancellations,
            *self.activities,
            *self.redemptions,
            *self.adjustments,
        ]

    def adding(self, *new: Fact) -> "Facts | None":
        """These facts added to the known ones; None when all were known (a repeat changes nothing)."""
        grown: dict[str, tuple[Any, ...]] = {}
        for fact in new:
            kind = fact_kind(fact)
            known = grown.get(kind, getattr(self, kind))
            if all(fact_id(k) != fact_id(fact) for k in known):
                grown[kind] = (*known, fact)
        return replace(self, **grown) if grown else None

    def knows(self, fact: Fact) -> bool:
        return any(fact_id(known) == fact_id(fact) for known in getattr(self, fact_kind(fact)))


# --- earning rules ----------------------------------------------------------------------------


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


def refund_reversal(order_points: int, order_total: Decimal, refunded: Decimal, *, cancelled: bool = False) -> int:
    """Points to take back for `refunded` (cumulative) of an order: never past the award.

    A cancelled order counts for nothing any more: all its points go back, however much
    was refunded before (DESIGN.md §2: like a full refund of what the order still counted for).
    """
    if order_points <= 0:
        return 0
    if cancelled:
        return order_points
    if order_total <= 0:
        return 0
    return floor_points(Decimal(order_points) * min(refunded, order_total) / order_total)


def feedback_activities(feedback: FeedbackReceived, rules: Rules) -> list[Activity]:
    """A review (a comment of review_min_chars+) and a survey answer (NPS) earn once per order each."""
    about = feedback.order_id or f"feedback-{feedback.feedback_id}"
    lifetime, at, order_id = rules.points_lifetime_days, as_stored(feedback.received_at), feedback.order_id
    earned = []
    comment = (feedback.comment or "").strip()
    if feedback.comment is not None and len(comment) >= rules.review_min_chars and rules.review_points > 0:
        earned.append(Activity(f"review:{about}", Reason.REVIEW, rules.review_points, at, lifetime, order_id))
    if feedback.nps is not None and rules.survey_points > 0:
        earned.append(Activity(f"survey:{about}", Reason.SURVEY, rules.survey_points, at, lifetime, order_id))
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
                Reason.REFERRAL,
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
    """The purchase, with the rules in force for it: its currency's rate and the campaigns running then."""
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


ToldEvent = OrderPlaced | OrderRefunded | OrderCancelled | FeedbackReceived | ReferralConverted


def facts_of(data: ToldEvent, scheme: Scheme) -> list[tuple[str, Fact]]:
    """What an event tells loyalty, as (customer id, fact) pairs."""
    rules = scheme.rules
    if isinstance(data, OrderPlaced):
        return [(data.customer.customer_id, purchase_of(data, rules, scheme.campaigns))]
    if isinstance(data, OrderRefunded):
        return [(data.customer_id, Refund(data.refund_id, data.order_id, data.amount, as_stored(data.refunded_at)))]
    if isinstance(data, OrderCancelled):
        return [(data.customer_id, Cancellation(data.order_id, as_stored(data.cancelled_at)))]
    if isinstance(data, FeedbackReceived):
        return [(data.customer_id, activity) for activity in feedback_activities(data, rules)]
    return [*referral_activities(data, rules)]


def facts_by_member(data: ToldEvent, scheme: Scheme) -> dict[str, list[Fact]]:
    """What an event tells loyalty about each member it concerns."""
    by_member: dict[str, list[Fact]] = {}
    for customer_id, fact in facts_of(data, scheme):
        by_member.setdefault(customer_id, []).append(fact)
    return by_member


# --- the member: where their replay stands ------------------------------------------------


@dataclass
class Lot:
    """Earned points that can be spent and that expire."""

    key: str
    earned_at: datetime
    expires_at: datetime
    remaining: int
    order_id: str | None


@dataclass
class PurchaseAward:
    """What the replay keeps of a purchase: its award, and how much of it refunds took back."""

    placed_at: datetime
    total: Decimal
    points: int  # base and bonus points it earned
    window_days: int  # the tier window it was placed under
    refunded: Decimal = Decimal(0)
    reversed: int = 0
    refund_ids: list[str] = field(default_factory=list)  # the refunds taken into account
    cancelled: bool = False  # the shop cancelled the order: it counts for nothing any more


# Where a fact stands in the member's timeline: (moment, rank of its kind, id); facts are replayed in this order.
TimelinePosition = tuple[datetime, int, str]


@dataclass
class Checkpoint:
    """The replay's state right after the member's latest fact.

    A new fact that comes later in the timeline (as almost every live event does)
    continues from here, so handling it costs the same however long the member's
    history; an earlier one needs the member's history replayed in full.

    Bounded: a purchase placed a whole tier window before the latest fact (and
    before now) can no longer change the tier of any later order, so it is folded
    out (`fold_purchases`); a later fact that could still concern it (a refund or
    feedback for it, an order under a longer tier window) needs the full history.
    """

    last: TimelinePosition | None = None  # None before any fact
    seen: set[str] = field(default_factory=set)  # every fact known, as "<kind>:<id>"
    lots: list[Lot] = field(default_factory=list)  # earned points not yet spent, taken back or expired
    purchases: dict[str, PurchaseAward] = field(default_factory=dict)  # by order id
    pending_refunds: dict[str, list[Refund]] = field(default_factory=dict)  # of orders not known yet, or placed later
    folded_window_days: int | None = None  # the tier window purchases were folded out under; None: none was
    pending_cancellations: dict[str, Cancellation] = field(default_factory=dict)  # by order id, as pending refunds


@dataclass(frozen=True)
class Member:
    """A member as loyalty keeps them: what their ledger records, their tier and where their replay stands."""

    customer_id: str
    recorded: Mapping[str, int] = field(default_factory=dict)  # what the ledger says per key
    tier: str = "bronze"
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    qualifying_points: int = 0  # purchase points in the tier window, as of the last change
    next_review_at: datetime | None = None  # when points expire or the tier window slides next
    closed_points: int = 0  # the points of ledger keys no longer kept in `recorded`: no in-order fact can change them

    @property
    def balance(self) -> int:
        return self.closed_points + sum(self.recorded.values())


@dataclass(frozen=True)
class History:
    """Everything known of a member, for a full replay: their facts, and what the ledger records per key
    when the member keeps only the keys an in-order fact can still change (None: the member keeps all)."""

    facts: Facts
    recorded: Mapping[str, int] | None = None


# --- the replay --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyInfo:
    """What one ledger key is for, as the replay that went through it knows."""

    kind: EntryKind  # its own kind: earn, reverse, redeem or expire
    reason: Reason
    order_id: str | None = None
    expires_at: datetime | None = None  # of earned points
    redemption: Redemption | None = None


@dataclass
class Ledger:
    """What the member's ledger should say, as of `now`."""

    amounts: dict[str, int]  # key → signed points (earns positive, reversals/redemptions/expiries negative)
    keys: dict[str, KeyInfo]  # what each key this replay went through is for
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


# At one moment: the order, then what was said of it, its refunds, spending, its cancellation, and last
# the owner's adjustments (ranks are stored in checkpoints: a new kind takes a new number).
_RANK_OF_KIND: dict[FactKind, int] = {
    "purchases": 0,
    "activities": 1,
    "refunds": 2,
    "redemptions": 3,
    "cancellations": 4,
    "adjustments": 5,
}


def timeline_position(fact: Fact) -> TimelinePosition:
    return fact_moment(fact), _RANK_OF_KIND[fact_kind(fact)], fact_id(fact)


def seen_id(fact: Fact) -> str:
    return f"{fact_kind(fact)}:{fact_id(fact)}"


def comes_before(fact: Fact, latest: TimelinePosition | None) -> bool:
    """Whether `fact` stands before (or at) the latest known position: the one test of a late fact."""
    return latest is not None and timeline_position(fact) <= latest


def needs_full_replay(checkpoint: Checkpoint, fact: Fact) -> bool:
    """Whether continuing from the checkpoint cannot tell what `fact` changes: it comes before the latest
    known fact, or it may concern a purchase folded out of the checkpoint."""
    if comes_before(fact, checkpoint.last):
        return True
    folded = checkpoint.folded_window_days
    if folded is None:
        return False
    if isinstance(fact, Refund | Cancellation):
        return fact.order_id not in checkpoint.purchases
    if isinstance(fact, Activity) and fact.reason in (Reason.REVIEW, Reason.SURVEY) and fact.order_id is not None:
        return fact.order_id not in checkpoint.purchases  # once per order: the first may be in the history
    return isinstance(fact, Purchase) and fact.tier_window_days > folded


def replay(facts: Facts, now: datetime, current_tiers: Sequence[Tier] = DEFAULT_TIERS) -> Ledger:
    """Replay all of a member's facts in the order they happened and say what the ledger should hold."""
    return _Replay(None).run(facts.every(), now, current_tiers, recorded={})


def continue_replay(
    checkpoint: Checkpoint,
    recorded: Mapping[str, int],
    new: Sequence[Fact],
    now: datetime,
    current_tiers: Sequence[Tier] = DEFAULT_TIERS,
) -> Ledger | None:
    """The replay of a member's known facts and `new` ones, from the known ones' checkpoint.

    `new`: facts not known before (`new_facts`). `recorded` is what the ledger
    says per key. None when a new fact comes before the latest known one (or may
    concern a purchase folded out of the checkpoint): then only the full replay can tell.
    """
    if any(needs_full_replay(checkpoint, fact) for fact in new):
        return None
    return _Replay(checkpoint).run(new, now, current_tiers, recorded)


class _Replay:
    """Goes through facts in timeline order, keeping what later facts and expiry need (a Checkpoint's parts)."""

    def __init__(self, start: Checkpoint | None) -> None:
        self.last: TimelinePosition | None = start.last if start else None
        self.seen = set(start.seen) if start else set()
        self.lots = [replace(lot) for lot in start.lots] if start else []
        self.purchases = (
            {order_id: replace(p, refund_ids=list(p.refund_ids)) for order_id, p in start.purchases.items()}
            if start
            else {}
        )
        self.pending_refunds = {o: list(r) for o, r in start.pending_refunds.items()} if start else {}
        self.pending_cancellations = dict(start.pending_cancellations) if start else {}
        self.folded_window_days = start.folded_window_days if start else None
        # What this replay says about the keys it goes through; keys it does not touch keep what is recorded.
        self.amounts: dict[str, int] = {}
        self.keys: dict[str, KeyInfo] = {}

    def run(
        self, facts: Sequence[Fact], now: datetime, current_tiers: Sequence[Tier], recorded: Mapping[str, int]
    ) -> Ledger:
        for fact in sorted(facts, key=timeline_position):
            self.expire_until(fact_moment(fact))
            self.apply(fact)
            self.seen.add(seen_id(fact))
            self.last = timeline_position(fact)
        checkpoint = self.checkpoint(now)
        self.expire_until(now)
        for lot in self.lots:  # a lot that has not expired (any more: a late fact spent it) owes no expiry
            key = f"expire:{lot.key}"
            self.amounts.setdefault(key, 0)
            self.keys.setdefault(key, KeyInfo(EntryKind.EXPIRE, Reason.EXPIRY, lot.order_id))
        window = self.longest_window()
        points_now = self.qualifying(now, window, strictly_before=False)
        upcoming = [lot.expires_at for lot in self.lots if lot.remaining > 0 and lot.expires_at > now]
        upcoming += [p.placed_at + timedelta(days=window) for p in self.purchases.values()]
        amounts = {key: points for key, points in {**recorded, **self.amounts}.items() if points != 0}
        return Ledger(
            amounts=amounts,
            keys=self.keys,
            lots=self.lots,
            tier=tier_for(points_now, current_tiers),
            qualifying_points=points_now,
            next_review_at=min((at for at in upcoming if at > now), default=None),
            checkpoint=checkpoint,
        )

    def longest_window(self) -> int:
        windows = [p.window_days for p in self.purchases.values()]
        return max([*windows, self.folded_window_days] if self.folded_window_days else windows, default=365)

    def checkpoint(self, now: datetime) -> Checkpoint:
        """The state now; only the lots change after this (expiry up to `now`), so only they are copied."""
        lots = [replace(lot) for lot in self.lots if lot.remaining > 0]
        kept = Checkpoint(
            self.last,
            self.seen,
            lots,
            self.purchases,
            self.pending_refunds,
            self.folded_window_days,
            self.pending_cancellations,
        )
        return fold_purchases(kept, now, self.longest_window())

    def apply(self, fact: Fact) -> None:
        if isinstance(fact, Purchase):
            self.purchase(fact)
        elif isinstance(fact, Activity):
            self.earn(fact)
        elif isinstance(fact, Refund):
            if fact.order_id in self.purchases:
                self.take_back(fact)
            else:  # the order is not known yet, or came later by the shop's clock
                self.pending_refunds.setdefault(fact.order_id, []).append(fact)
        elif isinstance(fact, Cancellation):
            if fact.order_id in self.purchases:
                self.cancel(fact)
            else:  # as a refund: it waits for its order
                self.pending_cancellations[fact.order_id] = fact
        elif isinstance(fact, Adjustment):
            self.adjust(fact)
        else:
            key = f"redeem:{fact.redemption_id}"
            self.set(key, -fact.points, KeyInfo(EntryKind.REDEEM, Reason.REDEMPTION, redemption=fact))
            self.spend(fact.points)

    def set(self, key: str, points: int, info: KeyInfo) -> None:
        self.amounts[key] = points
        self.keys[key] = info

    def earn(self, earned: Activity) -> None:
        expires_at = earned.at + timedelta(days=earned.lifetime_days)
        self.set(earned.key, earned.points, KeyInfo(EntryKind.EARN, earned.reason, earned.order_id, expires_at))
        self.lots.append(Lot(earned.key, earned.at, expires_at, earned.points, earned.order_id))

    def purchase(self, fact: Purchase) -> None:
        moment = fact.placed_at
        held = tier_for(self.qualifying(moment, fact.tier_window_days, strictly_before=True), fact.tiers)
        running = [c for c in fact.campaigns if c.running_at(moment)]
        base, bonuses = purchase_points(fact.total, fact.rate, held.multiplier, running, fact.lines)
        award = PurchaseAward(moment, fact.total, base + sum(bonuses.values()), fact.tier_window_days)
        self.purchases[fact.order_id] = award
        if base > 0:
            key = f"purchase:{fact.order_id}"
            self.earn(Activity(key, Reason.PURCHASE, base, moment, fact.lifetime_days, fact.order_id))
        lifetimes = {c.campaign_id: c.bonus_lifetime_days for c in running}
        for campaign_id, bonus in bonuses.items():
            key = f"bonus:{fact.order_id}:{campaign_id}"
            self.earn(Activity(key, Reason.BONUS, bonus, moment, lifetimes[campaign_id], fact.order_id))
        for refund in self.pending_refunds.pop(fact.order_id, []):
            self.take_back(refund)
        cancellation = self.pending_cancellations.pop(fact.order_id, None)
        if cancellation is not None:
            self.cancel(cancellation)

    def expire_until(self, moment: datetime) -> None:
        for lot in self.lots:
            if lot.remaining > 0 and lot.expires_at <= moment:
                self.set(f"expire:{lot.key}", -lot.remaining, KeyInfo(EntryKind.EXPIRE, Reason.EXPIRY, lot.order_id))
                lot.remaining = 0

    def qualifying(self, moment: datetime, window_days: int, *, strictly_before: bool) -> int:
        start = moment - timedelta(days=window_days)
        return sum(
            p.points - p.reversed
            for p in self.purchases.values()
            if start < p.placed_at and (p.placed_at < moment if strictly_before else p.placed_at <= moment)
        )

    def take_back(self, refund: Refund) -> None:
        award = self.purchases[refund.order_id]
        award.refunded += refund.amount
        award.refund_ids.append(refund.refund_id)
        self.reverse(refund.order_id, award)

    def cancel(self, cancellation: Cancellation) -> None:
        """What the order still counted for goes back; with nothing left of it, it counts for no tier either."""
        award = self.purchases[cancellation.order_id]
        award.cancelled = True
        self.reverse(cancellation.order_id, award)

    def reverse(self, order_id: str, award: PurchaseAward) -> None:
        """Take back what the order's refunds (and cancellation) now say, beyond what was taken back already."""
        target = refund_reversal(award.points, award.total, award.refunded, cancelled=award.cancelled)
        delta = target - award.reversed
        if delta <= 0:
            return
        award.reversed = target
        self.set(f"refund:{order_id}", -target, KeyInfo(EntryKind.REVERSE, Reason.REFUND, order_id))
        owed = delta
        for lot in sorted((lot for lot in self.lots if lot.order_id == order_id), key=lambda lot: lot.expires_at):
            taken = min(owed, lot.remaining)
            lot.remaining -= taken
            owed -= taken

    def adjust(self, adjustment: Adjustment) -> None:
        """Points given by hand earn (and expire) like any; points taken spend the soonest-expiring first."""
        key = f"adjust:{adjustment.adjustment_id}"
        if adjustment.points > 0:
            self.earn(Activity(key, Reason.ADJUSTMENT, adjustment.points, adjustment.at, adjustment.lifetime_days))
        else:
            self.set(key, adjustment.points, KeyInfo(EntryKind.ADJUST, Reason.ADJUSTMENT))
            self.spend(-adjustment.points)

    def spend(self, points: int) -> None:
        """Redemptions spend the points that expire soonest first."""
        for lot in sorted(self.lots, key=lambda lot: (lot.expires_at, lot.earned_at)):
            taken = min(points, lot.remaining)
            lot.remaining -= taken
            points -= taken
            if points == 0:
                return


def fold_purchases(checkpoint: Checkpoint, now: datetime, window_days: int) -> Checkpoint:
    """The checkpoint without the purchases placed `window_days` (the longest tier window) before both its
    latest fact and `now`: no later order's tier and no tier from now on counts them, and their points
    live on in the lots. Their facts leave `seen` too: a repeat of one comes before the latest fact, or
    concerns a folded purchase, so it goes to the full replay, which knows it."""
    if checkpoint.last is None:
        return checkpoint
    horizon = min(checkpoint.last[0], now) - timedelta(days=window_days)
    old = {order_id: p for order_id, p in checkpoint.purchases.items() if p.placed_at <= horizon}
    if not old:
        return checkpoint
    forgotten = {
        seen
        for order_id, p in old.items()
        for seen in (
            f"purchases:{order_id}",
            f"activities:review:{order_id}",
            f"activities:survey:{order_id}",
            f"cancellations:{order_id}",
            *(f"refunds:{refund_id}" for refund_id in p.refund_ids),
        )
    }
    return replace(
        checkpoint,
        seen=checkpoint.seen - forgotten,
        purchases={order_id: p for order_id, p in checkpoint.purchases.items() if order_id not in old},
        folded_window_days=window_days,
    )


def live_keys(checkpoint: Checkpoint) -> set[str]:
    """The ledger keys an in-order fact can still change: the expiry of unspent points, the refund of a
    purchase still in the checkpoint. The others are closed: their points stay in `Member.closed_points`."""
    return {f"expire:{lot.key}" for lot in checkpoint.lots} | {
        f"refund:{order_id}" for order_id in checkpoint.purchases
    }


# --- from the replay to entries -------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One ledger change to append: the difference between what a key should be and what it is."""

    key: str
    kind: EntryKind
    reason: Reason
    points: int  # signed
    order_id: str | None
    expires_at: datetime | None  # of the key's earned points


def entries_to_append(desired: Ledger, recorded: Mapping[str, int]) -> list[Entry]:
    """An entry for every key whose points differ from what the ledger records (a key the replay dropped is 0)."""
    entries = []
    for key in [*desired.amounts, *(key for key in recorded if key not in desired.amounts)]:
        delta = desired.amounts.get(key, 0) - recorded.get(key, 0)
        if delta == 0:
            continue
        entries.append(_entry(key, delta, desired.keys.get(key) or _untouched(key), first=key not in recorded))
    return entries


_KIND_OF_PREFIX = {
    "refund": EntryKind.REVERSE,
    "redeem": EntryKind.REDEEM,
    "expire": EntryKind.EXPIRE,
    "adjust": EntryKind.ADJUST,
}


def _untouched(key: str) -> KeyInfo:
    """A recorded key the replay did not go through: its kind from the key's prefix, any change an adjustment."""
    return KeyInfo(_KIND_OF_PREFIX.get(key.split(":", 1)[0], EntryKind.EARN), Reason.ADJUSTMENT)


def _entry(key: str, delta: int, info: KeyInfo, *, first: bool) -> Entry:
    kind, reason = info.kind, info.reason
    natural_sign = 1 if kind is EntryKind.EARN else -1
    # A correction (a late fact changed an earlier award, or undid part of an expiry) is an adjustment.
    if delta * natural_sign < 0 or (kind is EntryKind.EARN and not first):
        kind, reason = EntryKind.ADJUST, Reason.ADJUSTMENT
    return Entry(key, kind, reason, delta, info.order_id, info.expires_at)


# --- the decision: entries, events and the member's new state ---------------------------------


@dataclass(frozen=True)
class LedgerEntry:
    """One entry appended to the member's ledger."""

    entry_id: str
    key: str
    kind: EntryKind
    reason: Reason
    points: int  # signed
    balance_after: int
    order_id: str | None
    expires_at: datetime | None  # earned points only


PointsEvent = PointsAwarded | PointsReversed | PointsRedeemed | PointsExpired | TierChanged
NewId = Callable[[], str]  # gives each ledger entry its id


@dataclass(frozen=True)
class Decision:
    """Everything one change to a member amounts to: store the member, the facts and the entries; publish the events."""

    member: Member
    facts: tuple[Fact, ...]  # the facts newly known, to add to the member's history
    entries: tuple[LedgerEntry, ...]
    events: tuple[PointsEvent, ...]


_AWARDED_FOR: dict[Reason, Literal["purchase", "review", "survey", "referral", "bonus"]] = {
    Reason.PURCHASE: "purchase",
    Reason.REVIEW: "review",
    Reason.SURVEY: "survey",
    Reason.REFERRAL: "referral",
    Reason.BONUS: "bonus",
}


def new_facts(member: Member, facts: Sequence[Fact]) -> list[Fact]:
    """The facts not known of the member before (a repeat changes nothing)."""
    return [fact for fact in facts if seen_id(fact) not in member.checkpoint.seen]


def needs_history(member: Member, facts: Sequence[Fact]) -> bool:
    """Whether a new fact comes before the member's latest one (or may concern a folded purchase),
    so only their whole history can tell."""
    return any(needs_full_replay(member.checkpoint, fact) for fact in new_facts(member, facts))


def decide(
    member: Member, facts: Sequence[Fact], history: History | None, tiers: Sequence[Tier], at: datetime, new_id: NewId
) -> Decision | None:
    """What learning of `facts` changes for the member at `at`; None when every fact was known already.

    `history` (the member's known facts) is needed when `needs_history` says so, and not read otherwise.
    `tiers` are the tiers in force now, for the tier the member holds.
    """
    fresh = new_facts(member, facts)
    if history is not None:  # a fact folded out of the checkpoint is known to the history
        fresh = [fact for fact in fresh if not history.facts.knows(fact)]
    if not fresh:
        return None
    return _decision(member, fresh, history, tiers, at, new_id)


def review(member: Member, tiers: Sequence[Tier], at: datetime, new_id: NewId) -> Decision:
    """Expire what is due by `at` and slide the tier window: nothing new is known, time has passed."""
    return _decision(member, [], None, tiers, at, new_id)


def redemption_of(reward: Reward, redemption_id: str, at: datetime) -> Redemption:
    return Redemption(redemption_id, reward.reward_id, reward.points_price, as_stored(at))


@dataclass(frozen=True)
class Redeemed:
    """A redemption made: the points spent and the balance after."""

    redemption_id: str
    customer_id: str
    reward_id: str
    points: int
    balance: int


@dataclass(frozen=True)
class NotEnoughPoints:
    """A redemption refused: the balance does not cover the price (DESIGN.md §7: never below zero)."""

    balance: int
    points_price: int
    reward_name: str


RedemptionOutcome = Redeemed | NotEnoughPoints


@dataclass(frozen=True)
class RedemptionRequest:
    """The first answer to one Idempotency-Key: the same key again gets the same answer."""

    reward_id: str
    outcome: RedemptionOutcome


@dataclass(frozen=True)
class Adjusted:
    """An adjustment made: the points given (or taken, negative) and the balance after."""

    adjustment_id: str
    customer_id: str
    points: int
    note: str
    balance: int


@dataclass(frozen=True)
class AdjustmentRequest:
    """The first answer to one Idempotency-Key used for an adjustment."""

    points: int
    note: str
    outcome: Adjusted


FirstAnswer = RedemptionRequest | AdjustmentRequest  # what an Idempotency-Key was first used for


class LoyaltyRefusal(Exception):
    """A request the rules refuse; the route says why."""


class UnknownReward(LoyaltyRefusal):
    def __init__(self, reward_id: str) -> None:
        super().__init__(f"no active reward {reward_id!r}")
        self.reward_id = reward_id


class UnknownCampaign(LoyaltyRefusal):
    def __init__(self, campaign_id: str) -> None:
        super().__init__(f"no such campaign {campaign_id!r}")
        self.campaign_id = campaign_id


class EmptyCampaignWindow(LoyaltyRefusal):
    def __init__(self) -> None:
        super().__init__("the campaign's window is empty: ends_at must be after starts_at")


def check_window(campaign: Campaign) -> None:
    """A campaign runs from starts_at up to ends_at; a window with no moment in it is refused."""
    if campaign.ends_at <= campaign.starts_at:
        raise EmptyCampaignWindow


class TiersOutOfOrder(LoyaltyRefusal):
    pass


def check_tiers(tiers: Sequence[Tier]) -> None:
    """Tiers climb from threshold 0, each above the last, each under its own name."""
    thresholds = [tier.threshold for tier in tiers]
    if not thresholds or thresholds[0] != 0 or thresholds != sorted(set(thresholds)):
        raise TiersOutOfOrder("tiers must start at threshold 0 and climb strictly")
    if len({tier.name for tier in tiers}) != len(tiers):
        raise TiersOutOfOrder("tier names must be unique")


class UnknownMember(LoyaltyRefusal):
    def __init__(self, customer_id: str) -> None:
        super().__init__(f"no member {customer_id!r}")
        self.customer_id = customer_id


class IdempotencyKeyReused(LoyaltyRefusal):
    def __init__(self, other: str = "another reward") -> None:
        super().__init__(f"already used for {other}")


def answer_again(first: FirstAnswer, reward_id: str) -> RedemptionOutcome:
    """A retried request gets its first answer; the same key for another reward is refused."""
    if not isinstance(first, RedemptionRequest):
        raise IdempotencyKeyReused("an adjustment")
    if first.reward_id != reward_id:
        raise IdempotencyKeyReused
    return first.outcome


def adjustment_again(first: FirstAnswer, points: int, note: str) -> Adjusted:
    """A retried adjustment gets its first answer; the same key for other points or words is refused."""
    if not isinstance(first, AdjustmentRequest):
        raise IdempotencyKeyReused("a redemption")
    if (first.points, first.note) != (points, note):
        raise IdempotencyKeyReused("another adjustment")
    return first.outcome


MAX_ADJUSTMENT = 1_000_000  # points given or taken by hand at once
MAX_NOTE_CHARS = 500
BLANK = " \t\r\n"  # a reason of only these says nothing (the API's schema spells the same characters)


class NoAdjustment(LoyaltyRefusal):
    """An adjustment of no points or beyond MAX_ADJUSTMENT, or without the owner's reason; `field` says which."""

    def __init__(self, field: Literal["points", "reason"], problem: str) -> None:
        super().__init__(problem)
        self.field = field


def adjustment_of(adjustment_id: str, points: int, note: str, at: datetime, rules: Rules) -> Adjustment:
    """The owner's adjustment as a fact of the member's history; given points live as long as earned ones."""
    if points == 0 or abs(points) > MAX_ADJUSTMENT:
        raise NoAdjustment("points", f"from -{MAX_ADJUSTMENT:,} to {MAX_ADJUSTMENT:,} and not 0, not {points}")
    if not note.strip(BLANK) or len(note) > MAX_NOTE_CHARS:
        raise NoAdjustment("reason", f"the owner's words, 1 to {MAX_NOTE_CHARS} characters")
    return Adjustment(adjustment_id, points, note, as_stored(at), rules.points_lifetime_days)


def adjust(
    member: Member, adjustment: Adjustment, history: History | None, tiers: Sequence[Tier], new_id: NewId
) -> tuple[Decision, Adjusted]:
    """Give or take the points now; taking may leave the balance below zero. The adjustment counts towards
    no tier (time passing up to now may still expire points or move the tier, as for any change)."""
    decision = _decision(member, [adjustment], history, tiers, adjustment.at, new_id)
    adjusted = Adjusted(
        adjustment.adjustment_id, member.customer_id, adjustment.points, adjustment.note, decision.member.balance
    )
    return decision, adjusted


def redeem(
    member: Member,
    redemption: Redemption,
    reward: Reward,
    history: History | None,
    tiers: Sequence[Tier],
    new_id: NewId,
) -> tuple[Decision, Redeemed] | NotEnoughPoints:
    """Spend the reward's price now, unless that would take the balance below zero."""
    decision = _decision(member, [redemption], history, tiers, redemption.at, new_id)
    balance = decision.member.balance
    if balance < 0:  # spending changes nothing else at the same moment
        return NotEnoughPoints(balance + redemption.points, redemption.points, reward.name)
    redeemed = Redeemed(redemption.redemption_id, member.customer_id, reward.reward_id, redemption.points, balance)
    return decision, redeemed


EXPIRING_SOON = timedelta(days=30)  # the member page's "expiring soon"


@dataclass(frozen=True)
class Standing:
    """Where a member stands now: what the member page shows."""

    balance: int
    tier: Tier
    tier_points: int
    next_tier: tuple[Tier, int] | None  # and the points still missing
    expiring_soon: tuple[Lot, ...]  # points expiring within EXPIRING_SOON, soonest first

    @property
    def points_expiring_soon(self) -> int:
        return sum(lot.remaining for lot in self.expiring_soon)


def standing(member: Member, tiers: Sequence[Tier], at: datetime) -> Standing:
    """The member's balance, tier and progress, and the points expiring soon, as of `at`."""
    ledger = _ledger(member, [], None, tiers, at)
    return Standing(
        balance=member.closed_points + ledger.balance,
        tier=ledger.tier,
        tier_points=ledger.qualifying_points,
        next_tier=next_tier(ledger.qualifying_points, tiers),
        expiring_soon=tuple(ledger.expiring_between(at, at + EXPIRING_SOON)),
    )


# --- the points report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PointsMonth:
    """A month of the ledger: points issued, taken back for refunds, corrected, redeemed and expired (each as a
    positive figure but `corrected`, which has a sign), and the points outstanding at its end."""

    month: str  # 2026-03
    issued: int
    taken_back: int
    corrected: int
    redeemed: int
    expired: int
    outstanding: int


def points_by_month(sums: Mapping[tuple[str, EntryKind], int]) -> list[PointsMonth]:
    """The ledger's signed sums per (month, kind) as months, oldest first; outstanding runs over every entry."""
    months: list[PointsMonth] = []
    outstanding = 0
    for month in sorted({month for month, _ in sums}):
        signed = {kind: sums.get((month, kind), 0) for kind in EntryKind}
        outstanding += sum(signed.values())
        months.append(
            PointsMonth(
                month=month,
                issued=signed[EntryKind.EARN],
                taken_back=-signed[EntryKind.REVERSE],
                corrected=signed[EntryKind.ADJUST],
                redeemed=-signed[EntryKind.REDEEM],
                expired=-signed[EntryKind.EXPIRE],
                outstanding=outstanding,
            )
        )
    return months


def _ledger(
    member: Member, fresh: Sequence[Fact], history: History | None, tiers: Sequence[Tier], at: datetime
) -> Ledger:
    if history is not None:
        return replay(history.facts.adding(*fresh) or history.facts, at, tiers)
    continued = continue_replay(member.checkpoint, member.recorded, fresh, at, tiers)
    if continued is None:
        raise ValueError("a fact before the member's latest one needs their history (see needs_history)")
    return continued


def _decision(
    member: Member, fresh: Sequence[Fact], history: History | None, tiers: Sequence[Tier], at: datetime, new_id: NewId
) -> Decision:
    ledger = _ledger(member, fresh, history, tiers, at)
    customer_id, tier = member.customer_id, ledger.tier.name
    in_full = history.recorded if history is not None and history.recorded is not None else None
    before = in_full if in_full is not None else member.recorded  # what the replay is compared with
    recorded = dict(before)
    balance = member.balance
    entries: list[LedgerEntry] = []
    events: list[PointsEvent] = []
    expired = 0
    for change in entries_to_append(ledger, before):
        balance += change.points
        recorded[change.key] = recorded.get(change.key, 0) + change.points
        expires_at = change.expires_at if change.kind is EntryKind.EARN else None
        entry = LedgerEntry(
            new_id(), change.key, change.kind, change.reason, change.points, balance, change.order_id, expires_at
        )
        entries.append(entry)
        if change.kind is EntryKind.EXPIRE:
            expired -= change.points  # one PointsExpired for all that expired together
        else:
            events.append(_event_for(change, entry, ledger.keys.get(change.key), customer_id, tier))
    if expired > 0:
        events.append(PointsExpired(customer_id=customer_id, points=expired, balance=balance))
    if tier != member.tier:
        events.append(TierChanged(customer_id=customer_id, from_tier=member.tier, to_tier=tier))
    closed = 0 if in_full is not None else member.closed_points
    if ledger.checkpoint.folded_window_days is not None:  # keep only what an in-order fact can still change
        live = live_keys(ledger.checkpoint)
        recorded = {key: points for key, points in recorded.items() if key in live}
        closed = balance - sum(recorded.values())
    changed = replace(
        member,
        recorded=recorded,
        closed_points=closed,
        tier=tier,
        checkpoint=ledger.checkpoint,
        qualifying_points=ledger.qualifying_points,
        next_review_at=ledger.next_review_at,
    )
    return Decision(changed, tuple(fresh), tuple(entries), tuple(events))


def _event_for(
    change: Entry, entry: LedgerEntry, info: KeyInfo | None, customer_id: str, tier: str
) -> PointsAwarded | PointsReversed | PointsRedeemed:
    if change.kind is EntryKind.REDEEM and info is not None and info.redemption is not None:
        return PointsRedeemed(
            redemption_id=info.redemption.redemption_id,
            customer_id=customer_id,
            reward_id=info.redemption.reward_id,
            points=-change.points,
            balance=entry.balance_after,
        )
    if change.points > 0:
        return PointsAwarded(
            entry_id=entry.entry_id,
            customer_id=customer_id,
            points=change.points,
            reason=_AWARDED_FOR.get(change.reason, "adjustment"),
            order_id=change.order_id,
            balance=entry.balance_after,
            tier=tier,
            expires_at=change.expires_at,
        )
    return PointsReversed(
        entry_id=entry.entry_id,
        customer_id=customer_id,
        points=-change.points,
        reason="refund" if change.kind is EntryKind.REVERSE else "adjustment",
        order_id=change.order_id,
        balance=entry.balance_after,
    )


def checkpoint_after(facts: Facts) -> Checkpoint:
    """Where the replay of `facts` stands after the latest of them (for a member stored before the checkpoint)."""
    moments = [fact_moment(fact) for fact in facts.every()]
    return replay(facts, max(moments, default=datetime(1970, 1, 1, tzinfo=UTC))).checkpoint
