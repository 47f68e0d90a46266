-- Webhooks: endpoints registered by a tenant (every event) or a team (events about its apps and
-- APIs), an outbox of events written in the same transaction as the change they describe, and one
-- delivery per (event, endpoint) with its attempts.

CREATE TABLE webhook_endpoints (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- NULL: the tenant's own endpoint, which receives every event of the tenant
    team_id         uuid,
    url             text NOT NULL CHECK (length(url) BETWEEN 8 AND 2000),
    description     text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    -- empty: every event type
    events          text[] NOT NULL DEFAULT '{}',
    -- HMAC key, sealed with AES-GCM under the server key: it must be recoverable to sign
    secret_sealed   bytea NOT NULL,
    secret_prefix   text NOT NULL,
    created_by      uuid REFERENCES users(id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, team_id) REFERENCES teams(tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE webhook_events (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    type            text NOT NULL,
    -- teams the event concerns (the app's team, the API's team): their endpoints receive it
    team_ids        uuid[] NOT NULL DEFAULT '{}',
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);

CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    endpoint_id     uuid NOT NULL,
    event_id        uuid NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES webhook_endpoints(tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, event_id) REFERENCES webhook_events(tenant_id, id) ON DELETE CASCADE
);
-- the dispatcher's queue: due pending deliveries, oldest first
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (tenant_id, endpoint_id, created_at DESC);

CREATE TABLE webhook_attempts (
    id              bigserial PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    delivery_id     uuid NOT NULL,
    attempted_at    timestamptz NOT NULL DEFAULT now(),
    status          integer,
    error           text,
    duration_ms     integer NOT NULL,
    FOREIGN KEY (tenant_id, delivery_id) REFERENCES webhook_deliveries(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (tenant_id, delivery_id, id);

SELECT tollgate_isolate_tenant_table(t)
FROM unnest(ARRAY['webhook_endpoints', 'webhook_events', 'webhook_deliveries', 'webhook_attempts']::regclass[]) AS t;
