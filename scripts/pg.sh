#!/usr/bin/env bash
# Private PostgreSQL cluster for development and tests.
#   scripts/pg.sh start [DBNAME...]   create (once) and start the cluster, ensure role + databases
#   scripts/pg.sh stop                stop it
#   scripts/pg.sh url DBNAME          print the DATABASE_URL for DBNAME
# The cluster lives in $TOLLGATE_DATA_DIR/postgres (default .data/postgres), listens on
# 127.0.0.1:$PGPORT (default 54329) and keeps its socket under the data dir. initdb refuses to
# run as root, so the cluster runs as an unprivileged user (nobody when we are root).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA_DIR="${TOLLGATE_DATA_DIR:-$ROOT/.data}"
case "$DATA_DIR" in /*) ;; *) DATA_DIR="$ROOT/$DATA_DIR" ;; esac
PGDATA="$DATA_DIR/postgres"
SOCKDIR="$DATA_DIR/pgsock"
PGPORT="${PGPORT:-54329}"
APP_ROLE="tollgate"
APP_PASSWORD="tollgate"

find_bin() {
  local name="$1"
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
  local candidate
  candidate="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)/$name"
  [ -x "$candidate" ] && { echo "$candidate"; return; }
  echo "cannot find PostgreSQL binary '$name'; install the 'postgresql' package" >&2
  exit 1
}

as_owner() {
  if [ "$(id -u)" = "0" ]; then runuser -u nobody -- "$@"; else "$@"; fi
}

psql_super() {
  "$(find_bin psql)" -h "$SOCKDIR" -p "$PGPORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt "$@"
}

ensure_cluster() {
  mkdir -p "$DATA_DIR"
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA" "$SOCKDIR"
    if [ "$(id -u)" = "0" ]; then
      chown nobody:nogroup "$PGDATA" "$SOCKDIR"
      # nobody must be able to reach the data dir through every parent folder
      chmod o+x "$DATA_DIR"
      local d="$DATA_DIR"
      while [ "$d" != "/" ]; do chmod o+x "$d" 2>/dev/null || true; d="$(dirname "$d")"; done
    fi
    chmod 700 "$PGDATA"
    as_owner "$(find_bin initdb)" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$PGDATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$SOCKDIR'
max_connections = 600
shared_buffers = 256MB
fsync = on
CONF
  fi
  mkdir -p "$SOCKDIR"
  [ "$(id -u)" = "0" ] && chown nobody:nogroup "$SOCKDIR"
  return 0
}

start() {
  ensure_cluster
  if ! as_owner "$(find_bin pg_ctl)" -D "$PGDATA" status >/dev/null 2>&1; then
    as_owner "$(find_bin pg_ctl)" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 start >/dev/null
  fi
  # The parallel test suite, with several gateway processes of its own (each a pool plus the
  # meter's connections), needs more than the 200 an older cluster was created with.
  if [ "$(psql_super -c "SHOW max_connections")" -lt 600 ]; then
    psql_super -c "ALTER SYSTEM SET max_connections = 600"
    as_owner "$(find_bin pg_ctl)" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 restart >/dev/null
  fi
  # The application role is deliberately not a superuser and has no BYPASSRLS, so row-level
  # security applies to it (tables also use FORCE ROW LEVEL SECURITY because it owns them).
  psql_super -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$APP_ROLE') THEN CREATE ROLE $APP_ROLE LOGIN PASSWORD '$APP_PASSWORD' NOSUPERUSER NOBYPASSRLS CREATEDB; END IF; END \$\$;"
  for db in "$@"; do
    if [ -z "$(psql_super -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
      psql_super -c "CREATE DATABASE \"$db\" OWNER $APP_ROLE"
    fi
  done
}

stop() {
  [ -f "$PGDATA/PG_VERSION" ] || exit 0
  as_owner "$(find_bin pg_ctl)" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  url) echo "postgres://$APP_ROLE:$APP_PASSWORD@127.0.0.1:$PGPORT/${2:-tollgate}" ;;
  psql) shift; "$(find_bin psql)" -h "$SOCKDIR" -p "$PGPORT" -U postgres "$@" ;;
  *) echo "usage: $0 start [DB...] | stop | url DB | psql [args]" >&2; exit 2 ;;
esac
