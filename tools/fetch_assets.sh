#!/usr/bin/env bash
# Copy the JavaScript that the HTML book needs into vendor/, so that the built pages render
# math (MathJax 3) and widgets (the Jupyter widgets HTML manager and RequireJS) with no
# internet connection. The packages come from the npm registry (npm pack) once; vendor/ is
# not committed. Sphinx serves vendor/ as static files (see html_static_path in _config.yml).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
MATHJAX=mathjax@3.2.2
MANAGER=@jupyter-widgets/html-manager@1.0.15
REQUIREJS=requirejs@2.3.8
if [ -f vendor/.complete ] && [ "$(cat vendor/.complete)" = "$MATHJAX $MANAGER $REQUIREJS" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "npm is needed once to fetch MathJax and the widget manager (apt-get install npm)"; exit 1; }
rm -rf vendor && mkdir -p vendor/.cache vendor/mathjax vendor/widgets
( cd vendor/.cache && npm pack --silent "$MATHJAX" "$MANAGER" "$REQUIREJS" >/dev/null 2>&1 )
for tgz in vendor/.cache/*.tgz; do
  mkdir -p "${tgz%.tgz}" && tar xzf "$tgz" -C "${tgz%.tgz}"
done
mj=vendor/.cache/mathjax-3.2.2/package/es5
# MathJax: the TeX-to-HTML bundle, its fonts, TeX extensions and the menu (speech rules left out).
cp "$mj"/tex-chtml.js "$mj"/tex-mml-chtml.js vendor/mathjax/
cp -r "$mj"/input "$mj"/output "$mj"/ui "$mj"/a11y "$mj"/adaptors vendor/mathjax/
hm=vendor/.cache/jupyter-widgets-html-manager-1.0.15/package/dist
cp "$hm"/embed-amd.js vendor/widgets/
find "$hm" -maxdepth 1 -type f \( -name "*.woff*" -o -name "*.ttf" -o -name "*.eot" -o -name "*.svg" \) \
  -exec cp {} vendor/widgets/ \;
cp vendor/.cache/requirejs-2.3.8/package/require.js vendor/widgets/require.js
rm -rf vendor/.cache
echo "$MATHJAX $MANAGER $REQUIREJS" > vendor/.complete
echo "[assets] MathJax and the widget manager are in vendor/ ($(du -sh vendor | cut -f1))"
