#!/usr/bin/env bash
# The browser tests (tests/browser/) drive Debian's Chromium at /usr/bin/chromium through
# Playwright; we never `playwright install` a browser of our own. `make test` runs this first:
# as root (a fresh CI machine) it installs the `chromium` package when it is missing; otherwise it
# says what to do, and the browser tests skip with the same advice.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "ensure-chromium: /usr/bin/chromium is missing, so tests/browser will be skipped." >&2
    echo "ensure-chromium: install it with \`sudo apt-get install chromium\` (Debian/Ubuntu)." >&2
    exit 0
fi
echo "ensure-chromium: installing Debian's chromium package for the browser tests" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
test -x /usr/bin/chromium
