#!/usr/bin/env bash
# Build the HTML book: set up .venv, fetch the offline JavaScript, execute the chapters
# (cached in _build/.jupyter_cache) and build with Sphinx warnings treated as errors.
# Open _build/html/index.html afterwards.
#
# The build cannot lie: a chapter that failed to execute is not cached, so the next build reads
# every page again (it executes that chapter again and fails again until it runs), and the build
# fails whenever a chapter of the table of contents has no successful execution
# (tools/check_build.py; the failed chapter's page is removed, its error log shown).
#
#   bash tools/book.sh                 # the HTML book, _build/html/
#   bash tools/book.sh --pdf           # the PDF edition, _build/pdf/ibea.pdf (installs TeX Live)
#   bash tools/book.sh --toc T.yml ... # other arguments go to jupyter-book build
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
pdf=0; toc=_toc.yml; args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --pdf) pdf=1 ;;
    --toc) toc="$2"; args+=(--toc "$2"); shift ;;
    *) args+=("$1") ;;
  esac
  shift
done
bash tools/setup_env.sh
bash tools/fetch_assets.sh
py=.venv/bin/python
if [ "$pdf" = 1 ]; then
  exec bash tools/pdf.sh "${args[@]}"
fi
status=0
$py tools/check_build.py --before --toc "$toc" || status=$?
if [ "$status" = 3 ]; then args+=(--all); elif [ "$status" != 0 ]; then exit "$status"; fi
status=0
.venv/bin/jupyter-book build . -W -n --keep-going "${args[@]}" || status=$?
$py tools/check_build.py --after --toc "$toc" || status=1
if [ "$status" != 0 ]; then echo "[book] the build FAILED (see above)"; exit 1; fi
echo "[book] open $root/_build/html/index.html"
