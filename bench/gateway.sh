#!/usr/bin/env bash
# Gateway benchmark: the same wrk workload against (a) the upstream directly, (b) nginx proxy_pass
# with upstream keepalive, (c) the Tollgate gateway with JWT auth + subscription check + rate limit
# (set above the load) + metering. The proxy under test is pinned to core 1, wrk and the upstream
# to core 0. Rounds are interleaved; medians are printed with the ratio gateway/nginx. A fourth
# row, "local", is the gateway answering /healthz itself: its HTTP server side without auth or proxying.
# With TLS=1, two more rows: nginx with `listen … ssl` in front of the same upstream ("nginx-tls")
# and the gateway's TLS listener ("tollgate-tls"), both with the same development certificate
# (P-256, from `tollgate dev-certs`), TLS 1.3, keep-alive connections (so handshakes are amortised
# as with any long-lived client).
# With POLICIES=1, rows for Echo with one policy chain each, run right after the plain gateway row
# of the same round: "cache-hit" (a shared response cache: every call after the first is a hit),
# "transform" (a request transformation setting two headers from the call's context and a response
# transformation setting one) and "validate" (request validation of a
# small JSON body against Echo's OpenAPI document, uploaded for it, POSTed). The table's last column then reads as the
# policy's cost: CPU per call above the plain row's.
# With PROTOCOLS=1, three pairs of rows, nginx against the gateway, after the rounds above:
#   "nginx-h2"/"tollgate-h2": HTTP/2 clients, many streams on few connections (h2load, 4 connections
#     × 32 concurrent streams, prior-knowledge h2c) in front of the same HTTP/1.1 upstream;
#   "nginx-https-up"/"tollgate-https-up": wrk over HTTP/1.1 to a proxy whose upstream is https (an
#     nginx TLS upstream with the development certificate; keep-alive upstream connections, so
#     handshakes are amortised; the gateway verifies the certificate against the development CA,
#     nginx does not verify — its cost is only at the handshake);
#   "nginx-grpc"/"tollgate-grpc": unary gRPC calls (h2load, the same streams) relayed to the demo
#     Greeter (`tollgate demo-upstream`, h2c), nginx with `grpc_pass`.
#
#   bench/gateway.sh [rounds=3] [seconds=10] [connections=32]
#
# Uses a release build (TOLLGATE_BIN=path picks another binary), a private PostgreSQL database `tollgate_bench` and the reference nginx
# configs in ../shared/bench (copied next to this script if that folder is absent).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${1:-3}"; SECONDS_PER_RUN="${2:-10}"; CONNECTIONS="${3:-32}"
WORK="$ROOT/.data/bench"; mkdir -p "$WORK"
REF="$ROOT/../shared/bench"; [ -f "$REF/upstream.conf" ] || REF="$ROOT/bench/nginx"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
  echo "installing nginx-light and wrk" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y nginx-light wrk >/dev/null; else sudo apt-get install -y nginx-light wrk >/dev/null; fi
fi

cd "$ROOT"
if [ -n "${TOLLGATE_BIN:-}" ]; then BIN="$TOLLGATE_BIN"; else  # another binary (a debug one's figures are not the record)
  swift build -c release --product tollgate >&2
  BIN="$(swift build -c release --show-bin-path)/tollgate"
fi
scripts/pg.sh start tollgate_bench >&2
export DATABASE_URL="$(scripts/pg.sh url tollgate_bench)" TOLLGATE_DATA_DIR="$WORK" LOG_LEVEL=warning
export PORTAL_ADDRESS=127.0.0.1:18081 GATEWAY_ADDRESS=127.0.0.1:9003

# the demo marketplace and the processes around it, set up as bench/h2-syscalls.sh does
. "$ROOT/bench/demo-marketplace.sh"

cleanup() { stop_all upstream proxy tls uptls proto; }
trap cleanup EXIT

