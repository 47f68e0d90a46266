-- One-time messages of the web pages (a secret shown once after a post/redirect/get) in the
-- database, so that every portal process behind a load balancer can show them.
--
-- A row is bound to one browser: binding_hash is HMAC(server key, its session token or, before
-- sign-in, its anonymous CSRF cookie); the message is sealed (AES-GCM with the server key, the
-- binding as associated data), so neither a database reader nor a row moved to another browser
-- sees the secret. It is read at most once (DELETE ... RETURNING) and lives a few minutes;
-- expired rows are deleted as new ones are written. tenant_id is NULL for the platform console,
-- which runs with no tenant selected (the rule of the sessions table).
CREATE TABLE web_flashes (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid REFERENCES tenants(id) ON DELETE CASCADE,
    binding_hash    bytea NOT NULL CHECK (length(binding_hash) = 32),
    sealed          bytea NOT NULL CHECK (length(sealed) <= 65536),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX web_flashes_binding ON web_flashes (binding_hash);
CREATE INDEX web_flashes_expiry ON web_flashes (expires_at);

ALTER TABLE web_flashes ENABLE ROW LEVEL SECURITY;
ALTER TABLE web_flashes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON web_flashes
    USING ((tenant_id IS NULL AND (SELECT tollgate_current_tenant()) IS NULL) OR tenant_id = (SELECT tollgate_current_tenant()) OR (SELECT tollgate_system_scope()))
    WITH CHECK ((tenant_id IS NULL AND (SELECT tollgate_current_tenant()) IS NULL) OR tenant_id = (SELECT tollgate_current_tenant()) OR (SELECT tollgate_system_scope()));
