import Foundation
import Logging
import PostgresNIO

/// Writes batches of usage events and their hourly rollup deltas in one transaction, and folds
/// the deltas into the rollups. Idempotent: an event already stored (same id and time) is skipped
/// and not counted again, so replaying a batch after a failure or from the spool never
/// double-counts.
public struct UsageStore: Sendable {
    /// Rollups and tallies of calls without a subscription (or plan) are keyed by the nil UUID.
    static let none = UUID(uuidString: "00000000-0000-0000-0000-000000000000")!
    let logger: Logger

    public init(logger: Logger) { self.logger = logger }

    /// Stores a batch's events and tally totals; returns how many events were new.
    ///
    /// Events are first inserted as they are: a plain insert costs about half of one that checks
    /// each row for a conflict and returns the new ids (~65 against ~120 ms for 10,000 events).
    /// Only when some were stored before — a spool replay, a write that landed after it timed
    /// out — does the unique key refuse the batch; it is then written again, skipping those.
    @discardableResult
    public func write(_ batch: UsageBatch, client: PostgresClient) async throws -> Int {
        try await client.withConnection { try await write(batch, on: $0) }
    }

    /// The same on a connection of the caller's (the meter's own, which it can abandon).
    @discardableResult
    public func write(_ batch: UsageBatch, on connection: PostgresConnection) async throws -> Int {
        guard !batch.isEmpty else { return 0 }
        do {
            return try await write(batch, skippingStored: false, on: connection)
        } catch let error as PostgresTransactionError where error.closureError is SomeAlreadyStored {
            return try await write(batch, skippingStored: true, on: connection)
        }
    }

    private struct SomeAlreadyStored: Error {}

    private func write(_ batch: UsageBatch, skippingStored: Bool, on connection: PostgresConnection) async throws -> Int {
        try await connection.withTransaction(logger: logger) { connection in
            try await connection.enterSystemScope(logger: logger)
            try await write(batch.answered, on: connection)
            do {
                return try await write(batch.events, gateway: batch.meterID, skippingStored: skippingStored, on: connection)
            } catch let error as PSQLError where !skippingStored && error.serverInfo?[.sqlState] == "23505" {
                throw SomeAlreadyStored()
            }
        }
    }

    /// A meter's progress report: the tally totals that changed, its own run's heartbeat (or its
    /// clean end), and how earlier runs found in its spool directory ended. One transaction.
    public func report(_ progress: UsageMeter.Progress, on connection: PostgresConnection) async throws {
        try await connection.withTransaction(logger: logger) { connection in
            try await connection.enterSystemScope(logger: logger)
            try await write(progress.answered, on: connection)
            let state = progress.ended ? "clean" : "running"
            try await connection.query(
                """
                INSERT INTO meter_runs (meter_id, gateway, started_at, last_report_at, state, ended_at)
                VALUES (\(progress.meterID), \(progress.gateway), \(progress.startedAt), now(), \(state), CASE WHEN \(state) = 'clean' THEN now() END)
                ON CONFLICT (meter_id) DO UPDATE SET last_report_at = now(), state = EXCLUDED.state, ended_at = EXCLUDED.ended_at
                """, logger: logger)
            for run in progress.earlierRuns {
                let ended = run.clean ? "clean" : "crashed"
                let gateway = String(run.meterID.split(separator: "/").first ?? Substring(run.meterID))
                // A run that reported its own clean end stays clean (it may have died only after).
                try await connection.query(
                    """
                    INSERT INTO meter_runs (meter_id, gateway, started_at, last_report_at, state, ended_at)
                    VALUES (\(run.meterID), \(gateway), now(), now(), \(ended), now())
                    ON CONFLICT (meter_id) DO UPDATE SET
                        state = CASE WHEN meter_runs.state = 'clean' THEN 'clean' ELSE EXCLUDED.state END,
                        ended_at = coalesce(meter_runs.ended_at, now())
                    """, logger: logger)
            }
        }
    }

    /// Tally totals: the greatest total per key wins, so replays and reordering cannot inflate them.
    func write(_ answered: [AnsweredCount], on connection: PostgresConnection) async throws {
        guard !answered.isEmpty else { return }
        try await connection.query(
            """
            INSERT INTO usage_answered (tenant_id, meter_id, subscription_id, hour, answered, billable)
            SELECT * FROM unnest(\(answered.map(\.tenantID))::uuid[], \(answered.map(\.meterID))::text[],
                                 \(answered.map { $0.subscriptionID ?? Self.none })::uuid[], \(answered.map(\.hour))::timestamptz[],
                                 \(answered.map(\.answered))::bigint[], \(answered.map(\.billable))::bigint[])
            ON CONFLICT (tenant_id, subscription_id, hour, meter_id) DO UPDATE SET
                answered = greatest(usage_answered.answered, EXCLUDED.answered), billable = greatest(usage_answered.billable, EXCLUDED.billable)
            """, logger: logger)
    }

