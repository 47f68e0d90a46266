# Sourced by scripts/schemathesis.sh and scripts/browser.sh: a live `tollgate serve` on a fresh
# scratch database with the demo data seeded.
#   live_server_start DB PORTAL_PORT GATEWAY_PORT
# exports DATABASE_URL and sets RUN_DIR (the server's data dir: demo-credentials.txt, server.log),
# BIN and SERVER; the server is stopped and RUN_DIR removed when the calling script exits.
# TOLLGATE_BIN: the binary to run (then nothing is built), so a concurrent rebuild cannot swap it.
# Needs ROOT (the repository) set by the caller.

live_server_start() {
  local db="$1" portal_port="$2" gateway_port="$3"
  "$ROOT/scripts/pg.sh" start "$db" >/dev/null
  # A fresh database each run, so earlier runs cannot hide or cause failures.
  "$ROOT/scripts/pg.sh" psql -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  "$ROOT/scripts/pg.sh" start "$db" >/dev/null
  DATABASE_URL="$("$ROOT/scripts/pg.sh" url "$db")"
  export DATABASE_URL
  RUN_DIR="$(mktemp -d)"
  if [ -n "${TOLLGATE_BIN:-}" ]; then
    BIN="$TOLLGATE_BIN"
  else
    BIN="$(swift build --show-bin-path)/tollgate"
    # --build-tests: the same build configuration as `swift test`, so nothing is compiled twice
    swift build --build-tests >/dev/null
  fi
  TOLLGATE_DATA_DIR="$RUN_DIR" LOG_LEVEL=warning "$BIN" migrate >/dev/null
  TOLLGATE_DATA_DIR="$RUN_DIR" LOG_LEVEL=warning "$BIN" seed-demo >/dev/null
  TOLLGATE_DATA_DIR="$RUN_DIR" PORTAL_ADDRESS="127.0.0.1:$portal_port" GATEWAY_ADDRESS="127.0.0.1:$gateway_port" LOG_LEVEL=warning \
    "$BIN" serve >"$RUN_DIR/server.log" 2>&1 &
  SERVER=$!
  trap live_server_stop EXIT
  for _ in $(seq 1 150); do
    curl -fs "http://127.0.0.1:$portal_port/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "the live server did not become ready; its log:" >&2
  tail -40 "$RUN_DIR/server.log" >&2
  return 1
}

live_server_stop() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  rm -rf "$RUN_DIR"
}
