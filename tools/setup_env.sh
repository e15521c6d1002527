#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv and install the pinned book
# environment (requirements.txt) plus ibea_lib itself (editable). Idempotent and quiet: it
# reinstalls only when requirements.txt or pyproject.toml changed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=.venv/.ibea-installed
want="$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing requirements.txt and ibea_lib into .venv (a few minutes the first time)"
  quiet_pip() {  # pip's own noise about unused local indexes is dropped; errors still show
    .venv/bin/python -m pip install --quiet "$@" 2>&1 | { grep -v "^WARNING: Location '" || true; }
  }
  quiet_pip --upgrade pip
  quiet_pip -r requirements.txt
  quiet_pip --no-deps -e .
  echo "$want" > "$stamp"
fi
