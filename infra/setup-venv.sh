#!/usr/bin/env bash
# Creates the project-local virtualenv (.venv) with the pinned emulator, with the template
# linters when called with --lint, with the API fuzzer when called with --fuzz, with the
# Python client generator when called with --client, and with the stream clients (httpx-sse,
# Playwright for Debian's Chromium) when called with --streams.
# Reinstalls only when a requirements file changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "setup-venv: creating $venv" >&2
  "$python" -m venv "$venv"
fi

install() {
  local req="$1" stamp="$venv/.installed-$(basename "$1")"
  if [ ! -f "$stamp" ] || ! cmp -s "$req" "$stamp"; then
    echo "setup-venv: installing $(basename "$req")" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
  fi
}

install "$root/infra/requirements.txt"
for option in "$@"; do
  case "$option" in
    --lint) install "$root/infra/requirements-lint.txt" ;;
    --fuzz) install "$root/infra/requirements-fuzz.txt" ;;
    --client) install "$root/infra/requirements-client.txt" ;;
    --streams) install "$root/infra/requirements-streams.txt" ;;
    *) echo "setup-venv: unknown option $option (--lint, --fuzz, --client, --streams)" >&2; exit 2 ;;
  esac
done
