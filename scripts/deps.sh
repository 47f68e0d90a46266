#!/usr/bin/env bash
# Installs the Debian packages Tollgate needs, only those that are missing.
set -euo pipefail
needed=(libargon2-dev pkg-config postgresql)
# the browser suite (scripts/browser.sh): headless Chromium driven by Selenium
[ "${1:-}" = "test" ] && needed+=(python3-venv chromium chromium-driver)
missing=()
for pkg in "${needed[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "Installing missing packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" != "0" ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
