"""The event catalogue of DESIGN.md §3: one CloudEvents envelope, one model per event.

These models are the only definition of the contract the services use. Unknown
fields are ignored (additive evolution within version 1).
"""

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from shared.types import Country, Currency, Email, Id, Locale, Money, Nps, Rating, ShortText, Timestamp


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


_NO_EXAMPLE = object()


def _field(description: str, example: Any = _NO_EXAMPLE, **constraints: Any) -> Any:
    examples = None if example is _NO_EXAMPLE else [example]
    return Field(description=description, examples=examples, **constraints)


# --- shared parts of payloads -------------------------------------------------

# A customer the shop has no e-mail address for (an admin order, a POS sale) still orders: OrderPlaced requires
# `customer.email`, so such an order carries a stand-in at this domain, which RFC 2606 reserves (nothing is ever
# delivered there). Every consumer treats an address at it as "no e-mail": no mail is planned to it, and it is
# nobody's address (two customers with stand-ins do not share an e-mail).
NO_EMAIL_DOMAIN = "no-email.example"


def no_email_for(customer_id: str) -> str:
    """The stand-in address of a customer with no e-mail: one per customer, at `NO_EMAIL_DOMAIN`."""
    return f"{hashlib.sha256(customer_id.encode()).hexdigest()[:24]}@{NO_EMAIL_DOMAIN}"


def is_no_email(email: str) -> bool:
    """Whether the address is the stand-in of a customer with no e-mail (`no_email_for`)."""
    return email.lower().endswith("@" + NO_EMAIL_DOMAIN)


class Customer(Payload):
    customer_id: Id = _field("The shop's id of the customer.", "cus_1001")
    email: Email = _field("Where the customer reads e-mail.", "eva@example.sk")
    first_name: ShortText | None = _field("Given name, for greetings.", "Eva", default=None)
    last_name: ShortText | None = _field("Family name.", "Nováková", default=None)
    locale: Locale | None = _field("Preferred language (BCP 47).", "sk-SK", default=None)
    city: ShortText | None = _field("Town or city.", "Košice", default=None)
    region: ShortText | None = _field("Region, county or state.", "Košický kraj", default=None)
    country: Country | None = _field("ISO 3166-1 alpha-2 country.", "SK", default=None)
    phone: Annotated[str, Field(max_length=40)] | None = _field(
        "Phone number for a personal call.", "+421900123456", default=None
    )
    accepts_marketing: bool | None = _field(
        "Whether the customer agreed to marketing mail (additive); absent: the shop did not say.",
        True,
        default=None,
        strict=True,
    )


class LineItem(Payload):
    sku: Id = _field("Stock keeping unit.", "MUG-RED")
    name: ShortText = _field("Product name as the customer saw it.", "Red mug")
    quantity: int = _field("How many were ordered.", 2, ge=1, le=100_000, strict=True)
    unit_price: Money = _field("Price of one unit.", "12.50")
    category: ShortText | None = _field("Product category, for campaign scopes.", "kitchen", default=None)


class ShippingAddress(Payload):
    line1: ShortText = _field("First address line.", "Hlavná 1")
    line2: ShortText | None = _field("Second address line.", "Flat 4", default=None)
    postal_code: Annotated[str, Field(min_length=1, max_length=20)] = _field("Postal code.", "040 01")
    city: ShortText = _field("Town or city.", "Košice")
    region: ShortText | None = _field("Region, county or state.", "Košický kraj", default=None)
    country: Country = _field("ISO 3166-1 alpha-2 country.", "SK")


class Ratings(Payload):
    product: Rating | None = _field("How the customer rates the product, 1–5.", 5, default=None)
    service: Rating | None = _field("How the customer rates the service, 1–5.", 4, default=None)
    overall: Rating = _field("Overall rating, 1–5.", 5)


# --- payloads, one per event ----------------------------------------------------


class OrderPlaced(Payload):
    order_id: Id = _field("The shop's order id.", "ord_5001")
    customer: Customer = _field("Who ordered, as the shop knows them at this order.")
    placed_at: Timestamp = _field("When the order was placed.", "2026-11-02T10:15:00+01:00")
    currency: Currency = _field("Currency of all amounts of the order.", "EUR")
    total: Money = _field("What the customer paid, after discounts.", "49.90")
    line_items: list[LineItem] = _field("What was ordered.", min_length=1, max_length=500)
    discount_codes: list[ShortText] = _field("Discount codes used.", ["WELCOME10"], default_factory=list, max_length=50)
    referral_code: ShortText | None = _field("A refer-a-friend or affiliate code used.", "K7QX-M2PA", default=None)
    shipping_address: ShippingAddress | None = _field("Where the order goes.", default=None)
    order_number: ShortText | None = _field(
        "The number the customer knows the order by (additive), e.g. #1001.", "#1001", default=None
    )


