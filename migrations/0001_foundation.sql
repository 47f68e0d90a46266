-- Foundation: tenants, identity, sessions, teams, roles, tokens, audit.
--
-- Tenant isolation: every tenant-scoped table carries tenant_id and a row-level-security policy
-- keyed on the per-transaction setting tollgate.tenant_id (set with set_config(..., true) inside
-- each request's transaction). FORCE ROW LEVEL SECURITY makes the policies apply to the table
-- owner too, because the application role owns the tables it migrates. Cross-tenant readers
-- (platform admin, later the gateway snapshot loader and billing jobs) opt in explicitly with
-- tollgate.scope = 'system'; see docs/ARCHITECTURE.md.

CREATE FUNCTION tollgate_current_tenant() RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('tollgate.tenant_id', true), '')::uuid
$$;

CREATE FUNCTION tollgate_system_scope() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('tollgate.scope', true), '') = 'system'
$$;

-- Puts a tenant-scoped table under row-level security (ENABLE + FORCE + one policy). Every
-- migration that adds such a table calls it, so the rule is written once.
CREATE FUNCTION tollgate_isolate_tenant_table(t regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %s
        USING (tenant_id = tollgate_current_tenant() OR tollgate_system_scope())
        WITH CHECK (tenant_id = tollgate_current_tenant() OR tollgate_system_scope())', t);
END
$$;

CREATE TABLE tenants (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug            text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    currency        char(3) NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    signup_policy   text NOT NULL DEFAULT 'open' CHECK (signup_policy IN ('open', 'invite_only')),
    custom_host     text UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Platform administrators operate the installation (create tenants); they are not tenant users.
CREATE TABLE platform_admins (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email           text NOT NULL UNIQUE,
    password_hash   text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email           text NOT NULL,
    display_name    text NOT NULL,
    password_hash   text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, email),
    UNIQUE (tenant_id, id)
);

CREATE TABLE user_roles (
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id         uuid NOT NULL,
    role            text NOT NULL CHECK (role IN ('admin', 'provider', 'developer', 'finance')),
    granted_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id, role),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users(tenant_id, id) ON DELETE CASCADE
);

-- Sessions are keyed by the SHA-256 of the cookie value, so a database leak does not leak
-- usable session cookies. tenant_id is NULL for platform-admin sessions.
CREATE TABLE sessions (
    id_hash         bytea PRIMARY KEY,
    tenant_id       uuid REFERENCES tenants(id) ON DELETE CASCADE,
    user_id         uuid,
    platform_admin_id uuid REFERENCES platform_admins(id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    client_ip       text,
    user_agent      text,
    CHECK ((tenant_id IS NULL) = (user_id IS NULL)),
    CHECK ((user_id IS NULL) <> (platform_admin_id IS NULL)),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX sessions_user ON sessions (tenant_id, user_id);

CREATE TABLE teams (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    slug            text NOT NULL CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, slug),
    UNIQUE (tenant_id, id)
);

CREATE TABLE team_members (
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    team_id         uuid NOT NULL,
    user_id         uuid NOT NULL,
    role            text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, team_id, user_id),
    FOREIGN KEY (tenant_id, team_id) REFERENCES teams(tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX team_members_user ON team_members (tenant_id, user_id);

CREATE TABLE invitations (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email           text NOT NULL,
    roles           text[] NOT NULL DEFAULT '{}',
    team_id         uuid,
    team_role       text CHECK (team_role IN ('owner', 'admin', 'member')),
    token_hash      bytea NOT NULL UNIQUE,
    invited_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    accepted_at     timestamptz,
    revoked_at      timestamptz,
    FOREIGN KEY (tenant_id, team_id) REFERENCES teams(tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE personal_access_tokens (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id         uuid NOT NULL,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix          text NOT NULL,
    token_hash      bytea NOT NULL UNIQUE,
    scopes          text[] NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    last_used_at    timestamptz,
    revoked_at      timestamptz,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX personal_access_tokens_user ON personal_access_tokens (tenant_id, user_id);

-- Platform API tokens (for /api/v1 platform endpoints); not tenant-scoped.
CREATE TABLE platform_tokens (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    platform_admin_id uuid NOT NULL REFERENCES platform_admins(id) ON DELETE CASCADE,
    name            text NOT NULL,
    prefix          text NOT NULL,
    token_hash      bytea NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz
);

-- Failed logins, counted per account and per client IP to throttle guessing.
CREATE TABLE login_failures (
    id              bigserial PRIMARY KEY,
    tenant_id       uuid REFERENCES tenants(id) ON DELETE CASCADE,
    key             text NOT NULL,
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_key ON login_failures (key, at);

CREATE TABLE audit_events (
    id              bigserial PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    at              timestamptz NOT NULL DEFAULT now(),
    actor_user_id   uuid,
    actor           text NOT NULL,
    action          text NOT NULL,
    target          text,
    client_ip       text,
    details         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_tenant_at ON audit_events (tenant_id, id DESC);

-- Row-level security on every tenant-scoped table.
SELECT tollgate_isolate_tenant_table(t) FROM unnest(ARRAY['users', 'user_roles', 'teams', 'team_members', 'invitations',
    'personal_access_tokens', 'audit_events']::regclass[]) AS t;

-- Sessions and login failures may belong to the platform (tenant_id NULL).
ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sessions
    USING ((tenant_id IS NULL AND tollgate_current_tenant() IS NULL) OR tenant_id = tollgate_current_tenant() OR tollgate_system_scope())
    WITH CHECK ((tenant_id IS NULL AND tollgate_current_tenant() IS NULL) OR tenant_id = tollgate_current_tenant() OR tollgate_system_scope());
ALTER TABLE login_failures ENABLE ROW LEVEL SECURITY;
ALTER TABLE login_failures FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON login_failures
    USING ((tenant_id IS NULL AND tollgate_current_tenant() IS NULL) OR tenant_id = tollgate_current_tenant() OR tollgate_system_scope())
    WITH CHECK ((tenant_id IS NULL AND tollgate_current_tenant() IS NULL) OR tenant_id = tollgate_current_tenant() OR tollgate_system_scope());
