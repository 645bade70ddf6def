"""python -m services.console [add-user --email … --name … --role owner|staff]

Without arguments: run the console (HTTP_PORT, 8000). `add-user` adds a person, asking for the password
(or reading CONSOLE_NEW_PASSWORD), and exits.
"""

import argparse
import asyncio
import getpass
import os
import signal
import sys
from datetime import UTC, datetime

import uvicorn

from services.console import domain, store
from services.console.app import build_app
from services.console.settings import ConsoleSettings
from shared.logs import configure_logging
from shared.mongo import database, open_client
from shared.settings import settings_from_environment


def serve(settings: ConsoleSettings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    for stop_signal in (signal.SIGTERM, signal.SIGINT):  # uvicorn drains, then re-raises to this: a normal exit
        signal.signal(stop_signal, lambda *_: None)
    uvicorn.run(
        build_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )


async def add_user(settings: ConsoleSettings, email: str, name: str, role: domain.Role, password: str) -> str | None:
    """Add a person to the console; the reason when it cannot."""
    email = domain.normal_email(email)
    problem = domain.email_problem(email) or domain.password_problem(password)
    if problem:
        return {"people.error.email": "not an e-mail address", "people.error.password_short": "password too short"}[
            problem
        ] + f" (at least {domain.MIN_PASSWORD_LENGTH} characters)" * (problem == "people.error.password_short")
    client = open_client(settings.mongodb_url, "rapport-console")
    try:
        db = database(client, f"{settings.crm_prefix}_console")
        await store.ensure_indexes(db)
        person = store.Person(email, name, role, domain.hash_password(password), None, datetime.now(UTC))
        if not await store.add_person(db, person):
            return f"{email} is already a user"
    finally:
        await client.close()
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.console")
    commands = parser.add_subparsers(dest="command")
    adding = commands.add_parser("add-user", help="add an owner or a staff member")
    adding.add_argument("--email", required=True)
    adding.add_argument("--name", required=True)
    adding.add_argument("--role", choices=domain.ROLES, default="staff")
    args = parser.parse_args(argv)
    settings = settings_from_environment(ConsoleSettings)
    if args.command is None:
        serve(settings)
        return 0
    password = os.environ.get("CONSOLE_NEW_PASSWORD") or getpass.getpass(f"password for {args.email}: ")
    problem = asyncio.run(add_user(settings, args.email, args.name, args.role, password))
    if problem:
        print(problem, file=sys.stderr)
        return 1
    print(f"added {args.role} {args.email}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