class OrderFulfilled(Payload):
    order_id: Id = _field("The shop's order id.", "ord_5001")
    customer_id: Id = _field("The customer who ordered.", "cus_1001")
    fulfilled_at: Timestamp = _field("When the order was handed to the carrier.", "2026-11-04T16:00:00+01:00")


class OrderRefunded(Payload):
    refund_id: Id = _field("The shop's refund id; refunds of one order add up.", "ref_77")
    order_id: Id = _field("The refunded order.", "ord_5001")
    customer_id: Id = _field("The customer who ordered.", "cus_1001")
    amount: Money = _field("How much was refunded.", "12.50")
    currency: Currency = _field("Currency of the refund.", "EUR")
    refunded_at: Timestamp = _field("When the refund was made.", "2026-11-10T09:00:00+01:00")
    reason: Annotated[str, Field(max_length=500)] | None = _field("Why, in the shop's words.", "damaged", default=None)


class FeedbackReceived(Payload):
    feedback_id: Id = _field("Id of this feedback.", "fb_301")
    customer_id: Id = _field("Who gave it.", "cus_1001")
    order_id: Id | None = _field("The order it is about, if any.", "ord_5001", default=None)
    ratings: Ratings = _field("Ratings from 1 to 5.")
    nps: Nps | None = _field("Answer to 'how likely are you to recommend us', 0–10.", 9, default=None)
    comment: Annotated[str, Field(max_length=5000)] | None = _field(
        "Free text.", "Lovely mug, fast delivery.", default=None
    )
    channel: Literal["email", "web", "phone", "survey"] = _field("How it reached the shop.", "email")
    received_at: Timestamp = _field("When it was received.", "2026-11-18T12:00:00+01:00")


class FeedbackEscalated(Payload):
    escalation_id: Id = _field("Id of the escalation.", "esc_12")
    feedback_id: Id = _field("The unhappy feedback.", "fb_302")
    customer_id: Id = _field("The unhappy customer.", "cus_1002")
    order_id: Id | None = _field("The order it is about, if any.", "ord_5002", default=None)
    due_by: Timestamp = _field("When someone must have answered.", "2026-11-18T13:00:00+01:00")


class FollowUpSent(Payload):
    followup_id: Id = _field("Id of the follow-up.", "fu_9")
    kind: Literal["thank_you", "call", "feedback_request", "referral_invite"] = _field("What was done.", "thank_you")
    customer_id: Id = _field("For whom.", "cus_1001")
    order_id: Id | None = _field("The order it follows up, if any.", "ord_5001", default=None)
    channel: Annotated[str, Field(max_length=40)] = _field("How it went out.", "email")
    sent_at: Timestamp = _field("When it went out.", "2026-11-02T10:16:00+01:00")


class PointsAwarded(Payload):
    entry_id: Id = _field("Ledger entry id.", "le_1")
    customer_id: Id = _field("The member.", "cus_1001")
    points: int = _field("Points added.", 49, gt=0, strict=True)
    reason: Literal["purchase", "review", "survey", "referral", "bonus", "adjustment"] = _field("Why.", "purchase")
    order_id: Id | None = _field("The order, when points are for one.", "ord_5001", default=None)
    balance: int = _field("Balance after this entry.", 549, strict=True)
    tier: ShortText = _field("Tier after this entry.", "silver")
    expires_at: Timestamp | None = _field("When these points expire.", "2027-11-02T10:15:00+01:00", default=None)


class PointsReversed(Payload):
    entry_id: Id = _field("Ledger entry id.", "le_2")
    customer_id: Id = _field("The member.", "cus_1001")
    points: int = _field("Points taken away.", 12, gt=0, strict=True)
    reason: Literal["refund", "adjustment"] = _field("Why.", "refund")
    order_id: Id | None = _field("The refunded order.", "ord_5001", default=None)
    balance: int = _field("Balance after this entry; may be negative.", 537, strict=True)


class PointsRedeemed(Payload):
    redemption_id: Id = _field("Redemption id.", "rd_4")
    customer_id: Id = _field("The member.", "cus_1001")
    reward_id: Id = _field("The reward taken.", "rw_free_shipping")
    points: int = _field("Points spent.", 200, gt=0, strict=True)
    balance: int = _field("Balance after.", 337, strict=True)


