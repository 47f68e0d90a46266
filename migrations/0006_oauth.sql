-- OAuth2 authorization server: per-tenant ES256 signing keys and revoked access tokens.

CREATE TABLE signing_keys (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kid             text NOT NULL UNIQUE,
    -- P-256 private key, sealed with AES-GCM under the server key (TOLLGATE_SECRET_KEY)
    private_key_sealed bytea NOT NULL,
    -- uncompressed public point (0x04 || X || Y), published in the JWKS
    public_key      bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- set when a newer key takes over signing; the key stays published until tokens it signed expire
    retired_at      timestamptz,
    published_until timestamptz
);
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (tenant_id) WHERE retired_at IS NULL;

CREATE TABLE revoked_tokens (
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    jti             text NOT NULL,
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, jti)
);

SELECT tollgate_isolate_tenant_table(t) FROM unnest(ARRAY['signing_keys', 'revoked_tokens']::regclass[]) AS t;
