"""Scheduled work of orders: score every customer (RFM) and name their segment.

Scores are quintiles over the whole customer base and recency moves with the
calendar, so the scores are recomputed for everyone regularly rather than per
event. A lease on one job document lets only one replica score at a time.
"""

import asyncio
import uuid
from datetime import datetime, timedelta

import structlog
from pymongo import UpdateOne

from services.orders.domain import history_of
from services.orders.insight import History, RetentionReport, retention_report, score_rfm
from services.orders.service import now
from services.orders.settings import orders_settings
from services.orders.store import CUSTOMERS, JOBS, lines_of
from shared.leases import claim, release
from shared.mongo import Database
from shared.service import Runtime

LEASE = timedelta(minutes=10)
WRITE_BATCH = 1000
log = structlog.get_logger("rapport.orders.segments")


async def histories(db: Database) -> list[History]:
    """Every customer as the insight rules see them, read in one pass."""
    return [history_of(doc["_id"], lines_of(doc)) async for doc in db[CUSTOMERS].find({}, {"orders": 1})]


async def score_customers(rt: Runtime, *, at: datetime | None = None) -> int | None:
    """Recompute every customer's RFM scores and segment; None when another replica holds the job."""
    settings = orders_settings(rt.settings)
    owner = str(uuid.uuid4())
    if await claim(rt.db[JOBS], {"_id": "segments"}, lease=LEASE, owner=owner, create=True) is None:
        return None
    try:
        moment = at or now()
        profiles = await rt.db[CUSTOMERS].find({}, {"orders": 1, "rfm": 1, "segment": 1}).to_list()
        scores = score_rfm([history_of(p["_id"], lines_of(p)) for p in profiles], moment, settings.reporting_currency)
        before = {p["_id"]: (p.get("rfm"), p.get("segment")) for p in profiles}
        writes = []
        for customer_id, rfm in scores.items():
            scored = {"recency": rfm.recency, "frequency": rfm.frequency, "monetary": rfm.monetary}
            if before[customer_id] != (scored, rfm.segment):  # most scores hold from one round to the next
                change = {"rfm": scored, "segment": rfm.segment, "scored_at": moment}
                writes.append(UpdateOne({"_id": customer_id}, {"$set": change}))
        for start in range(0, len(writes), WRITE_BATCH):
            await rt.db[CUSTOMERS].bulk_write(writes[start : start + WRITE_BATCH], ordered=False)
        log.info("customers_scored", count=len(scores), changed=len(writes))
        return len(scores)
    finally:
        await release(rt.db[JOBS], "segments", owner)


async def retention(rt: Runtime, *, at: datetime | None = None) -> RetentionReport:
    return retention_report(await histories(rt.db), at or now())


async def score_customers_regularly(rt: Runtime) -> None:
    interval = orders_settings(rt.settings).segment_interval_seconds
    while True:
        try:
            await score_customers(rt)
        except Exception as error:  # noqa: BLE001 - the next round tries again
            log.warning("scoring_failed", error=repr(error))
        await asyncio.sleep(interval)
