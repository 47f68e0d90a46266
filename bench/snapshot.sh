#!/usr/bin/env bash
# Snapshot-at-scale benchmark: an installation with many credentials and APIs, two gateway
# processes on it, and how long a change takes to reach both.
#
#   bench/snapshot.sh [credentials=100000] [apis=1000] [changes=10]
#
# 1. Bulk SQL makes `credentials` API keys (10 per app, as the portal allows, hashed as the portal
#    hashes them: SHA-256 of `tgk_` + 43 base64url characters) and `apis` published APIs with a
#    target each, spread over bench tenants of 10 APIs and 100 apps each, next to the demo tenant.
# 2. Two gateways (`tollgate gateway`) start on it; each one's RSS (VmRSS) is read once both are
#    ready and after every change.
# 3. `changes` times each, on the demo tenant's Echo API: a new key (401 → 200), that key revoked
#    (200 → 401), an API change (its methods limited to POST, 200 → 405, and back). The time from
#    just before the change is sent (psql, so it includes psql's start) until *each* gateway answers
#    differently is polled with curl (a few ms per poll); p50 and max per kind, over both gateways.
# 4. Reload durations from each gateway's /metrics (count and mean by kind, full and tenant).
#
# Targets (issue 16): a change reaches every gateway within 1 s; RSS under 150 MB.
# TOLLGATE_BIN=path/to/tollgate picks the binary (default: a release build, made here). Figures from
# a debug binary are not the record. REUSE=1 keeps the bench database and its rows from a former run.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CREDENTIALS="${1:-100000}"; APIS="${2:-1000}"; CHANGES="${3:-10}"
WORK="$ROOT/.data/bench-snapshot"; mkdir -p "$WORK"
DB=tollgate_snapshot_bench
GW1=127.0.0.1:9031 GW2=127.0.0.1:9032 UPSTREAM_PORT=9033

cd "$ROOT"
if [ -n "${TOLLGATE_BIN:-}" ]; then BIN="$TOLLGATE_BIN"; else
  swift build -c release --product tollgate >&2
  BIN="$(swift build -c release --show-bin-path)/tollgate"
fi
scripts/pg.sh start "$DB" >&2
URL="$(scripts/pg.sh url "$DB")"
export DATABASE_URL="$URL" LOG_LEVEL=warning TOLLGATE_SECRET_KEY="${TOLLGATE_SECRET_KEY:-$(printf 'b%.0s' $(seq 64))}"
sql() { psql "$URL" -v ON_ERROR_STOP=1 -qAt "$@"; }

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

if [ "${REUSE:-}" != 1 ]; then
  sql -c "DROP SCHEMA public CASCADE" -c "CREATE SCHEMA public" >/dev/null
fi
TOLLGATE_DATA_DIR="$WORK/portal" "$BIN" migrate >/dev/null
TOLLGATE_DATA_DIR="$WORK/portal" "$BIN" seed-demo >/dev/null
KEY="$(TOLLGATE_DATA_DIR="$WORK/portal" "$BIN" seed-demo --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')"

# the demo's Echo goes to a local upstream that answers 200 to anything
python3 - "$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 <<'PY' & pids+=($!)
import http.server, sys
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    do_POST = do_GET
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
PY
sql <<SQL >/dev/null
SELECT set_config('tollgate.scope', 'system', false);
UPDATE api_upstream_targets SET url = 'http://127.0.0.1:$UPSTREAM_PORT'
    WHERE api_id = (SELECT a.id FROM apis a JOIN tenants t ON t.id = a.tenant_id WHERE t.slug = 'demo' AND a.slug = 'echo' ORDER BY a.version LIMIT 1);
SQL

have="$(sql -c "SELECT set_config('tollgate.scope', 'system', false)" -c "SELECT count(*) FROM app_credentials WHERE kind = 'api_key'" | tail -1)"
if [ "$have" -lt "$CREDENTIALS" ]; then
  echo "making $CREDENTIALS API keys and $APIS APIs (bulk SQL)" >&2
  tenants=$(( (APIS + 9) / 10 )); apps_per_tenant=$(( (CREDENTIALS / 10 + tenants - 1) / tenants ))
  time sql <<SQL >/dev/null
SELECT set_config('tollgate.scope', 'system', false);
BEGIN;
INSERT INTO tenants (slug, name) SELECT 'bench-' || n, 'Bench ' || n FROM generate_series(1, $tenants) n;
INSERT INTO teams (tenant_id, slug, name) SELECT id, 'builders', 'Builders' FROM tenants WHERE slug LIKE 'bench-%';
-- ten API versions per bench tenant, published, one target each
INSERT INTO apis (tenant_id, team_id, slug, version, name, base_path, state)
    SELECT t.id, tm.id, 'api-' || n, 'v1', 'API ' || n, '/api-' || n || '/v1', 'published'
    FROM tenants t JOIN teams tm ON tm.tenant_id = t.id, generate_series(1, 10) n
    WHERE t.slug LIKE 'bench-%' AND (substr(t.slug, 7)::int - 1) * 10 + n <= $APIS;
