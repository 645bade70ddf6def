"""Scheduled work of orders: score every customer (RFM) and name their segment.

Scores are quintiles over the whole customer base and recency moves with the
calendar, so the scores are recomputed for everyone regularly rather than per
event. A lease on one job document lets only one replica score at a time.
"""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog

from services.orders import domain, service, store
from services.orders.insight import RetentionReport, Rfm, retention_report, score_rfm
from services.orders.settings import OrdersUnit, settings_of
from shared.service import Runtime

LEASE = timedelta(minutes=10)
SCORING_JOB = "segments"
log = structlog.get_logger("rapport.orders.segments")


async def score_customers(rt: Runtime, *, at: datetime | None = None) -> int | None:
    """Recompute every customer's RFM scores and segment; None when another replica holds the job."""
    owner = str(uuid.uuid4())
    if not await store.claim_job(rt, SCORING_JOB, owner, LEASE):
        return None
    try:
        moment = at or rt.now()
        histories, scored = await store.histories_and_scores(rt)
        scores = score_rfm(histories, moment, settings_of(rt).reporting_currency)
        changed = list(domain.rescored(scored, scores).items())
        for start in range(0, len(changed), store.SCORES_WRITE_BATCH):  # bounded transactions, however many moved
            await rt.transaction(_recording(dict(changed[start : start + store.SCORES_WRITE_BATCH]), scored, moment))
        log.info("customers_scored", count=len(scores), changed=len(changed))
        return len(scores)
    finally:
        await store.release_job(rt, SCORING_JOB, owner)


def _recording(
    scores: dict[str, Rfm], before: dict[str, Rfm | None], at: datetime
) -> Callable[[OrdersUnit], Awaitable[None]]:
    async def record(unit: OrdersUnit) -> None:
        await service.record_scores(unit, scores, before, at)

    return record


async def retention(rt: Runtime, *, at: datetime | None = None) -> RetentionReport:
    return retention_report(await store.histories(rt), at or rt.now())


async def score_customers_regularly(rt: Runtime) -> None:
    interval = settings_of(rt).segment_interval_seconds
    while True:
        try:
            await score_customers(rt)
        except Exception as error:  # noqa: BLE001 - the next round tries again
            log.warning("scoring_failed", error=repr(error))
        await asyncio.sleep(interval)
