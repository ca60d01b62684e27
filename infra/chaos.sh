#!/usr/bin/env bash
# The chaos benchmark: workflows through the local stack under injected faults, with the
# handler process killed (SIGKILL) and restarted mid-run; prints what was lost, stuck or
# duplicated, and the times to a final state. Usage: infra/chaos.sh [--workflows N] (--help)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
infra/setup-venv.sh
cargo build --quiet -p baton-local -p baton-bench --bin baton-local --bin baton-chaos
exec "${CARGO_TARGET_DIR:-target}"/debug/baton-chaos "$@"
