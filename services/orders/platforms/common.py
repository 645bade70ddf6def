"""What the Shopify and WooCommerce translations share: the error, the signature check, reading a payload.

A platform payload is read by dotted path ("line_items.0.price"); `Reading` remembers which
platform path each canonical field came from, so a value the event contract rejects is reported
under the name the shop's platform uses, not ours.
"""

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, TypeVar

from pydantic import ValidationError

from shared.events import OrderCancelled, OrderFulfilled, OrderPlaced, OrderRefunded, Payload, describe

EventT = TypeVar("EventT", bound=Payload)


class UntranslatableWebhook(ValueError):
    """A webhook that cannot become a canonical event; `field` is the dotted path in the platform payload."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


def history_refund_id(order_id: str) -> str:
    """The one refund a shop's imported history tells for an order: the export's refunded total, under no
    refund id of the platform's (neither export names one)."""
    return f"{order_id}:history"


@dataclass(frozen=True)
class Translation:
    """One canonical event a webhook stands for; `event_id` is the same however often the webhook arrives."""

    event_id: str
    data: OrderPlaced | OrderFulfilled | OrderRefunded | OrderCancelled


@dataclass(frozen=True)
class RefundNews:
    """A refund as the platform tells it, in the currency it was paid back in."""

    refund_id: str
    amount: Decimal
    currency: str
    refunded_at: datetime | None  # None: the payload gives no date of its own (WooCommerce's refunds[])
    reason: str | None = None


@dataclass(frozen=True)
class OrderNews:
    """What one webhook says about one order, whatever its topic; `lifecycle.decide` turns it into events.

    A payload that is the whole order (Shopify's orders/*, WooCommerce's order.*) fills `order`
    and `counts`; a fulfilment or refund resource only its part.
    """

    platform: str  # "shopify" or "woocommerce": event ids start with it
    order_id: str
    order: OrderPlaced | None = None  # the order as it stands now, when the payload is the whole order
    counts: bool = False  # paid or authorised: the order counts as placed
    presentment: tuple[str, Decimal] | None = None  # the currency and total the customer paid in, if not the shop's
    fulfilled_at: datetime | None = None
    refunds: tuple[RefundNews, ...] = ()
    cancelled_at: datetime | None = None  # the platform says the order is cancelled (or failed)
    cancel_reason: str | None = None
    cancellation_final: bool = False  # the platform never revives a cancelled order (Shopify), so neither do we
    removed: bool = False  # deleted: only the id is left (WooCommerce order.deleted)
    changed_at: datetime | None = None  # the payload's own modification time: the date of refunds that have none


@dataclass(frozen=True)
class PrivacyRequest:
    """A Shopify mandatory privacy webhook: `customers/redact`, `shop/redact` or `customers/data_request`."""

    topic: str
    shop: str
    customer_ids: tuple[str, ...] = ()  # the ids the customer may be known by here (account id, guest id)
    orders: tuple[str, ...] = ()
    request_id: str | None = None  # the platform's data request id


@dataclass(frozen=True)
class Ignored:
    """A webhook that stands for nothing here; `reason` labels the metric (`test`, `topic not translated`)."""

    reason: str


Webhook = OrderNews | PrivacyRequest | Ignored


def signature_valid(body: bytes, signature: str | None, secret: str) -> bool:
    """Whether `signature` is the base64 HMAC-SHA256 of the raw body under the shared secret.

    Shopify sends it as X-Shopify-Hmac-Sha256, WooCommerce as X-WC-Webhook-Signature.
    """
    if not signature or not secret:
        return False  # an unset secret must not make every body look signed
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except ValueError:  # binascii.Error, and non-ASCII text
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return hmac.compare_digest(given, expected)


def signed_by_any(body: bytes, signature: str | None, secrets: Iterable[str]) -> bool:
    """Whether one of the secrets signed the body: the current one, or the previous one during a rotation."""
    return any(signature_valid(body, signature, secret) for secret in secrets)


def guest_id(email: Any) -> str:
    """The customer id of a checkout without an account: the e-mail address is all that identifies them."""
    return "guest:" + str(email).strip().lower()


def anonymous_guest_id(platform: str, order_id: str) -> str:
    """The customer id of a checkout with neither an account nor an e-mail: a customer of this one order."""
    return f"guest:{platform}:order:{order_id}"


def marketing_consent(value: Any) -> bool | None:
    """A platform's yes or no (true, "yes", "1", "subscribed" …) as a boolean; None when it does not say."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if value is not None else ""
    if text in {"1", "yes", "true", "subscribed", "opt_in", "on"}:
        return True
    if text in {"0", "no", "false", "not_subscribed", "unsubscribed", "pending", "redacted", "invalid", "off"}:
        return False
    return None


# ISO 4217 minor units where they are not 2.
_WHOLE_UNITS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF".split()  # noqa: SIM905 - as ISO lists them
_THOUSANDTHS = "BHD IQD JOD KWD LYD OMR TND".split()  # noqa: SIM905 - as ISO lists them
MINOR_UNITS = {**dict.fromkeys(_WHOLE_UNITS, 0), **dict.fromkeys(_THOUSANDTHS, 3)}


def in_minor_units(amount: Decimal, currency: str) -> Decimal:
    """The amount rounded half up to the currency's minor unit (cents, or whole yen)."""
    return amount.quantize(Decimal(1).scaleb(-MINOR_UNITS.get(currency, 2)), rounding=ROUND_HALF_UP)


