#!/usr/bin/env bash
# Build the HTML book into _build/html/ (open _build/html/index.html afterwards).
#
#   bash tools/book.sh                 # from the outputs stored in the chapters: ~1 min once .venv exists
#   bash tools/book.sh --execute       # execute every chapter first (jupyter-cache; ~25 min on 2 cores)
#   bash tools/book.sh --pdf           # the PDF edition, _build/pdf/ibea.pdf (installs TeX Live once)
#   bash tools/book.sh --toc T.yml ... # other arguments go to jupyter-book build
#
# Sphinx warnings are errors (-W -n). The build cannot lie, in both modes:
# - stored outputs (default): tools/outputs.py check refuses to build while a chapter's stored outputs
#   are not those of one fresh run of its current code, of the current ibea_lib and of requirements.txt
#   (a stamp written by `tools/outputs.py execute`), or store an error;
# - --execute: a chapter that failed to execute is not cached, so the next build reads every page again
#   and fails again until it runs; the build fails whenever a chapter of the table of contents has no
#   successful execution (tools/check_build.py; the failed chapter's page is removed, its log shown).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
pdf=0; execute=0; toc=_toc.yml; args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --pdf) pdf=1 ;;
    --execute) execute=1 ;;
    --toc) toc="$2"; args+=(--toc "$2"); shift ;;
    *) args+=("$1") ;;
  esac
  shift
done
bash tools/setup_env.sh
bash tools/fetch_assets.sh
py=.venv/bin/python
if [ "$pdf" = 1 ]; then
  exec bash tools/pdf.sh --toc "$toc" "${args[@]}"
fi
start=$(date +%s)
if [ "$execute" = 0 ]; then
  $py tools/outputs.py check --toc "$toc"
  status=0
  .venv/bin/jupyter-book build . -W -n --keep-going "${args[@]}" || status=$?
  if [ "$status" != 0 ]; then echo "[book] the build FAILED (see above)"; exit 1; fi
else
  # The same configuration with execute_notebooks: cache (a file beside _config.yml, so that relative
  # paths in it still resolve).
  sed -e 's/^\(  execute_notebooks:\) .*/\1 cache/' _config.yml > .execute_config.yml
  trap 'rm -f .execute_config.yml' EXIT
  status=0
  $py tools/check_build.py --before --toc "$toc" || status=$?
  if [ "$status" = 3 ]; then args+=(--all); elif [ "$status" != 0 ]; then exit "$status"; fi
  status=0
  .venv/bin/jupyter-book build . --config .execute_config.yml -W -n --keep-going "${args[@]}" || status=$?
  $py tools/check_build.py --after --toc "$toc" || status=1
  if [ "$status" != 0 ]; then echo "[book] the build FAILED (see above)"; exit 1; fi
fi
echo "[book] built in $(( $(date +%s) - start )) s; open $root/_build/html/index.html"
