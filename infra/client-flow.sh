#!/usr/bin/env bash
# Generates a Python client from docs/openapi.json with openapi-python-client and runs a short
# flow through it against the local stack (infra/client_flow.py): register an agent, submit a
# workflow, wait for it to finish, list workflows, read the history. Every answer is parsed
# by the generated models, and an undocumented status raises. Exits non-zero on any failure,
# a generator warning included. Stops what it started (infra/stack.sh).
# Usage: infra/client-flow.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
infra/setup-venv.sh --client
# shellcheck source=infra/stack.sh
. infra/stack.sh

# The generator first: a document it cannot read fully fails before the stack starts.
mkdir -p "$work/client"
if ! .venv/bin/openapi-python-client generate --path docs/openapi.json --meta none \
  --output-path "$work/client/baton_client" >"$work/generate.log" 2>&1; then
  cat "$work/generate.log" >&2
  echo "client-flow: openapi-python-client failed on docs/openapi.json" >&2
  exit 1
fi
if grep -q "WARNING" "$work/generate.log"; then
  cat "$work/generate.log" >&2
  echo "client-flow: openapi-python-client left parts of docs/openapi.json out" >&2
  exit 1
fi

stack_start client-flow
echo "client-flow: stack up at $api; the generated client's flow"
if ! PYTHONPATH="$work/client" .venv/bin/python infra/client_flow.py "$api"; then
  stack_log client-flow
  exit 1
fi
