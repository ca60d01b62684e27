#!/usr/bin/env bash
# Reads Baton's streams with real third-party clients against the local stack
# (infra/streams_flow.py): httpx-sse drops a task's stream and a conversation turn's stream
# mid-way and resumes them with Last-Event-ID (each event once, in order, the chunks adding up
# to the recorded output, 204 after the end); then Debian's headless Chromium, driven by
# Playwright, opens infra/streams_page.html from its own origin, which reads a turn's stream
# with EventSource and renders it, and its screenshot is saved under target/streams-flow/.
# Installs Chromium with apt when /usr/bin/chromium is missing (CI's fresh machine).
# Exits non-zero on any failure. Stops what it started (infra/stack.sh).
# Usage: infra/streams-flow.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
infra/setup-venv.sh --streams
# shellcheck source=infra/stack.sh
. infra/stack.sh

if [ ! -x /usr/bin/chromium ]; then
  # A fresh machine's package lists may be missing or stale: update them first.
  if ! { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
      --no-install-recommends chromium; } >"$work/apt.log" 2>&1; then
    cat "$work/apt.log" >&2
    echo "streams-flow: could not install Debian's chromium (apt-get install chromium)" >&2
    exit 1
  fi
fi

stack_start streams-flow
shot="${CARGO_TARGET_DIR:-$root/target}/streams-flow/turn.png"
echo "streams-flow: stack up at $api; httpx-sse and headless Chromium read its streams"
# Playwright drives Debian's Chromium; it must never fetch a browser of its own.
if ! PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 .venv/bin/python infra/streams_flow.py "$api" "$shot"; then
  stack_log streams-flow
  exit 1
fi