# upstream (core 0) and nginx proxy (core 1)
taskset -c 0 nginx -c "$REF/upstream.conf" -p "$WORK" -e "$WORK/upstream.err"
taskset -c 1 nginx -c "$REF/nginx-proxy.conf" -p "$WORK" -e "$WORK/proxy.err"
if [ "${TLS:-}" = 1 ]; then
  # one certificate for both proxies, so the handshake and record costs compare
  TOLLGATE_TLS_DIR="$WORK/tls" "$BIN" dev-certs >/dev/null
  cat >"$WORK/nginx-tls.conf" <<CONF
worker_processes 1;
pid tls.pid;
error_log tls.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  client_body_temp_path t-body; proxy_temp_path t-proxy; fastcgi_temp_path t-fcgi; uwsgi_temp_path t-uwsgi; scgi_temp_path t-scgi;
  upstream bench_upstream { server 127.0.0.1:9001; keepalive 64; keepalive_requests 100000; }
  server {
    listen 127.0.0.1:9442 ssl;
    ssl_certificate $WORK/tls/default.pem; ssl_certificate_key $WORK/tls/default.key; ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://bench_upstream; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host \$host; }
  }
}
CONF
  taskset -c 1 nginx -c "$WORK/nginx-tls.conf" -p "$WORK" -e "$WORK/tls.err"
  export GATEWAY_TLS_ADDRESS=127.0.0.1:9443 TOLLGATE_TLS_DIR="$WORK/tls"
fi

if [ "${PROTOCOLS:-}" = 1 ]; then
  need h2load || { if [ "$(id -u)" = 0 ]; then apt-get install -y nghttp2-client >/dev/null; else sudo apt-get install -y nghttp2-client >/dev/null; fi; }
  TOLLGATE_TLS_DIR="$WORK/tls" "$BIN" dev-certs >/dev/null
  # an https upstream (core 0) answering like the plain one, named so a switch of Echo's target shows
  cat >"$WORK/upstream-tls.conf" <<CONF
worker_processes 1;
pid uptls.pid;
error_log uptls.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  client_body_temp_path u-body; proxy_temp_path u-proxy; fastcgi_temp_path u-fcgi; uwsgi_temp_path u-uwsgi; scgi_temp_path u-scgi;
  server {
    listen 127.0.0.1:9446 ssl;
    ssl_certificate $WORK/tls/default.pem; ssl_certificate_key $WORK/tls/default.key; ssl_protocols TLSv1.2 TLSv1.3;
    location / { default_type application/json; return 200 '{"ok":true,"from":"bench-upstream-tls"}'; }
  }
}
CONF
  # nginx's side of the three pairs, one worker on core 1 like the other nginx proxies
  cat >"$WORK/nginx-proto.conf" <<CONF
