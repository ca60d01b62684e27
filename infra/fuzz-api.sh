#!/usr/bin/env bash
# Fuzzes the HTTP API with schemathesis against its own OpenAPI document: starts the local stack
# (its own moto server, header auth, the example agents) on a free port, waits for /health, then
# lets schemathesis generate requests for every documented operation, valid and invalid, and
# check each answer: no 5xx, a documented status, content type and headers, a body that matches
# the documented schema, and a 4xx for a missing required header. Exits non-zero on any
# failure. Stops what it started.
# Usage: infra/fuzz-api.sh   (FUZZ_EXAMPLES=N test cases per operation and phase, default 40;
#                             FUZZ_SEED=N to reproduce a run, default 1)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
infra/setup-venv.sh --fuzz
# With the features `cargo test --workspace` builds the workspace with (its tests generate the
# document), so that after infra/test.sh's tests only the binary is linked.
cargo build --quiet -p baton-local --features baton-orchestrate/openapi

work="$(mktemp -d)"
stack_pid=""
stop() {
  if [ -n "$stack_pid" ] && kill -0 "$stack_pid" 2>/dev/null; then
    kill -TERM "$stack_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$stack_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$stack_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap stop EXIT
trap 'exit 130' INT TERM

port="$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# Its own emulator (AWS_ENDPOINT_URL unset) and its own resource names.
env -u AWS_ENDPOINT_URL RUST_LOG="${RUST_LOG:-warn}" \
  "${CARGO_TARGET_DIR:-target}"/debug/baton-local run --port "$port" --prefix "fuzz-$$" \
  >"$work/stack.log" 2>&1 &
stack_pid=$!
api="http://127.0.0.1:$port"
for _ in $(seq 240); do
  if curl -fsS -o /dev/null "$api/health" 2>/dev/null; then break; fi
  if ! kill -0 "$stack_pid" 2>/dev/null; then
    echo "fuzz-api: the local stack stopped before it was ready:" >&2
    tail -n 30 "$work/stack.log" >&2
    exit 1
  fi
  sleep 0.5
done
curl -fsS -o /dev/null "$api/health" || { echo "fuzz-api: no /health at $api after 120 s" >&2; exit 1; }
echo "fuzz-api: stack up at $api; schemathesis against $api/openapi.json"

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
checks+=,response_headers_conformance,missing_required_header,unsupported_method
status=0
# One worker: CPython 3.11's parser can fail under schemathesis's threads ("AST constructor
# recursion depth mismatch"). Run from the scratch directory: schemathesis keeps a cache there.
# The stack runs in header mode, which refuses a request without a tenant: every request is
# tenant `fuzz`'s (its secrets live in the stack's own moto, gone when the run ends).
(cd "$work" && "$root/.venv/bin/schemathesis" run "$api/openapi.json" \
  --header "X-Tenant-Id: fuzz" \
  --checks "$checks" \
  --max-examples "${FUZZ_EXAMPLES:-40}" \
  --seed "${FUZZ_SEED:-1}" \
  --workers 1 \
  --request-timeout 40 \
  --generation-database none \
  --no-color \
  --report json,har \
  --report-json-path "$work/report.json" \
  --report-har-path "$work/requests.har") \
  || status=$?

# The counts: every request in the HAR log; every failure (and schemathesis error) in the report.
read -r requests failures < <(.venv/bin/python - "$work/requests.har" "$work/report.json" <<'EOF'
import json, sys
try:
    requests = len(json.load(open(sys.argv[1]))["log"]["entries"])
except (OSError, ValueError, KeyError):
    requests = 0
try:
    report = json.load(open(sys.argv[2]))
    failures = sum(f.get("count", 1) for f in report["failures"]) + len(report["errors"])
except (OSError, ValueError, KeyError, TypeError):
    failures = -1
print(requests, failures)
EOF
)
if [ "$status" -ne 0 ]; then
  echo "fuzz-api: the last lines of the stack's log:" >&2
  tail -n 20 "$work/stack.log" >&2
fi
if [ "$status" -eq 0 ] && [ "$requests" -lt 1000 ]; then
  echo "fuzz-api: only $requests requests were made; at least 1000 were expected" >&2
  status=1
fi
echo "schemathesis: $requests requests, $failures failures"
exit "$status"
