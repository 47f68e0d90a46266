import Foundation
import Logging
import PostgresNIO

/// What a usage report covers: a window of whole hours, optionally one API, one app or one
/// subscription.
public struct UsageScope: Sendable, Equatable {
    public var from: Date
    public var to: Date
    public var apiID: UUID?
    public var appID: UUID?
    public var subscriptionID: UUID?

    public init(from: Date, to: Date, apiID: UUID? = nil, appID: UUID? = nil, subscriptionID: UUID? = nil) {
        self.from = from
        self.to = to
        self.apiID = apiID
        self.appID = appID
        self.subscriptionID = subscriptionID
    }

    /// Hourly points up to 7 days, daily beyond (a chart stays under ~170 bars).
    public var bucketSeconds: Int { to.timeIntervalSince(from) <= 7 * 86_400 + 1 ? 3_600 : 86_400 }

    /// A named range ending now (`24h`, `7d`, `30d`), aligned to the hour.
    public static func last(_ range: String, now: Date = Date()) -> (from: Date, to: Date)? {
        let hours: Double
        switch range {
        case "24h": hours = 24
        case "7d": hours = 7 * 24
        case "30d": hours = 30 * 24
        default: return nil
        }
        let end = Date(timeIntervalSince1970: (now.timeIntervalSince1970 / 3600).rounded(.down) * 3600 + 3600)
        return (end.addingTimeInterval(-hours * 3600), end)
    }
}

/// Usage over a scope, from the hourly rollups.
public struct UsageReport: Sendable, Equatable {
    public struct Point: Sendable, Equatable {
        public var start: Date
        public var calls: Int64
        public var billable: Int64
        public var errors: Int64
        public var rejected: Int64
    }

    public struct TopApp: Sendable, Equatable {
        public var appID: UUID
        public var name: String
        public var calls: Int64
    }

    public var scope: UsageScope
    /// One point per bucket of the window, zeros included, oldest first.
    public var series: [Point]
    public var calls: Int64
    public var billable: Int64
    public var errors: Int64
    /// 2xx, 3xx, 4xx, 5xx
    public var statusClasses: [Int64]
    public var bytesIn: Int64
    public var bytesOut: Int64
    public var rejections: [String: Int64]
    public var latency: [Int64]
    public var topApps: [TopApp]
    /// Calls the gateway answered from its response cache.
    public var cacheHits: Int64 = 0

    /// Share of answered calls that were server errors (0…1).
    public var errorRate: Double { calls == 0 ? 0 : Double(errors) / Double(calls) }

    /// Share of the calls that got an answer (not refused by the gateway) answered from the
    /// response cache (0…1).
    public var cacheHitRatio: Double {
        let answered = calls - rejections.values.reduce(0, +)
        return answered <= 0 ? 0 : min(1, Double(cacheHits) / Double(answered))
    }
    public func latencyPercentile(_ quantile: Double) -> Int64? { LatencyHistogram.percentile(latency, quantile) }
}

/// Reads usage reports. Every query names the tenant, so it works in the tenant's RLS scope.
public struct UsageAnalytics: Sendable {
    let logger: Logger

    public init(logger: Logger) { self.logger = logger }

