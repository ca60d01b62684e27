#!/usr/bin/env bash
# Counts the AWS API calls per task for the diamond workflow on the local stack and prices
# them. Usage: infra/bench.sh [--workflows N]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
infra/setup-venv.sh
cargo build --quiet -p baton-bench --bin baton-bench
exec "${CARGO_TARGET_DIR:-target}"/debug/baton-bench "$@"
