-- Billable calls per subscription and calendar month, summed across gateway processes. Each
-- gateway adds its own counts every second and reads the total back (see QuotaTracker).

CREATE TABLE quota_usage (
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    subscription_id uuid NOT NULL,
    period          text NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    used            bigint NOT NULL DEFAULT 0 CHECK (used >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subscription_id, period),
    FOREIGN KEY (tenant_id, subscription_id) REFERENCES subscriptions(tenant_id, id) ON DELETE CASCADE
);
SELECT tollgate_isolate_tenant_table('quota_usage');
