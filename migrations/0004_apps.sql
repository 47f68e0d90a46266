-- Consumer apps and their credentials: OAuth2 client secrets (up to two active, for rotation) and
-- API keys. Secrets are stored as SHA-256 only; the prefix identifies them in lists.

CREATE TABLE apps (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    team_id         uuid NOT NULL,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description     text NOT NULL DEFAULT '',
    callback_url    text,
    client_id       text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, team_id, name),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, team_id) REFERENCES teams(tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE app_credentials (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    app_id          uuid NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('client_secret', 'api_key')),
    name            text NOT NULL DEFAULT '',
    prefix          text NOT NULL,
    secret_hash     bytea NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    FOREIGN KEY (tenant_id, app_id) REFERENCES apps(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX app_credentials_app ON app_credentials (tenant_id, app_id);

SELECT tollgate_isolate_tenant_table(t) FROM unnest(ARRAY['apps', 'app_credentials']::regclass[]) AS t;
