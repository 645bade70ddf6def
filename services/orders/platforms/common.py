"""What the Shopify and WooCommerce translations share: the error, the signature check, reading a payload.

A platform payload is read by dotted path ("line_items.0.price"); `Reading` remembers which
platform path each canonical field came from, so a value the event contract rejects is reported
under the name the shop's platform uses, not ours.
"""

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from pydantic import ValidationError

from shared.events import OrderFulfilled, OrderPlaced, OrderRefunded, Payload, describe

EventT = TypeVar("EventT", bound=Payload)


class UntranslatableWebhook(ValueError):
    """A webhook that cannot become a canonical event; `field` is the dotted path in the platform payload."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class OrderNotKnownYet(UntranslatableWebhook):
    """The webhook needs an order this service has not heard of yet; the platform should retry it later."""


@dataclass(frozen=True)
class Translation:
    """One canonical event a webhook stands for; `event_id` is the same however often the webhook arrives."""

    event_id: str
    data: OrderPlaced | OrderFulfilled | OrderRefunded


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


def guest_id(email: Any) -> str:
    """The customer id of a checkout without an account: the e-mail address is all that identifies them."""
    return "guest:" + str(email).strip().lower()


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


def line_sku(reading: Reading, item: str, *ids: str) -> str:
    """The line's sku, else the first non-zero id among `ids` (its variant's, its product's), as a string."""
    field = f"{item}.sku"
    sku = reading.take(field, f"{item}.sku")
    if sku is not None:
        return str(sku)
    for path in ids:
        some_id = reading.take(field, path)
        if some_id is not None and some_id != 0:
            return str(some_id)
    stand_ins = " or ".join(path.rsplit(".", 1)[-1] for path in ids)
    raise UntranslatableWebhook(f"{item} has no sku, nor a {stand_ins} to stand for one", field)
