import Foundation
import Logging
import PostgresNIO

/// Writes batches of usage events and their hourly rollups in one transaction. Idempotent: an
/// event already stored (same id and time) is skipped and not counted again, so replaying a batch
/// after a failure or from the spool never double-counts.
public struct UsageStore: Sendable {
    static let none = UUID(uuidString: "00000000-0000-0000-0000-000000000000")!
    let logger: Logger

    public init(logger: Logger) { self.logger = logger }

    /// Stores a batch's events and tally totals; returns how many events were new.
    @discardableResult
    public func write(_ batch: UsageBatch, client: PostgresClient) async throws -> Int {
        guard !batch.isEmpty else { return 0 }
        return try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT set_config('tollgate.scope', 'system', true)", logger: logger)
            try await write(batch.answered, on: connection)
            return try await write(batch.events, gateway: batch.meterID, on: connection)
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

    func write(_ events: [UsageEvent], gateway: String, on connection: PostgresConnection) async throws -> Int {
        guard !events.isEmpty else { return 0 }
        let rows = try await connection.query(
            """
            INSERT INTO usage_events (id, at, tenant_id, api_id, app_id, subscription_id, plan_id, method, status, latency_us, bytes_in, bytes_out,
                                      rejection, forwarded, billable, gateway)
            SELECT id, at, tenant, nullif(api, \(Self.none)), nullif(app, \(Self.none)), nullif(sub, \(Self.none)), nullif(plan, \(Self.none)), method, status,
                   latency, bytes_in, bytes_out, nullif(rejection, ''), forwarded, billable, \(gateway)
            FROM unnest(\(events.map(\.id))::uuid[], \(events.map(\.at))::timestamptz[], \(events.map(\.tenantID))::uuid[],
                        \(events.map { $0.apiID ?? Self.none })::uuid[], \(events.map { $0.appID ?? Self.none })::uuid[],
                        \(events.map { $0.subscriptionID ?? Self.none })::uuid[], \(events.map { $0.planID ?? Self.none })::uuid[],
                        \(events.map(\.method))::text[], \(events.map { Int16(clamping: $0.status) })::smallint[],
                        \(events.map { Int32(clamping: $0.latencyMicroseconds) })::integer[], \(events.map(\.bytesIn))::bigint[],
                        \(events.map(\.bytesOut))::bigint[], \(events.map { $0.rejection?.rawValue ?? "" })::text[],
                        \(events.map(\.forwarded))::boolean[], \(events.map(\.isBillable))::boolean[])
                 AS e(id, at, tenant, api, app, sub, plan, method, status, latency, bytes_in, bytes_out, rejection, forwarded, billable)
            ON CONFLICT DO NOTHING
            RETURNING id
            """, logger: logger)
        var inserted = Set<UUID>()
        for try await id in rows.decode(UUID.self) { inserted.insert(id) }
        let fresh = events.filter { inserted.contains($0.id) }
        let rollups = HourlyRollup.aggregate(fresh)
        guard !rollups.isEmpty else { return 0 }
        // One statement for all of the batch's rollups (keys are unique within it, as ON CONFLICT
        // DO UPDATE requires); histograms and reasons travel as text and are cast per row.
        try await connection.query(
            """
            INSERT INTO usage_hourly (tenant_id, subscription_id, hour, api_id, app_id, plan_id, calls, billable, errors, rejected,
                                      status_2xx, status_3xx, status_4xx, status_5xx, bytes_in, bytes_out, latency)
            SELECT tenant, sub, hour, nullif(api, \(Self.none)), nullif(app, \(Self.none)), plan, calls, billable, errors, rejected::jsonb,
                   s2, s3, s4, s5, bytes_in, bytes_out, latency::bigint[]
            FROM unnest(\(rollups.map(\.tenantID))::uuid[], \(rollups.map { $0.subscriptionID ?? Self.none })::uuid[], \(rollups.map(\.hour))::timestamptz[],
                        \(rollups.map { $0.apiID ?? Self.none })::uuid[], \(rollups.map { $0.appID ?? Self.none })::uuid[],
                        \(rollups.map { $0.planID ?? Self.none })::uuid[], \(rollups.map(\.calls))::bigint[], \(rollups.map(\.billable))::bigint[],
                        \(rollups.map(\.errors))::bigint[], \(rollups.map(\.rejectedJSON))::text[], \(rollups.map { $0.statusClasses[0] })::bigint[],
                        \(rollups.map { $0.statusClasses[1] })::bigint[], \(rollups.map { $0.statusClasses[2] })::bigint[],
                        \(rollups.map { $0.statusClasses[3] })::bigint[], \(rollups.map(\.bytesIn))::bigint[], \(rollups.map(\.bytesOut))::bigint[],
                        \(rollups.map(\.latencyLiteral))::text[])
                 AS r(tenant, sub, hour, api, app, plan, calls, billable, errors, rejected, s2, s3, s4, s5, bytes_in, bytes_out, latency)
            ON CONFLICT (tenant_id, subscription_id, hour, plan_id) DO UPDATE SET
                api_id = coalesce(EXCLUDED.api_id, usage_hourly.api_id), app_id = coalesce(EXCLUDED.app_id, usage_hourly.app_id),
                calls = usage_hourly.calls + EXCLUDED.calls, billable = usage_hourly.billable + EXCLUDED.billable,
                errors = usage_hourly.errors + EXCLUDED.errors,
                rejected = CASE WHEN EXCLUDED.rejected = '{}' THEN usage_hourly.rejected ELSE tollgate_add_reasons(usage_hourly.rejected, EXCLUDED.rejected) END,
                status_2xx = usage_hourly.status_2xx + EXCLUDED.status_2xx, status_3xx = usage_hourly.status_3xx + EXCLUDED.status_3xx,
                status_4xx = usage_hourly.status_4xx + EXCLUDED.status_4xx, status_5xx = usage_hourly.status_5xx + EXCLUDED.status_5xx,
                bytes_in = usage_hourly.bytes_in + EXCLUDED.bytes_in, bytes_out = usage_hourly.bytes_out + EXCLUDED.bytes_out,
                latency = tollgate_add_counts(usage_hourly.latency, EXCLUDED.latency)
            """, logger: logger)
        try await write(DailyRollup.aggregate(rollups), on: connection)
        return fresh.count
    }

    /// The daily rollups billing and exports read, from the same deltas as the hourly ones.
    func write(_ days: [DailyRollup], on connection: PostgresConnection) async throws {
        try await connection.query(
            """
            INSERT INTO usage_daily (tenant_id, day, subscription_id, plan_id, api_id, app_id, calls, billable, rejected, errors, bytes_in, bytes_out)
            SELECT tenant, (day AT TIME ZONE 'UTC')::date, sub, plan, nullif(api, \(Self.none)), nullif(app, \(Self.none)), calls, billable, rejected, errors, bytes_in, bytes_out
            FROM unnest(\(days.map(\.tenantID))::uuid[], \(days.map(\.day))::timestamptz[], \(days.map { $0.subscriptionID ?? Self.none })::uuid[],
                        \(days.map { $0.planID ?? Self.none })::uuid[], \(days.map { $0.apiID ?? Self.none })::uuid[], \(days.map { $0.appID ?? Self.none })::uuid[],
                        \(days.map(\.calls))::bigint[], \(days.map(\.billable))::bigint[], \(days.map(\.rejected))::bigint[], \(days.map(\.errors))::bigint[],
                        \(days.map(\.bytesIn))::bigint[], \(days.map(\.bytesOut))::bigint[])
                 AS d(tenant, day, sub, plan, api, app, calls, billable, rejected, errors, bytes_in, bytes_out)
            ON CONFLICT (tenant_id, day, subscription_id, plan_id) DO UPDATE SET
                api_id = coalesce(EXCLUDED.api_id, usage_daily.api_id), app_id = coalesce(EXCLUDED.app_id, usage_daily.app_id),
                calls = usage_daily.calls + EXCLUDED.calls, billable = usage_daily.billable + EXCLUDED.billable,
                rejected = usage_daily.rejected + EXCLUDED.rejected, errors = usage_daily.errors + EXCLUDED.errors,
                bytes_in = usage_daily.bytes_in + EXCLUDED.bytes_in, bytes_out = usage_daily.bytes_out + EXCLUDED.bytes_out
            """, logger: logger)
    }

    /// Makes sure the partitions of the current and the next month exist.
    public func preparePartitions(client: PostgresClient, now: Date = Date()) async throws {
        let next = now.addingTimeInterval(32 * 86_400)
        try await client.withConnection { connection in
            try await connection.query("SELECT tollgate_ensure_usage_partition(\(now)::date), tollgate_ensure_usage_partition(\(next)::date)", logger: logger)
        }
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

    /// `{1,0,3,…}`: the histogram as a Postgres array literal.
    var latencyLiteral: String { "{" + latency.map(String.init).joined(separator: ",") + "}" }

    var rejectedJSON: String {
        "{" + rejected.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",") + "}"
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
            var rollup = rollups[key] ?? HourlyRollup(
                tenantID: event.tenantID, subscriptionID: event.subscriptionID, hour: Date(timeIntervalSince1970: Double(hour)), apiID: event.apiID,
                appID: event.appID, planID: event.planID)
            rollup.calls += 1
            if event.isBillable { rollup.billable += 1 }
            if event.status >= 500 { rollup.errors += 1 }
            if let reason = event.rejection { rollup.rejected[reason.rawValue, default: 0] += 1 }
            let statusClass = min(max(event.status / 100 - 2, 0), 3)
            rollup.statusClasses[statusClass] += 1
            rollup.bytesIn += event.bytesIn
            rollup.bytesOut += event.bytesOut
            rollup.latency[LatencyHistogram.bucket(event.latencyMicroseconds)] += 1
            rollups[key] = rollup
        }
        // In key order, so concurrent writers (several gateways) lock shared rollup rows in the
        // same order and cannot deadlock. The keys compare as integers: comparing `uuidString`s
        // allocated two strings per comparison and cost ~60 ms per 5,000 rollups.
        return rollups.values.sorted {
            ($0.tenantID.order, ($0.subscriptionID ?? UsageStore.none).order, $0.hour, ($0.planID ?? UsageStore.none).order)
                < ($1.tenantID.order, ($1.subscriptionID ?? UsageStore.none).order, $1.hour, ($1.planID ?? UsageStore.none).order)
        }
    }
}

