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
    public func run(tenant: String, from: Date, to: Date, filter: UsageFilter = UsageFilter(), write: (String) async throws -> Void) async throws -> Int {
        try await write(CSV.line(Self.header))
        return try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SET TRANSACTION READ ONLY", logger: logger)
            try await connection.query("SELECT set_config('tollgate.scope', 'system', true)", logger: logger)
            let rows = try await connection.query(Self.query(tenant: tenant, from: from, to: to, filter: filter, limit: nil), logger: logger)
            var buffer = ""
            var count = 0
            for try await fields in rows.decode([String].self) {
                buffer += CSV.line(fields)
                count += 1
                if buffer.utf8.count >= 64 * 1024 {
                    try await write(buffer)
                    buffer = ""
                }
            }
            if !buffer.isEmpty { try await write(buffer) }
            return count
        }
    }

    /// The first `limit` rows (fields in `header` order) on a connection the caller scoped: what the
    /// finance pages and the JSON API show.
    public static func rows(tenant: String, from: Date, to: Date, filter: UsageFilter, limit: Int, on connection: PostgresConnection, logger: Logger)
        async throws -> [[String]]
    {
        var result: [[String]] = []
        for try await fields in try await connection.query(query(tenant: tenant, from: from, to: to, filter: filter, limit: limit), logger: logger).decode(
            [String].self)
        {
            result.append(fields)
        }
        return result
    }

    static func query(tenant: String, from: Date, to: Date, filter: UsageFilter, limit: Int?) -> PostgresQuery {
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
        LEFT JOIN subscriptions s ON s.tenant_id = h.tenant_id AND s.id = h.subscription_id
        LEFT JOIN apps a ON a.tenant_id = h.tenant_id AND a.id = s.app_id
        LEFT JOIN teams tm ON tm.tenant_id = h.tenant_id AND tm.id = a.team_id
        LEFT JOIN apis api ON api.tenant_id = h.tenant_id AND api.id = coalesce(s.api_id, h.api_id)
        LEFT JOIN plans p ON p.tenant_id = h.tenant_id AND p.id = coalesce(nullif(h.plan_id, '00000000-0000-0000-0000-000000000000'), s.plan_id)
        WHERE t.slug = \(tenant) AND h.hour >= \(from) AND h.hour < \(to)
          AND (\(filter.teamID)::uuid IS NULL OR tm.id = \(filter.teamID)) AND (\(filter.appID)::uuid IS NULL OR a.id = \(filter.appID))
          AND (\(filter.apiID)::uuid IS NULL OR api.id = \(filter.apiID)) AND (\(filter.planID)::uuid IS NULL OR p.id = \(filter.planID))
        GROUP BY date_trunc('day', h.hour AT TIME ZONE 'UTC'), t.slug, tm.id, tm.name, a.id, a.name, api.id, api.slug, api.version, p.id, p.name,
                 h.subscription_id
        ORDER BY date_trunc('day', h.hour AT TIME ZONE 'UTC'), h.subscription_id, p.id
        LIMIT \(limit.map(Int64.init))
        """
    }
}

/// Optional narrowing of usage rows (finance filters).
public struct UsageFilter: Sendable, Equatable {
    public var teamID: UUID?
    public var appID: UUID?
    public var apiID: UUID?
    public var planID: UUID?

    public init(teamID: UUID? = nil, appID: UUID? = nil, apiID: UUID? = nil, planID: UUID? = nil) {
        self.teamID = teamID
        self.appID = appID
        self.apiID = apiID
        self.planID = planID
    }
}
