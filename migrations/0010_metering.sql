-- The meter: every call the gateway answered, stored once (idempotent on the event id), in a
-- table partitioned by month, plus hourly rollups per subscription updated in the same
-- transaction as the events they count.

CREATE TABLE usage_events (
    id              uuid NOT NULL,
    at              timestamptz NOT NULL,
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    api_id          uuid,
    app_id          uuid,
    subscription_id uuid,
    plan_id         uuid,
    method          text NOT NULL,
    status          smallint NOT NULL,
    latency_us      integer NOT NULL,
    bytes_in        bigint NOT NULL,
    bytes_out       bigint NOT NULL,
    rejection       text,
    forwarded       boolean NOT NULL,
    billable        boolean NOT NULL,
    gateway         text NOT NULL,
    PRIMARY KEY (at, id)
) PARTITION BY RANGE (at);

-- Catches anything outside the prepared months, so no event is ever refused for want of a partition.
CREATE TABLE usage_events_default PARTITION OF usage_events DEFAULT;
SELECT tollgate_isolate_tenant_table('usage_events');
SELECT tollgate_isolate_tenant_table('usage_events_default');

-- Creates the partition of the month containing `day` (idempotent); the meter calls it for the
-- current and the next month at start and when a month begins.
CREATE FUNCTION tollgate_ensure_usage_partition(day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    first date := date_trunc('month', day)::date;
    name text := format('usage_events_%s', to_char(first, 'YYYY_MM'));
BEGIN
    IF to_regclass(name) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF usage_events FOR VALUES FROM (%L) TO (%L)', name, first, (first + interval '1 month')::date);
        PERFORM tollgate_isolate_tenant_table(name::regclass);
    END IF;
END
$$;
SELECT tollgate_ensure_usage_partition((now() + make_interval(months => m))::date) FROM generate_series(-1, 2) AS m;

-- Hourly rollups. Calls without a subscription (unauthenticated, unknown route) roll up under the
-- nil UUID so every answered call is counted somewhere.
CREATE TABLE usage_hourly (
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    subscription_id uuid NOT NULL,
    hour            timestamptz NOT NULL,
    api_id          uuid,
    app_id          uuid,
    plan_id         uuid,
    calls           bigint NOT NULL DEFAULT 0,
    billable        bigint NOT NULL DEFAULT 0,
    errors          bigint NOT NULL DEFAULT 0,
    rejected        jsonb NOT NULL DEFAULT '{}',
    status_2xx      bigint NOT NULL DEFAULT 0,
    status_3xx      bigint NOT NULL DEFAULT 0,
    status_4xx      bigint NOT NULL DEFAULT 0,
    status_5xx      bigint NOT NULL DEFAULT 0,
    bytes_in        bigint NOT NULL DEFAULT 0,
    bytes_out       bigint NOT NULL DEFAULT 0,
    -- counts per latency bucket (upper bounds in LatencyHistogram.bounds, microseconds)
    latency         bigint[] NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id, hour)
);
CREATE INDEX usage_hourly_api ON usage_hourly (tenant_id, api_id, hour);
SELECT tollgate_isolate_tenant_table('usage_hourly');

-- Element-wise sum of two count arrays (rollup histograms).
CREATE FUNCTION tollgate_add_counts(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i)
    FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
$$;

-- Sum of two {reason: count} objects.
CREATE FUNCTION tollgate_add_reasons(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_object_agg(k, v), '{}'::jsonb) FROM (
        SELECT k, sum(v::bigint) AS v FROM (
            SELECT key AS k, value AS v FROM jsonb_each_text(a) UNION ALL SELECT key, value FROM jsonb_each_text(b)
        ) s GROUP BY k
    ) t
$$;
