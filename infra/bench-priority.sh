#!/usr/bin/env bash
# The wait of a critical task submitted behind a backlog of normal tasks, on the local stack.
# Usage: infra/bench-priority.sh [--backlog N] [--agent-latency-ms MS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
infra/setup-venv.sh
cargo build --quiet -p baton-bench --bin baton-priority-bench
exec "${CARGO_TARGET_DIR:-target}"/debug/baton-priority-bench "$@"
