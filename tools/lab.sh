#!/usr/bin/env bash
# Read the chapters in JupyterLab: set up .venv, trust the chapters (so that their stored widgets,
# saved when they were executed, are shown before you run anything) and start JupyterLab on book/.
# MyST (theorems, exercises, solutions, citations) renders through jupyterlab-myst.
# Extra arguments go to jupyter lab, e.g. bash tools/lab.sh --ip 127.0.0.1 --allow-root
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash tools/setup_env.sh
.venv/bin/jupyter trust book/*.ipynb >/dev/null
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec .venv/bin/jupyter lab book/ "$@"
