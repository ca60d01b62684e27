#!/usr/bin/env bash
# The test command: sets up the emulator's virtualenv if needed, then runs every test of the
# workspace - unit tests, adapter tests against moto, and end-to-end tests on the local stack.
# Each test binary starts its own moto server; nothing needs to be running beforehand.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
command -v cargo >/dev/null || { echo "test: cargo is required (https://rustup.rs)" >&2; exit 1; }
infra/setup-venv.sh
cargo test --workspace "$@"
