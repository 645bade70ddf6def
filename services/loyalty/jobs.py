"""Scheduled work of loyalty: expire points and slide tiers, safely in any number of replicas."""

import asyncio
import uuid
from datetime import datetime, timedelta

import structlog

from services.loyalty import service
from services.loyalty.settings import LoyaltyUnit, settings_of
from services.loyalty.store import claim_member_due
from shared.service import Runtime

LEASE = timedelta(seconds=60)
log = structlog.get_logger("rapport.loyalty.expiry")


async def review_due_members(rt: Runtime, *, at: datetime | None = None, limit: int = 500) -> int:
    """Review members whose points expire or whose tier window slides by `at`; return how many.

    Each member is claimed with a lease (an atomic find-and-update), so replicas
    running this together never review the same member at once; a member whose
    replica died is picked up again when the lease runs out.
    """
    moment = at or rt.now()
    owner = str(uuid.uuid4())
    reviewed = 0
    while reviewed < limit:
        customer_id = await claim_member_due(rt, moment, lease=LEASE, owner=owner)
        if customer_id is None:
            break

        async def review(unit: LoyaltyUnit, customer_id: str = customer_id) -> None:
            await service.review_member(unit, customer_id, moment)

        await rt.transaction(review)
        reviewed += 1
    return reviewed


async def expire_points_regularly(rt: Runtime) -> None:
    settings = settings_of(rt)
    while True:
        try:
            reviewed = await review_due_members(rt)
            if reviewed:
                log.info("members_reviewed", count=reviewed)
        except Exception as error:  # noqa: BLE001 - the next round tries again
            log.warning("expiry_round_failed", error=repr(error))
        await asyncio.sleep(settings.expiry_interval_seconds)
