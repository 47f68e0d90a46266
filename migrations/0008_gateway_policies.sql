-- Per-API gateway policies, uploaded OpenAPI documents, and the change signal gateways listen to.

ALTER TABLE apis
    -- NULL: no CORS handling (preflights are proxied like any request)
    ADD COLUMN cors jsonb,
    -- client address ranges (CIDR) allowed; empty: every address. Deny wins over allow.
    ADD COLUMN ip_allow text[] NOT NULL DEFAULT '{}',
    ADD COLUMN ip_deny text[] NOT NULL DEFAULT '{}',
    -- HTTP methods the API accepts; empty: every method
    ADD COLUMN methods text[] NOT NULL DEFAULT '{}',
    -- request body limit in bytes; NULL: the gateway's default
    ADD COLUMN max_request_bytes bigint CHECK (max_request_bytes BETWEEN 1 AND 1073741824);

-- The OpenAPI document of one API version, as uploaded (JSON or YAML), validated on upload.
CREATE TABLE api_documents (
    tenant_id       uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    api_id          uuid NOT NULL,
    format          text NOT NULL CHECK (format IN ('json', 'yaml')),
    content         text NOT NULL,
    title           text NOT NULL,
    document_version text NOT NULL,
    openapi_version text NOT NULL,
    uploaded_by     uuid REFERENCES users(id) ON DELETE SET NULL,
    uploaded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, api_id),
    FOREIGN KEY (tenant_id, api_id) REFERENCES apis(tenant_id, id) ON DELETE CASCADE
);
SELECT tollgate_isolate_tenant_table('api_documents');

-- Every change a gateway's snapshot depends on is announced on channel `tollgate_config` with a
-- small JSON payload ({"table": ..., "tenant_id": ...}, plus "jti" for revocations), in the same
-- transaction as the change: a gateway hears about it exactly when it becomes visible.
CREATE FUNCTION tollgate_notify_config() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    row_data jsonb;
    payload jsonb;
BEGIN
    row_data := CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END;
    payload := jsonb_build_object('table', TG_TABLE_NAME, 'tenant_id', row_data->>'tenant_id');
    IF TG_TABLE_NAME = 'revoked_tokens' THEN
        payload := payload || jsonb_build_object('jti', row_data->>'jti', 'expires_at', row_data->>'expires_at');
    END IF;
    IF TG_TABLE_NAME = 'tenants' THEN
        payload := jsonb_build_object('table', TG_TABLE_NAME, 'tenant_id', row_data->>'id');
    END IF;
    PERFORM pg_notify('tollgate_config', payload::text);
    RETURN NULL;
END
$$;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenants', 'apis', 'api_upstream_targets', 'plans', 'apps', 'app_credentials', 'subscriptions',
                             'signing_keys', 'revoked_tokens']
    LOOP
        EXECUTE format('CREATE TRIGGER notify_config AFTER INSERT OR UPDATE OR DELETE ON %I
                        FOR EACH ROW EXECUTE FUNCTION tollgate_notify_config()', t);
    END LOOP;
END
$$;
