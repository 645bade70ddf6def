"""Run services as real processes (`python -m services.<name>`) for end-to-end tests."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.local_mongod import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServiceProcess:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    ready_after: float | None = field(default=None)
    started_at: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.started_at = time.monotonic()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Poll /readyz until 200; return the seconds since start() it took."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.logs()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    self.ready_after = time.monotonic() - self.started_at
                    return self.ready_after
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.logs()[-3000:]}")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; return the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def service_process(
    name: str, *, rabbitmq_url: str, mongodb_url: str, prefix: str, log_dir: Path, **extra_env: str
) -> ServiceProcess:
    port = free_port()
    env = {
        **os.environ,
        "RABBITMQ_URL": rabbitmq_url,
        "MONGODB_URL": mongodb_url,
        "CRM_PREFIX": prefix,
        "HTTP_PORT": str(port),
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        **extra_env,
    }
    return ServiceProcess(name, port, env, log_dir / f"{name}.log")
