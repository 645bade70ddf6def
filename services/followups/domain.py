"""Follow-up rules as plain values and functions, no I/O (DESIGN.md §7 "Follow-ups").

Who is unhappy enough to need a person, who is happy enough to be asked for a
referral, when each follow-up falls due, and how loyal customers say they are
(NPS and CSAT).
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

# --- who needs what --------------------------------------------------------------

DETRACTOR_MAX_OVERALL = 2  # an overall rating of 1 or 2 out of 5
DETRACTOR_MAX_NPS = 6  # NPS answers 0–6 are detractors
PROMOTER_MIN_NPS = 9  # NPS answers 9–10 are promoters
SATISFIED_MIN_OVERALL = 4  # CSAT counts 4 and 5 out of 5 as satisfied


def is_detractor_feedback(overall: int, nps: int | None) -> bool:
    """Feedback unhappy enough to open an escalation."""
    return overall <= DETRACTOR_MAX_OVERALL or (nps is not None and nps <= DETRACTOR_MAX_NPS)


def is_promoter(nps: int | None) -> bool:
    """A customer happy enough to be invited to refer friends."""
    return nps is not None and nps >= PROMOTER_MIN_NPS


# --- when things fall due --------------------------------------------------------

THANK_YOU_DELAY = timedelta(0)
CALL_DELAY = timedelta(days=14)
FEEDBACK_REQUEST_DELAY = timedelta(days=14)
ESCALATION_SLA = timedelta(minutes=60)


def thank_you_due(placed_at: datetime, delay: timedelta = THANK_YOU_DELAY) -> datetime:
    return placed_at + delay


def call_due(fulfilled_at: datetime, delay: timedelta = CALL_DELAY) -> datetime:
    return fulfilled_at + delay


def feedback_request_due(fulfilled_at: datetime, delay: timedelta = FEEDBACK_REQUEST_DELAY) -> datetime:
    return fulfilled_at + delay


def escalation_due(received_at: datetime, sla: timedelta = ESCALATION_SLA) -> datetime:
    return received_at + sla


def sla_time_left(due_by: datetime, now: datetime) -> timedelta:
    """Time left to answer an escalation; negative once the SLA is breached."""
    return due_by - now


# --- NPS and CSAT ------------------------------------------------------------------


@dataclass(frozen=True)
class FeedbackPoint:
    """One piece of feedback, as much of it as the report needs."""

    received_at: datetime
    overall: int
    nps: int | None
    answered_request: bool  # given through a feedback request's link, so it counts towards the response rate


@dataclass(frozen=True)
class NpsFigures:
    responses: int
    nps_answers: int
    promoters: int
    passives: int
    detractors: int
    nps: float | None  # −100…100, None without NPS answers
    csat: float | None  # percent of responses rated 4 or 5 overall, None without responses


@dataclass(frozen=True)
class MonthlyNps(NpsFigures):
    month: str  # "YYYY-MM", UTC


@dataclass(frozen=True)
class NpsReport(NpsFigures):
    response_rate: float | None  # answered requests ÷ requests sent, None when none were sent
    # No response rate per month: a request sent in one month is often answered in the next.
    months: tuple[MonthlyNps, ...]


def nps_report(feedback: Sequence[FeedbackPoint], requests_sent: int, *, by_month: bool = True) -> NpsReport:
    """NPS, CSAT and response rate over `feedback`, and per calendar month (UTC), oldest first."""
    answered = sum(1 for point in feedback if point.answered_request)
    months: tuple[MonthlyNps, ...] = ()
    if by_month:
        grouped: defaultdict[str, list[FeedbackPoint]] = defaultdict(list)
        for point in feedback:
            grouped[_month(point.received_at)].append(point)
        months = tuple(MonthlyNps(month=month, **asdict(_figures(grouped[month]))) for month in sorted(grouped))
    return NpsReport(
        **asdict(_figures(feedback)),
        response_rate=_ratio(answered, requests_sent, places=4) if requests_sent else None,
        months=months,
    )


def _figures(feedback: Sequence[FeedbackPoint]) -> NpsFigures:
    answers = [point.nps for point in feedback if point.nps is not None]
    promoters = sum(1 for nps in answers if nps >= PROMOTER_MIN_NPS)
    detractors = sum(1 for nps in answers if nps <= DETRACTOR_MAX_NPS)
    satisfied = sum(1 for point in feedback if point.overall >= SATISFIED_MIN_OVERALL)
    return NpsFigures(
        responses=len(feedback),
        nps_answers=len(answers),
        promoters=promoters,
        passives=len(answers) - promoters - detractors,
        detractors=detractors,
        nps=_ratio(100 * (promoters - detractors), len(answers), places=1) if answers else None,
        csat=_ratio(100 * satisfied, len(feedback), places=1) if feedback else None,
    )


def _ratio(part: int, whole: int, *, places: int) -> float:
    # Exact and half up, as a person checking the report by hand would round (float round() gives 1.2 for 1.25).
    return float((Decimal(part) / Decimal(whole)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def _month(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"feedback time {moment.isoformat()} has no offset; its month would be a guess")
    return moment.astimezone(UTC).strftime("%Y-%m")