worker_processes 1;
pid proto.pid;
error_log proto.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  http2_max_concurrent_streams 128;
  client_body_temp_path q-body; proxy_temp_path q-proxy; fastcgi_temp_path q-fcgi; uwsgi_temp_path q-uwsgi; scgi_temp_path q-scgi;
  upstream bench_upstream { server 127.0.0.1:9001; keepalive 64; keepalive_requests 100000; }
  upstream bench_upstream_tls { server 127.0.0.1:9446; keepalive 64; keepalive_requests 100000; }
  upstream bench_grpc { server 127.0.0.1:9101; keepalive 16; }
  server {
    listen 127.0.0.1:9448 http2;
    location / { proxy_pass http://bench_upstream; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host \$host; }
  }
  server {
    listen 127.0.0.1:9449;
    location / { proxy_pass https://bench_upstream_tls; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_ssl_session_reuse on; }
  }
  server {
    listen 127.0.0.1:9450 http2;
    location / { grpc_pass grpc://bench_grpc; }
  }
}
CONF
  taskset -c 0 nginx -c "$WORK/upstream-tls.conf" -p "$WORK" -e "$WORK/uptls.err"
  taskset -c 1 nginx -c "$WORK/nginx-proto.conf" -p "$WORK" -e "$WORK/proto.err"
  demo_greeter 9109 9101
fi

# the demo marketplace, with Echo routed to the nginx upstream and a plan whose limits exceed the load
demo_marketplace
echo_id="$(api_id echo)"
route_api "$echo_id" http://127.0.0.1:9001
bench_plan "$echo_id"
if [ "${PROTOCOLS:-}" = 1 ]; then  # the Greeter (seeded on the demo upstream's gRPC port, 9101) on a Bench plan too
  bench_plan "$(api_id greeter)"
fi
TOKEN="$(client_token)"

# the gateway alone on core 1
start_gateway

# Echo's policy chain: the plain rows measure none (the demo seed gives Echo two transformations).
# A change reaches the gateway by NOTIFY; wait until its answers show it.
set_policies() {  # policies-json header-to-wait-for (empty: wait until no Cache-Status/X-Served-By)
  curl -sf -X PUT -H "Authorization: Bearer $PAT" -H 'Content-Type: application/json' -d "{\"policies\":$1}" "$api/apis/$echo_id/policies" >/dev/null
  for _ in $(seq 100); do
    local heads; heads="$(curl -s -D - -o /dev/null -H "Authorization: Bearer $TOKEN" "http://$GATEWAY_ADDRESS/t/demo/echo/v1/" | tr -d '\r' | tr 'A-Z' 'a-z')"
    if [ -n "$2" ]; then grep -q "^$2" <<<"$heads" && return 0
    elif ! grep -qE '^(cache-status|x-served-by):' <<<"$heads"; then return 0; fi
    sleep 0.1
  done
  echo "the gateway did not take the policies $1" >&2; exit 1
}
set_policies '[]' ''
check="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://$GATEWAY_ADDRESS/t/demo/echo/v1/")"
[ "$check" = 200 ] || { echo "gateway answered $check, not 200" >&2; exit 1; }
CACHE_POLICY='[{"kind":"response_cache","config":{"ttl_seconds":3600,"shared":true}}]'
TRANSFORM_POLICY='[{"kind":"request_transform","config":{"headers":{"set":{"X-Caller":"$app_id","X-Plan":"$plan"}}}},{"kind":"response_transform","config":{"headers":{"set":{"X-Served-By":"tollgate"}}}}]'
VALIDATE_POLICY='[{"kind":"request_validation","config":{"validate":"both"}}]'
if [ "${POLICIES:-}" = 1 ]; then
  # Echo's document for the validate row: POST / takes a small JSON object (GET / stays valid for the other rows)
  curl -sf -X PUT -H "Authorization: Bearer $PAT" -H 'Content-Type: application/json' --data-binary @- "$api/apis/$echo_id/openapi" >/dev/null <<'DOC'
{"openapi":"3.1.0","info":{"title":"Echo","version":"1"},"paths":{"/":{"get":{"responses":{"200":{"description":"ok"}}},
 "post":{"requestBody":{"required":true,"content":{"application/json":{"schema":{"type":"object","required":["sku","quantity"],"additionalProperties":false,
  "properties":{"sku":{"type":"string","pattern":"^[A-Z]{3}-[0-9]{1,6}$"},"quantity":{"type":"integer","minimum":1,"maximum":1000},"note":{"type":"string","maxLength":200}}}}}},
  "responses":{"200":{"description":"ok"}}}}}}
DOC
  cat >"$WORK/validate.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"sku":"ABC-123","quantity":2,"note":"bench"}'
wrk.headers["Content-Type"] = "application/json"
LUA
fi
set_validation() {  # on: wait until a path the document lacks is refused (404) by the gateway
  curl -sf -X PUT -H "Authorization: Bearer $PAT" -H 'Content-Type: application/json' -d "{\"policies\":$VALIDATE_POLICY}" "$api/apis/$echo_id/policies" >/dev/null
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://$GATEWAY_ADDRESS/t/demo/echo/v1/not-in-the-document")" = 404 ] && return 0
    sleep 0.1
  done
  echo "the gateway did not take the validation policy" >&2; exit 1
}

cpu_ticks() {  # user and system clock ticks a process has used (fields 14 and 15 of /proc/PID/stat)
  [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || { echo "0 0"; return; }
  sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12, $13}'
}
core1_ticks() {  # busy and total clock ticks of core 1, the proxy's core (from /proc/stat)
  awk '$1 == "cpu1" {total = 0; for (i = 2; i <= NF; i++) total += $i; print total - $5 - $6, total}' /proc/stat
}
nginx_worker() { pgrep -P "$(cat "$WORK/${1:-proxy}.pid")" | head -1; }
run() {  # name round url [header]; also records the proxy's CPU ticks over the run for the CPU columns
  local out="$WORK/wrk-$1-$2.txt" pid=""
  case "$1" in nginx) pid="$(nginx_worker)";; nginx-tls) pid="$(nginx_worker tls)";; nginx-https-up) pid="$(nginx_worker proto)";; *) [ "$1" = upstream ] || pid="${gateway_pid:-}";; esac
  local before core_before; before="$(cpu_ticks "$pid")"; core_before="$(core1_ticks)"
  if [ -n "${5:-}" ]; then taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -H "$4" -s "$5" "$3" >"$out"
  elif [ -n "${4:-}" ]; then taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -H "$4" "$3" >"$out"
  else taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency "$3" >"$out"; fi
  echo "$before $(cpu_ticks "$pid") $(getconf CLK_TCK) $core_before $(core1_ticks)" >"$out.cpu"
}
run_h2() {  # name round url [h2load arguments]: h2load, 4 connections × 32 streams, prior-knowledge h2c
  local name="$1" round="$2" url="$3"; shift 3
  local out="$WORK/h2-$name-$round.txt" pid="${gateway_pid:-}"
  case "$name" in nginx-*) pid="$(nginx_worker proto)";; esac
  local before core_before; before="$(cpu_ticks "$pid")"; core_before="$(core1_ticks)"
  taskset -c 0 h2load -t1 -c4 -m32 -D "$SECONDS_PER_RUN" "$@" "$url" >"$out" 2>&1
  echo "$before $(cpu_ticks "$pid") $(getconf CLK_TCK) $core_before $(core1_ticks)" >"$out.cpu"
}
set_echo_target() {  # url tls|plain: PATCH Echo's target (and CA), wait until the gateway's answers come from it
  local ca=''; [ "${1#https}" != "$1" ] && ca=",\"upstream_ca_pem\":$(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' "$WORK/tls/ca.pem")"
  curl -sf -X PATCH -H "Authorization: Bearer $PAT" -H 'Content-Type: application/json' \
    -d "{\"targets\":[{\"url\":\"$1\",\"weight\":1}]$ca}" "$api/apis/$echo_id" >/dev/null
  for _ in $(seq 100); do
    local answer; answer="$(curl -s -w ' %{http_code}' -H "Authorization: Bearer $TOKEN" "http://$GATEWAY_ADDRESS/t/demo/echo/v1/")"
    case "$2:$answer" in tls:*bench-upstream-tls*' 200') return 0;; plain:*bench-upstream-tls*) ;; plain:*' 200') return 0;; esac
    sleep 0.1
  done
  echo "the gateway did not take Echo's target $1; it answers: $(curl -s -i -H "Authorization: Bearer $TOKEN" "http://$GATEWAY_ADDRESS/t/demo/echo/v1/" | head -c 600)" >&2; exit 1
}
if [ "${PROFILE:-}" = syscalls ]; then  # system calls per request of each proxy (strace -c slows them; the counts are what matter)
  for name in nginx tollgate; do
    pid="$gateway_pid"; url="http://$GATEWAY_ADDRESS/t/demo/echo/v1/"; header="Authorization: Bearer $TOKEN"
    [ "$name" = nginx ] && { pid="$(nginx_worker)"; url="http://127.0.0.1:9002/"; header="X-Bench: 1"; }
    strace -c -f -p "$pid" -o "$WORK/strace-$name.txt" & strace_pid=$!; sleep 1
    taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -H "$header" "$url" >"$WORK/wrk-$name-strace.txt"
    kill -INT "$strace_pid"; wait "$strace_pid" 2>/dev/null || true
    requests="$(grep -o '[0-9]* requests in' "$WORK/wrk-$name-strace.txt" | cut -d' ' -f1)"
    echo "$name: $requests requests"; awk -v n="$requests" 'NR > 2 && $4 ~ /^[0-9]+$/ {printf "  %-16s %8.3f per request\n", $NF, $4 / n}' "$WORK/strace-$name.txt" | sort -k2 -rn | head -12
  done
  exit 0
