-- Upstream mutual TLS: the certificate chain an API's https:// and grpcs:// targets are shown, and
-- its private key sealed (AES-GCM under the installation's server key, bound to the API's id).
ALTER TABLE apis
    ADD COLUMN upstream_client_cert_pem text CHECK (length(upstream_client_cert_pem) <= 65536),
    ADD COLUMN upstream_client_key_sealed bytea CHECK (length(upstream_client_key_sealed) <= 65536),
    ADD CONSTRAINT apis_upstream_client_identity_whole CHECK ((upstream_client_cert_pem IS NULL) = (upstream_client_key_sealed IS NULL));
