#!/usr/bin/env bash
# Debian packages that some tests need (the JupyterLab browser test: headless Chromium and its
# WebDriver). Run by tools/test.sh when CI=true; run it by hand (as root) to get those tests locally.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v git >/dev/null || need+=(git)
command -v npm >/dev/null || need+=(npm)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "[setup] apt-get install ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
