-- An API version's policy chain: the policies its provider added, in order. The built-in settings
-- (CORS, client address rules, methods, body limit, sunset: columns of `apis`, 0008 and 0020) keep
-- their place in the chain and their columns; these rows are the policies added to it.
CREATE TABLE api_policies (
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    api_id      uuid NOT NULL,
    -- the policy's place in the API's chain, 0 first (the order within its phase)
    position    integer NOT NULL CHECK (position BETWEEN 0 AND 99),
    kind        text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,39}$'),
    phase       text NOT NULL CHECK (phase IN ('pre_auth', 'post_auth', 'pre_forward', 'response', 'after_call')),
    -- validated by the kind's Swift type before it is stored (sorted keys, defaults written out)
    config      jsonb NOT NULL CHECK (jsonb_typeof(config) = 'object' AND octet_length(config::text) <= 16384),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_id, position),
    FOREIGN KEY (tenant_id, api_id) REFERENCES apis(tenant_id, id) ON DELETE CASCADE
);
SELECT tollgate_isolate_tenant_table('api_policies');

-- gateways reload when a chain changes, like for every other table their snapshot reads
CREATE TRIGGER notify_config AFTER INSERT OR UPDATE OR DELETE ON api_policies
    FOR EACH ROW EXECUTE FUNCTION tollgate_notify_config();

-- Plan windows: requests per UTC minute, hour and day besides the rate per second and the monthly
-- quota (NULL: no such window). Enforced per gateway process (see docs/ARCHITECTURE.md).
ALTER TABLE plans
    ADD COLUMN per_minute bigint CHECK (per_minute BETWEEN 1 AND 1000000000000),
    ADD COLUMN per_hour bigint CHECK (per_hour BETWEEN 1 AND 1000000000000),
    ADD COLUMN per_day bigint CHECK (per_day BETWEEN 1 AND 1000000000000);

-- Windows held across gateways lease like the monthly quota, in the same tables: a window's rows
-- are named by its UTC start (`2026-12-04` a day, `2026-12-04T23` an hour, `2026-12-04T23:48` a
-- minute) beside a month's `2026-12`.
ALTER TABLE quota_leases DROP CONSTRAINT quota_leases_period_check;
ALTER TABLE quota_usage DROP CONSTRAINT quota_usage_period_check;
ALTER TABLE quota_usage ADD CONSTRAINT quota_usage_period_check
    CHECK (period ~ '^[0-9]{4}-[0-9]{2}(-[0-9]{2}(T[0-9]{2}(:[0-9]{2})?)?)?$');
ALTER TABLE quota_leases ADD CONSTRAINT quota_leases_period_check
    CHECK (period ~ '^[0-9]{4}-[0-9]{2}(-[0-9]{2}(T[0-9]{2}(:[0-9]{2})?)?)?$');
