"""The audit trail: every state-changing API call leaves a record of who, what, when and on what.

The HTTP guard (shared/http.py) knows who calls (the key's name, and the person the console acts for) and
what (the route) before the route runs; it puts that in `current_call`. The transaction runner writes the
record in the same transaction as the change (shared/unit.py), so a change is never without its record and a
refused or failed call leaves none. Records keep no personal data: the target ids of an erased customer are
replaced by their anonymous alias (shared/erasure.py), and no body is kept.
"""

from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

AUDIT = "audit"
# Actors are the key's name and, from the console, the person it acts for ("console/eva@shop.example").
ACTOR_HEADER = "x-rapport-actor"


@dataclass
class Call:
    """One API call that may change state."""

    actor: str
    action: str  # method and route, e.g. "POST /customers/{customer_id}/erase"
    target: dict[str, str]  # the route's path parameters, e.g. {"customer_id": "cus_1"}
    recorded: bool = field(default=False)


current_call: ContextVar[Call | None] = ContextVar("current_call", default=None)


def audit_record(call: Call, record_id: str, at: datetime) -> dict[str, Any]:
    return {
        "_id": record_id,
        "actor": call.actor,
        "action": call.action,
        "target": [{"name": name, "id": value} for name, value in call.target.items()],
        "at": at,
    }
