#!/usr/bin/env bash
# The orchestration overhead of a conversation turn (p50, p99) and its AWS calls, on the local
# stack with the example conversational agents. Built with optimisations: it measures time.
# Usage: infra/bench-conversation.sh [--turns N] [--sessions N]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
infra/setup-venv.sh
cargo build --quiet --release -p baton-bench --bin baton-conversation-bench
exec "${CARGO_TARGET_DIR:-target}"/release/baton-conversation-bench "$@"