fi
if [ -n "${PROFILE:-}" ]; then  # PROFILE=1 (proxied calls) or PROFILE=local (/healthz): perf profile, then exit
  # PROFILE=nginx profiles the nginx proxy's worker under the same load, for comparison
  # PROFILE=validate (with POLICIES=1) profiles the validate row's calls, PROFILE=h2 the tollgate-h2 row's
  profiled="$gateway_pid"; [ "$PROFILE" = nginx ] && profiled="$(nginx_worker)"
  [ "$PROFILE" = validate ] && set_validation
  perf record -F 999 -g -p "$profiled" -o "$WORK/perf.data" -- sleep "$SECONDS_PER_RUN" 2>/dev/null & perf_pid=$!
  case "$PROFILE" in
    local) run tollgate profile "http://$GATEWAY_ADDRESS/healthz";;
    nginx) run nginx profile "http://127.0.0.1:9002/";;
    validate) run validate profile "http://$GATEWAY_ADDRESS/t/demo/echo/v1/" "Authorization: Bearer $TOKEN" "$WORK/validate.lua";;
    h2) run_h2 tollgate-h2 profile "http://$GATEWAY_ADDRESS/t/demo/echo/v1/" -H "authorization: Bearer $TOKEN";;
    *) run tollgate profile "http://$GATEWAY_ADDRESS/t/demo/echo/v1/" "Authorization: Bearer $TOKEN";;
  esac
  wait "$perf_pid"
  grep -h "Requests/sec\|req/s," "$WORK"/wrk-*-profile.txt "$WORK"/h2-*-profile.txt 2>/dev/null || true
  # CPU per request by library: samples at 999 Hz → ms of CPU, divided by the requests served
  perf report -i "$WORK/perf.data" --stdio --no-children -g none --sort dso 2>/dev/null | grep -v '^#' | grep -v '^$' | head -8
  perf report -i "$WORK/perf.data" --stdio --no-children -g none --percent-limit 0.7 2>/dev/null | grep -v '^$' | head -60
  exit 0
