#!/usr/bin/env bash
# The one command for the local stack: sets up the emulator's virtualenv if needed, builds, and
# runs the five handlers, the emulator and the example agents in one process.
# Usage: infra/run-local.sh [--port N]   (or PORT=N; default 3000)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
command -v cargo >/dev/null || { echo "run-local: cargo is required (https://rustup.rs)" >&2; exit 1; }
infra/setup-venv.sh
cargo build --quiet -p baton-local
exec "${CARGO_TARGET_DIR:-target}"/debug/baton-local run "$@"
