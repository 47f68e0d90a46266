-- Subscriptions of apps to plan versions, with every transition kept (who, when, why).

CREATE TABLE subscriptions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    app_id          uuid NOT NULL,
    api_id          uuid NOT NULL,
    plan_id         uuid NOT NULL,
    state           text NOT NULL CHECK (state IN ('pending', 'active', 'suspended', 'rejected', 'cancelled')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, app_id) REFERENCES apps(tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, api_id) REFERENCES apis(tenant_id, id),
    FOREIGN KEY (tenant_id, plan_id) REFERENCES plans(tenant_id, id)
);
-- One open (pending, active or suspended) subscription per app and API.
CREATE UNIQUE INDEX subscriptions_one_open ON subscriptions (tenant_id, app_id, api_id)
    WHERE state IN ('pending', 'active', 'suspended');
CREATE INDEX subscriptions_api ON subscriptions (tenant_id, api_id, state);

CREATE TABLE subscription_events (
    id              bigserial PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    subscription_id uuid NOT NULL,
    event           text NOT NULL,
    from_state      text,
    to_state        text NOT NULL,
    from_plan_id    uuid,
    to_plan_id      uuid NOT NULL,
    actor_user_id   uuid,
    actor_side      text NOT NULL CHECK (actor_side IN ('developer', 'provider', 'system')),
    reason          text,
    at              timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, subscription_id) REFERENCES subscriptions(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX subscription_events_subscription ON subscription_events (tenant_id, subscription_id, id);

SELECT tollgate_isolate_tenant_table(t) FROM unnest(ARRAY['subscriptions', 'subscription_events']::regclass[]) AS t;
