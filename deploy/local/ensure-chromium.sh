#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the browser tests (Playwright drives it; `playwright install`
# cannot download browsers on these machines). Nothing to do when CHROMIUM_PATH points at a browser.
set -euo pipefail

browser="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ -x "$browser" ]; then exit 0; fi

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1
  fi
}

echo "Chromium is not installed; installing Debian's chromium with apt-get" >&2
if ! (as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium); then
  echo "Could not install Chromium. Run:  sudo apt-get install -y chromium" >&2
  echo "or set CHROMIUM_PATH to a Chromium or Chrome you have." >&2
  exit 1
fi