fi
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  run upstream "$round" "http://127.0.0.1:9001/"
  run nginx "$round" "http://127.0.0.1:9002/"
  run tollgate "$round" "http://$GATEWAY_ADDRESS/t/demo/echo/v1/" "Authorization: Bearer $TOKEN"
  # the gateway answering by itself (no auth, no upstream): what its HTTP server side costs alone
  run local "$round" "http://$GATEWAY_ADDRESS/healthz"
  if [ "${TLS:-}" = 1 ]; then
    run nginx-tls "$round" "https://127.0.0.1:9442/"
    run tollgate-tls "$round" "https://127.0.0.1:9443/t/demo/echo/v1/" "Authorization: Bearer $TOKEN"
  fi
  if [ "${POLICIES:-}" = 1 ]; then
    set_policies "$CACHE_POLICY" "cache-status: tollgate; hit"
    run cache-hit "$round" "http://$GATEWAY_ADDRESS/t/demo/echo/v1/" "Authorization: Bearer $TOKEN"
    set_policies "$TRANSFORM_POLICY" "x-served-by: tollgate"
    run transform "$round" "http://$GATEWAY_ADDRESS/t/demo/echo/v1/" "Authorization: Bearer $TOKEN"
    set_validation
    run validate "$round" "http://$GATEWAY_ADDRESS/t/demo/echo/v1/" "Authorization: Bearer $TOKEN" "$WORK/validate.lua"
    set_policies '[]' ''
  fi
