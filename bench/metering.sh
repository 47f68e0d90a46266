#!/usr/bin/env bash
# Metering and billing benchmark (on demand, never part of `make test`). Prints three figures:
#   1. invoice run: every draft of a month recomputed for 10,000 subscriptions (1,000 teams) with
#      a month of usage (10,000 × 720 = 7.2 M hourly rollups, 310,000 daily ones);
#   2. CSV export of 1,000,000 usage rows (day × subscription), with the process's peak memory;
#   3. sustained ingest: the cost of single writes (events and their rollup deltas in one
#      transaction) of 5,000 and 25,000 events, and the UsageMeter — two writes in flight, folding
#      deltas into the rollups every second — under an offered load of RATE events/s (default
#      70,000: above the 50,000 target, so the figure shows where the meter stops keeping up).
#
#   bench/metering.sh [events=500000]      RATE=… to offer another load; CONFIG=debug to skip the release build;
#                                          REUSE=1 to keep the last run's data (for repeated runs)
#
# Uses a private PostgreSQL database `tollgate_bench_metering` (dropped and re-created each run).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
EVENTS="${1:-500000}"
RATE="${RATE:-70000}"
CONFIG="${CONFIG:-release}"
WORK="$ROOT/.data/bench"; mkdir -p "$WORK"
cd "$ROOT"
swift build -c "$CONFIG" --product tollgate >&2
BIN="$(swift build -c "$CONFIG" --show-bin-path)/tollgate"
DB=tollgate_bench_metering
scripts/pg.sh start >&2
# REUSE=1 keeps the database of the last run (its data is not re-created; only the migrations run)
[ "${REUSE:-0}" = 1 ] || scripts/pg.sh psql -d postgres -qAt -c "DROP DATABASE IF EXISTS $DB" >&2
scripts/pg.sh start "$DB" >&2
export DATABASE_URL="$(scripts/pg.sh url "$DB")" LOG_LEVEL=error
# the binary's data dir is the bench folder; scripts/pg.sh keeps using the private cluster's
tollgate() { TOLLGATE_DATA_DIR="$WORK" "$BIN" "$@"; }
tollgate migrate >&2
psql_bench() { scripts/pg.sh psql -d "$DB" -v ON_ERROR_STOP=1 -qAt "$@"; }

if [ "${REUSE:-0}" != 1 ]; then
echo "preparing: tenant bench, 1,000 teams, 10,000 apps and subscriptions, 7.2 M October rollups, 1 M sparse summer rollups" >&2
prep_start=$(date +%s)
psql_bench <<'SQL'
INSERT INTO tenants (slug, name, currency) VALUES ('bench', 'Bench', 'USD');
CREATE TEMP TABLE b AS SELECT id AS tenant FROM tenants WHERE slug = 'bench';
INSERT INTO teams (tenant_id, slug, name) SELECT tenant, 'team-' || g, 'Team ' || g FROM b, generate_series(0, 1000) g;
INSERT INTO apis (tenant_id, team_id, slug, version, name, base_path, state)
  SELECT tenant, (SELECT id FROM teams WHERE slug = 'team-0' AND tenant_id = tenant), 'echo', 'v1', 'Echo', '/echo/v1', 'published' FROM b;
INSERT INTO plans (tenant_id, api_id, family_id, version, name, rate_per_second, burst, monthly_quota, monthly_fee_minor, included_requests,
                   tier_mode, tiers, approval, visibility)
  SELECT tenant, (SELECT id FROM apis WHERE tenant_id = tenant), gen_random_uuid(), 1, 'Pro', 50, 100, NULL, 4900, 50000, 'graduated',
         '[{"up_to": 100000, "unit_price_micros": 200000}, {"up_to": null, "unit_price_micros": 100000}]', 'automatic', 'public' FROM b;
INSERT INTO apps (tenant_id, team_id, name, client_id)
  SELECT tenant, (SELECT id FROM teams WHERE tenant_id = tenant AND slug = 'team-' || (1 + g % 1000)), 'app-' || g, 'bench-' || g
  FROM b, generate_series(1, 10000) g;
