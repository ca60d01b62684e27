# Sourced, not run: starts the local stack for a script that tests against it, and stops it
# when that script exits. The stack gets its own moto server (AWS_ENDPOINT_URL unset), its own
# resource names, header auth and the example agents, on a free port.
#   stack_start NAME   builds baton-local, starts the stack, waits for /health; sets $api,
#                      $stack_pid and $work (a scratch directory, removed on exit)
#   stack_log          the last lines of the stack's log, on stderr
# Needs $root (the repository) and .venv (infra/setup-venv.sh).

work="$(mktemp -d)"
stack_pid=""
api=""

stack_stop() {
  if [ -n "$stack_pid" ] && kill -0 "$stack_pid" 2>/dev/null; then
    kill -TERM "$stack_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$stack_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$stack_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap stack_stop EXIT
trap 'exit 130' INT TERM

stack_log() {
  echo "$1: the last lines of the stack's log:" >&2
  tail -n "${2:-20}" "$work/stack.log" >&2
}

stack_start() {
  local name="$1" port
  # With the features `cargo test --workspace` builds the workspace with (its tests generate
  # the document), so that after infra/test.sh's tests only the binary is linked.
  cargo build --quiet -p baton-local --features baton-orchestrate/openapi
  port="$("$root/.venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  env -u AWS_ENDPOINT_URL RUST_LOG="${RUST_LOG:-warn}" \
    "${CARGO_TARGET_DIR:-$root/target}"/debug/baton-local run --port "$port" --prefix "$name-$$" \
    >"$work/stack.log" 2>&1 &
  stack_pid=$!
  api="http://127.0.0.1:$port"
  for _ in $(seq 240); do
    if curl -fsS -o /dev/null "$api/health" 2>/dev/null; then return 0; fi
    if ! kill -0 "$stack_pid" 2>/dev/null; then
      echo "$name: the local stack stopped before it was ready:" >&2
      tail -n 30 "$work/stack.log" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "$name: no /health at $api after 120 s" >&2
  exit 1
}
