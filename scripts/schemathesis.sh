#!/usr/bin/env bash
# Runs schemathesis against a live `tollgate serve` on a scratch database and fails on any 5xx
# or response that violates the served OpenAPI documents (tenant and platform); then a stock
# OAuth2 client library fetches and verifies a token from the same server.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export TOLLGATE_DATA_DIR="${TOLLGATE_DATA_DIR:-$ROOT/.data}"
VENV="$TOLLGATE_DATA_DIR/venv"
if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==4.*"
fi
if ! "$VENV/bin/python" -c "import requests_oauthlib, jwt" 2>/dev/null; then
  "$VENV/bin/pip" install -q requests-oauthlib "pyjwt[crypto]"
fi

. "$ROOT/scripts/live_server.sh"
PORTAL_PORT="${SCHEMATHESIS_PORTAL_PORT:-18080}"
# SCHEMATHESIS_DB: another scratch database name, so that two runs on one cluster do not collide
live_server_start "${SCHEMATHESIS_DB:-tollgate_schemathesis}" "$PORTAL_PORT" "${SCHEMATHESIS_GATEWAY_PORT:-18000}"
TENANT_TOKEN="$(TOLLGATE_DATA_DIR="$RUN_DIR" "$BIN" token create --tenant demo --email admin@demo.test --name schemathesis --scope read --scope write --scope admin)"
PLATFORM_TOKEN="$(TOLLGATE_DATA_DIR="$RUN_DIR" "$BIN" platform-admin token --email platform@tollgate.test --name schemathesis)"

run() {
  local spec="$1" token="$2"; shift 2
  "$VENV/bin/schemathesis" run "$spec" "$@" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,response_schema_conformance,content_type_conformance \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-40}" \
    --seed 1 --no-color
}
status=0
TENANT_SPEC="http://127.0.0.1:$PORTAL_PORT/t/demo/api/v1/openapi.json"
# Token revocation runs last and alone: its stateful phase finds and revokes the very token the
# run authenticates with, which would turn every later request into a 401.
run "$TENANT_SPEC" "$TENANT_TOKEN" --exclude-operation-id revokeToken || status=1
run "$TENANT_SPEC" "$TENANT_TOKEN" --include-operation-id revokeToken || status=1
run "http://127.0.0.1:$PORTAL_PORT/api/v1/openapi.json" "$PLATFORM_TOKEN" || status=1
# A stock OAuth2 client library fetches a token for the seeded Demo App and verifies it.
creds="$RUN_DIR/demo-credentials.txt"
"$VENV/bin/python" "$ROOT/scripts/oauth_stock_client.py" "http://127.0.0.1:$PORTAL_PORT/t/demo" \
  "$(awk '$1=="demo-app.client_id"{print $2}' "$creds")" "$(awk '$1=="demo-app.client_secret"{print $2}' "$creds")" || status=1
if [ $status -ne 0 ]; then
  echo "--- server log (last 50 lines) ---"; tail -50 "$RUN_DIR/server.log"
fi
exit $status
