import Foundation
import Logging
import PostgresNIO

/// Usage by UTC day × subscription as CSV, streamed: rows go to `write` as Postgres sends them, in
/// chunks, so memory stays constant however long the period.
public struct UsageExport: Sendable {
    public static let header = [
        "date", "tenant", "team_id", "team", "app_id", "app", "api_id", "api", "api_version", "plan_id", "plan", "subscription_id", "calls",
        "billable_calls", "rejected_calls", "server_errors", "bytes_in", "bytes_out",
    ]

    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Writes the CSV for `tenant` (slug) over [from, to); returns the number of data rows.
    @discardableResult
    public func run(tenant: String, from: Date, to: Date, write: (String) throws -> Void) async throws -> Int {
        try write(CSV.line(Self.header))
        return try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SET TRANSACTION READ ONLY", logger: logger)
            try await connection.query("SELECT set_config('tollgate.scope', 'system', true)", logger: logger)
            let rows = try await connection.query(
                """
                SELECT ARRAY[to_char(date_trunc('day', h.hour AT TIME ZONE 'UTC'), 'YYYY-MM-DD'), t.slug,
                       coalesce(tm.id::text, ''), coalesce(tm.name, ''), coalesce(a.id::text, ''), coalesce(a.name, ''),
                       coalesce(api.id::text, ''), coalesce(api.slug, ''), coalesce(api.version, ''), coalesce(p.id::text, ''), coalesce(p.name, ''),
                       CASE WHEN h.subscription_id = '00000000-0000-0000-0000-000000000000' THEN '' ELSE h.subscription_id::text END,
                       sum(h.calls)::text, sum(h.billable)::text,
                       sum((SELECT coalesce(sum(value::bigint), 0) FROM jsonb_each_text(h.rejected)))::text, sum(h.errors)::text,
                       sum(h.bytes_in)::text, sum(h.bytes_out)::text]
                FROM usage_hourly h
                JOIN tenants t ON t.id = h.tenant_id
                LEFT JOIN subscriptions s ON s.id = h.subscription_id
                LEFT JOIN apps a ON a.id = s.app_id
                LEFT JOIN teams tm ON tm.id = a.team_id
                LEFT JOIN apis api ON api.id = coalesce(s.api_id, h.api_id)
                LEFT JOIN plans p ON p.id = coalesce(nullif(h.plan_id, '00000000-0000-0000-0000-000000000000'), s.plan_id)
                WHERE t.slug = \(tenant) AND h.hour >= \(from) AND h.hour < \(to)
                GROUP BY date_trunc('day', h.hour AT TIME ZONE 'UTC'), t.slug, tm.id, tm.name, a.id, a.name, api.id, api.slug, api.version, p.id, p.name,
                         h.subscription_id
                ORDER BY date_trunc('day', h.hour AT TIME ZONE 'UTC'), h.subscription_id
                """, logger: logger)
            var buffer = ""
            var count = 0
            for try await fields in rows.decode([String].self) {
                buffer += CSV.line(fields)
                count += 1
                if buffer.utf8.count >= 64 * 1024 {
                    try write(buffer)
                    buffer = ""
                }
            }
            if !buffer.isEmpty { try write(buffer) }
            return count
        }
    }
}
