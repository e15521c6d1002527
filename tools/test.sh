#!/usr/bin/env bash
# Run every test: the library's tests (tests/) and every chapter notebook (book/, with nbval),
# after setting up .venv. Extra arguments go to pytest (e.g. tools/test.sh tests -k bracket).
# Two worker processes; `--dist loadfile` keeps all cells of a notebook in one worker (a plain
# `-n 2` would split a notebook's cells across two kernels). The nbval options live in conftest.py.
# With CI=true, the Debian packages of the browser test (chromium, chromium-driver) are installed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ "${CI:-}" = true ]; then bash tools/setup_ci_packages.sh; fi
bash tools/setup_env.sh
bash tools/fetch_assets.sh
.venv/bin/ruff check .
.venv/bin/python tools/sync_notebooks.py --check
workers="${IBEA_TEST_WORKERS:-2}"
.venv/bin/python -m pytest -n "$workers" --dist loadfile --durations=12 "$@"
