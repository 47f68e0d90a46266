-- How an API's http:// and https:// targets are called: HTTP/1.1 (the default) or HTTP/2 ('h2':
-- prior knowledge, h2c, for http://; ALPN h2 for https://). gRPC targets are HTTP/2 regardless.
-- A column of apis: the table's row-level security and its NOTIFY trigger (0008) cover it.
ALTER TABLE apis ADD COLUMN upstream_protocol text NOT NULL DEFAULT 'http1' CHECK (upstream_protocol IN ('http1', 'h2'));
