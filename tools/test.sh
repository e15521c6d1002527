#!/usr/bin/env bash
# Run every test: the library's tests (tests/) and every chapter notebook (book/, with nbval),
# after setting up .venv. Extra arguments go to pytest (e.g. tools/test.sh tests -k bracket).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash tools/setup_env.sh
.venv/bin/ruff check .
.venv/bin/python tools/sync_notebooks.py --check
.venv/bin/python -m pytest "$@"
