#!/usr/bin/env bash
# Runs the deployment tests (manifests, Helm chart, Dockerfile, systemd unit) with their
# pinned Python packages in a venv under target/ (created, or refreshed when
# requirements.txt or the Python version changes; otherwise reused as is).
#   tests/deploy/run.sh [PYTEST_ARGS...]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
venv="$root/target/deploy-venv"
requirements="$root/tests/deploy/requirements.txt"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null; then
  echo "tests/deploy: $python not found: install Python 3.11 or newer (apt-get install python3 python3-venv)" >&2
  exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "tests/deploy: $python is $("$python" --version 2>&1); the tests need Python 3.11 or newer (tomllib)" >&2
  exit 1
fi
stamp_want="$("$python" -c 'import sys; print(sys.version)' | head -n1) $(sha256sum "$requirements" | cut -d' ' -f1)"
stamp="$venv/.requirements-stamp"
if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$stamp_want" ]]; then
  echo "tests/deploy: installing the pinned test packages into $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
  echo "$stamp_want" > "$stamp"
else
  echo "tests/deploy: $venv is up to date: nothing to install" >&2
fi

exec "$venv/bin/python" -m pytest "$root/tests/deploy" -q -p no:cacheprovider "$@"
