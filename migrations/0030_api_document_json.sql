-- Request validation (issue 16): gateways compile an API's uploaded OpenAPI document into
-- validators, and read it as JSON whatever format it was uploaded in (YAML included). The portal
-- writes this column on upload and, for documents uploaded before it existed, when a
-- `request_validation` policy is saved. NULL: not converted yet (no validation policy uses it).
ALTER TABLE api_documents ADD COLUMN document_json jsonb;

-- a changed document changes what the gateways validate against: they reload like for every
-- other table their snapshot reads
CREATE TRIGGER notify_config AFTER INSERT OR UPDATE OR DELETE ON api_documents
    FOR EACH ROW EXECUTE FUNCTION tollgate_notify_config();
