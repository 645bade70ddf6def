"""`make up`, first time: write deploy/.env from deploy/.env.example with a fresh random value for each secret.

Standard library only, so it runs before (and without) `make install`. An existing
file is never overwritten: it holds the secrets the data volumes were created with.
"""

import os
import secrets
import sys
from pathlib import Path

# Secrets we can make up; webhook secrets come from the shop platform and stay empty until set.
GENERATED = (
    "RABBITMQ_PASSWORD",
    "MONGO_ROOT_PASSWORD",
    "MONGO_APP_PASSWORD",
    "MONGO_REPLICA_SET_KEY",
    "ADMIN_API_KEY",
    "FEEDBACK_TOKEN_SECRET",
    "CONSOLE_OWNER_PASSWORD",
)


def with_secrets(example: str) -> str:
    """The example's lines, each empty generated secret filled (hex: safe in URLs and as a MongoDB key file)."""
    lines = []
    for line in example.splitlines():
        name, equals, value = line.partition("=")
        generate = equals and name in GENERATED and not value
        lines.append(f"{name}={secrets.token_hex(32)}" if generate else line)
    return "\n".join(lines) + "\n"


def main(example: Path, target: Path) -> int:
    if target.exists():
        print(f"{target} exists; leaving it as it is")
        return 0
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(with_secrets(example.read_text()))
    print(f"wrote {target} with fresh secrets (keep it: the data volumes use them)")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
