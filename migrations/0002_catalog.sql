-- API catalog: APIs (one row per version), their upstream targets and lifecycle history.

CREATE TABLE apis (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    team_id         uuid NOT NULL,
    slug            text NOT NULL CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'),
    version         text NOT NULL CHECK (version ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,19}$'),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description     text NOT NULL DEFAULT '',
    base_path       text NOT NULL,
    state           text NOT NULL DEFAULT 'draft' CHECK (state IN ('draft', 'published', 'deprecated', 'retired')),
    visibility      text NOT NULL DEFAULT 'public' CHECK (visibility IN ('public', 'restricted')),
    sunset_at       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, slug, version),
    UNIQUE (tenant_id, base_path),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, team_id) REFERENCES teams(tenant_id, id)
);

-- Consumer teams that may see and subscribe to a restricted API.
CREATE TABLE api_allowed_teams (
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    api_id          uuid NOT NULL,
    team_id         uuid NOT NULL,
    PRIMARY KEY (tenant_id, api_id, team_id),
    FOREIGN KEY (tenant_id, api_id) REFERENCES apis(tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, team_id) REFERENCES teams(tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE api_upstream_targets (
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    api_id          uuid NOT NULL,
    position        int NOT NULL,
    url             text NOT NULL,
    weight          int NOT NULL CHECK (weight BETWEEN 1 AND 100),
    PRIMARY KEY (tenant_id, api_id, position),
    FOREIGN KEY (tenant_id, api_id) REFERENCES apis(tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE api_state_changes (
    id              bigserial PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    api_id          uuid NOT NULL,
    from_state      text,
    to_state        text NOT NULL,
    actor_user_id   uuid,
    at              timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, api_id) REFERENCES apis(tenant_id, id) ON DELETE CASCADE
);

SELECT tollgate_isolate_tenant_table(t) FROM unnest(ARRAY['apis', 'api_allowed_teams', 'api_upstream_targets', 'api_state_changes']::regclass[]) AS t;
