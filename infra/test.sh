#!/usr/bin/env bash
# The test command: sets up the emulator's virtualenv if needed, then runs every test of the
# workspace - unit tests, adapter tests against moto, and end-to-end tests on the local stack.
# Each test binary starts its own moto server; nothing needs to be running beforehand.
# Then it fuzzes the HTTP API against its OpenAPI document (infra/fuzz-api.sh), and runs a
# flow through a Python client generated from that document (infra/client-flow.sh).
# Then third-party clients read the streams (infra/streams-flow.sh): httpx-sse drops and resumes
# them with Last-Event-ID, and headless Chromium renders a turn's stream from a page (EventSource).
# Extra arguments go to `cargo test`, and run those tests alone, without the fuzzing or the flow.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
command -v cargo >/dev/null || { echo "test: cargo is required (https://rustup.rs)" >&2; exit 1; }
infra/setup-venv.sh
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
if [ "$#" -eq 0 ]; then
  fuzz_status=0
  infra/fuzz-api.sh || fuzz_status=$?
  if [ "$status" -eq 0 ]; then status=$fuzz_status; fi
  client_status=0
  infra/client-flow.sh || client_status=$?
  if [ "$status" -eq 0 ]; then status=$client_status; fi
  streams_status=0
  infra/streams-flow.sh || streams_status=$?
  if [ "$status" -eq 0 ]; then status=$streams_status; fi
fi
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
