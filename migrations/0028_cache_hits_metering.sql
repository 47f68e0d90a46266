-- Response-cache hits in metering (issue 16: a hit is metered with a cached flag and shows in
-- analytics as a hit ratio).
--
-- A call answered from the gateway's response cache is still an answered call: it passed auth,
-- subscription and limits. Whether it is billable is the plan's choice (`cache_hits_billable`,
-- default yes); the gateway decides it when the call ends and the event keeps the decision, so a
-- later change of the plan does not rewrite past usage (as `billable` itself is stored).

ALTER TABLE plans ADD COLUMN cache_hits_billable boolean NOT NULL DEFAULT true;

-- 'hit': answered from the cache, billable per its plan; 'unbilled_hit': answered from the cache,
-- not billable per its plan; NULL: the cache took no part.
ALTER TABLE usage_events ADD COLUMN cache text CHECK (cache IN ('hit', 'unbilled_hit'));

-- Hits per rollup row, for the hit ratio analytics shows next to calls.
ALTER TABLE usage_deltas ADD COLUMN cache_hits bigint NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN cache_hits bigint NOT NULL DEFAULT 0;

-- The fold of 0015, now carrying the hits into the hourly rollups.
CREATE OR REPLACE FUNCTION tollgate_fold_usage() RETURNS bigint
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
               sum(bytes_in) AS bytes_in, sum(bytes_out) AS bytes_out, sum(cache_hits) AS cache_hits, count(*) AS deltas,
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
                                  status_2xx, status_3xx, status_4xx, status_5xx, bytes_in, bytes_out, latency, cache_hits)
        SELECT tenant_id, subscription_id, hour, api_id, app_id, plan_id, calls, billable, errors, rejected, s2, s3, s4, s5, bytes_in, bytes_out, latency, cache_hits
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
            latency = tollgate_add_counts(usage_hourly.latency, EXCLUDED.latency),
            cache_hits = usage_hourly.cache_hits + EXCLUDED.cache_hits
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


-- Readers see the hits like the other sums: folded rows plus unfolded deltas.
CREATE OR REPLACE VIEW usage_hourly_live WITH (security_invoker = true) AS
    SELECT tenant_id, subscription_id, hour, api_id, app_id, plan_id, calls, billable, errors, rejected,
           status_2xx, status_3xx, status_4xx, status_5xx, bytes_in, bytes_out, latency, cache_hits
    FROM usage_hourly
    UNION ALL
    SELECT tenant_id, subscription_id, hour, api_id, app_id, plan_id, calls, billable, errors, rejected,
           status_2xx, status_3xx, status_4xx, status_5xx, bytes_in, bytes_out, latency, cache_hits
    FROM usage_deltas;
