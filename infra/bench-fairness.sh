#!/usr/bin/env bash
# One tenant's queue wait behind another tenant's backlog, without and with the backlog's pace,
# on the local stack.
# Usage: infra/bench-fairness.sh [--backlog N] [--b-workflows N] [--agent-latency-ms MS]
#        [--pace N] [--burst N] [--phase both|before|after] [--timeout-s S] [--no-sweep]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
infra/setup-venv.sh
cargo build --quiet -p baton-bench --bin baton-fairness-bench
exec "${CARGO_TARGET_DIR:-target}"/debug/baton-fairness-bench "$@"
