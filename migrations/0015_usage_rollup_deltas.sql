-- Insert-only rollup deltas (measurements in docs/BENCHMARKS.md).
--
-- The meter used to upsert the hourly and daily rollups in the transaction of each batch: at
-- 50,000 events/s every busy rollup row was rewritten ten times a second, and those upserts were
-- five sixths of the write. Now a batch appends its hourly deltas here (plain inserts into a
-- table without indexes), still in the transaction of its events, and `tollgate_fold_usage()`
-- — run by each meter about once a second, and by exports before they read — moves them into
-- `usage_hourly` and `usage_daily`, one upsert per key for however many deltas it gathered.
-- Readers that sum (analytics, invoices, reconciliation) read the `*_live` views below, which
-- add what is not folded yet, so nothing they show waits for a fold.

CREATE TABLE usage_deltas (
    tenant_id       uuid NOT NULL,
    subscription_id uuid NOT NULL,
    hour            timestamptz NOT NULL,
    plan_id         uuid NOT NULL,
    api_id          uuid,
    app_id          uuid,
    calls           bigint NOT NULL,
    billable        bigint NOT NULL,
    errors          bigint NOT NULL,
    rejected        jsonb NOT NULL,
    status_2xx      bigint NOT NULL,
    status_3xx      bigint NOT NULL,
    status_4xx      bigint NOT NULL,
    status_5xx      bigint NOT NULL,
    bytes_in        bigint NOT NULL,
    bytes_out       bigint NOT NULL,
    latency         bigint[] NOT NULL
);
SELECT tollgate_isolate_tenant_table('usage_deltas');