INSERT INTO api_upstream_targets (tenant_id, api_id, position, url, weight)
    SELECT a.tenant_id, a.id, 0, 'http://127.0.0.1:$UPSTREAM_PORT/' || a.slug, 1
    FROM apis a JOIN tenants t ON t.id = a.tenant_id WHERE t.slug LIKE 'bench-%';
INSERT INTO apps (tenant_id, team_id, name, client_id)
    SELECT t.id, tm.id, 'App ' || n, 'tgc_' || substr(md5(t.slug || '/' || n), 1, 22)
    FROM tenants t JOIN teams tm ON tm.tenant_id = t.id, generate_series(1, $apps_per_tenant) n WHERE t.slug LIKE 'bench-%';
-- keys as the portal makes them: tgk_ + base64url(32 random bytes), stored as SHA-256 of the text
INSERT INTO app_credentials (tenant_id, app_id, kind, name, prefix, secret_hash)
    SELECT tenant_id, id, 'api_key', 'bench', left(secret, 12), sha256(convert_to(secret, 'UTF8'))
    FROM (
        SELECT a.tenant_id, a.id, 'tgk_' || rtrim(translate(encode(sha256(gen_random_uuid()::text::bytea), 'base64'), '+/', '-_'), '=') AS secret
        FROM apps a JOIN tenants t ON t.id = a.tenant_id, generate_series(1, 10) k WHERE t.slug LIKE 'bench-%'
        LIMIT $CREDENTIALS
    ) keys;
COMMIT;
ANALYZE tenants, teams, apis, api_upstream_targets, apps, app_credentials;
SQL
fi
sql -c "SELECT set_config('tollgate.scope', 'system', false)" \
  -c "SELECT 'tenants ' || (SELECT count(*) FROM tenants) || ', published APIs ' || (SELECT count(*) FROM apis WHERE state = 'published') || ', apps ' || (SELECT count(*) FROM apps) || ', API keys ' || (SELECT count(*) FROM app_credentials WHERE kind = 'api_key' AND revoked_at IS NULL)" | tail -1

mkdir -p "$WORK/gw1" "$WORK/gw2"
started=$(date +%s%N)
GATEWAY_ADDRESS="$GW1" TOLLGATE_DATA_DIR="$WORK/gw1" "$BIN" gateway >"$WORK/gw1.log" 2>&1 & pid1=$!; pids+=($pid1)
GATEWAY_ADDRESS="$GW2" TOLLGATE_DATA_DIR="$WORK/gw2" "$BIN" gateway >"$WORK/gw2.log" 2>&1 & pid2=$!; pids+=($pid2)
for gw in "$GW1" "$GW2"; do
  for _ in $(seq 600); do curl -sf "http://$gw/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://$gw/readyz" >/dev/null || { echo "gateway $gw not ready; see $WORK/gw*.log" >&2; exit 1; }
done
echo "both gateways ready after $(( ($(date +%s%N) - started) / 1000000 )) ms"
rss() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
echo "RSS after load: gateway 1 $(rss "$pid1") MB, gateway 2 $(rss "$pid2") MB"

ECHO="/t/demo/echo/v1/bench"
status() {  # gateway key [method]
  curl -s -o /dev/null -w '%{http_code}' -X "${3:-GET}" -H "X-API-Key: $2" "http://$1$ECHO"
}
# waits until both gateways answer `want` (with key `key`); prints ms from `t0` to each, or "timeout"
until_both() {  # t0 key want
  local t0="$1" key="$2" want="$3" done1="" done2="" deadline=$(( $(date +%s%N) + 10000000000 ))
  while [ -z "$done1" ] || [ -z "$done2" ]; do
    [ "$(date +%s%N)" -gt "$deadline" ] && { echo "timeout timeout"; return; }
    [ -z "$done1" ] && [ "$(status "$GW1" "$key")" = "$want" ] && done1=$(( ($(date +%s%N) - t0) / 1000000 ))
    [ -z "$done2" ] && [ "$(status "$GW2" "$key")" = "$want" ] && done2=$(( ($(date +%s%N) - t0) / 1000000 ))
  done
  echo "$done1 $done2"
}
[ "$(status "$GW1" "$KEY")" = 200 ] && [ "$(status "$GW2" "$KEY")" = 200 ] || { echo "the demo key is not served (gateway 1: $(status "$GW1" "$KEY"))" >&2; exit 1; }
demo_app="$(sql -c "SELECT set_config('tollgate.scope', 'system', false)" -c "SELECT a.id FROM apps a JOIN tenants t ON t.id = a.tenant_id JOIN app_credentials c ON c.app_id = a.id WHERE t.slug = 'demo' AND c.secret_hash = sha256(convert_to('$KEY', 'UTF8'))" | tail -1)"
echo_api="$(sql -c "SELECT set_config('tollgate.scope', 'system', false)" -c "SELECT a.id FROM apis a JOIN tenants t ON t.id = a.tenant_id WHERE t.slug = 'demo' AND a.slug = 'echo' ORDER BY a.version LIMIT 1" | tail -1)"

