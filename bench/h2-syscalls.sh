#!/usr/bin/env bash
# System calls and CPU per call of the gateway process, for HTTP/2 clients (h2load, 4 connections
# x 32 concurrent streams, prior-knowledge h2c) and, for comparison, HTTP/1.1 clients (h2load --h1,
# 32 connections), through the JWT path to an nginx upstream answering a small JSON body; and unary
# gRPC calls (the same streams) relayed to the demo Greeter (`tollgate demo-upstream`, h2c). Counted
# with `perf stat` over the run only, all threads of the gateway process: the raw_syscalls:sys_enter
# tracepoint (which does not slow the process as strace does) and task-clock (this machine's VMs
# have no hardware counters, so no instruction counts: `perf stat -e instructions` is "not
# supported"); then one strace -c run of the h2 row for which calls they are. Debug binaries are
# fine for comparing two builds (their CPU figures are not a release build's).
#
#   bench/h2-syscalls.sh [calls=20000]      ROWS="h2 grpc h1": the rows measured (default all three);
#                                          STRACE_ROWS="h2 grpc": the rows strace -c breaks down (default h2)
#
# TOLLGATE_BIN picks the binary (default: this checkout's debug build); PGPORT the private cluster's
# port (scripts/pg.sh). Ports 9201 (upstream), 9203 (gateway), 9209/9210 (demo upstreams), 18281
# (portal): apart from gateway.sh's.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CALLS="${1:-20000}"
BIN="${TOLLGATE_BIN:-$ROOT/.build/debug/tollgate}"
WORK="$ROOT/.data/h2-syscalls"; mkdir -p "$WORK"
cd "$ROOT"
for tool in h2load perf nginx strace; do command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }; done

scripts/pg.sh start tollgate_h2bench >&2
export DATABASE_URL="$(scripts/pg.sh url tollgate_h2bench)" TOLLGATE_DATA_DIR="$WORK" LOG_LEVEL=warning
export PORTAL_ADDRESS=127.0.0.1:18281 GATEWAY_ADDRESS=127.0.0.1:9203

# the demo marketplace and the processes around it, set up as bench/gateway.sh does
. "$ROOT/bench/demo-marketplace.sh"

cleanup() { stop_all upstream; }
trap cleanup EXIT

cat >"$WORK/upstream.conf" <<'CONF'
worker_processes 1;
pid upstream.pid;
error_log upstream.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  client_body_temp_path ub; proxy_temp_path up; fastcgi_temp_path uf; uwsgi_temp_path uu; scgi_temp_path us;
  server {
    listen 127.0.0.1:9201;
    location / { default_type application/json; return 200 '{"status":"ok","service":"echo","version":1}'; }
  }
}
CONF
taskset -c 0 nginx -c "$WORK/upstream.conf" -p "$WORK" -e "$WORK/upstream.err"
# the demo Greeter (gRPC, h2c) for the grpc row: the relay's upstream connection is HTTP/2 too
demo_greeter 9209 9210

# the demo marketplace: Echo routed to the upstream above without policies, the Greeter to the demo
# Greeter, both on a plan whose limits exceed the load
demo_marketplace
echo_id="$(api_id echo)"
route_api "$echo_id" http://127.0.0.1:9201
curl -sf -X PUT -H "Authorization: Bearer $PAT" -H 'Content-Type: application/json' -d '{"policies":[]}' "$api/apis/$echo_id/policies" >/dev/null
bench_plan "$echo_id"
greeter_id="$(api_id greeter)"
route_api "$greeter_id" grpc://127.0.0.1:9210
bench_plan "$greeter_id"
TOKEN="$(client_token)"

# the gateway alone, one event loop, on core 1
start_gateway
url="http://$GATEWAY_ADDRESS/t/demo/echo/v1/"
for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$url")" = 200 ] && break; sleep 0.1
done
check="$(curl -s --http2-prior-knowledge -o /dev/null -w '%{http_code} %{http_version}' -H "Authorization: Bearer $TOKEN" "$url")"
[ "$check" = "200 2" ] || { echo "the gateway answered $check over h2c, not 200" >&2; exit 1; }

