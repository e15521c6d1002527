#!/usr/bin/env bash
# The PDF edition: bash tools/book.sh --pdf (which sets up .venv and calls this script).
# Sphinx's LaTeX builder through Jupyter Book (--builder pdflatex, engine XeLaTeX: see latex: in
# _config.yml) turns every chapter (with the outputs of the same jupyter-cache as the HTML build),
# math, figures, theorem and exercise boxes and the bibliography into _build/pdf/ibea.pdf, and
# copies it beside the HTML book (_build/html/ibea.pdf, linked from the book's first page).
# Debian's TeX Live is installed if missing (as root or with sudo; about 1 GB, once).
# Like the HTML build, it uses the outputs stored in the chapters (refused while they are stale:
# tools/outputs.py check) and fails on any undefined reference ("??" in the PDF). Each run starts
# from an empty _build/latex, so a failed run never blocks the next one.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
tex_packages=(texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended texlive-xetex
              texlive-science latexmk lmodern fonts-freefont-otf fonts-dejavu-core xindy poppler-utils)
if ! command -v xelatex >/dev/null || ! command -v latexmk >/dev/null || ! command -v pdftotext >/dev/null \
   || ! command -v xindy >/dev/null || [ -z "$(fc-list "DejaVu Sans Mono" 2>/dev/null)" ] \
   || ! kpsewhich amsthm.sty fncychap.sty tabulary.sty needspace.sty >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "[pdf] installing TeX Live from Debian: ${tex_packages[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${tex_packages[@]}" >/dev/null
fi
toc=_toc.yml; args=()
while [ $# -gt 0 ]; do
  case "$1" in --toc) toc="$2"; args+=(--toc "$2"); shift ;; *) args+=("$1") ;; esac
  shift
done
.venv/bin/python tools/outputs.py check --toc "$toc"
status=0
mkdir -p _build
rm -rf _build/latex _build/pdf
start=$(date +%s)
.venv/bin/jupyter-book build . --builder pdflatex "${args[@]}" > _build/pdf.log 2>&1 || status=$?
mkdir -p _build/pdf
log=_build/latex/ibea.log
if [ "$status" != 0 ] || [ ! -f _build/latex/ibea.pdf ]; then
  grep -aE "^!|Error|WARNING" _build/pdf.log | tail -30
  echo "[pdf] the PDF build FAILED (full log: _build/pdf.log, LaTeX log: $log)"; exit 1
fi
bad=0
if grep -aE "LaTeX Warning: (Reference|Citation) .* undefined" "$log"; then bad=1; fi
if pdftotext _build/latex/ibea.pdf - | grep -n "??"; then echo "[pdf] '??' in the PDF"; bad=1; fi
if [ "$bad" != 0 ]; then echo "[pdf] the PDF has undefined references: FAILED"; exit 1; fi
cp _build/latex/ibea.pdf _build/pdf/ibea.pdf
if [ -d _build/html ]; then cp _build/pdf/ibea.pdf _build/html/ibea.pdf; fi
echo "[pdf] built in $(( $(date +%s) - start )) s: $root/_build/pdf/ibea.pdf ($(pdfinfo _build/pdf/ibea.pdf 2>/dev/null | awk '/^Pages/ {print $2}') pages)"
