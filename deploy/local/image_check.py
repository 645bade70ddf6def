"""`make image-check`: build every service's image from deploy/Dockerfile and run each from its image.

No Docker daemon needed: buildah builds with chroot isolation (`apt-get install buildah debootstrap`), and a
service runs from its image with `buildah run` on the host network, as user 10001, against a real RabbitMQ
and a real MongoDB (the local ones, as for `make test`), until its /readyz answers ok and
`python -m shared.healthcheck` exits 0 inside the image.

Docker Hub may be out of reach (it is on the CI machine), so the base image can be a stand-in: Debian
bookworm from debootstrap with python3, tagged `localhost/python:3.11-slim-bookworm` and passed as
PYTHON_IMAGE. The official python image keeps Python in /usr/local/bin, Debian's in /usr/bin: the stand-in
gets a /usr/local/bin/python link, and the Dockerfile calls plain `python`, so it builds from both.

    python deploy/local/image_check.py [--base IMAGE] [SERVICE ...]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the local mongod helper lives with the tests, not in the image

from tests.support.local_mongod import free_port, start_mongod  # noqa: E402

SERVICES = ("orders", "followups", "loyalty", "referrals")
STAND_IN = "localhost/python:3.11-slim-bookworm"
# pip inside the build uses this machine's CA bundle and pip settings (an index mirror, constraints).
HOST_FILES = ("/etc/ssl/certs", "/etc/pip.conf", "/etc/xdg/pip")


def run(*command: str, **options: object) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, check=True, text=True, **options)  # type: ignore[call-overload, no-any-return]


def ensure_tools() -> None:
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"needs {' '.join(missing)}: sudo apt-get install -y buildah debootstrap")
    run("apt-get", "update", "-qq")
    run(
        "apt-get",
        "install",
        "-y",
        "-qq",
        "buildah",
        "debootstrap",
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def image_exists(name: str) -> bool:
    return (
        subprocess.run(["buildah", "inspect", "--type", "image", name], capture_output=True, check=False).returncode
        == 0
    )


def ensure_stand_in_base() -> str:
    """Debian bookworm with python3 as `localhost/python:3.11-slim-bookworm`, made once (the root kept in .data)."""
    if image_exists(STAND_IN):
        return STAND_IN
    archive = ROOT / ".data" / "image-check" / "bookworm-python3.tar"
    if not archive.exists():
        archive.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bookworm-") as folder:
            root = Path(folder) / "root"
            run(
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(root),
                "http://deb.debian.org/debian",
            )
            (root / "usr/local/bin").mkdir(parents=True, exist_ok=True)
            (root / "usr/local/bin/python").symlink_to("/usr/bin/python3")
            run("tar", "-C", str(root), "-cf", str(archive), ".")
    # buildah 1.28 has no `import`: an empty image, the root added (a tar is unpacked), committed.
    container = run("buildah", "from", "scratch", capture_output=True).stdout.strip()
    run("buildah", "add", container, str(archive), "/")
    run("buildah", "config", "--env", "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", container)
    run("buildah", "commit", "--rm", container, STAND_IN)
    return STAND_IN


def build(service: str, base: str) -> str:
    image = f"localhost/rapport-{service}:check"
    volumes = [f"--volume={path}:{path}:ro" for path in HOST_FILES if Path(path).exists()]
    run(
        "buildah",
        "bud",
        "--isolation",
        "chroot",
        "--format",
        "docker",  # keeps HEALTHCHECK
        "--layers",
        *volumes,
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "--file",
        "deploy/Dockerfile",
        "--target",
        service,
        "--tag",
        image,
        ".",
        cwd=ROOT,
    )
    return image


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def check(service: str, image: str, mongodb_url: str, rabbitmq_url: str) -> None:
    """Run the service from its image as user 10001 until /readyz says ok and the image's health check passes."""
    container = run("buildah", "from", image, capture_output=True).stdout.strip()
    port = free_port()
    env = {
        "RABBITMQ_URL": rabbitmq_url,
        "MONGODB_URL": mongodb_url,
        "CRM_PREFIX": f"imgcheck{uuid.uuid4().hex[:8]}",
        "HTTP_PORT": str(port),
        "HTTP_HOST": "127.0.0.1",
        "ADMIN_API_KEY": uuid.uuid4().hex,
        "FEEDBACK_TOKEN_SECRET": uuid.uuid4().hex,
        "SMTP_URL": "smtp://127.0.0.1:1",
    }
    flags = [f"--env={name}={value}" for name, value in env.items()]
    user = ["--isolation", "chroot", "--user", "10001:10001", "--network", "host"]
    print(f"+ buildah run {service} (user 10001, port {port})", flush=True)
    process = subprocess.Popen(
        ["buildah", "run", *user, *flags, container, "--", "python", "-m", f"services.{service}"]
    )
    try:
        deadline = time.monotonic() + 120
        while not ready(port):
            if process.poll() is not None:
                sys.exit(f"{service}: the process ended with {process.returncode} before it was ready")
            if time.monotonic() > deadline:
                sys.exit(f"{service}: /readyz did not answer 200 within 120 s")
            time.sleep(0.5)
        print(f"{service}: /readyz ok", flush=True)
        run("buildah", "run", *user, *flags, container, "--", "python", "-m", "shared.healthcheck")
        print(f"{service}: python -m shared.healthcheck exited 0", flush=True)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="the Python base image (default: the official one if present, else a stand-in)")
    parser.add_argument("services", nargs="*", default=list(SERVICES))
    args = parser.parse_args()
    ensure_tools()
    base = args.base or ("python:3.11-slim-bookworm" if image_exists("python:3.11-slim-bookworm") else None)
    base = base or ensure_stand_in_base()
    rabbitmq_url = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="image-check-mongod-") as dbpath:
        mongod = None if "MONGODB_URL" in os.environ else start_mongod(Path(dbpath), free_port())
        mongodb_url = os.environ["MONGODB_URL"] if mongod is None else mongod.url
        try:
            for service in args.services:
                check(service, build(service, base), mongodb_url, rabbitmq_url)
        finally:
            if mongod is not None:
                mongod.stop()
    print(f"image check passed for {', '.join(args.services)} in {time.monotonic() - started:.0f} s (base {base})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
