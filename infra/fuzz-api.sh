#!/usr/bin/env bash
# Fuzzes the HTTP API with schemathesis against its own OpenAPI document: starts the local stack
# (its own moto server, header auth, the example agents) on a free port, waits for /health, then
# lets schemathesis generate requests for every documented operation, valid and invalid, and
# check each answer: no 5xx, a documented status, content type and headers, a body that matches
# the documented schema, a 4xx for a missing required header, and no 400 for a request the
# document calls valid (infra/schemathesis.toml names where other data decides). Exits
# non-zero on any failure. Stops what it started (infra/stack.sh).
# Usage: infra/fuzz-api.sh   (FUZZ_EXAMPLES=N test cases per operation and phase, default 40;
#                             FUZZ_SEED=N to reproduce a run, default 1)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
infra/setup-venv.sh --fuzz
# shellcheck source=infra/stack.sh
. infra/stack.sh
stack_start fuzz
echo "fuzz-api: stack up at $api; schemathesis against $api/openapi.json"

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
checks+=,response_headers_conformance,missing_required_header,unsupported_method
checks+=,positive_data_acceptance
status=0
# One worker: CPython 3.11's parser can fail under schemathesis's threads ("AST constructor
# recursion depth mismatch"). Run from the scratch directory: schemathesis keeps a cache there.
# The stack runs in header mode, which refuses a request without a tenant: every request is
# tenant `fuzz`'s (its secrets live in the stack's own moto, gone when the run ends).
(cd "$work" && "$root/.venv/bin/schemathesis" --config-file "$root/infra/schemathesis.toml" \
  run "$api/openapi.json" \
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
if [ "$status" -ne 0 ]; then stack_log fuzz-api; fi
if [ "$status" -eq 0 ] && [ "$requests" -lt 1000 ]; then
  echo "fuzz-api: only $requests requests were made; at least 1000 were expected" >&2
  status=1
fi
echo "schemathesis: $requests requests, $failures failures"
exit "$status"
