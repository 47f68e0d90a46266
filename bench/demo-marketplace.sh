# Sourced, not run: the demo marketplace the gateway benchmarks (gateway.sh, h2-syscalls.sh) call
# through, set up the same way for both. Expects BIN (the tollgate binary), WORK (the script's
# work directory, also TOLLGATE_DATA_DIR), DATABASE_URL, PORTAL_ADDRESS and GATEWAY_ADDRESS.
#
#   pids               the background processes started (the scripts' own join them too)
#   stop_all NAME...   ends them, and the nginx instances whose pid files $WORK/NAME.pid are named
#                      (the scripts' EXIT trap)
#   demo_marketplace   a fresh schema, migrated and seeded; starts the portal and waits for it;
#                      sets creds (seed-demo --json), PAT and DEV (tokens of the demo's provider
#                      and developer) and api (the demo tenant's JSON API)
#   api_id SLUG        the id of the demo API with that slug
#   route_api ID URL   the API's only target becomes URL
#   bench_plan ID      a hidden plan "Bench" on the API whose limits exceed any load (made once),
#                      and the developer's active subscription to the API moved to it
#   client_token       an access token of the demo app (client credentials)
#   demo_greeter PORT GRPC_PORT
#                      `tollgate demo-upstream` on core 0 (Echo on PORT, the gRPC Greeter on
#                      GRPC_PORT), and $WORK/sayhello.bin: a unary SayHello request as gRPC frames
#                      it (not compressed, length 5, HelloRequest{name: "Ada"})
#   start_gateway      the gateway alone, one event loop, on core 1 (gateway_pid), once ready

pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for name in "$@"; do [ -f "$WORK/$name.pid" ] && kill "$(cat "$WORK/$name.pid")" 2>/dev/null || true; done
}

field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$creds" "$1"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

demo_marketplace() {
  # a fresh database every run: the demo's secrets exist in clear only in the credentials file under
  # $WORK, and the cluster (with this database) may be shared by several checkouts
  psql "$DATABASE_URL" -qAt -c "DROP SCHEMA public CASCADE" -c "CREATE SCHEMA public" >/dev/null
  rm -f "$WORK/demo-credentials.txt"
  "$BIN" migrate >/dev/null
  "$BIN" seed-demo >/dev/null
  creds="$("$BIN" seed-demo --json)"
  "$BIN" portal & pids+=($!)
  for _ in $(seq 100); do curl -sf "http://$PORTAL_ADDRESS/readyz" >/dev/null && break; sleep 0.2; done
  PAT="$("$BIN" token create --tenant demo --email provider@demo.test --scope read --scope write | tail -1)"
  DEV="$("$BIN" token create --tenant demo --email developer@demo.test --scope read --scope write | tail -1)"
  api="http://$PORTAL_ADDRESS/t/demo/api/v1"
}

api_id() {
  curl -sf -H "Authorization: Bearer $PAT" "$api/apis" | json "[a['id'] for a in d['items'] if a['slug']=='$1'][0]"
}

route_api() {
  curl -sf -X PATCH -H "Authorization: Bearer $PAT" -H 'Content-Type: application/json' \
    -d "{\"targets\":[{\"url\":\"$2\",\"weight\":1}]}" "$api/apis/$1" >/dev/null
}

bench_plan() {
  local plan subscription
  plan="$(curl -sf -H "Authorization: Bearer $PAT" "$api/apis/$1/plans" | json "([p['id'] for p in d['items'] if p['terms']['name']=='Bench'] or [''])[0]")"
  if [ -z "$plan" ]; then
    plan="$(curl -sf -X POST -H "Authorization: Bearer $PAT" -H 'Content-Type: application/json' \
      -d '{"name":"Bench","rate_per_second":1000000,"burst":10000000,"monthly_fee_minor":0,"included_requests":0,"tier_mode":"flat","tiers":[{"unit_price_micros":0}],"approval":"automatic","visibility":"hidden"}' \
      "$api/apis/$1/plans" | json "d['id']")"
  fi
  subscription="$(curl -sf -H "Authorization: Bearer $DEV" "$api/subscriptions" | json "[s['id'] for s in d['items'] if s['api_id']=='$1' and s['state']=='active'][0]")"
  # (already on it when a former run left the plan: the action then answers an error, harmlessly)
  curl -s -X POST -H "Authorization: Bearer $PAT" -H 'Content-Type: application/json' \
    -d "{\"action\":\"change_plan\",\"plan_id\":\"$plan\"}" "$api/subscriptions/$subscription/actions" >/dev/null || true
}

client_token() {
  curl -sf -u "$(field client_id):$(field client_secret)" -d grant_type=client_credentials "http://$PORTAL_ADDRESS/t/demo/oauth2/token" | json "d['access_token']"
}

demo_greeter() {
  taskset -c 0 "$BIN" demo-upstream --port "$1" --grpc-port "$2" >"$WORK/demo-upstream.log" 2>&1 & pids+=($!)
  printf '\x00\x00\x00\x00\x05\x0a\x03Ada' >"$WORK/sayhello.bin"
}

start_gateway() {
  TOLLGATE_GATEWAY_THREADS=1 taskset -c 1 "$BIN" gateway & gateway_pid=$!; pids+=($gateway_pid)
  for _ in $(seq 100); do curl -sf "http://$GATEWAY_ADDRESS/readyz" >/dev/null && break; sleep 0.2; done
}