client() {  # h2|grpc|h1 calls
  if [ "$1" = h2 ]; then taskset -c 0 h2load -t1 -n "$2" -c 4 -m 32 -H "authorization: Bearer $TOKEN" "$url"
  elif [ "$1" = grpc ]; then taskset -c 0 h2load -t1 -n "$2" -c 4 -m 32 -d "$WORK/sayhello.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
    -H "authorization: Bearer $TOKEN" "http://$GATEWAY_ADDRESS/t/demo/greeter/v1/demo.Greeter/SayHello"
  else taskset -c 0 h2load --h1 -t1 -n "$2" -c 32 -m 1 -H "authorization: Bearer $TOKEN" "$url"; fi
}
succeeded() { grep -o '[0-9]* succeeded' "$1" | cut -d' ' -f1; }
# the gateway's event loop threads (NIO-ELT-*; the singleton loops and the Swift concurrency
# threads run PostgresNIO and the meter, whose timed flushes dominate at a debug build's call rate)
loop_tids="$(grep -l '^NIO-ELT' /proc/"$gateway_pid"/task/*/comm | cut -d/ -f5 | paste -sd,)"
measure() {  # h2|grpc|h1: perf stat over one run of $CALLS calls, after a warm-up
  client "$1" 2000 >/dev/null
  perf stat -x, -e task-clock,raw_syscalls:sys_enter -p "$gateway_pid" -o "$WORK/perf-$1.txt" & local perf_pid=$!
  perf stat -x, -e task-clock,raw_syscalls:sys_enter -t "$loop_tids" -o "$WORK/perf-$1-loop.txt" & local loop_perf_pid=$!
  sleep 0.5
  client "$1" "$CALLS" >"$WORK/h2load-$1.txt"
  kill -INT "$perf_pid" "$loop_perf_pid"; wait "$perf_pid" "$loop_perf_pid" 2>/dev/null || true
  local ok; ok="$(succeeded "$WORK/h2load-$1.txt")"
  [ "${ok:-0}" -gt 0 ] || { echo "no call succeeded: $(tail -5 "$WORK/h2load-$1.txt")" >&2; exit 1; }
  local cpu syscalls loop_cpu loop_syscalls
  cpu="$(awk -F, '$3 ~ /^task-clock/ {print $1}' "$WORK/perf-$1.txt")"
  syscalls="$(awk -F, '$3 ~ /sys_enter/ {print $1}' "$WORK/perf-$1.txt")"
  loop_cpu="$(awk -F, '$3 ~ /^task-clock/ {print $1}' "$WORK/perf-$1-loop.txt")"
  loop_syscalls="$(awk -F, '$3 ~ /sys_enter/ {print $1}' "$WORK/perf-$1-loop.txt")"
  printf '%-6s %8d %8s %12.1f %14.2f %12.1f %14.2f\n' "$1" "$ok" "$(grep -o '[0-9]* 2xx' "$WORK/h2load-$1.txt" | cut -d' ' -f1)" \
    "$(echo "$cpu * 1000 / $ok" | bc -l)" "$(echo "$syscalls / $ok" | bc -l)" \
    "$(echo "$loop_cpu * 1000 / $ok" | bc -l)" "$(echo "$loop_syscalls / $ok" | bc -l)"
}
echo "binary: $BIN"
echo "(process: all its threads; loop: the gateway's event loop thread alone)"
printf '%-6s %8s %8s %12s %14s %12s %14s\n' client calls 2xx "CPU us/call" "syscalls/call" "loop CPU us" "loop syscalls"
for row in ${ROWS:-h2 grpc h1}; do measure "$row"; done

# which system calls, for the rows in STRACE_ROWS (default h2; strace -c slows the gateway: its
# counts, not its times, matter)
for row in ${STRACE_ROWS:-h2}; do
  strace -c -f -p "$gateway_pid" -o "$WORK/strace-$row.txt" & strace_pid=$!; sleep 1
  client "$row" "$CALLS" >"$WORK/h2load-$row-strace.txt"
  kill -INT "$strace_pid"; wait "$strace_pid" 2>/dev/null || true
  ok="$(succeeded "$WORK/h2load-$row-strace.txt")"
  echo "$row under strace, $ok calls; system calls per call:"
  awk -v n="$ok" 'NR > 2 && $4 ~ /^[0-9]+$/ {printf "  %-16s %8.3f\n", $NF, $4 / n}' "$WORK/strace-$row.txt" | sort -k2 -rn | head -10
done
