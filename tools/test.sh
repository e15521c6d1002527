#!/usr/bin/env bash
# The README's test command (CI runs it on a fresh clone: .ci/run). It sets up .venv, then checks what
# users run and read:
#   1. ruff, the Colab cells, and that every chapter's stored outputs are current (tools/outputs.py);
#   2. the real HTML book (bash tools/book.sh: every chapter, the API page, the bibliography; Sphinx
#      warnings are errors) and the PDF (bash tools/book.sh --pdf), then every page and the PDF's text
#      and LaTeX log as a reader gets them (tools/check_pages.py);
#   3. pytest: the library's tests (tests/) and every chapter re-executed by nbval (book/), in two
#      processes (`--dist loadfile` keeps a notebook's cells in one kernel).
# Extra arguments go to pytest and skip the book builds (e.g. tools/test.sh tests -k bracket);
# IBEA_SKIP_BOOK=1 skips them too. No test or cell has a time limit of its own (a busy machine must not
# fail a good submission); one generous limit on the whole pytest run ends a hung kernel
# (IBEA_TEST_TIMEOUT, default 70 min, well inside CI's 90).
# With CI=true the Debian packages of the browser test (chromium, chromium-driver) are installed; the PDF
# build installs TeX Live itself.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
start=$(date +%s)
if [ "${CI:-}" = true ]; then bash tools/setup_ci_packages.sh; fi
bash tools/setup_env.sh
bash tools/fetch_assets.sh
.venv/bin/ruff check .
.venv/bin/python tools/sync_notebooks.py --check
.venv/bin/python tools/outputs.py check
if [ "$#" = 0 ] && [ "${IBEA_SKIP_BOOK:-0}" != 1 ]; then
  bash tools/book.sh
  bash tools/book.sh --pdf
  .venv/bin/python tools/check_pages.py _build/html --pdf _build/pdf/ibea.pdf --latex-log _build/latex/ibea.log
  echo "[test] books built and checked in $(( $(date +%s) - start )) s"
fi
workers="${IBEA_TEST_WORKERS:-2}"
status=0
timeout --kill-after=60 "${IBEA_TEST_TIMEOUT:-70m}" \
  .venv/bin/python -m pytest -n "$workers" --dist loadfile --durations=12 "$@" || status=$?
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
  echo "[test] pytest ran past ${IBEA_TEST_TIMEOUT:-70m} (a hung kernel?) and was stopped"
fi
echo "[test] all done in $(( $(date +%s) - start )) s"
exit "$status"