/// One (tenant, subscription, plan, UTC day) delta: the sum of a batch's hourly deltas of that day.
/// Pure.
struct DailyRollup: Equatable {
    var tenantID: UUID
    var subscriptionID: UUID?
    var planID: UUID?
    /// Midnight UTC of the day (bound as a Postgres `date`).
    var day: Date
    var apiID: UUID?
    var appID: UUID?
    var calls: Int64 = 0
    var billable: Int64 = 0
    var rejected: Int64 = 0
    var errors: Int64 = 0
    var bytesIn: Int64 = 0
    var bytesOut: Int64 = 0

    static func aggregate(_ hours: [HourlyRollup]) -> [DailyRollup] {
        struct Key: Hashable {
            let tenant: UUID
            let subscription: UUID?
            let plan: UUID?
            let day: Int64
        }
        var days: [Key: DailyRollup] = [:]
        for hour in hours {
            let day = Int64(hour.hour.timeIntervalSince1970.rounded(.down)) / 86_400 * 86_400
            let key = Key(tenant: hour.tenantID, subscription: hour.subscriptionID, plan: hour.planID, day: day)
            var rollup = days[key] ?? DailyRollup(
                tenantID: hour.tenantID, subscriptionID: hour.subscriptionID, planID: hour.planID, day: Date(timeIntervalSince1970: Double(day)),
                apiID: hour.apiID, appID: hour.appID)
            rollup.calls += hour.calls
            rollup.billable += hour.billable
            rollup.rejected += hour.rejected.values.reduce(0, +)
            rollup.errors += hour.errors
            rollup.bytesIn += hour.bytesIn
            rollup.bytesOut += hour.bytesOut
            days[key] = rollup
        }
        return days.values.sorted {
            ($0.tenantID.order, $0.day, ($0.subscriptionID ?? UsageStore.none).order, ($0.planID ?? UsageStore.none).order)
                < ($1.tenantID.order, $1.day, ($1.subscriptionID ?? UsageStore.none).order, ($1.planID ?? UsageStore.none).order)
        }
    }
}

extension UUID {
    /// The 128 bits as two integers: a total order that costs no allocation.
    var order: UInt128 {
        withUnsafeBytes(of: uuid) { UInt128(bigEndian: $0.loadUnaligned(as: UInt128.self)) }
    }
}