class PointsExpired(Payload):
    customer_id: Id = _field("The member.", "cus_1001")
    points: int = _field("Points that expired.", 30, gt=0, strict=True)
    balance: int = _field("Balance after.", 307, strict=True)


class TierChanged(Payload):
    customer_id: Id = _field("The member.", "cus_1001")
    from_tier: ShortText = _field("Tier before.", "bronze")
    to_tier: ShortText = _field("Tier now.", "silver")


class ReferralInvited(Payload):
    customer_id: Id = _field("The happy customer asked to refer friends.", "cus_1001")
    code: ShortText = _field("Their referral code.", "K7QX-M2PA")
    feedback_id: Id | None = _field("The feedback that made this the happy moment.", "fb_301", default=None)


class ReferralConverted(Payload):
    referral_id: Id = _field("Id of the conversion.", "rf_8")
    code: ShortText = _field("The code used.", "K7QX-M2PA")
    referrer_customer_id: Id = _field("Who referred (or the affiliate id).", "cus_1001")
    referee_customer_id: Id = _field("The new customer.", "cus_2002")
    order_id: Id = _field("The referee's first order.", "ord_6001")
    order_total: Money = _field("That order's total.", "80.00")
    currency: Currency = _field("That order's currency.", "EUR")
    converted_at: Timestamp = _field("When it converted.", "2026-11-20T08:00:00+01:00")
    program: Literal["customer", "affiliate"] = _field("Refer-a-friend or affiliate.", "customer")
    commission: Money | None = _field("Affiliate commission, affiliates only.", "8.00", default=None)


class OrderCancelled(Payload):
    order_id: Id = _field("The shop's order id.", "ord_5001")
    customer_id: Id = _field("Whose order it was.", "cus_1001")
    cancelled_at: Timestamp = _field("When the order was cancelled.", "2026-11-03T08:30:00+01:00")
    reason: Annotated[str, Field(max_length=500)] | None = _field(
        "Why, as the shop recorded it.", "customer changed their mind", default=None
    )


class CustomerSegmentChanged(Payload):
    customer_id: Id = _field("Whose segment changed.", "cus_1001")
    from_segment: Annotated[str, Field(min_length=1, max_length=40)] | None = _field(
        "The segment before; absent the first time the customer is scored.", "champions", default=None
    )
    to_segment: Annotated[str, Field(min_length=1, max_length=40)] = _field(
        "The RFM segment now (champions, loyal, at_risk, hibernating, …).", "at_risk"
    )
    scored_at: Timestamp = _field("When the scoring ran.", "2026-11-30T03:00:00+01:00")


class CustomerErased(Payload):
    customer_id: Id = _field("Whose personal data must go.", "cus_1001")
    requested_at: Timestamp = _field("When erasure was requested.", "2026-11-21T09:00:00+01:00")


# --- the envelope ------------------------------------------------------------------

DataT = TypeVar("DataT", bound=Payload)


def _json_media_type(value: Any) -> Any:
    """`application/json; charset=utf-8` is JSON too: parameters are dropped, the type compared as written."""
    return value.split(";", 1)[0].strip().lower() if isinstance(value, str) else value


