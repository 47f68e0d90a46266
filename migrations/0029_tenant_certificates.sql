-- TLS certificates for tenants' custom hosts, stored by the platform operator (console or platform
-- API) instead of files in TOLLGATE_TLS_DIR. The private key is sealed (AES-GCM under the
-- installation's server key, bound to the tenant's id) and never shown again. Listeners serve a
-- certificate only for its tenant's current custom host (ManagedCertificateLoader), so changing or
-- removing the host takes the certificate out of service without deleting it.
CREATE TABLE tenant_certificates (
    tenant_id   uuid PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    chain_pem   text NOT NULL CHECK (length(chain_pem) <= 65536),
    key_sealed  bytea NOT NULL CHECK (length(key_sealed) <= 65536),
    names       text[] NOT NULL,
    not_after   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
SELECT tollgate_isolate_tenant_table('tenant_certificates');
