#!/usr/bin/env bash
# Create .venv with a Python 3.11+ and install Rapport with its pinned dependencies.
set -euo pipefail
cd "$(dirname "$0")/../.."

python=""
for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null \
     && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python="$candidate"; break
  fi
done
if [ -z "$python" ]; then
  echo "Rapport needs Python 3.11 or newer: sudo apt-get install -y python3 python3-venv" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    version=$("$python" -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')
    echo "python venv is missing; installing python${version}-venv with apt-get" >&2
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "python${version}-venv"
    elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq "python${version}-venv"
    else echo "Run: sudo apt-get install -y python${version}-venv" >&2; exit 1
    fi
    "$python" -m venv .venv
  fi
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
