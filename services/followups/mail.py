"""Sending e-mail over SMTP (aiosmtplib), configured by one URL."""

import html
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from services.followups.messages import Message


@dataclass(frozen=True)
class SmtpServer:
    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool

    @classmethod
    def from_url(cls, url: str) -> "SmtpServer":
        """smtp://[user:password@]host[:port][?starttls=true] or smtps://… (implicit TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"SMTP_URL must look like smtp://host:port or smtps://host:port, got {url!r}")
        implicit = parts.scheme == "smtps"
        starttls = parse_qs(parts.query).get("starttls", ["false"])[0].lower() in ("1", "true", "yes")
        return cls(
            hostname=parts.hostname,
            port=parts.port or (465 if implicit else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=implicit,
            start_tls=starttls,
        )

    async def send(self, message: EmailMessage) -> None:
        await aiosmtplib.send(
            message,
            hostname=self.hostname,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            start_tls=self.start_tls,
            timeout=20,
        )


def email_of(message: Message, *, sender: str, to: str, followup_id: str) -> EmailMessage:
    """Plain text with an HTML twin that carries the writing direction (Persian reads right to left)."""
    email = EmailMessage()
    email["Subject"] = message.subject
    email["From"] = sender
    email["To"] = to
    email["Message-ID"] = make_msgid(idstring=followup_id.replace(":", "."), domain="rapport.local")
    email["X-Rapport-Followup"] = followup_id
    email.set_content(message.body)
    paragraphs = "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in message.body.split("\n\n"))
    page = f'<html lang="{message.locale}" dir="{message.direction}"><body dir="{message.direction}">{paragraphs}'
    email.add_alternative(f"{page}</body></html>", subtype="html")
    email["Content-Language"] = message.locale  # after the parts: making them moves Content-* headers into them
    return email
