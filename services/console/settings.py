"""Settings of the console (DESIGN.md §6, docs/console.md)."""

from pydantic import Field, SecretStr

from shared.settings import OptionalSecret, ServiceSettings


class ConsoleSettings(ServiceSettings):
    """The console reads and changes everything through the four services' APIs, with one key kept here."""

    http_port: int = Field(8000, ge=1, le=65535, description="The console's port.")
    orders_url: str = Field("http://127.0.0.1:8001", description="Base URL of the orders API.")
    followups_url: str = Field("http://127.0.0.1:8002", description="Base URL of the followups API.")
    loyalty_url: str = Field("http://127.0.0.1:8003", description="Base URL of the loyalty API.")
    referrals_url: str = Field("http://127.0.0.1:8004", description="Base URL of the referrals API.")
    console_api_key: OptionalSecret = Field(
        None, description="The key the console calls the services with (an admin key); unset: ADMIN_API_KEY."
    )
    console_owner_email: str | None = Field(None, description="The first owner, created on the first start.")
    console_owner_password: OptionalSecret = Field(None, description="The first owner's password.")
    console_secure_cookies: bool | None = Field(
        None, description="Cookies only over HTTPS; unset: when the request came over TLS (or X-Forwarded-Proto)."
    )
    console_session_hours: float = Field(12.0, gt=0, le=24 * 30, description="How long a sign-in lasts unused.")
    service_timeout_seconds: float = Field(3.0, gt=0, le=60, description="How long a page waits for a service.")
    mail_folder: str = Field(".data/mail", description="Where the local SMTP catcher keeps messages (mail page).")

    @property
    def service_key(self) -> SecretStr | None:
        return self.console_api_key or self.admin_api_key

    @property
    def service_urls(self) -> dict[str, str]:
        return {
            "orders": self.orders_url.rstrip("/"),
            "followups": self.followups_url.rstrip("/"),
            "loyalty": self.loyalty_url.rstrip("/"),
            "referrals": self.referrals_url.rstrip("/"),
        }
