-- Quota leases (QuotaTracker): a gateway process reserves a block of a subscription's monthly
-- quota before it admits calls against it, so gateways sharing one database can overshoot a quota
-- by at most a few calls each instead of what they admit in a sync interval.
--
-- quota_usage.used stays what it says: billable calls *used* (reported by gateways as they settle).
-- What is *leased* lives here: granted = units the lease holds in total, used = its billable calls
-- already added to quota_usage.used; granted - used (of a live lease) is reserved, not used.
-- Units are granted only while the month's quota_usage row is locked (SELECT ... FOR UPDATE), so
-- two gateways can never both take the last units: used + sum(live granted - used) <= quota.
-- A lease expires unless renewed; an expired lease's unused units count for nobody (a crashed
-- gateway's block comes back by itself).

CREATE TABLE quota_leases (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    subscription_id uuid NOT NULL,
    period          text NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    holder          text NOT NULL CHECK (length(holder) BETWEEN 1 AND 300),
    granted         bigint NOT NULL CHECK (granted >= 0),
    used            bigint NOT NULL CHECK (used >= 0),
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, subscription_id, period) REFERENCES quota_usage(tenant_id, subscription_id, period) ON DELETE CASCADE
);
CREATE INDEX quota_leases_by_month ON quota_leases (tenant_id, subscription_id, period);
SELECT tollgate_isolate_tenant_table('quota_leases');

COMMENT ON COLUMN quota_usage.used IS 'Billable calls reported by gateways (used, never leased units: those are in quota_leases)';
COMMENT ON TABLE quota_leases IS 'Blocks of a monthly quota held by gateway processes; live granted - used is leased, not used';
