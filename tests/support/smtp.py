"""A real SMTP server in the test process (aiosmtpd), keeping what followups sends for the test to read."""

import email
import email.policy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.local_mongod import free_port


@dataclass
class SmtpInbox:
    """What the test SMTP server on `port` received; `url` is the SMTP_URL to give followups."""

    port: int
    messages: list[EmailMessage] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted for delivery"

    def to(self, address: str, containing: str = "") -> list[EmailMessage]:
        """Messages to `address` whose plain-text body contains `containing`."""
        return [m for m in self.messages if m["To"] == address and containing in self.text(m)]

    @staticmethod
    def text(message: EmailMessage) -> str:
        body = message.get_body(("plain",))
        assert isinstance(body, EmailMessage)
        content: str = body.get_content()
        return content


@contextmanager
def smtp_server() -> Iterator[SmtpInbox]:
    inbox = SmtpInbox(free_port())
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()
