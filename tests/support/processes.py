"""Run services as real processes (`python -m services.<name>`) for end-to-end tests and benchmarks."""

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared.topology import Topology
from tests.support.infra import Infrastructure
from tests.support.local_mongod import free_port

ROOT = Path(__file__).resolve().parents[2]
# Made once: a new client builds a TLS context by default, which cost the benchmark's poller a quarter of a core.
_TLS = ssl.create_default_context()


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

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples `name` (e.g. `rapport_messages_consumed_total`) whose labels include `labels`."""
        async with httpx.AsyncClient(timeout=5.0, verify=_TLS) as http:
            text = (await http.get(f"{self.url}/metrics")).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    async def consumed(self, event_type: str | None = None) -> float:
        """Events this process has taken since it started, applied or skipped as duplicates."""
        labels = {} if event_type is None else {"type": event_type}
        return await self.metric("rapport_messages_consumed_total", **labels)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the process has used so far, from /proc (Linux)."""
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def memory_mb(self) -> tuple[float, float]:
        """Resident memory now and at its peak (VmRSS, VmHWM), in MiB, from /proc (Linux)."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss, peak = (int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))
        return rss, peak


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of any process so far, from /proc/<pid>/stat (Linux)."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(after_name[11]) + int(after_name[12])) / os.sysconf("SC_CLK_TCK")


def service_process(
    name: str,
    *,
    rabbitmq_url: str,
    mongodb_url: str,
    prefix: str,
    log_dir: Path,
    replica: int = 1,
    **extra_env: str,
) -> ServiceProcess:
    """One process of a service; replicas 2, 3… of the same service share its queue and database."""
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
    log_name = name if replica == 1 else f"{name}-{replica}"
    return ServiceProcess(name, port, env, log_dir / f"{log_name}.log")


@dataclass
class ServiceStack:
    """Services of one CRM_PREFIX running as real processes, keyed `loyalty`, `loyalty-2` (a second replica), …"""

    topology: Topology
    processes: dict[str, ServiceProcess]

    def __getitem__(self, key: str) -> ServiceProcess:
        return self.processes[key]

    def __iter__(self) -> Iterator[ServiceProcess]:
        return iter(self.processes.values())

    @property
    def services(self) -> list[str]:
        """The services (not replicas) in the stack, for `remove_declared`."""
        return sorted({process.name for process in self})

    def stop(self, timeout: float = 30.0) -> dict[str, int | None]:
        """SIGTERM every process at once, wait for each to drain, kill what does not stop; exit codes by key."""
        for process in self:
            if process.process is not None and process.process.poll() is None:
                process.process.send_signal(signal.SIGTERM)  # once: a second SIGTERM would cut the drain short
        codes: dict[str, int | None] = {}
        for key, process in self.processes.items():
            try:
                codes[key] = process.process.wait(timeout=timeout) if process.process is not None else None
            except subprocess.TimeoutExpired:
                codes[key] = None
            finally:
                process.kill()  # only if SIGTERM did not stop it
        return codes


def start_stack(
    infra: Infrastructure,
    topology: Topology,
    services: Sequence[str],
    log_dir: Path,
    *,
    replicas: Mapping[str, int] | None = None,
    **env: str,
) -> ServiceStack:
    """Start the services (all at once, they take seconds each to import) and wait until every one is ready."""
    processes = {
        (name if replica == 1 else f"{name}-{replica}"): service_process(
            name,
            rabbitmq_url=infra.rabbitmq_url,
            mongodb_url=infra.mongodb_url,
            prefix=topology.prefix,
            log_dir=log_dir,
            replica=replica,
            **env,
        )
        for name in services
        for replica in range(1, (replicas or {}).get(name, 1) + 1)
    }
    stack = ServiceStack(topology, processes)
    for process in stack:
        process.start()
    try:
        for process in stack:
            process.wait_ready()
    except BaseException:
        stack.stop()
        raise
    return stack


def console_process(stack: ServiceStack, *, mongodb_url: str, log_dir: Path, **extra_env: str) -> ServiceProcess:
    """The console (`python -m services.console`) in front of a running stack, under the stack's prefix."""
    port = free_port()
    urls = {f"{name.upper()}_URL": stack[name].url for name in ("orders", "followups", "loyalty", "referrals")}
    env = {
        **os.environ,
        "MONGODB_URL": mongodb_url,
        "CRM_PREFIX": stack.topology.prefix,
        "HTTP_PORT": str(port),
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        **urls,
        **extra_env,
    }
    return ServiceProcess("console", port, env, log_dir / "console.log")
