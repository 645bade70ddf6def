"""A real SMTP server in the test process (aiosmtpd): in memory for the tests to read, or as files (`make run`)."""

import email
import email.policy
import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
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


class KeepEachMessage:
    """aiosmtpd handler for `make run` and the console's tests: each message as `<folder>/<UTC time>-<n>.eml`.

    The console's mail page reads that folder (MAIL_FOLDER), so a thank-you note shows up with no mail server
    installed. Dev-only, like aiosmtpd: a shop's real stack sends through its own SMTP server.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.numbers = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{next(self.numbers):06d}.eml"
        (self.folder / name).write_bytes(envelope.original_content)
        return "250 Message accepted for delivery"


@contextmanager
def mail_catcher(folder: Path, port: int | None = None) -> Iterator[str]:
    """The catcher on 127.0.0.1 while the block runs; yields the SMTP_URL to give followups."""
    folder.mkdir(parents=True, exist_ok=True)
    chosen = port or free_port()
    controller = Controller(KeepEachMessage(folder), hostname="127.0.0.1", port=chosen)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{chosen}"
    finally:
        controller.stop()
