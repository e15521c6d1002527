#!/usr/bin/env bash
# Screenshot a built page the way an offline reader sees it (headless Chromium, no network).
# Usage: bash tools/screenshot.sh _build/html/book/02_backward_error_analysis.html out.png [height] [width]
set -euo pipefail
page="$(realpath "$1")"; out="$2"; height="${3:-2400}"; width="${4:-1280}"
profile="$(mktemp -d)"
chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --user-data-dir="$profile" \
  --virtual-time-budget=8000 --window-size="$width","$height" --screenshot="$out" "file://$page" \
  >/dev/null 2>&1
rm -rf "$profile"
echo "$out"
