"""Named, scoped API keys: how API_KEYS is read, and what each scope allows."""

import pytest
from pydantic import ValidationError

from shared.keys import ApiKey, digest, main, new_key, parse_api_keys
from shared.settings import ServiceSettings


def test_a_new_key_is_identified_by_its_entry_and_only_by_its_token() -> None:
    token, entry = new_key("console", "write")
    ring = ServiceSettings(api_keys=entry).key_ring
    assert ring.identify(token) == ApiKey("console", "write", digest(token))
    assert ring.identify(token + "x") is None
    assert token not in entry  # only the digest is kept


def test_admin_api_key_is_one_more_admin_key_beside_the_named_ones() -> None:
    _, entry = new_key("dashboard", "read")
    ring = ServiceSettings(api_keys=entry, admin_api_key="old-secret").key_ring
    assert [(key.name, key.scope) for key in ring.keys] == [("admin", "admin"), ("dashboard", "read")]
    assert ring.identify("old-secret") is not None


@pytest.mark.parametrize(
    ("scope", "allowed"),
    [("read", {"read"}), ("write", {"read", "write"}), ("admin", {"read", "write", "admin"})],
)
def test_each_scope_includes_the_ones_below_it(scope: str, allowed: set[str]) -> None:
    key = parse_api_keys(f"k:{scope}:sha256:{'a' * 64}")[0]
    assert {needed for needed in ("read", "write", "admin") if key.allows(needed)} == allowed  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        "console:write:plaintext-key",
        "console:owner:sha256:" + "a" * 64,
        "console:write:sha256:" + "a" * 63,
        "a:read:sha256:" + "a" * 64 + ",a:write:sha256:" + "b" * 64,
    ],
)
def test_a_malformed_entry_is_refused_naming_the_variable_and_never_echoing_a_token(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ServiceSettings(api_keys=value)
    assert refused.value.errors()[0]["loc"] == ("api_keys",)
    assert "plaintext-key" not in str(refused.value.errors()[0]["msg"])


def test_the_command_prints_a_key_and_its_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", "console", "write"]) == 0
    printed = capsys.readouterr().out.splitlines()
    token = printed[0].rsplit(" ", 1)[1]
    entry = printed[1].rsplit(" ", 1)[1]
    assert parse_api_keys(entry)[0] == ApiKey("console", "write", digest(token))
    assert main(["new", "console", "owner"]) == 2
