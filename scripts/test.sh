#!/usr/bin/env bash
# `make test`: swift test against the private cluster, then schemathesis against the live server.
# Ends with one summary line "total: N passed, M failed" counting Swift tests and schemathesis runs.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/pg.sh" start tollgate_test tollgate_schemathesis || exit 1

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# The end-to-end reconciliation test runs the real binary (gateway process, SIGTERM, CLI).
swift build --product tollgate || exit 1
export TOLLGATE_BIN="$(swift build --show-bin-path)/tollgate"
DATABASE_URL="$("$ROOT/scripts/pg.sh" url tollgate_test)" swift test "$@" 2>&1 | tee "$log"
swift_status=${PIPESTATUS[0]}
swift_passed=$(grep -oE "Test run with [0-9]+ tests? in [0-9]+ suites? passed" "$log" | grep -oE "[0-9]+" | head -1)
swift_failed=$(grep -oE "Test run with [0-9]+ tests? in [0-9]+ suites? failed .* with [0-9]+ issues?" "$log" | grep -oE "[0-9]+ issues?" | grep -oE "[0-9]+" | head -1)
if [ "$swift_status" -ne 0 ]; then
  echo "total: ${swift_passed:-0} passed, ${swift_failed:-1} failed"
  exit "$swift_status"
fi

schemathesis_runs=4  # three schemathesis runs and the stock OAuth2 client check
if "$ROOT/scripts/schemathesis.sh"; then
  echo "total: $((swift_passed + schemathesis_runs)) passed, 0 failed"
else
  echo "total: ${swift_passed} passed, 1 failed"
  exit 1
fi