    public func report(tenant: UUID, scope: UsageScope, on connection: PostgresConnection) async throws -> UsageReport {
        let bucket = scope.bucketSeconds
        let filter = Self.filterSQL(tenant: tenant, scope)
        var points: [Int64: UsageReport.Point] = [:]
        let series = try await connection.query(
            """
            SELECT ARRAY[bucket::text, calls::text, billable::text, errors::text, rejected::text] FROM (
                SELECT (floor(extract(epoch FROM h.hour) / \(bucket)) * \(bucket))::bigint AS bucket, sum(h.calls) AS calls, sum(h.billable) AS billable,
                       sum(h.errors) AS errors, sum((SELECT coalesce(sum(value::bigint), 0) FROM jsonb_each_text(h.rejected))) AS rejected
                FROM usage_hourly_live h WHERE \(unescaped: filter) GROUP BY 1
            ) AS b
            """, logger: logger)
        for try await f in series.decode([String].self) {
            guard f.count == 5, let start = Int64(f[0]) else { continue }
            points[start] = UsageReport.Point(
                start: Date(timeIntervalSince1970: Double(start)), calls: Int64(f[1]) ?? 0, billable: Int64(f[2]) ?? 0, errors: Int64(f[3]) ?? 0,
                rejected: Int64(f[4]) ?? 0)
        }
        var report = UsageReport(
            scope: scope, series: Self.fill(points, from: scope.from, to: scope.to, bucket: bucket), calls: 0, billable: 0, errors: 0,
            statusClasses: [0, 0, 0, 0], bytesIn: 0, bytesOut: 0, rejections: [:], latency: Array(repeating: 0, count: LatencyHistogram.bounds.count),
            topApps: [])
        let totals = try await connection.query(
            """
            SELECT ARRAY[coalesce(sum(h.calls), 0)::text, coalesce(sum(h.billable), 0)::text, coalesce(sum(h.errors), 0)::text,
                         coalesce(sum(h.status_2xx), 0)::text, coalesce(sum(h.status_3xx), 0)::text, coalesce(sum(h.status_4xx), 0)::text,
                         coalesce(sum(h.status_5xx), 0)::text, coalesce(sum(h.bytes_in), 0)::text, coalesce(sum(h.bytes_out), 0)::text,
                         coalesce(sum(h.cache_hits), 0)::text]
            FROM usage_hourly_live h WHERE \(unescaped: filter)
            """, logger: logger)
        for try await f in totals.decode([String].self) {
            let n = f.map { Int64($0) ?? 0 }
            guard n.count == 10 else { continue }
            (report.calls, report.billable, report.errors) = (n[0], n[1], n[2])
            report.statusClasses = Array(n[3...6])
            (report.bytesIn, report.bytesOut, report.cacheHits) = (n[7], n[8], n[9])
        }
        let latency = try await connection.query(
            """
            SELECT (t.i - 1)::int, sum(t.x)::bigint FROM usage_hourly_live h, unnest(h.latency) WITH ORDINALITY AS t(x, i)
            WHERE \(unescaped: filter) GROUP BY t.i
            """, logger: logger)
        for try await (index, count) in latency.decode((Int32, Int64).self) where report.latency.indices.contains(Int(index)) {
            report.latency[Int(index)] = count
        }
        let reasons = try await connection.query(
            """
            SELECT r.key, sum(r.value::bigint)::bigint FROM usage_hourly_live h, jsonb_each_text(h.rejected) AS r
            WHERE \(unescaped: filter) GROUP BY r.key
            """, logger: logger)
        for try await (reason, count) in reasons.decode((String, Int64).self) { report.rejections[reason] = count }
        let apps = try await connection.query(
            """
            SELECT h.app_id, a.name, sum(h.calls)::bigint FROM usage_hourly_live h JOIN apps a ON a.tenant_id = h.tenant_id AND a.id = h.app_id
            WHERE \(unescaped: filter) GROUP BY h.app_id, a.name ORDER BY 3 DESC, 2 LIMIT 10
            """, logger: logger)
        for try await (app, name, calls) in apps.decode((UUID, String, Int64).self) { report.topApps.append(.init(appID: app, name: name, calls: calls)) }
        return report
    }

    /// The WHERE clause shared by the report's queries. Built from typed values only (UUIDs and
    /// dates formatted here, never text from a request), so inlining them is safe; it lets five
    /// queries share one clause without renumbering bind parameters.
    static func filterSQL(tenant: UUID, _ scope: UsageScope) -> String {
        func uuid(_ value: UUID) -> String { "'\(value.uuidString)'::uuid" }
        func time(_ value: Date) -> String { "to_timestamp(\(Int64(value.timeIntervalSince1970)))" }
        var clauses = ["h.tenant_id = \(uuid(tenant))", "h.hour >= \(time(scope.from))", "h.hour < \(time(scope.to))"]
        if let api = scope.apiID { clauses.append("h.api_id = \(uuid(api))") }
        if let app = scope.appID { clauses.append("h.app_id = \(uuid(app))") }
        if let subscription = scope.subscriptionID { clauses.append("h.subscription_id = \(uuid(subscription))") }
        return clauses.joined(separator: " AND ")
    }

    /// Every bucket of [from, to), zeros where nothing was counted. Pure.
    static func fill(_ points: [Int64: UsageReport.Point], from: Date, to: Date, bucket: Int) -> [UsageReport.Point] {
        let size = Int64(bucket)
        var start = Int64(from.timeIntervalSince1970) / size * size
        let end = Int64(to.timeIntervalSince1970)
        var result: [UsageReport.Point] = []
        while start < end && result.count < 10_000 {
            result.append(points[start] ?? .init(start: Date(timeIntervalSince1970: Double(start)), calls: 0, billable: 0, errors: 0, rejected: 0))
            start += size
        }
        return result
    }
}
