import Billing
import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import ServiceLifecycle

/// Monthly quotas across gateway processes.
///
/// Each process admits calls against `used` (the total across processes, as of its last sync)
/// plus its own calls not yet synced, and reserves a unit per admitted call; a reservation is
/// released when the call turns out not billable (`UsageEvent.isBillable`), so rejections and
/// upstream failures never consume quota. Every `syncInterval` the process adds its billable calls
/// to `quota_usage` in Postgres and reads the totals back. Drift bound: each process's view of the
/// total is at most one sync interval old, so a subscription can exceed its quota by at most what
/// the processes admit in one interval — with the plan's rate limit applied in each, at most
/// P × (burst + rate × interval) calls for P processes (docs/ARCHITECTURE.md).
public final class QuotaTracker: Sendable {
    struct Counter {
        var tenantID: UUID
        var period: String
        var synced: Int64 = 0
        /// Admitted here and not yet known to be billable or not.
        var reserved: Int64 = 0
        /// Billable here and not yet written to Postgres.
        var unsynced: Int64 = 0
        /// Billable here and being written by the running sync: still counted until the total
        /// that includes them comes back (leaving them out for the round trip over-admitted).
        var inFlight: Int64 = 0

        var used: Int64 { synced + inFlight + unsynced + reserved }
    }

    private let counters = NIOLockedValueBox<[UUID: Counter]>([:])

    public init() {}

    /// The calendar month (UTC) a call counts in, as `YYYY-MM`.
    public static func period(of date: Date) -> String { UTCMonth(containing: date).text }

    public enum Decision: Equatable, Sendable {
        case allowed(remaining: Int64)
        case exhausted
    }

    /// Reserves one call against `quota` for the current period.
    public func admit(subscription: UUID, tenant: UUID, quota: Int64, period: String) -> Decision {
        counters.withLockedValue { table in
            var counter = table[subscription] ?? Counter(tenantID: tenant, period: period)
            if counter.period != period { counter = Counter(tenantID: tenant, period: period) }
            let used = counter.used
            guard used < quota else {
                table[subscription] = counter
                return .exhausted
            }
            counter.reserved += 1
            table[subscription] = counter
            return .allowed(remaining: quota - used - 1)
        }
    }

    /// Settles a reservation once the call's outcome is known.
    public func settle(subscription: UUID, billable: Bool) {
        counters.withLockedValue { table in
            guard var counter = table[subscription] else { return }
            counter.reserved = max(0, counter.reserved - 1)
            if billable { counter.unsynced += 1 }
            table[subscription] = counter
        }
    }

    /// Pushes unsynced counts to Postgres and pulls the totals (system scope, one transaction).
    public func sync(client: PostgresClient, logger: Logger) async throws {
        let pending = counters.withLockedValue { table -> [(UUID, Counter)] in
            let snapshot = table.map { ($0.key, $0.value) }
            for key in table.keys {
                guard var counter = table[key] else { continue }
                counter.inFlight += counter.unsynced
                counter.unsynced = 0
                table[key] = counter
            }
            return snapshot
        }
        guard !pending.isEmpty else { return }
        do {
            let totals = try await client.withTransaction(logger: logger) { connection -> [UUID: Int64] in
                try await connection.query("SELECT set_config('tollgate.scope', 'system', true)", logger: logger)
                var totals: [UUID: Int64] = [:]
                for (subscription, counter) in pending {
                    let rows = try await connection.query(
                        """
                        INSERT INTO quota_usage (tenant_id, subscription_id, period, used) VALUES (\(counter.tenantID), \(subscription), \(counter.period), \(counter.unsynced))
                        ON CONFLICT (tenant_id, subscription_id, period) DO UPDATE SET used = quota_usage.used + EXCLUDED.used, updated_at = now()
                        RETURNING used
                        """, logger: logger)
                    for try await used in rows.decode(Int64.self) { totals[subscription] = used }
                }
                return totals
            }
            counters.withLockedValue { table in
                for (subscription, counter) in pending {
                    if let inFlight = table[subscription]?.inFlight { table[subscription]?.inFlight = max(0, inFlight - counter.unsynced) }
                    if let used = totals[subscription] { table[subscription]?.synced = used }
                }
            }
        } catch {
            // Put the counts back so the next sync writes them.
            counters.withLockedValue { table in
                for (subscription, counter) in pending where counter.unsynced > 0 {
                    if let inFlight = table[subscription]?.inFlight { table[subscription]?.inFlight = max(0, inFlight - counter.unsynced) }
                    table[subscription]?.unsynced += counter.unsynced
                }
            }
            throw error
        }
    }
}

/// Runs `QuotaTracker.sync` every interval; the last sync also runs at shutdown.
public struct QuotaSyncService: Service {
    let tracker: QuotaTracker
    let client: PostgresClient
    let interval: Duration
    let logger: Logger

    public init(tracker: QuotaTracker, client: PostgresClient, interval: Duration = .seconds(1), logger: Logger) {
        self.tracker = tracker
        self.client = client
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                do { try await tracker.sync(client: client, logger: logger) } catch {
                    logger.warning("quota sync failed; counts kept for the next try", metadata: ["error": "\(String(reflecting: error))"])
                }
            }
        }
        try? await tracker.sync(client: client, logger: logger)
    }
}
