"""shared/i18n.py: which language a page speaks, complete catalogues, and CLDR formatting."""

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from shared.i18n import LANGUAGES, Catalogues, Formats, choose_language, direction, unknown_ids


def test_a_persons_choice_wins_then_the_browser_then_english() -> None:
    assert choose_language("hu-HU", "sk,en;q=0.5") == "hu"
    assert choose_language("lv_LV") == "lv"
    assert choose_language(None, "de-DE,sk;q=0.8,fa;q=0.9") == "fa"
    assert choose_language("de", "de,fr;q=0.8") == "en"
    assert choose_language(None, "hy;q=0,sk;q=bad,lv;q=0.1") == "lv"
    assert direction("fa") == "rtl"
    assert direction("hy") == "ltr"


def _write(folder: Path, texts: dict[str, dict[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for language in LANGUAGES:
        (folder / f"{language}.json").write_text(json.dumps(texts.get(language, texts["en"])), encoding="utf-8")


def test_catalogues_refuse_a_language_missing_a_text_or_a_placeholder(tmp_path: Path) -> None:
    _write(tmp_path / "ok", {"en": {"hello": "Hello {name}"}, "hu": {"hello": "Szia {name}"}})
    words = Catalogues.load(tmp_path / "ok").words("hu")
    assert words("hello", name="Anna") == "Szia Anna"

    _write(tmp_path / "missing", {"en": {"hello": "Hello", "bye": "Bye"}, "sk": {"hello": "Ahoj"}})
    with pytest.raises(ValueError, match=r"sk\.json: missing \['bye'\]"):
        Catalogues.load(tmp_path / "missing")

    _write(tmp_path / "placeholder", {"en": {"hello": "Hello {name}"}, "lv": {"hello": "Sveiki"}})
    with pytest.raises(ValueError, match="other placeholders"):
        Catalogues.load(tmp_path / "placeholder")


def test_a_template_id_no_catalogue_defines_is_found(tmp_path: Path) -> None:
    _write(tmp_path / "locales", {"en": {"title": "Title"}})
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "page.html").write_text("<h1>{{ t('title') }}</h1><p>{{ t(\"nowhere\") }}</p>", encoding="utf-8")
    assert unknown_ids(templates, Catalogues.load(tmp_path / "locales")) == {"page.html": ["nowhere"]}


def test_money_numbers_and_dates_follow_the_language() -> None:
    assert Formats("en").money(Decimal("1234.50"), "EUR") == "€1,234.50"
    assert Formats("hu").money("1234.50", "HUF").replace("\xa0", " ") == "1 234,50 Ft"
    assert Formats("sk").number(Decimal("1234.5")).replace("\xa0", " ") == "1 234,5"
    assert Formats("fa").number(12) == "۱۲"
    assert Formats("en").date(datetime(2026, 12, 1, tzinfo=UTC)) == "Dec 1, 2026"
