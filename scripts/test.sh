#!/usr/bin/env bash
# `make test`: swift test against the private cluster, then schemathesis, the meter's fault suite
# (scripts/faults.sh), the stock-peers suite (scripts/peers.sh: websockets, curl over TLS) and the browser suite
# (headless Chromium, scripts/browser.sh) against live servers. Ends with one summary line
# "total: N passed, M failed" counting Swift tests, schemathesis runs and browser tests.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/deps.sh" test || exit 1  # python3-venv, chromium, chromium-driver when missing
"$ROOT/scripts/pg.sh" start tollgate_test tollgate_schemathesis tollgate_browser || exit 1

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# The end-to-end reconciliation test runs the real binary (gateway process, SIGTERM, CLI).
swift build --product tollgate || exit 1
export TOLLGATE_BIN="$(swift build --show-bin-path)/tollgate"
# Suites whose tests bound how long the gateway takes to notice something (idle and slow clients,
# abandoned calls, shutdown, tunnel limits, a limiter's clock) run after the rest, on their own:
# beside the whole parallel suite on 2 cores their event loops were starved for seconds.
TIMED='GatewayUpstreamFailureTests|GatewayIdleTests|GatewaySlowClientTests|WebSocketTunnelTests|ClientRateLimitTests'
export DATABASE_URL="$("$ROOT/scripts/pg.sh" url tollgate_test)"
swift test "$@" --skip "$TIMED" 2>&1 | tee "$log"
swift_status=${PIPESTATUS[0]}
swift test "$@" --skip-build --filter "$TIMED" 2>&1 | tee -a "$log"
timed_status=${PIPESTATUS[0]}
[ "$swift_status" -ne 0 ] || swift_status=$timed_status
unset DATABASE_URL
# one "Test run with N tests ..." line per run: add them up
swift_passed=$(grep -oE "Test run with [0-9]+ tests? in [0-9]+ suites? passed" "$log" | awk '{n += $4} END {print n + 0}')
swift_failed=$(grep -oE "Test run with [0-9]+ tests? in [0-9]+ suites? failed .* with [0-9]+ issues?" "$log" | grep -oE "[0-9]+ issues?" | awk '{n += $1} END {print n + 0}')
[ "$swift_failed" != 0 ] || swift_failed=""
if [ "$swift_status" -ne 0 ]; then
  echo "total: ${swift_passed:-0} passed, ${swift_failed:-1} failed"
  exit "$swift_status"
fi

schemathesis_runs=4  # three schemathesis runs and the stock OAuth2 client check
passed=$swift_passed
failed=0
if "$ROOT/scripts/schemathesis.sh"; then passed=$((passed + schemathesis_runs)); else failed=$((failed + 1)); fi

faults_log="$(mktemp)"
"$ROOT/scripts/faults.sh" 2>&1 | tee "$faults_log"
faults_line=$(grep -oE "^faults: [0-9]+ passed, [0-9]+ failed" "$faults_log" | tail -1)
rm -f "$faults_log"
if [ -n "$faults_line" ]; then
  passed=$((passed + $(echo "$faults_line" | grep -oE "[0-9]+ passed" | grep -oE "[0-9]+")))
  failed=$((failed + $(echo "$faults_line" | grep -oE "[0-9]+ failed" | grep -oE "[0-9]+")))
else
  failed=$((failed + 1))  # the suite did not get as far as running its cases
fi

peers_log="$(mktemp)"
TOLLGATE_BIN="$TOLLGATE_BIN" "$ROOT/scripts/peers.sh" 2>&1 | tee "$peers_log"
peers_line=$(grep -oE "^peers: [0-9]+ passed, [0-9]+ failed" "$peers_log" | tail -1)
rm -f "$peers_log"
if [ -n "$peers_line" ]; then
  passed=$((passed + $(echo "$peers_line" | grep -oE "[0-9]+ passed" | grep -oE "[0-9]+")))
  failed=$((failed + $(echo "$peers_line" | grep -oE "[0-9]+ failed" | grep -oE "[0-9]+")))
else
  failed=$((failed + 1))  # the suite did not get as far as running its cases
fi

browser_log="$(mktemp)"
"$ROOT/scripts/browser.sh" 2>&1 | tee "$browser_log"
browser_status=${PIPESTATUS[0]}
browser_line=$(grep -oE "^browser: [0-9]+ passed, [0-9]+ failed" "$browser_log" | tail -1)
rm -f "$browser_log"
if [ -n "$browser_line" ]; then
  passed=$((passed + $(echo "$browser_line" | grep -oE "[0-9]+ passed" | grep -oE "[0-9]+")))
  failed=$((failed + $(echo "$browser_line" | grep -oE "[0-9]+ failed" | grep -oE "[0-9]+")))
elif [ "$browser_status" -ne 0 ]; then
  failed=$((failed + 1))  # the suite did not get as far as running its tests
fi

echo "total: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