-- Deleting a tenant deletes its unfolded deltas with its events (no foreign key: like the events,
-- deltas are written at the meter's rate).
CREATE OR REPLACE FUNCTION tollgate_delete_tenant_usage() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    scope text := current_setting('tollgate.scope', true);
BEGIN
    PERFORM set_config('tollgate.scope', 'system', true);
    DELETE FROM usage_events WHERE tenant_id = OLD.id;
    DELETE FROM usage_deltas WHERE tenant_id = OLD.id;
    PERFORM set_config('tollgate.scope', coalesce(scope, ''), true);
    RETURN OLD;
END
$$;

-- How many calls a {reason: count} object holds.
CREATE FUNCTION tollgate_reason_total(r jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN r = '{}' THEN 0 ELSE (SELECT coalesce(sum(value::bigint), 0) FROM jsonb_each_text(r)) END
$$;

-- Moves every committed delta into the rollups; returns how many deltas it folded. Folders take
-- turns (an advisory lock), so two of them never upsert the same rows in different orders. Runs
-- in system scope whatever the caller's, as the meter's writes do, and restores the caller's.
-- Everything is summed with built-in aggregates: a plpgsql aggregate over the histograms cost
-- ~13 µs a delta, half of a fold. The histogram has 29 buckets (LatencyHistogram.bounds). JIT
-- compiling the statement cost more than running it.
CREATE FUNCTION tollgate_fold_usage() RETURNS bigint
LANGUAGE plpgsql SET jit = off SET work_mem = '64MB' AS $$
DECLARE
    scope text := current_setting('tollgate.scope', true);
    folded bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7310312928144584044);
    PERFORM set_config('tollgate.scope', 'system', true);
    WITH moved AS (
        DELETE FROM usage_deltas RETURNING *
    ), sums AS (
        SELECT tenant_id, subscription_id, hour, plan_id, max(api_id::text)::uuid AS api_id, max(app_id::text)::uuid AS app_id,
               sum(calls) AS calls, sum(billable) AS billable, sum(errors) AS errors,
               sum(status_2xx) AS s2, sum(status_3xx) AS s3, sum(status_4xx) AS s4, sum(status_5xx) AS s5,
               sum(bytes_in) AS bytes_in, sum(bytes_out) AS bytes_out, count(*) AS deltas,
               ARRAY[sum(latency[1]), sum(latency[2]), sum(latency[3]), sum(latency[4]), sum(latency[5]), sum(latency[6]), sum(latency[7]), sum(latency[8]), sum(latency[9]), sum(latency[10]), sum(latency[11]), sum(latency[12]), sum(latency[13]), sum(latency[14]), sum(latency[15]), sum(latency[16]), sum(latency[17]), sum(latency[18]), sum(latency[19]), sum(latency[20]), sum(latency[21]), sum(latency[22]), sum(latency[23]), sum(latency[24]), sum(latency[25]), sum(latency[26]), sum(latency[27]), sum(latency[28]), sum(latency[29])]::bigint[] AS latency
        FROM moved GROUP BY tenant_id, subscription_id, hour, plan_id
    ), reasons AS (
        SELECT tenant_id, subscription_id, hour, plan_id, jsonb_object_agg(reason, n) AS rejected, sum(n) AS rejected_total FROM (
            SELECT m.tenant_id, m.subscription_id, m.hour, m.plan_id, r.key AS reason, sum(r.value::bigint) AS n
            FROM moved m, jsonb_each_text(m.rejected) AS r WHERE m.rejected <> '{}' GROUP BY 1, 2, 3, 4, 5
        ) per_reason GROUP BY 1, 2, 3, 4
    ), hours AS (
        SELECT s.*, coalesce(r.rejected, '{}') AS rejected, coalesce(r.rejected_total, 0) AS rejected_total
        FROM sums s LEFT JOIN reasons r USING (tenant_id, subscription_id, hour, plan_id)
    ), hourly AS (
        INSERT INTO usage_hourly (tenant_id, subscription_id, hour, api_id, app_id, plan_id, calls, billable, errors, rejected,
                                  status_2xx, status_3xx, status_4xx, status_5xx, bytes_in, bytes_out, latency)
        SELECT tenant_id, subscription_id, hour, api_id, app_id, plan_id, calls, billable, errors, rejected, s2, s3, s4, s5, bytes_in, bytes_out, latency
        FROM hours ORDER BY tenant_id, subscription_id, hour, plan_id
        ON CONFLICT (tenant_id, subscription_id, hour, plan_id) DO UPDATE SET
            -- api_id is indexed: keeping it as it is keeps the update HOT
            api_id = coalesce(usage_hourly.api_id, EXCLUDED.api_id), app_id = coalesce(usage_hourly.app_id, EXCLUDED.app_id),
            calls = usage_hourly.calls + EXCLUDED.calls, billable = usage_hourly.billable + EXCLUDED.billable,
            errors = usage_hourly.errors + EXCLUDED.errors,
            rejected = CASE WHEN EXCLUDED.rejected = '{}' THEN usage_hourly.rejected ELSE tollgate_add_reasons(usage_hourly.rejected, EXCLUDED.rejected) END,
            status_2xx = usage_hourly.status_2xx + EXCLUDED.status_2xx, status_3xx = usage_hourly.status_3xx + EXCLUDED.status_3xx,
            status_4xx = usage_hourly.status_4xx + EXCLUDED.status_4xx, status_5xx = usage_hourly.status_5xx + EXCLUDED.status_5xx,
            bytes_in = usage_hourly.bytes_in + EXCLUDED.bytes_in, bytes_out = usage_hourly.bytes_out + EXCLUDED.bytes_out,
            latency = tollgate_add_counts(usage_hourly.latency, EXCLUDED.latency)
    ), daily AS (
        INSERT INTO usage_daily (tenant_id, day, subscription_id, plan_id, api_id, app_id, calls, billable, rejected, errors, bytes_in, bytes_out)
        SELECT tenant_id, (hour AT TIME ZONE 'UTC')::date, subscription_id, plan_id, max(api_id::text)::uuid, max(app_id::text)::uuid,
               sum(calls), sum(billable), sum(rejected_total), sum(errors), sum(bytes_in), sum(bytes_out)
        FROM hours GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT (tenant_id, day, subscription_id, plan_id) DO UPDATE SET
            api_id = coalesce(usage_daily.api_id, EXCLUDED.api_id), app_id = coalesce(usage_daily.app_id, EXCLUDED.app_id),
            calls = usage_daily.calls + EXCLUDED.calls, billable = usage_daily.billable + EXCLUDED.billable,
            rejected = usage_daily.rejected + EXCLUDED.rejected, errors = usage_daily.errors + EXCLUDED.errors,
            bytes_in = usage_daily.bytes_in + EXCLUDED.bytes_in, bytes_out = usage_daily.bytes_out + EXCLUDED.bytes_out
    )
    SELECT coalesce(sum(deltas), 0) INTO folded FROM hours;
    PERFORM set_config('tollgate.scope', coalesce(scope, ''), true);
    RETURN folded;
END
$$;

-- The fold rewrites each busy rollup row about once a second: room on the page lets Postgres
-- write the new version beside the old one without new index entries (a HOT update). Applies
-- to pages written from now on.
ALTER TABLE usage_hourly SET (fillfactor = 70);
ALTER TABLE usage_daily SET (fillfactor = 70);

-- The rollups as readers see them: folded rows plus unfolded deltas (several rows per key until
-- the next fold; readers sum). Row-level security applies through them as to their tables.
CREATE VIEW usage_hourly_live WITH (security_invoker = true) AS
    SELECT tenant_id, subscription_id, hour, api_id, app_id, plan_id, calls, billable, errors, rejected,
           status_2xx, status_3xx, status_4xx, status_5xx, bytes_in, bytes_out, latency
    FROM usage_hourly
    UNION ALL
    SELECT tenant_id, subscription_id, hour, api_id, app_id, plan_id, calls, billable, errors, rejected,
           status_2xx, status_3xx, status_4xx, status_5xx, bytes_in, bytes_out, latency
    FROM usage_deltas;

CREATE VIEW usage_daily_live WITH (security_invoker = true) AS
    SELECT tenant_id, day, subscription_id, plan_id, api_id, app_id, calls, billable, rejected, errors, bytes_in, bytes_out
    FROM usage_daily
    UNION ALL
    SELECT tenant_id, (hour AT TIME ZONE 'UTC')::date, subscription_id, plan_id, api_id, app_id, calls, billable, tollgate_reason_total(rejected),
           errors, bytes_in, bytes_out
    FROM usage_deltas;
