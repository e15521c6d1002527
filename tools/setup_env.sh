#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv and install the pinned book
# environment (requirements.txt) plus ibea_lib itself (editable). Idempotent and quiet: it
# reinstalls only when requirements.txt or pyproject.toml changed.
# Python: the pinned book environment needs Python 3.11-3.13 (tested: 3.11); the library alone
# (pip install .) needs >= 3.10. Choose the interpreter with PYTHON=python3.12 bash tools/setup_env.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  command -v "$python" >/dev/null || { echo "[setup] $python not found: install Python 3.11 (e.g. apt-get install python3 python3-venv) or set PYTHON=/path/to/python3.11"; exit 1; }
  version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  case "$version" in
    3.11|3.12|3.13) ;;
    *) echo "[setup] $python is Python $version; the book's pinned environment needs Python 3.11, 3.12 or 3.13"
       echo "        (tested with 3.11). Install one (e.g. apt-get install python3.11-venv, or pyenv/uv) and run"
       echo "        PYTHON=python3.11 bash tools/$(basename "$0")"
       exit 1 ;;
  esac
  "$python" -c 'import venv, ensurepip' 2>/dev/null || { echo "[setup] $python has no venv/ensurepip: apt-get install python3-venv"; exit 1; }
  echo "[setup] creating .venv with Python $version"
  "$python" -m venv .venv
fi
stamp=.venv/.ibea-installed
want="$(cat requirements.txt pyproject.toml tools/jupyterlab-overrides.json | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing requirements.txt and ibea_lib into .venv (a few minutes the first time)"
  quiet_pip() {  # pip's own noise about unused local indexes is dropped; errors still show
    .venv/bin/python -m pip install --quiet "$@" 2>&1 | { grep -v "^WARNING: Location '" || true; }
  }
  quiet_pip --upgrade pip
  quiet_pip -r requirements.txt
  quiet_pip --no-deps -e .
  # JupyterLab settings of the book environment (no news pop-up); see tools/lab.sh
  mkdir -p .venv/share/jupyter/lab/settings
  cp tools/jupyterlab-overrides.json .venv/share/jupyter/lab/settings/overrides.json
  echo "$want" > "$stamp"
fi