class Envelope(BaseModel, Generic[DataT]):
    """A CloudEvents 1.0 structured event; `routing_key` is where it goes on the exchange."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    routing_key: ClassVar[str]

    specversion: Literal["1.0"] = _field("CloudEvents version.", "1.0", default="1.0")
    id: Id = _field("Unique per event; consumers deduplicate on it.", "4f7c0e1a-6f7e-4b59-9d3e-0c1f1e2d3a4b")
    type: str = _field("The event name.", "OrderPlaced")
    source: ShortText = _field("Who published it.", "shop")
    time: Timestamp = _field("When it happened.", "2026-11-02T10:15:00+01:00")
    subject: Id | None = _field("The customer id the event is about.", "cus_1001", default=None)
    correlationid: Id | None = _field("Ties a chain of events to what started it.", "ord_5001", default=None)
    causationid: Id | None = _field(
        "The id of the event that caused this one.", "9b2d4c1e-2a1f-4c3b-8e7d-5f6a7b8c9d0e", default=None
    )
    datacontenttype: Annotated[Literal["application/json"], BeforeValidator(_json_media_type)] = _field(
        "Always JSON.", "application/json", default="application/json"
    )
    imported: bool | None = _field(
        "Extension attribute: replayed from the shop's history; builds state, plans no message to the customer.",
        True,
        default=None,
        strict=True,
    )
    data: DataT

    @classmethod
    def new(
        cls,
        data: DataT,
        *,
        source: str,
        subject: str | None = None,
        cause: "Envelope[Any] | None" = None,
        correlationid: str | None = None,
        event_id: str | None = None,
        time: datetime | None = None,
        imported: bool | None = None,
    ) -> Self:
        """A fresh event; with `cause`, it continues the cause's correlation chain.

        `event_id` gives it a deterministic id (say, from a platform's own ids) so
        that telling the same thing twice yields the same event; otherwise a UUID.
        What an imported event causes is history too: it carries `imported: true` on
        (DESIGN.md §3), so no consumer plans a message to the customer from it.
        """
        if cause is not None:
            correlationid = correlationid or cause.correlationid or cause.id
            imported = imported or cause.imported
        return cls(
            id=event_id or str(uuid.uuid4()),
            source=source,
            time=time or datetime.now(UTC),
            subject=subject,
            correlationid=correlationid,
            causationid=cause.id if cause is not None else None,
            imported=imported,
            data=data,
        )


# The catalogue: event name → envelope class. Typed aliases below for handlers.
class OrderPlacedEvent(Envelope[OrderPlaced]):
    """A customer placed an order."""

    routing_key: ClassVar[str] = "order.placed"
    type: Literal["OrderPlaced"] = "OrderPlaced"


class OrderFulfilledEvent(Envelope[OrderFulfilled]):
    """An order was handed to the carrier."""

    routing_key: ClassVar[str] = "order.fulfilled"
    type: Literal["OrderFulfilled"] = "OrderFulfilled"


class OrderRefundedEvent(Envelope[OrderRefunded]):
    """Money was refunded on an order (partial refunds add up)."""

    routing_key: ClassVar[str] = "order.refunded"
    type: Literal["OrderRefunded"] = "OrderRefunded"


class OrderCancelledEvent(Envelope[OrderCancelled]):
    """An order was cancelled: what it counted for is taken back, as for a full refund."""

    routing_key: ClassVar[str] = "order.cancelled"
    type: Literal["OrderCancelled"] = "OrderCancelled"


class FeedbackReceivedEvent(Envelope[FeedbackReceived]):
    """A customer rated an order or the shop."""

    routing_key: ClassVar[str] = "feedback.received"
    type: Literal["FeedbackReceived"] = "FeedbackReceived"


class FeedbackEscalatedEvent(Envelope[FeedbackEscalated]):
    """Unhappy feedback needs a person's answer before `due_by`."""

    routing_key: ClassVar[str] = "feedback.escalated"
    type: Literal["FeedbackEscalated"] = "FeedbackEscalated"


class FollowUpSentEvent(Envelope[FollowUpSent]):
    """A follow-up message went out."""

    routing_key: ClassVar[str] = "followup.sent"
    type: Literal["FollowUpSent"] = "FollowUpSent"


class PointsAwardedEvent(Envelope[PointsAwarded]):
    """Loyalty points were added to a member's balance."""

    routing_key: ClassVar[str] = "points.awarded"
    type: Literal["PointsAwarded"] = "PointsAwarded"


class PointsReversedEvent(Envelope[PointsReversed]):
    """Points were taken back, for a refund or an adjustment."""

    routing_key: ClassVar[str] = "points.reversed"
    type: Literal["PointsReversed"] = "PointsReversed"


class PointsRedeemedEvent(Envelope[PointsRedeemed]):
    """A member spent points on a reward."""

    routing_key: ClassVar[str] = "points.redeemed"
    type: Literal["PointsRedeemed"] = "PointsRedeemed"


class PointsExpiredEvent(Envelope[PointsExpired]):
    """Unspent points expired."""

    routing_key: ClassVar[str] = "points.expired"
    type: Literal["PointsExpired"] = "PointsExpired"


class TierChangedEvent(Envelope[TierChanged]):
    """A member moved to another tier."""

    routing_key: ClassVar[str] = "tier.changed"
    type: Literal["TierChanged"] = "TierChanged"


class ReferralInvitedEvent(Envelope[ReferralInvited]):
    """A happy customer should be invited to refer friends."""

    routing_key: ClassVar[str] = "referral.invited"
    type: Literal["ReferralInvited"] = "ReferralInvited"


class ReferralConvertedEvent(Envelope[ReferralConverted]):
    """A referred customer placed their first order."""

    routing_key: ClassVar[str] = "referral.converted"
    type: Literal["ReferralConverted"] = "ReferralConverted"


class CustomerSegmentChangedEvent(Envelope[CustomerSegmentChanged]):
    """The RFM scoring moved a customer to another segment."""

    routing_key: ClassVar[str] = "customer.segment_changed"
    type: Literal["CustomerSegmentChanged"] = "CustomerSegmentChanged"


class CustomerErasedEvent(Envelope[CustomerErased]):
    """Every service must erase this customer's personal data."""

    routing_key: ClassVar[str] = "customer.erased"
    type: Literal["CustomerErased"] = "CustomerErased"


# The catalogue's events no Rapport service consumes: announced for the shop's own systems (a helpdesk that
# binds feedback.escalated, a CRM export that binds followup.sent). The events exchange routes them to the
# announcements exchange, where they end when nobody listens, instead of piling up as unrouted (DESIGN.md §4).
ANNOUNCED: tuple[type[Envelope[Any]], ...] = (FeedbackEscalatedEvent, FollowUpSentEvent)

CATALOGUE: dict[str, type[Envelope[Any]]] = {
    event.model_fields["type"].default: event
    for event in (
        OrderPlacedEvent,
        OrderFulfilledEvent,
        OrderRefundedEvent,
        FeedbackReceivedEvent,
        FeedbackEscalatedEvent,
        FollowUpSentEvent,
        PointsAwardedEvent,
        PointsReversedEvent,
        PointsRedeemedEvent,
        PointsExpiredEvent,
        TierChangedEvent,
        ReferralInvitedEvent,
        ReferralConvertedEvent,
        CustomerErasedEvent,
        OrderCancelledEvent,
        CustomerSegmentChangedEvent,
    )
}


_ENVELOPE_OF_DATA: dict[type[BaseModel], type[Envelope[Any]]] = {
    event.model_fields["data"].annotation: event  # type: ignore[misc]
    for event in CATALOGUE.values()
}


def envelope_for(data: BaseModel) -> type[Envelope[Any]]:
    """The catalogue's event class whose payload `data` is (PointsAwarded → PointsAwardedEvent)."""
    try:
        return _ENVELOPE_OF_DATA[type(data)]
    except KeyError:
        raise TypeError(f"{type(data).__name__} is not the payload of an event in the catalogue") from None


class InvalidEvent(ValueError):
    """A message that is not a valid event of the catalogue; `reason` names the field."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


AnyEvent = Annotated[
    OrderPlacedEvent
    | OrderFulfilledEvent
    | OrderRefundedEvent
    | FeedbackReceivedEvent
    | FeedbackEscalatedEvent
    | FollowUpSentEvent
    | PointsAwardedEvent
    | PointsReversedEvent
    | PointsRedeemedEvent
    | PointsExpiredEvent
    | TierChangedEvent
    | ReferralInvitedEvent
    | ReferralConvertedEvent
    | CustomerErasedEvent
    | OrderCancelledEvent
    | CustomerSegmentChangedEvent,
    Field(discriminator="type"),
]
_ANY_EVENT: TypeAdapter[Any] = TypeAdapter(AnyEvent)


def parse_event(raw: bytes | str | dict[str, Any]) -> Envelope[Any]:
    """Parse and validate one message body; raise InvalidEvent naming the first bad field."""
    try:
        if isinstance(raw, dict):
            return _ANY_EVENT.validate_python(raw)  # type: ignore[no-any-return]
        return _ANY_EVENT.validate_json(raw)  # type: ignore[no-any-return]
    except ValidationError as error:
        raise InvalidEvent(*describe(error)) from error


def describe(error: ValidationError) -> tuple[str, str | None]:
    """The first error of a validation failure as ('field: message', 'field')."""
    first = error.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return f"body is not valid JSON: {first['msg']}", None
    # Drop the discriminator tag pydantic puts in the path (e.g. 'OrderPlaced').
    parts = [str(p) for p in first["loc"] if p not in CATALOGUE]
    field = ".".join(parts) or ("type" if first["type"].startswith("union_tag") else None)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "union_tag_not_found":
        message = "missing: every event names its type (a CloudEvents attribute), e.g. OrderPlaced"
    elif first["type"] == "union_tag_invalid":
        message = f"{first['input'].get('type')!r} is not an event of the catalogue (DESIGN.md §3)"
    elif first["type"] == "model_attributes_type" and not parts:
        message = "the body is not a JSON object (a structured CloudEvent)"
    return (f"{field}: {message}" if field else message), field