: >"$WORK/changes.txt"
for round in $(seq "$CHANGES"); do
  new="tgk_$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  t0=$(date +%s%N)
  sql -c "SELECT set_config('tollgate.scope', 'system', false)" \
    -c "INSERT INTO app_credentials (tenant_id, app_id, kind, name, prefix, secret_hash) SELECT tenant_id, id, 'api_key', 'bench-$round', left('$new', 12), sha256(convert_to('$new', 'UTF8')) FROM apps WHERE id = '$demo_app'" >/dev/null
  echo "new-key $(until_both "$t0" "$new" 200)" >>"$WORK/changes.txt"
  t0=$(date +%s%N)
  sql -c "SELECT set_config('tollgate.scope', 'system', false)" \
    -c "UPDATE app_credentials SET revoked_at = now() WHERE secret_hash = sha256(convert_to('$new', 'UTF8'))" >/dev/null
  echo "revoked-key $(until_both "$t0" "$new" 401)" >>"$WORK/changes.txt"
  t0=$(date +%s%N)
  sql -c "SELECT set_config('tollgate.scope', 'system', false)" -c "UPDATE apis SET methods = '{POST}' WHERE id = '$echo_api'" >/dev/null
  echo "api-change $(until_both "$t0" "$KEY" 405)" >>"$WORK/changes.txt"
  t0=$(date +%s%N)
  sql -c "SELECT set_config('tollgate.scope', 'system', false)" -c "UPDATE apis SET methods = '{}' WHERE id = '$echo_api'" >/dev/null
  echo "api-change $(until_both "$t0" "$KEY" 200)" >>"$WORK/changes.txt"
  # clean up
  sql -c "SELECT set_config('tollgate.scope', 'system', false)" -c "DELETE FROM app_credentials WHERE name = 'bench-$round' AND app_id = '$demo_app'" >/dev/null
  sleep 0.3
done
echo "RSS after $CHANGES rounds of changes: gateway 1 $(rss "$pid1") MB, gateway 2 $(rss "$pid2") MB"

python3 - "$WORK/changes.txt" <<'PY'
import statistics, sys
by_kind = {}
for line in open(sys.argv[1]):
    kind, *times = line.split()
    by_kind.setdefault(kind, []).extend(times)
print(f"{'change':<12} {'n':>4} {'p50 ms':>8} {'max ms':>8} {'timeouts':>9}   (until each of the two gateways answers differently)")
for kind, times in by_kind.items():
    ms = [int(t) for t in times if t != "timeout"]
    print(f"{kind:<12} {len(times):>4} {statistics.median(ms) if ms else float('nan'):>8.0f} {max(ms) if ms else float('nan'):>8.0f} {len(times) - len(ms):>9}")
PY

for gw in "$GW1" "$GW2"; do
  curl -s "http://$gw/metrics" | python3 -c '
import re, sys
text = sys.stdin.read()
def value(name, kind):
    m = re.search(r"^" + name + r"\{[^}]*kind=\"" + kind + r"\"[^}]*\} (\S+)", text, re.M)
    return float(m.group(1)) if m else 0.0
line = []
for kind in ("full", "tenant"):
    count = value("tollgate_gateway_snapshot_reload_duration_seconds_count", kind)
    total = value("tollgate_gateway_snapshot_reload_duration_seconds_sum", kind)
    line.append(f"{kind}: {int(count)} loads, mean {1000 * total / count:.1f} ms" if count else f"{kind}: none")
sizes = []
for k in ("tenants", "apis", "apps", "api_keys"):
    m = re.search(r"^tollgate_gateway_snapshot_" + k + r" (\S+)", text, re.M)
    sizes.append(k + " " + (m.group(1) if m else "?"))
print(sys.argv[1] + " reloads " + "; ".join(line) + " | snapshot " + ", ".join(sizes))
' "$gw"
done
