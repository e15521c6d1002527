#!/usr/bin/env bash
# Build the HTML book: set up .venv, fetch the offline JavaScript, execute the chapters
# (cached in _build/.jupyter_cache) and build with Sphinx warnings treated as errors.
# Open _build/html/index.html afterwards.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash tools/setup_env.sh
bash tools/fetch_assets.sh
.venv/bin/jupyter-book build . -W -n --keep-going "$@"
echo "[book] open $root/_build/html/index.html"
