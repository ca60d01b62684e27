#!/usr/bin/env bash
# Time to first token (Baton's overhead beyond the agent's own, p50 and p99, for a task and a
# conversation turn) and the rate of one stream, read through the streaming endpoint on the
# local stack. Built with optimisations: it measures time.
# Usage: infra/bench-stream.sh [--runs N]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
infra/setup-venv.sh
cargo build --quiet --release -p baton-bench --bin baton-stream-bench
exec "${CARGO_TARGET_DIR:-target}"/release/baton-stream-bench "$@"
