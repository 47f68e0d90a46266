-- HTTPS upstreams: an API may name its own CA bundle (PEM certificates) to verify its https://
-- targets with, instead of the system trust store. Public certificates only, nothing secret.
ALTER TABLE apis ADD COLUMN upstream_ca_pem text CHECK (upstream_ca_pem IS NULL OR length(upstream_ca_pem) BETWEEN 1 AND 65536);
