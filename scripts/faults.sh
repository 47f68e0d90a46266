#!/usr/bin/env bash
# The meter's fault suite (scripts/faults.py): the real binary against a private cluster of its own
# (port 54335, under .data/faults, removed afterwards), under load, with Postgres stopped, killed and
# restarted and the gateway SIGTERM'd and killed. Prints "faults: N passed, M failed".
#   scripts/faults.sh [CASE...]      TOLLGATE_BIN: the binary (built when unset)
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export ROOT
if [ -z "${TOLLGATE_BIN:-}" ]; then
  (cd "$ROOT" && swift build --build-tests >/dev/null) || exit 1
  TOLLGATE_BIN="$(cd "$ROOT" && swift build --show-bin-path)/tollgate"
fi
# a copy: a rebuild during the run must not swap the binary under the gateways
bin_copy="$(mktemp)"
cp "$TOLLGATE_BIN" "$bin_copy" && chmod +x "$bin_copy"
trap 'rm -f "$bin_copy"; rm -rf "$ROOT/.data/faults"' EXIT
TOLLGATE_BIN="$bin_copy" FAULTS_LOG_LEVEL="${FAULTS_LOG_LEVEL:-info}" python3 "$ROOT/scripts/faults.py" "$@"
