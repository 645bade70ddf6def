"""Settings read from the environment: empty variables, secrets and bounds."""

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.followups.settings import FollowupsSettings
from services.orders.settings import OrdersSettings
from shared.settings import ServiceSettings


def test_an_empty_secret_in_the_environment_is_unset_not_a_key_anyone_can_sign_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ADMIN_API_KEY", "")
    monkeypatch.setenv("FEEDBACK_TOKEN_SECRET", "")
    monkeypatch.setenv("SHOPIFY_WEBHOOK_SECRET", "")
    assert FollowupsSettings().admin_api_key is None
    assert FollowupsSettings().feedback_token_secret is None
    assert OrdersSettings().shopify_webhook_secret is None


def test_an_empty_secret_given_directly_is_unset_too() -> None:
    assert FollowupsSettings(feedback_token_secret="").feedback_token_secret is None


def test_a_set_secret_is_kept_and_hidden_from_the_settings_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBACK_TOKEN_SECRET", "s3cret")
    settings = FollowupsSettings()
    assert settings.feedback_token_secret is not None
    assert settings.feedback_token_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_an_empty_variable_takes_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "")
    monkeypatch.setenv("BATCH_SIZE", "")
    settings = ServiceSettings()
    assert (settings.log_level, settings.batch_size) == ("INFO", 100)


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_SIZE", "0")
    with pytest.raises(ValidationError, match="batch_size"):
        ServiceSettings()


def test_a_service_started_with_a_bad_value_names_the_variable_and_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_SIZE", "0")
    monkeypatch.setenv("ADMIN_API_KEY", "")
    completed = subprocess.run(
        [sys.executable, "-c", "from shared.settings import *; settings_from_environment(ServiceSettings)"],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr.startswith("BATCH_SIZE: Input should be greater than or equal to 1")
    assert "Traceback" not in completed.stderr


def test_key_accounts_and_win_back_are_read_as_comma_separated_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY_ACCOUNT_TIERS", "vip, platinum")
    monkeypatch.setenv("WIN_BACK_SEGMENTS", "at_risk,,cant_lose")
    monkeypatch.setenv("ACCOUNT_REVIEW_DAYS", "30")
    rules = FollowupsSettings().account_rules
    assert rules.key_account_tiers == {"vip", "platinum"}
    assert rules.key_account_segments == {"champions"}
    assert rules.slipping_segments == {"at_risk", "cant_lose"}
    assert rules.win_back_tiers == {"gold", "vip"}
    assert rules.review_every.days == 30
    assert FollowupsSettings().call_policy.attempts == 3
