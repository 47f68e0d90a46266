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
            try await InvoiceBook.planForBulkReads(on: connection, logger: logger)
            // Postgres formats each row as one CSV line: one text column per row costs far less to
            // receive and decode than 18 fields (measured in docs/BENCHMARKS.md).
            let rows = try await connection.query(Self.query(tenant: tenant, from: from, to: to, filter: filter, limit: nil, as: .csvLine), logger: logger)
            var buffer = ByteBuffer()
            buffer.reserveCapacity(80 * 1024)
            var count = 0
            for try await row in rows {
                guard var line = row.first?.bytes else { continue }
                buffer.writeBuffer(&line)
                count += 1
                if buffer.readableBytes >= 64 * 1024 {
                    try await write(String(buffer: buffer))
                    buffer.clear()
                }
            }
            if buffer.readableBytes > 0 { try await write(String(buffer: buffer)) }
            return count
        }
    }

    /// The first `limit` rows (fields in `header` order) on a connection the caller scoped: what the
    /// finance pages and the JSON API show.
    public static func rows(tenant: String, from: Date, to: Date, filter: UsageFilter, limit: Int, on connection: PostgresConnection, logger: Logger)
        async throws -> [[String]]
    {
        var result: [[String]] = []
        try await InvoiceBook.planForBulkReads(on: connection, logger: logger)
        for try await fields in try await connection.query(query(tenant: tenant, from: from, to: to, filter: filter, limit: limit, as: .fields), logger: logger)
            .decode([String].self)
        {
            result.append(fields)
        }
        return result
    }

    /// How each row comes back: its fields as a `text[]`, or already one CSV line (RFC 4180, CRLF).
    enum Projection {
        case fields
        case csvLine
    }

    /// Reads the daily rollups (one row per day, subscription and plan already) and names them.
    /// Fields that may hold free text go through `tollgate_csv` (quoted when needed); the rest are
    /// ids, slugs, dates and numbers, which never need quotes.
    static func query(tenant: String, from: Date, to: Date, filter: UsageFilter, limit: Int?, as projection: Projection) -> PostgresQuery {
        let fields = """
            to_char(d.day, 'YYYY-MM-DD'), t.slug, coalesce(tm.id::text, ''), coalesce(tm.name, ''), coalesce(a.id::text, ''), coalesce(a.name, ''),
            coalesce(api.id::text, ''), coalesce(api.slug, ''), coalesce(api.version, ''), coalesce(p.id::text, ''), coalesce(p.name, ''),
            CASE WHEN d.subscription_id = '00000000-0000-0000-0000-000000000000' THEN '' ELSE d.subscription_id::text END,
            d.calls::text, d.billable::text, d.rejected::text, d.errors::text, d.bytes_in::text, d.bytes_out::text
            """
        let line = """
            concat_ws(',', to_char(d.day, 'YYYY-MM-DD'), t.slug, coalesce(tm.id::text, ''), tollgate_csv(coalesce(tm.name, '')),
                      coalesce(a.id::text, ''), tollgate_csv(coalesce(a.name, '')), coalesce(api.id::text, ''), coalesce(api.slug, ''),
                      tollgate_csv(coalesce(api.version, '')), coalesce(p.id::text, ''), tollgate_csv(coalesce(p.name, '')),
                      CASE WHEN d.subscription_id = '00000000-0000-0000-0000-000000000000' THEN '' ELSE d.subscription_id::text END,
                      d.calls, d.billable, d.rejected, d.errors, d.bytes_in, d.bytes_out) || E'\\r\\n'
            """
        let projected = projection == .fields ? "ARRAY[\(fields)]" : line
        return """
            SELECT \(unescaped: projected)
            FROM usage_daily d
            CROSS JOIN (SELECT \(tenant)::text AS slug) t
            LEFT JOIN subscriptions s ON s.tenant_id = d.tenant_id AND s.id = d.subscription_id
            LEFT JOIN apps a ON a.tenant_id = d.tenant_id AND a.id = s.app_id
            LEFT JOIN teams tm ON tm.tenant_id = d.tenant_id AND tm.id = a.team_id
            LEFT JOIN apis api ON api.tenant_id = d.tenant_id AND api.id = coalesce(s.api_id, d.api_id)
            LEFT JOIN plans p ON p.tenant_id = d.tenant_id AND p.id = coalesce(nullif(d.plan_id, '00000000-0000-0000-0000-000000000000'), s.plan_id)
            WHERE d.tenant_id = (SELECT id FROM tenants WHERE slug = \(tenant)) AND d.day >= (\(from) AT TIME ZONE 'UTC')::date AND d.day < (\(to) AT TIME ZONE 'UTC')::date
              AND (\(filter.teamID)::uuid IS NULL OR tm.id = \(filter.teamID)) AND (\(filter.appID)::uuid IS NULL OR a.id = \(filter.appID))
              AND (\(filter.apiID)::uuid IS NULL OR api.id = \(filter.apiID)) AND (\(filter.planID)::uuid IS NULL OR p.id = \(filter.planID))
            ORDER BY d.day, d.subscription_id, d.plan_id
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
