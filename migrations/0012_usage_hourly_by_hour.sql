-- Exports, invoice runs and the tenant's analytics select rollups by tenant and time range;
-- without this index each of them read the whole table (measured in docs/BENCHMARKS.md).
-- Rollup updates do not change these columns, so they stay HOT updates.
CREATE INDEX usage_hourly_hour ON usage_hourly (tenant_id, hour);