done

if [ "${PROTOCOLS:-}" = 1 ]; then
  status="$(curl -s --http2-prior-knowledge -o /dev/null -w '%{http_code} %header{grpc-status}' -H "Authorization: Bearer $TOKEN" -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary @"$WORK/sayhello.bin" "http://$GATEWAY_ADDRESS/t/demo/greeter/v1/demo.Greeter/SayHello" || true)"
  echo "gRPC check through the gateway: $status" >&2
  for round in $(seq "$ROUNDS"); do
    echo "protocols round $round/$ROUNDS" >&2
    run_h2 nginx-h2 "$round" "http://127.0.0.1:9448/"
    run_h2 tollgate-h2 "$round" "http://$GATEWAY_ADDRESS/t/demo/echo/v1/" -H "authorization: Bearer $TOKEN"
    run_h2 nginx-grpc "$round" "http://127.0.0.1:9450/demo.Greeter/SayHello" -d "$WORK/sayhello.bin" -H 'content-type: application/grpc' -H 'te: trailers'
    run_h2 tollgate-grpc "$round" "http://$GATEWAY_ADDRESS/t/demo/greeter/v1/demo.Greeter/SayHello" -d "$WORK/sayhello.bin" \
      -H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: Bearer $TOKEN"
  done
  set_echo_target https://127.0.0.1:9446 tls
  for round in $(seq "$ROUNDS"); do
    run nginx-https-up "$round" "http://127.0.0.1:9449/"
    run tollgate-https-up "$round" "http://$GATEWAY_ADDRESS/t/demo/echo/v1/" "Authorization: Bearer $TOKEN"
  done
  set_echo_target http://127.0.0.1:9001 plain
fi

python3 - "$WORK" "$ROUNDS" "$CONNECTIONS" "${TLS:-}" "${POLICIES:-}" "${PROTOCOLS:-}" <<'PY'
import re, statistics, sys
work, rounds, conns = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
def parse(path):
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)); p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    u0, s0, u1, s1, hz, b0, t0, b1, t1 = map(int, open(path + ".cpu").read().split())
    # CPU the proxy process spent per request, user and kernel (µs); 0 for the upstream row
    user, system = ((u1 - u0) / hz * 1e6 / requests, (s1 - s0) / hz * 1e6 / requests) if requests else (0, 0)
    # how busy core 1 was, and how much of that was something other than the proxy (Postgres, say)
    busy = 100 * (b1 - b0) / max(1, t1 - t0)
    others = busy - 100 * ((u1 - u0) + (s1 - s0)) / max(1, t1 - t0) if u1 + s1 else 0
    return rps, p50, p99, user, system, busy, others, int(errors.group(1)) if errors else 0
results = {}
policy_rows = [n for n in ["cache-hit", "transform", "validate"] if sys.argv[5] == "1" and __import__("os").path.exists(f"{work}/wrk-{n}-1.txt")]
protocols = sys.argv[6] == "1"
for name in ["upstream", "nginx", "tollgate", "local"] + (["nginx-tls", "tollgate-tls"] if sys.argv[4] == "1" else []) + policy_rows + (["nginx-https-up", "tollgate-https-up"] if protocols else []):
    runs = [parse(f"{work}/wrk-{name}-{r}.txt") for r in range(1, rounds + 1)]
    results[name] = [statistics.median(x[i] for x in runs) for i in range(7)] + [sum(x[7] for x in runs)]
print(f"{'target':<13} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'user us':>8} {'sys us':>8} {'core1 %':>8} {'other %':>8} {'non-2xx':>8}")
print(f"  (median of {rounds} rounds, {conns} connections; user/sys: CPU of the proxy per request; core1: how busy the proxy's core was, other: by something else)")
for name, (rps, p50, p99, user, system, busy, others, errors) in results.items():
    print(f"{name:<13} {rps:>10.0f} {p50:>8.3f} {p99:>8.3f} {user:>8.1f} {system:>8.1f} {busy:>8.1f} {others:>8.1f} {errors:>8}")