INSERT INTO subscriptions (tenant_id, app_id, api_id, plan_id, state, created_at)
  SELECT tenant, a.id, (SELECT id FROM apis WHERE tenant_id = tenant), (SELECT id FROM plans WHERE tenant_id = tenant), 'active', '2026-05-15'
  FROM b JOIN apps a ON a.tenant_id = b.tenant;
INSERT INTO subscription_events (tenant_id, subscription_id, event, to_state, to_plan_id, actor_side, at)
  SELECT tenant_id, id, 'subscription.created', 'active', plan_id, 'system', '2026-05-15' FROM subscriptions;
-- October: every subscription, every hour (about 150 calls an hour: some pay for overage)
INSERT INTO usage_hourly (tenant_id, subscription_id, hour, api_id, app_id, plan_id, calls, billable, errors, status_2xx, status_5xx, bytes_out, latency)
  SELECT s.tenant_id, s.id, h, s.api_id, s.app_id, s.plan_id, 150 + (hashtext(s.id::text) & 63), 148 + (hashtext(s.id::text) & 63), 2,
         148 + (hashtext(s.id::text) & 63), 2, 76800, array_fill(0::bigint, ARRAY[5]) || ARRAY[140::bigint, 10] || array_fill(0::bigint, ARRAY[22])
  FROM subscriptions s, generate_series('2026-10-01'::timestamptz, '2026-10-31 23:00'::timestamptz, '1 hour') h;
-- June to early September: one hour a day per subscription, 100 days → 1,000,000 export rows
INSERT INTO usage_hourly (tenant_id, subscription_id, hour, api_id, app_id, plan_id, calls, billable, status_2xx, bytes_out, latency)
  SELECT s.tenant_id, s.id, d + interval '12 hours', s.api_id, s.app_id, s.plan_id, 10, 10, 10, 5120, array_fill(1::bigint, ARRAY[29])
  FROM subscriptions s, generate_series('2026-06-01'::timestamptz, '2026-09-08'::timestamptz, '1 day') d;
-- the daily rollups the meter keeps beside the hourly ones
INSERT INTO usage_daily (tenant_id, day, subscription_id, plan_id, api_id, app_id, calls, billable, rejected, errors, bytes_in, bytes_out)
  SELECT tenant_id, (hour AT TIME ZONE 'UTC')::date, subscription_id, plan_id, max(api_id::text)::uuid, max(app_id::text)::uuid,
         sum(calls), sum(billable), 0, sum(errors), sum(bytes_in), sum(bytes_out)
  FROM usage_hourly GROUP BY 1, 2, 3, 4;
VACUUM ANALYZE;
SQL
echo "prepared in $(( $(date +%s) - prep_start )) s" >&2
fi

echo "== 1. invoice run (10,000 subscriptions, 7.2 M rollup rows) =="
tollgate bench-metering invoice-run --tenant bench --period 2026-10
tollgate bench-metering invoice-run --tenant bench --period 2026-10
echo "== 2. usage CSV export (1,000,000 rows) =="
TOLLGATE_DATA_DIR="$WORK" /usr/bin/time -f "%e s elapsed, peak RSS %M KiB" "$BIN" export usage --tenant bench --from 2026-06-01 --to 2026-09-09 2> "$WORK/export.time" > "$WORK/usage.csv"
echo "rows: $(( $(wc -l < "$WORK/usage.csv") - 1 )), bytes: $(stat -c %s "$WORK/usage.csv")"
cat "$WORK/export.time"
rm -f "$WORK/usage.csv"
echo "== 3. ingest =="
# last, as it leaves the current hour's rollups with many dead row versions for autovacuum.
# The cost of one write by its size first: UsageStore.write back to back, every event a different
# hourly rollup row within a write of 5,000
tollgate bench-metering ingest --tenant bench --events "$EVENTS" --subscriptions 10000 --batch 5000
tollgate bench-metering ingest --tenant bench --events "$EVENTS" --subscriptions 10000 --batch 25000
# then the real meter under an offered load (it flushes every 100 ms, or at 5,000 buffered events, in
# two writes at once; a backlog goes out in writes of up to 25,000): every subscription busy, then
# 1,000 busy ones
tollgate bench-metering meter --tenant bench --rate "$RATE" --seconds 20 --subscriptions 10000
tollgate bench-metering meter --tenant bench --rate "$RATE" --seconds 20 --subscriptions 1000
