"""Follow-up messages: one plain-text template per kind and language, rendered for one customer.

A template is ``templates/<locale>/<kind>.txt``: a ``Subject: …`` line, a blank
line, then the body. Every variable a template names must be passed (None for
what the shop does not know), so a typo in a template or a forgotten value fails
loudly instead of sending "Hello ,".
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2

KINDS = ("thank_you", "feedback_request", "referral_invite")
LOCALES = ("en", "hu", "sk", "fa", "hy", "lv")
FALLBACK_LOCALE = "en"
RIGHT_TO_LEFT = frozenset({"fa"})

TEMPLATES = Path(__file__).parent / "templates"
_SUBJECT = "Subject: "

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES, encoding="utf-8"),
    undefined=jinja2.StrictUndefined,
    # Plain-text e-mail: HTML escaping would send "Tom &amp; Jerry" to the customer.
    autoescape=False,  # noqa: S701
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Message:
    subject: str
    body: str
    locale: str  # the template locale used, after fallback
    direction: Literal["ltr", "rtl"]


def template_locale(locale: str | None) -> str:
    """The shipped template language for a BCP 47 tag (``"hu-HU"`` → ``"hu"``), else English."""
    if not locale:
        return FALLBACK_LOCALE
    # "_" too: POSIX-style tags such as "lv_LV" are common in shop exports.
    language = re.split(r"[-_]", locale.strip(), maxsplit=1)[0].lower()
    return language if language in LOCALES else FALLBACK_LOCALE


def render(kind: str, locale: str | None, **values: Any) -> Message:
    """The message of `kind` in the customer's language, filled with `values`.

    Raises ValueError for an unknown kind or a value the template needs but was not given.
    """
    if kind not in KINDS:
        raise ValueError(f"no message template for kind {kind!r}; known kinds: {', '.join(KINDS)}")
    chosen = template_locale(locale)
    name = f"{chosen}/{kind}.txt"
    try:
        text = _environment.get_template(name).render(**values)
    except jinja2.UndefinedError as error:
        raise ValueError(f"template {name} needs a value that was not given: {error.message}") from error
    subject, body = _split_subject(text, name)
    return Message(subject=subject, body=body, locale=chosen, direction="rtl" if chosen in RIGHT_TO_LEFT else "ltr")


def _split_subject(text: str, name: str) -> tuple[str, str]:
    first_line, blank_line, body = text.partition("\n\n")
    if not blank_line or "\n" in first_line or not first_line.startswith(_SUBJECT):
        raise ValueError(f"template {name} must start with a 'Subject: …' line and a blank line")
    return first_line.removeprefix(_SUBJECT).strip(), body
