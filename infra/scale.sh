#!/usr/bin/env bash
# The scale runs that take minutes on moto, kept out of the test command: the widest fan-out
# and fan-in a workflow may have (500 tasks), and a thousand pauses and resumes of one
# workflow. The test command runs the same tests at a fifth of the size.
# Usage: infra/scale.sh [extra cargo test arguments]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
infra/setup-venv.sh
exec cargo test -p baton-tests --test scale --test limits "$@" -- --ignored --nocapture