    func write(_ events: [UsageEvent], gateway: String, skippingStored: Bool, on connection: PostgresConnection) async throws -> Int {
        guard !events.isEmpty else { return 0 }
        let rows = try await connection.query(
            """
            INSERT INTO usage_events (id, at, tenant_id, api_id, app_id, subscription_id, plan_id, method, status, latency_us, bytes_in, bytes_out,
                                      rejection, forwarded, billable, gateway, seq, cache)
            SELECT id, at, tenant, nullif(api, \(Self.none)), nullif(app, \(Self.none)), nullif(sub, \(Self.none)), nullif(plan, \(Self.none)), method, status,
                   latency, bytes_in, bytes_out, nullif(rejection, ''), forwarded, billable, \(gateway), seq, nullif(cache, '')
            FROM unnest(\(BinaryArrayColumn.uuid(events.map(\.id))), \(BinaryArrayColumn.timestamptz(events.map(\.at))),
                        \(BinaryArrayColumn.uuid(events.map(\.tenantID))), \(BinaryArrayColumn.uuid(events.map { $0.apiID ?? Self.none })),
                        \(BinaryArrayColumn.uuid(events.map { $0.appID ?? Self.none })), \(BinaryArrayColumn.uuid(events.map { $0.subscriptionID ?? Self.none })),
                        \(BinaryArrayColumn.uuid(events.map { $0.planID ?? Self.none })), \(BinaryArrayColumn.text(events.map(\.method))),
                        \(BinaryArrayColumn.int16(events.map { Int16(clamping: $0.status) })),
                        \(BinaryArrayColumn.int32(events.map { Int32(clamping: $0.latencyMicroseconds) })), \(BinaryArrayColumn.int64(events.map(\.bytesIn))),
                        \(BinaryArrayColumn.int64(events.map(\.bytesOut))), \(BinaryArrayColumn.text(events.map { $0.rejection?.rawValue ?? "" })),
                        \(BinaryArrayColumn.bool(events.map(\.forwarded))), \(BinaryArrayColumn.bool(events.map(\.isBillable))),
                        \(BinaryArrayColumn.int64(events.map(\.sequence))), \(BinaryArrayColumn.text(events.map { $0.cache?.rawValue ?? "" })))
                 AS e(id, at, tenant, api, app, sub, plan, method, status, latency, bytes_in, bytes_out, rejection, forwarded, billable, seq, cache)
            \(unescaped: skippingStored ? "ON CONFLICT DO NOTHING RETURNING id" : "")
            """, logger: logger)
        var fresh = events
        if skippingStored {
            var inserted = Set<UUID>()
            for try await id in rows.decode(UUID.self) { inserted.insert(id) }
            fresh = events.filter { inserted.contains($0.id) }
        } else {
            for try await _ in rows {}  // the statement's outcome (a refused key) arrives here at the latest
        }
        let rollups = HourlyRollup.aggregate(fresh)
        guard !rollups.isEmpty else { return 0 }
        // Appended, not upserted: the busy rows of the hour would otherwise be rewritten with every
        // batch. `fold` adds them into the rollups later; readers sum the `_live` views meanwhile.
        // Histograms and reasons travel as text and are cast per row.
        try await connection.query(
            """
            INSERT INTO usage_deltas (tenant_id, subscription_id, hour, plan_id, api_id, app_id, calls, billable, errors, rejected,
                                      status_2xx, status_3xx, status_4xx, status_5xx, bytes_in, bytes_out, latency, cache_hits)
            SELECT tenant, sub, hour, plan, nullif(api, \(Self.none)), nullif(app, \(Self.none)), calls, billable, errors, rejected::jsonb,
                   s2, s3, s4, s5, bytes_in, bytes_out, latency::bigint[], cache_hits
            FROM unnest(\(rollups.map(\.tenantID))::uuid[], \(rollups.map { $0.subscriptionID ?? Self.none })::uuid[], \(rollups.map(\.hour))::timestamptz[],
                        \(rollups.map { $0.planID ?? Self.none })::uuid[], \(rollups.map { $0.apiID ?? Self.none })::uuid[],
                        \(rollups.map { $0.appID ?? Self.none })::uuid[], \(rollups.map(\.calls))::bigint[], \(rollups.map(\.billable))::bigint[],
                        \(rollups.map(\.errors))::bigint[], \(rollups.map(\.rejectedJSON))::text[], \(rollups.map { $0.statusClasses[0] })::bigint[],
                        \(rollups.map { $0.statusClasses[1] })::bigint[], \(rollups.map { $0.statusClasses[2] })::bigint[],
                        \(rollups.map { $0.statusClasses[3] })::bigint[], \(rollups.map(\.bytesIn))::bigint[], \(rollups.map(\.bytesOut))::bigint[],
                        \(rollups.map(\.latencyLiteral))::text[], \(rollups.map(\.cacheHits))::bigint[])
                 AS r(tenant, sub, hour, plan, api, app, calls, billable, errors, rejected, s2, s3, s4, s5, bytes_in, bytes_out, latency, cache_hits)
            """, logger: logger)
        return fresh.count
    }