def lookup(payload: Any, path: str) -> Any:
    """The value at a dotted path such as "line_items.0.price", or None when any step is missing."""
    value = payload
    for step in path.split("."):
        if isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return None
    return value


def _present(value: Any) -> bool:
    # Platforms send null, "" or an empty object for "not given".
    if isinstance(value, str):
        return value.strip() != ""
    return value is not None and value not in ({}, [])


class Reading:
    """A platform payload being translated, and the platform path each canonical field was taken from."""

    def __init__(self, payload: dict[str, Any]) -> None:
        if not isinstance(payload, dict):
            raise UntranslatableWebhook("the webhook body is not a JSON object")
        self.payload = payload
        self._origins: dict[str, str] = {}

    def take(self, field: str, *paths: str, required: bool = False) -> Any:
        """The first present value among `paths`, for the canonical `field`; None, or an error if required."""
        for path in paths:
            value = lookup(self.payload, path)
            if _present(value):
                self._origins[field] = path
                return value.strip() if isinstance(value, str) else value
        self._origins[field] = paths[0]
        if required:
            also = f", and so is {' and '.join(paths[1:])}" if len(paths) > 1 else ""
            raise UntranslatableWebhook(f"{paths[0]} is missing{also}", paths[0])
        return None

    def take_list(self, field: str, path: str, *, required: bool = False) -> list[Any]:
        """A JSON array, empty when the platform left it out; anything else is an error."""
        value = self.take(field, path, required=required)
        if value is None:
            return []
        if not isinstance(value, list):
            raise UntranslatableWebhook(f"{path} is not a list: {value!r}", path)
        return value

    def take_time(self, field: str, *paths: str, naive_is_utc: bool = False) -> datetime:
        """A required ISO 8601 date-time; `naive_is_utc` for platforms that send GMT without an offset."""
        value = self.take(field, *paths, required=True)
        path = self._origins[field]
        try:
            moment = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            moment = None
        if moment is None:
            raise UntranslatableWebhook(f"{path} is not an ISO 8601 date-time: {value!r}", path)
        if moment.tzinfo is None:
            if not naive_is_utc:
                raise UntranslatableWebhook(f"{path} has no UTC offset: {value!r}", path)
            moment = moment.replace(tzinfo=UTC)
        return moment

    def take_amount(self, field: str, *paths: str) -> Decimal:
        """A required amount, exactly as written: from a string, or from a JSON number's shortest decimal form."""
        value = self.take(field, *paths, required=True)
        return exact_decimal(value, self._origins[field])

    def record(self, field: str, path: str) -> None:
        """Note that the canonical `field` was worked out from the platform's `path`."""
        self._origins[field] = path

    def build(self, event: type[EventT], data: dict[str, Any]) -> EventT:
        """The canonical event; a value the contract rejects is reported under its platform path."""
        try:
            return event.model_validate(data)
        except ValidationError as error:
            reason, canonical = describe(error)
            field = self._origin(canonical)
            if canonical and field:
                reason = f"{field}: {reason.removeprefix(f'{canonical}: ')}"
            raise UntranslatableWebhook(reason, field) from error

    def _origin(self, canonical: str | None) -> str | None:
        # The field itself, else the nearest enclosing field we know the origin of.
        parts = canonical.split(".") if canonical else []
        while parts:
            origin = self._origins.get(".".join(parts))
            if origin is not None:
                return origin
            parts.pop()
        return None


def exact_decimal(value: Any, path: str) -> Decimal:
    """A JSON string or number as a Decimal, never through float arithmetic."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UntranslatableWebhook(f"{path} is not an amount: {value!r}", path)
    try:
        # str() of a float is its shortest round-tripping form: 31.5 → "31.5", 0.1 → "0.1".
        amount = Decimal(str(value))
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise UntranslatableWebhook(f"{path} is not an amount: {value!r}", path)
    return amount


def line_sku(reading: Reading, item: str, name: Any, *ids: str) -> str:
    """The line's sku, else the first non-zero id among `ids` (its variant's, its product's), else a stand-in.

    A POS "custom sale" or a line whose product was deleted has neither: its stand-in is made from its
    name (`no-sku:custom-sale`), so the same product gets the same stand-in on every order.
    """
    field = f"{item}.sku"
    sku = reading.take(field, f"{item}.sku")
    if sku is not None:
        return str(sku)
    for path in ids:
        some_id = reading.take(field, path)
        if some_id is not None and some_id != 0 and str(some_id) != "0":
            return str(some_id)
    return stand_in_sku(name)


def stand_in_sku(name: Any) -> str:
    """The sku of a line that has none: its name, lower-cased, words joined by hyphens."""
    words = "-".join(re.findall(r"\w+", str(name or "").casefold()))
    return f"no-sku:{words or 'unnamed'}"[:128]
