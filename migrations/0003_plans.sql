-- Plans: the terms under which an API is consumed. Terms are immutable once written: changing
-- them inserts a new version in the same plan family and marks the old one superseded, so
-- existing subscriptions keep the exact terms they signed up for until moved.

CREATE TABLE plans (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id           uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    api_id              uuid NOT NULL,
    family_id           uuid NOT NULL,
    version             int NOT NULL CHECK (version >= 1),
    name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    rate_per_second     int NOT NULL CHECK (rate_per_second BETWEEN 1 AND 1000000),
    burst               int NOT NULL CHECK (burst BETWEEN 1 AND 10000000),
    monthly_quota       bigint CHECK (monthly_quota IS NULL OR monthly_quota >= 1),
    monthly_fee_minor   bigint NOT NULL CHECK (monthly_fee_minor >= 0),
    included_requests   bigint NOT NULL CHECK (included_requests >= 0),
    tier_mode           text NOT NULL CHECK (tier_mode IN ('flat', 'graduated', 'volume')),
    -- [{"up_to": 100000 | null, "unit_price_micros": 50}], ascending; the last is unbounded
    tiers               jsonb NOT NULL,
    approval            text NOT NULL CHECK (approval IN ('automatic', 'manual')),
    visibility          text NOT NULL CHECK (visibility IN ('public', 'hidden')),
    created_by          uuid,
    created_at          timestamptz NOT NULL DEFAULT now(),
    superseded_at       timestamptz,
    UNIQUE (tenant_id, family_id, version),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, api_id) REFERENCES apis(tenant_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX plans_current_name ON plans (tenant_id, api_id, lower(name)) WHERE superseded_at IS NULL;

SELECT tollgate_isolate_tenant_table('plans');
