-- Daily rollups for billing and finance exports, and a cheaper event insert for the meter
-- (measurements in docs/BENCHMARKS.md).

-- One narrow row per tenant, day (UTC), subscription and plan version, kept by the meter in the
-- same transaction as the hourly rollups it sums. Invoice runs and usage exports read these
-- instead of 24 wide hourly rows (each carrying a latency histogram) per subscription and day.
-- The key order serves both readers: a tenant's days in range, in export order.
CREATE TABLE usage_daily (
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    day             date NOT NULL,
    subscription_id uuid NOT NULL,
    plan_id         uuid NOT NULL,
    api_id          uuid,
    app_id          uuid,
    calls           bigint NOT NULL DEFAULT 0,
    billable        bigint NOT NULL DEFAULT 0,
    rejected        bigint NOT NULL DEFAULT 0,
    errors          bigint NOT NULL DEFAULT 0,
    bytes_in        bigint NOT NULL DEFAULT 0,
    bytes_out       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, subscription_id, plan_id)
);
SELECT tollgate_isolate_tenant_table('usage_daily');

INSERT INTO usage_daily (tenant_id, day, subscription_id, plan_id, api_id, app_id, calls, billable, rejected, errors, bytes_in, bytes_out)
SELECT tenant_id, (hour AT TIME ZONE 'UTC')::date, subscription_id, plan_id, max(api_id::text)::uuid, max(app_id::text)::uuid,
       sum(calls), sum(billable),
       sum(CASE WHEN rejected = '{}' THEN 0 ELSE (SELECT coalesce(sum(value::bigint), 0) FROM jsonb_each_text(rejected)) END),
       sum(errors), sum(bytes_in), sum(bytes_out)
FROM usage_hourly
GROUP BY tenant_id, (hour AT TIME ZONE 'UTC')::date, subscription_id, plan_id;

-- The events log is append-only and written at the meter's rate: checking the tenant foreign key
-- for every row cost ~40 % of the insert (29 of 62 ms for 5,000 events). Events are written only
-- by the meter, for tenants of the gateway's snapshot; deleting a tenant still deletes its events.
ALTER TABLE usage_events DROP CONSTRAINT usage_events_tenant_id_fkey;

CREATE FUNCTION tollgate_delete_tenant_usage() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    scope text := current_setting('tollgate.scope', true);
BEGIN
    -- the events of a tenant being deleted are deleted whatever the caller's scope, as a
    -- cascading foreign key would; the caller's scope is restored afterwards
    PERFORM set_config('tollgate.scope', 'system', true);
    DELETE FROM usage_events WHERE tenant_id = OLD.id;
    PERFORM set_config('tollgate.scope', coalesce(scope, ''), true);
    RETURN OLD;
END
$$;
CREATE TRIGGER tenants_delete_usage AFTER DELETE ON tenants FOR EACH ROW EXECUTE FUNCTION tollgate_delete_tenant_usage();

