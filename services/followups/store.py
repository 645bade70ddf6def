"""MongoDB for followups: customers' contact, orders' milestones, follow-ups, feedback, escalations.

Collections:
- customers: contact details from the customer's latest order, and their first order.
- orders: when each order was placed, fulfilled, refunded (what the schedule hangs on).
- followups: every planned follow-up, one document each, with a deterministic id
  (`thank_you:<order>`, `feedback_request:<order>`, `call:<customer>`,
  `referral_invite:<event>`) so planning twice plans once. `status` is pending,
  sent, failed, cancelled or done; email follow-ups are claimed with a lease.
- feedback: what customers said; a feedback link's follow-up id is unique here,
  so a token is used once.
- escalations: unhappy feedback with its deadline.
- erased: sha256 of erased customer ids, so late events do not bring them back.
"""

from pymongo import ASCENDING, IndexModel

from shared.mongo import Database
from shared.settings import ServiceSettings

CUSTOMERS = "customers"
ORDERS = "orders"
FOLLOWUPS = "followups"
FEEDBACK = "feedback"
ESCALATIONS = "escalations"
ERASED = "erased"

PENDING, SENT, FAILED, CANCELLED, DONE = "pending", "sent", "failed", "cancelled", "done"
STATUSES = (PENDING, SENT, FAILED, CANCELLED, DONE)


async def ensure_indexes(db: Database, settings: ServiceSettings) -> None:  # the settings shape no index here
    await db[CUSTOMERS].create_indexes([IndexModel([("first_order_at", ASCENDING)])])
    await db[FOLLOWUPS].create_indexes(
        [
            IndexModel([("status", ASCENDING), ("channel", ASCENDING), ("due_at", ASCENDING)]),
            IndexModel([("kind", ASCENDING), ("status", ASCENDING), ("due_at", ASCENDING)]),
            IndexModel([("order_id", ASCENDING)]),
            IndexModel([("customer_id", ASCENDING)]),
        ]
    )
    await db[FEEDBACK].create_indexes(
        [
            IndexModel(
                [("followup_id", ASCENDING)], unique=True, partialFilterExpression={"followup_id": {"$type": "string"}}
            ),
            IndexModel([("received_at", ASCENDING)]),
        ]
    )
    await db[ESCALATIONS].create_indexes([IndexModel([("resolved_at", ASCENDING), ("due_by", ASCENDING)])])
