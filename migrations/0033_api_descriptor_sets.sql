-- The protobuf descriptor set of a gRPC API version (`protoc --include_imports --descriptor_set_out`
-- or `buf build`), stored as uploaded after the gateway's own compiler (ProtoSchema.compile) accepted
-- it: every referenced type present, at least one service. Gateways compile it into their snapshot
-- to translate HTTP/JSON calls to gRPC; the reference page lists its methods.
CREATE TABLE api_descriptor_sets (
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    api_id       uuid NOT NULL,
    content      bytea NOT NULL CHECK (octet_length(content) BETWEEN 1 AND 4194304),
    -- hex SHA-256 of content: shown to providers so they can tell which build is live
    sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    services     text[] NOT NULL CHECK (cardinality(services) BETWEEN 1 AND 10000),
    method_count integer NOT NULL CHECK (method_count BETWEEN 1 AND 1000000),
    uploaded_by  uuid REFERENCES users(id) ON DELETE SET NULL,
    uploaded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, api_id),
    FOREIGN KEY (tenant_id, api_id) REFERENCES apis(tenant_id, id) ON DELETE CASCADE
);
SELECT tollgate_isolate_tenant_table('api_descriptor_sets');

-- gateways reload when a descriptor set changes, like for every other table their snapshot reads
CREATE TRIGGER notify_config AFTER INSERT OR UPDATE OR DELETE ON api_descriptor_sets
    FOR EACH ROW EXECUTE FUNCTION tollgate_notify_config();
