#!/usr/bin/env bash
# The whole AWS bill per task (a diamond and a 20-task fan-out at 0.5, 4 and 32 KB outputs),
# the idle cost per month, Baton's time per DAG level, then the bill per conversation turn, on
# the local stack, with release builds (Lambda bills duration). docs/BENCHMARKS.md explains
# every figure.
# Usage: infra/bench.sh [baton-bench flags, e.g. --tasks 100 --shapes diamond --output-bytes 512]
# BENCH_TURNS=N sets the turns of the conversation bill (default 100; 0 leaves it out).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
infra/setup-venv.sh
cargo build --quiet --release -p baton-bench --bin baton-bench --bin baton-conversation-bench
bin="${CARGO_TARGET_DIR:-target}/release"
"$bin"/baton-bench "$@"
turns="${BENCH_TURNS:-100}"
if [ "$turns" -gt 0 ]; then
  echo
  "$bin"/baton-conversation-bench --turns "$turns" --sessions 10
fi
