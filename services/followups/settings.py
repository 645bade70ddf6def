"""Settings of the followups service (DESIGN.md §6, §7 "Follow-ups")."""

from datetime import timedelta

from pydantic import Field

from services.followups.domain import AccountRules, CallPolicy
from shared.service import Runtime
from shared.settings import OptionalSecret, ServiceSettings
from shared.unit import Unit


class FollowupsSettings(ServiceSettings):
    http_port: int = Field(8002, ge=1, le=65535, description="HTTP API port.")
    smtp_url: str = Field(
        "smtp://localhost:1025",
        description="SMTP server: smtp://[user:password@]host:port (add ?starttls=true to upgrade), or smtps://.",
    )
    mail_from: str = Field("Rapport <hello@example.com>", description="From: of every message.")
    shop_name: str = Field("our shop", description="The shop's name as messages say it.")
    feedback_url: str = Field(
        "http://localhost:8002/feedback/form", description="Page the feedback link opens; the token is appended."
    )
    referral_url: str = Field("http://localhost/r/", description="Link a referral code is appended to.")
    feedback_token_secret: OptionalSecret = Field(
        None, description="Signs feedback links; unset: no feedback requests are sent and no token is accepted."
    )
    feedback_token_days: int = Field(30, ge=1, description="How long a feedback link stays valid.")
    thank_you_delay_seconds: float = Field(0, ge=0, description="Thank-you note after OrderPlaced.")
    call_customers: int = Field(100, ge=0, description="The shop's first N customers get a personal call task.")
    call_delay_days: float = Field(14, ge=0, description="Call task due this long after fulfilment.")
    feedback_request_delay_days: float = Field(14, ge=0, description="Feedback request this long after fulfilment.")
    escalation_sla_minutes: float = Field(60, gt=0, description="Time to answer negative feedback.")
    send_attempts: int = Field(6, ge=1, description="Sends tried (with back-off) before a message is marked failed.")
    send_backoff_seconds: float = Field(30, ge=0, description="First back-off after a failed send; doubles each time.")
    scheduler_interval_seconds: float = Field(5, gt=0, description="How often due work is looked for.")
    scheduler_lease_seconds: float = Field(
        120, gt=0, description="How long a claimed task is held before others may take it."
    )

    call_retry_days: float = Field(
        2, ge=0, description="An unanswered call (no answer, voicemail) is tried again after this."
    )
    call_attempts: int = Field(3, ge=1, description="Calls tried in all before an unanswered call task is closed.")
    account_review_days: float = Field(90, gt=0, description="A key account gets a review task this often.")
    key_account_segments: str = Field("champions", description="Comma-separated RFM segments that make a key account.")
    key_account_tiers: str = Field(
        "vip", description="Comma-separated loyalty tiers that make a key account (the top tier)."
    )
    win_back_tiers: str = Field(
        "gold,vip", description="Comma-separated tiers (gold or above) that get a win-back call."
    )
    win_back_segments: str = Field(
        "at_risk,cant_lose,hibernating",
        description="Comma-separated segments in which such a customer is slipping away.",
    )
    import_settle_minutes: float = Field(
        10, ge=0, description="No history (imported) event about a customer for this long: their import is done."
    )
    points_expiring_days: float = Field(30, gt=0, description="The brief's points expiring: those due within this.")

    @property
    def account_rules(self) -> AccountRules:
        return AccountRules(
            key_account_segments=_names(self.key_account_segments),
            key_account_tiers=_names(self.key_account_tiers),
            review_every=timedelta(days=self.account_review_days),
            win_back_tiers=_names(self.win_back_tiers),
            slipping_segments=_names(self.win_back_segments),
            import_settles=timedelta(minutes=self.import_settle_minutes),
        )

    @property
    def call_policy(self) -> CallPolicy:
        return CallPolicy(retry_after=timedelta(days=self.call_retry_days), attempts=self.call_attempts)


def _names(listed: str) -> frozenset[str]:
    return frozenset(name.strip() for name in listed.split(",") if name.strip())


def settings_of(rt: Runtime) -> FollowupsSettings:
    """The settings a running followups service was built with, typed: how routes and jobs read them."""
    settings: FollowupsSettings = rt.transactions.settings  # the same object its units carry as `unit.settings`
    return settings


# What every use case of the followups service gets: the transaction, its clock and these settings, typed.
FollowupsUnit = Unit[FollowupsSettings]
