#!/usr/bin/env bash
# Make sure Debian's chromium is at /usr/bin/chromium for the browser tests (Playwright cannot download
# its own browser here). Installs it with apt-get when missing; fails loudly when it cannot.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
  exit 0
fi

fail() {
  echo "ERROR: $CHROMIUM is missing and could not be installed: $1" >&2
  echo "       The browser tests need it. Install it yourself with" >&2
  echo "         sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium" >&2
  echo "       then run the tests again." >&2
  exit 1
}

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && [ -t 0 ]; then
  as_root=(sudo)          # a person at a terminal can type the password
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  fail "this needs root, and sudo is not available here without a password"
fi
command -v apt-get >/dev/null 2>&1 || fail "apt-get not found (this setup expects Debian or Ubuntu)"

echo ">> installing Debian's chromium for the browser tests (about 20 s)"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq || fail "apt-get update failed"
"${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null || fail "apt-get install chromium failed"
[ -x "$CHROMIUM" ] || fail "the chromium package installed no $CHROMIUM"
echo ">> $("$CHROMIUM" --version 2>/dev/null || echo chromium) installed"
