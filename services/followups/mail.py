"""Sending e-mail over SMTP (aiosmtplib), configured by one URL."""

import html
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
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


_LINK = re.compile(r"https?://[^\s<>\"]+")


def email_of(
    message: Message,
    *,
    sender: str,
    to: str,
    followup_id: str,
    sent_at: datetime,
    unsubscribe_url: str | None = None,
) -> EmailMessage:
    """Plain text with an HTML twin that carries the writing direction (Persian reads right to left).

    The headers mail servers expect (RFC 5322 `Date`, a `Message-ID` in the sender's own domain) and, for
    relationship mail, a one-click unsubscribe (RFC 8058: `List-Unsubscribe` with `List-Unsubscribe-Post`).
    """
    email = EmailMessage()
    email["Subject"] = message.subject
    email["From"] = sender
    email["To"] = to
    email["Date"] = format_datetime(sent_at)
    email["Message-ID"] = make_msgid(idstring=followup_id.replace(":", "."), domain=_domain_of(sender))
    email["X-Rapport-Followup"] = followup_id
    if unsubscribe_url is not None:
        email["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    email.set_content(message.body)
    paragraphs = "".join(f"<p>{_linked(p).replace(chr(10), '<br>')}</p>" for p in message.body.split("\n\n"))
    page = f'<html lang="{message.locale}" dir="{message.direction}"><body dir="{message.direction}">{paragraphs}'
    email.add_alternative(f"{page}</body></html>", subtype="html")
    email["Content-Language"] = message.locale  # after the parts: making them moves Content-* headers into them
    return email


def _domain_of(sender: str) -> str:
    """The domain of the sender's address: a Message-ID in it is what receiving servers expect."""
    address = parseaddr(sender)[1]
    return address.rpartition("@")[2] or "localhost"


def _linked(paragraph: str) -> str:
    """The paragraph as HTML, each web address a link."""
    escaped = html.escape(paragraph)
    return _LINK.sub(lambda found: f'<a href="{found[0]}">{found[0]}</a>', escaped)
