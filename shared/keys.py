"""Named, scoped API keys (docs/operations.md, "API keys"): who calls, and what they may do.

A key is a random token the caller sends as `Authorization: Bearer <token>`; the service keeps only its
SHA-256 (a key is 32 random bytes, so a fast hash is as good as a slow one here and costs nothing per request),
its name (written in the audit trail) and its scope:

- `read`: GET requests;
- `write`: also every request that changes state;
- `admin`: also what only an owner may do (erasure, keys, dead letters).

`API_KEYS` lists them, comma-separated, as `name:scope:sha256:<hex digest>`; several at once, so a key is
rotated by adding the new one, moving the callers, then removing the old one. `ADMIN_API_KEY` still works:
it is one more key, named `admin`, with the `admin` scope.

    python -m shared.keys new console write     # a fresh key, and the API_KEYS entry for it
"""

import hashlib
import hmac
import re
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")
_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9_.@-]{1,64}):(?P<scope>read|write|admin):sha256:(?P<digest>[0-9a-f]{64})$")


@dataclass(frozen=True)
class ApiKey:
    name: str
    scope: Scope
    digest: str  # SHA-256 of the token, hex

    def allows(self, needed: Scope) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(needed)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_api_keys(text: str) -> tuple[ApiKey, ...]:
    """The keys of an `API_KEYS` value; raises ValueError naming the entry that is wrong (never a token)."""
    keys: list[ApiKey] = []
    for position, raw in enumerate(part.strip() for part in text.split(",")):
        if not raw:
            continue
        match = _ENTRY.match(raw)
        if match is None:
            name = raw.split(":", 1)[0][:64]
            raise ValueError(f"entry {position + 1} ({name!r}) is not name:read|write|admin:sha256:<64 hex digits>")
        keys.append(ApiKey(match["name"], cast(Scope, match["scope"]), match["digest"]))
    names = [key.name for key in keys]
    if len(set(names)) != len(names):
        raise ValueError("two keys share a name: each key's name must tell who used it")
    return tuple(keys)


@dataclass(frozen=True)
class KeyRing:
    keys: tuple[ApiKey, ...]

    def identify(self, token: str) -> ApiKey | None:
        """The key `token` is, compared in constant time against every key (so timing tells nothing)."""
        wanted = digest(token)
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.digest, wanted):
                found = key
        return found


def new_key(name: str, scope: Scope) -> tuple[str, str]:
    """A fresh token and its `API_KEYS` entry."""
    token = secrets.token_urlsafe(32)
    return token, f"{name}:{scope}:sha256:{digest(token)}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if (
        len(args) != 3
        or args[0] != "new"
        or args[2] not in SCOPES
        or not _ENTRY.match(f"{args[1]}:read:sha256:{'0' * 64}")
    ):
        print("usage: python -m shared.keys new NAME read|write|admin", file=sys.stderr)
        return 2
    scope = next(known for known in SCOPES if known == args[2])
    token, entry = new_key(args[1], scope)
    print(f"key (give it to the caller, it is not stored anywhere): {token}")
    print(f"API_KEYS entry (add it to the services' environment):  {entry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