    /// Adds every committed delta into `usage_hourly` and `usage_daily` (in its own transaction);
    /// returns how many deltas it folded. Meters call it about once a second; readers that need
    /// one row per key (the usage export) call it before they read.
    @discardableResult
    public func fold(client: PostgresClient) async throws -> Int64 {
        try await client.withConnection { try await fold(on: $0) }
    }

    @discardableResult
    public func fold(on connection: PostgresConnection) async throws -> Int64 {
        var folded: Int64 = 0
        for try await count in try await connection.query("SELECT tollgate_fold_usage()", logger: logger).decode(Int64.self) { folded = count }
        // The folded deltas are dead rows until vacuumed, and autovacuum looks at a database
        // once a minute: meanwhile inserts extend the table and every fold scans it whole
        // (~170 MB after a minute at 50,000 events/s). Vacuumed here, the table stays at about
        // one second of deltas. Without truncation it never takes a lock the meters' inserts wait for.
        if folded > 0 { try await connection.query("VACUUM (TRUNCATE false) usage_deltas", logger: logger) }
        return folded
    }

    /// Makes sure the partitions of the current and the next month exist.
    public func preparePartitions(client: PostgresClient, now: Date = Date()) async throws {
        try await client.withConnection { try await preparePartitions(on: $0, now: now) }
    }

    public func preparePartitions(on connection: PostgresConnection, now: Date = Date()) async throws {
        let next = now.addingTimeInterval(32 * 86_400)
        try await connection.query("SELECT tollgate_ensure_usage_partition(\(now)::date), tollgate_ensure_usage_partition(\(next)::date)", logger: logger)
    }
}

/// One (tenant, subscription, plan, hour) rollup delta computed from a batch. Pure.
struct HourlyRollup: Equatable {
    var tenantID: UUID
    var subscriptionID: UUID?
    var hour: Date
    var apiID: UUID?
    var appID: UUID?
    var planID: UUID?
    var calls: Int64 = 0
    var billable: Int64 = 0
    var errors: Int64 = 0
    var rejected: [String: Int64] = [:]
    var statusClasses: [Int64] = [0, 0, 0, 0]
    var bytesIn: Int64 = 0
    var bytesOut: Int64 = 0
    var latency: [Int64] = Array(repeating: 0, count: LatencyHistogram.bounds.count)
    var cacheHits: Int64 = 0

    /// `{1,0,3,…}`: the histogram as a Postgres array literal.
    var latencyLiteral: String { "{" + latency.map(String.init).joined(separator: ",") + "}" }

    var rejectedJSON: String {
        "{" + rejected.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",") + "}"
    }

    private mutating func count(_ event: UsageEvent) {
        calls += 1
        if event.isBillable { billable += 1 }
        if event.cache != nil { cacheHits += 1 }
        if event.status >= 500 { errors += 1 }
        if let reason = event.rejection { rejected[reason.rawValue, default: 0] += 1 }
        statusClasses[min(max(event.status / 100 - 2, 0), 3)] += 1
        bytesIn += event.bytesIn
        bytesOut += event.bytesOut
        latency[LatencyHistogram.bucket(event.latencyMicroseconds)] += 1
    }

    static func aggregate(_ events: [UsageEvent]) -> [HourlyRollup] {
        struct Key: Hashable {
            let tenant: UUID
            let subscription: UUID?
            let plan: UUID?
            let hour: Int64
        }
        var rollups: [Key: HourlyRollup] = [:]
        for event in events {
            let hour = Int64(event.at.timeIntervalSince1970.rounded(.down)) / 3600 * 3600
            let key = Key(tenant: event.tenantID, subscription: event.subscriptionID, plan: event.planID, hour: hour)
            // in place: a copy taken out and stored back would copy its two arrays for every event
            rollups[key, default: HourlyRollup(
                tenantID: event.tenantID, subscriptionID: event.subscriptionID, hour: Date(timeIntervalSince1970: Double(hour)), apiID: event.apiID,
                appID: event.appID, planID: event.planID)].count(event)
        }
        // Any order: deltas are appended, and only the fold (one at a time) locks rollup rows.
        return Array(rollups.values)
    }
}
