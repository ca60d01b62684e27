#!/usr/bin/env bash
# Shows how the default `learned` routing strategy behaves end to end on the local stack, with
# real HTTP agents: convergence on the best agent, regret against round robin, re-convergence
# after the best agent degrades, and the share to the fastest agent at equal success.
# Prints figures; asserts nothing.
# Usage: infra/bench-routing.sh [--tasks N] [--in-flight N] [--seed N] [--poll-ms N]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
infra/setup-venv.sh
cargo build --quiet -p baton-bench --bin baton-routing-bench
exec "${CARGO_TARGET_DIR:-target}"/debug/baton-routing-bench "$@"
