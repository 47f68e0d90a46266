#!/usr/bin/env bash
# Browser tests: headless Chromium driven by Selenium against a live `tollgate serve` on a scratch
# database (tollgate_browser, or BROWSER_DB), demo data seeded (scripts/live_server.sh). Tests are Tests/browser/test_*.py (unittest).
# Screenshots of failures (and of every page at desktop and 390 px width) go to .data/browser/.
# Exits 0 with "browser: skipped" only when Chromium or chromedriver cannot be found.
# TOLLGATE_BIN: the binary to run (then nothing is built), so a concurrent rebuild cannot swap it.
# BROWSER_PORTAL_PORT / BROWSER_GATEWAY_PORT: the server's ports (18180 / 18100).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export TOLLGATE_DATA_DIR="${TOLLGATE_DATA_DIR:-$ROOT/.data}"
CHROMIUM="$(command -v chromium || command -v chromium-browser || true)"
DRIVER="$(command -v chromedriver || true)"
if [ -z "$CHROMIUM" ] || [ -z "$DRIVER" ]; then
  echo "browser: skipped (chromium / chromedriver not installed; scripts/deps.sh test installs them)"
  exit 0
fi
VENV="$TOLLGATE_DATA_DIR/venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import selenium" 2>/dev/null || "$VENV/bin/pip" install -q "selenium==4.*"

# BROWSER_DB: another scratch database name, so that two runs on one cluster do not collide
. "$ROOT/scripts/live_server.sh"
PORTAL_PORT="${BROWSER_PORTAL_PORT:-18180}"
live_server_start "${BROWSER_DB:-tollgate_browser}" "$PORTAL_PORT" "${BROWSER_GATEWAY_PORT:-18100}"

mkdir -p "$TOLLGATE_DATA_DIR/browser"
status=0
BROWSER_BASE="http://127.0.0.1:$PORTAL_PORT" BROWSER_CREDENTIALS="$RUN_DIR/demo-credentials.txt" \
  BROWSER_ARTIFACTS="$TOLLGATE_DATA_DIR/browser" CHROMIUM="$CHROMIUM" CHROMEDRIVER="$DRIVER" \
  "$VENV/bin/python" -m unittest discover -s "$ROOT/Tests/browser" -p "${BROWSER_PATTERN:-test_*.py}" -v 2>&1 | tee "$RUN_DIR/browser.log" || status=1
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# one line scripts/test.sh counts: "browser: N passed, M failed"
ran=$(grep -oE "^Ran [0-9]+ tests?" "$RUN_DIR/browser.log" | grep -oE "[0-9]+" || true)
ran=${ran:-0}
failed=$(grep -E "^FAILED \(" "$RUN_DIR/browser.log" | grep -oE "(failures|errors)=[0-9]+" | grep -oE "[0-9]+" | awk '{s+=$1} END {print s+0}' || true)
failed=${failed:-0}
echo "browser: $((ran - failed)) passed, $failed failed"
if [ $status -ne 0 ]; then
  echo "--- server log (last 40 lines) ---"; tail -40 "$RUN_DIR/server.log"
fi
exit $status
