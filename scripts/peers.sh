#!/usr/bin/env bash
# The gateway against stock peers (scripts/peers.py): the real binary, Python `websockets` as
# upstream and client, curl over TLS and HTTP/2, the `h2` library for HTTP/2 abuse and (with
# `wsproto`) for WebSockets over HTTP/2 (RFC 8441), grpcio as gRPC client and server, Hypercorn as
# an HTTP/2 upstream, curl as a JSON client of gRPC APIs (python protobuf checks the JSON). A fresh
# database `tollgate_peers` in the private cluster.
# Prints "peers: N passed, M failed".
#   scripts/peers.sh [CASE...]      TOLLGATE_BIN: the binary (built when unset)
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export ROOT
export TOLLGATE_DATA_DIR="${TOLLGATE_DATA_DIR:-$ROOT/.data}"
if [ -z "${TOLLGATE_BIN:-}" ]; then
  (cd "$ROOT" && swift build --product tollgate >/dev/null) || exit 1
  TOLLGATE_BIN="$(cd "$ROOT" && swift build --show-bin-path)/tollgate"
fi
export TOLLGATE_BIN
VENV="$TOLLGATE_DATA_DIR/venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || exit 1
"$VENV/bin/python" -c "import websockets.asyncio.server, h2.connection, wsproto.connection, grpc, google.protobuf.json_format, hypercorn.asyncio" 2>/dev/null \
  || "$VENV/bin/pip" install -q "websockets>=14,<16" "h2>=4.1,<5" "wsproto>=1.2,<2" "grpcio>=1.60,<2" "protobuf>=5,<7" "hypercorn>=0.17,<0.19" || exit 1
"$ROOT/scripts/pg.sh" start >/dev/null || exit 1
"$ROOT/scripts/pg.sh" psql -d postgres -qc "DROP DATABASE IF EXISTS tollgate_peers WITH (FORCE)" || exit 1
"$ROOT/scripts/pg.sh" start tollgate_peers >/dev/null || exit 1
PEERS_DATABASE=tollgate_peers "$VENV/bin/python" "$ROOT/scripts/peers.py" "$@"
