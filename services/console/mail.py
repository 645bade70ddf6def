"""The mail page's letters: what the local SMTP catcher (deploy/local/mailcatcher.py) kept under MAIL_FOLDER."""

import email
import email.policy
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path


@dataclass(frozen=True)
class Letter:
    name: str
    to: str
    subject: str
    sent_at: datetime | None
    text: str


def letters(folder: str, *, limit: int) -> list[Letter] | None:
    """The latest letters, newest first; None when there is no such folder (no catcher runs here)."""
    where = Path(folder)
    if not where.is_dir():
        return None
    files = sorted(where.glob("*.eml"), key=lambda path: path.name, reverse=True)[:limit]
    return [_letter(path) for path in files]


def _letter(path: Path) -> Letter:
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(("plain",))
    text = body.get_content() if isinstance(body, EmailMessage) else ""
    try:
        sent_at = parsedate_to_datetime(str(parsed["Date"])) if parsed["Date"] else None
    except (TypeError, ValueError):
        sent_at = None
    return Letter(path.name, str(parsed["To"] or ""), str(parsed["Subject"] or ""), sent_at, str(text))