ratio = results["tollgate"][0] / results["nginx"][0]
added = results["tollgate"][2] - results["upstream"][2]
print(f"gateway/nginx req/s ratio: {ratio:.2f} (target >= 0.5); CPU per call {(results['tollgate'][3] + results['tollgate'][4]) / max(0.1, results['nginx'][3] + results['nginx'][4]):.2f}x nginx's (target <= 2)")
print(f"gateway p99 added over the upstream: {added:.3f} ms (target <= 1 ms); nginx adds {results['nginx'][2] - results['upstream'][2]:.3f} ms")
for name in policy_rows:
    plain = results["tollgate"][3] + results["tollgate"][4]
    print(f"{name}: {results[name][3] + results[name][4] - plain:+.1f} us CPU per call against the plain gateway row ({results[name][0] / results['tollgate'][0]:.2f}x its req/s)")
if "tollgate-tls" in results:
    print(f"TLS: gateway/nginx req/s ratio: {results['tollgate-tls'][0] / results['nginx-tls'][0]:.2f} (plaintext: {ratio:.2f})")
def parse_h2(path):  # h2load's summary: req/s, mean time per request, failures; CPU as for wrk
    text = open(path).read()
    rps = float(re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", text).group(1))
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
    # with -D, answers that arrive after the deadline may be counted in the status codes only
    requests, failed = int(done.group(1)), int(done.group(3)) + int(done.group(4))
    twoxx = re.search(r"status codes: (\d+) 2xx", text)
    failed += max(0, requests - int(twoxx.group(1))) if twoxx else requests
    mean = ms(re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", text).group(1))
    u0, s0, u1, s1, hz, b0, t0, b1, t1 = map(int, open(path + ".cpu").read().split())
    user, system = ((u1 - u0) / hz * 1e6 / requests, (s1 - s0) / hz * 1e6 / requests) if requests else (0, 0)
    busy = 100 * (b1 - b0) / max(1, t1 - t0)
    others = busy - 100 * ((u1 - u0) + (s1 - s0)) / max(1, t1 - t0)
    return rps, mean, user, system, busy, others, failed
if protocols:
    print(f"{'h2 target':<18} {'req/s':>10} {'mean ms':>8} {'user us':>8} {'sys us':>8} {'core1 %':>8} {'other %':>8} {'failed':>8}")
    print("  (h2load: 4 connections x 32 concurrent streams, median of the rounds; failed: errors and non-2xx)")
    h2 = {}
    for name in ["nginx-h2", "tollgate-h2", "nginx-grpc", "tollgate-grpc"]:
        runs = [parse_h2(f"{work}/h2-{name}-{r}.txt") for r in range(1, rounds + 1)]
        h2[name] = [statistics.median(x[i] for x in runs) for i in range(6)] + [sum(x[6] for x in runs)]
        rps, mean, user, system, busy, others, failed = h2[name]
        print(f"{name:<18} {rps:>10.0f} {mean:>8.3f} {user:>8.1f} {system:>8.1f} {busy:>8.1f} {others:>8.1f} {failed:>8}")
    for kind in ["h2", "grpc"]:
        g, n = h2[f"tollgate-{kind}"], h2[f"nginx-{kind}"]
        print(f"{kind}: gateway/nginx req/s ratio {g[0] / n[0]:.2f}; CPU per call {(g[2] + g[3]) / max(0.1, n[2] + n[3]):.2f}x nginx's")
    g, n = results["tollgate-https-up"], results["nginx-https-up"]
    print(f"https upstream: gateway/nginx req/s ratio {g[0] / n[0]:.2f} (plaintext upstream: {ratio:.2f}); CPU per call {(g[3] + g[4]) / max(0.1, n[3] + n[4]):.2f}x nginx's")
PY
