#!/usr/bin/env bash
# Render some chapters with the book's Sphinx settings and print every warning.
# Uses the notebooks' stored outputs (no execution), a table of contents with only
# the given pages, and a temporary output folder. Usage:
#   bash tools/check_page.sh book/05_multitask_networks.ipynb [more pages]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
py="${PYTHON:-python}"
[ -x "$root/.venv/bin/python" ] && py="$root/.venv/bin/python"
[ -x /work/venv/bin/python ] && [ ! -x "$root/.venv/bin/python" ] && py=/work/venv/bin/python
tmp="$(mktemp -d)"
{
  echo "format: jb-book"
  echo "root: book/index"
  echo "chapters:"
  for page in "$@"; do
    p="${page%.ipynb}"; p="${p%.md}"
    case "$p" in book/index|book/bibliography) ;; *) echo "  - file: $p" ;; esac
  done
  echo "  - file: book/bibliography"
} > "$tmp/_toc.yml"
sed -e 's/execute_notebooks: cache/execute_notebooks: "off"/' _config.yml > "$tmp/_config.yml"
status=0
"$(dirname "$py")/jupyter-book" build . --toc "$tmp/_toc.yml" --config "$tmp/_config.yml" \
  --path-output "$tmp/out" --keep-going -n > "$tmp/log.txt" 2>&1 || status=$?
if [ "$status" != 0 ]; then tail -30 "$tmp/log.txt"; echo "BUILD FAILED (log: $tmp/log.txt)"; exit 1; fi
grep -E "WARNING|ERROR|CRITICAL" "$tmp/log.txt" || echo "no warnings"
echo "HTML pages: $tmp/out/_build/html/book/"
