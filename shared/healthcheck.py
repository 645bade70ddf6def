"""`python -m shared.healthcheck [path]`: the images' HEALTHCHECK.

Exits 0 when the service in this container answers `path` (default `/readyz`:
broker and database reachable) with 200, and 1 otherwise. It reads `HTTP_PORT`
the way the service does and imports nothing but the standard library, so a
check every few seconds costs a few milliseconds (slim images have no curl).
"""

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 4.0


def check(port: int, path: str = "/readyz") -> tuple[bool, str]:
    """Whether the service on `port` answers `path` with 200, and what it said."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return response.status == 200, f"{response.status} {response.read(200).decode(errors='replace')}"
    except urllib.error.HTTPError as error:
        return False, f"{error.code} {error.read(200).decode(errors='replace')}"
    except (urllib.error.URLError, OSError) as error:
        return False, f"{url}: {error}"


def main(argv: list[str]) -> int:
    port = int(os.environ.get("HTTP_PORT", "8000"))
    healthy, said = check(port, argv[0] if argv else "/readyz")
    print(said)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
