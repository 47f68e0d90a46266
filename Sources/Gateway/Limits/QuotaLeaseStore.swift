import Billing
import Foundation
import Logging
import PostgresNIO

/// The SQL side of quota leases: one transaction per `LeaseRequest` (system scope, as gateways
/// read across tenants). The month's `quota_usage` row is locked first (`FOR UPDATE`) and every
/// change to its leases happens under that lock, so requests of different gateways for the same
/// subscription and month run one after the other and the pool is never handed out twice.
/// The decision itself is `LeaseLedger.decide` (pure, unit-tested).
struct QuotaLeaseStore: Sendable {
    let client: PostgresClient
    let sizing: LeaseSizing
    let logger: Logger

    func exchange(_ request: LeaseRequest) async throws -> LeaseAnswer {
        try await client.withTransaction(logger: logger) { connection -> LeaseAnswer in
            try await connection.enterSystemScope(logger: logger)
            if request.period.utf8.count > 7 {
                // A plan window leaves a row per window that had calls (1,440 a day for a minute
                // window); rows of windows over two days old hold history nobody reads. Rows another
                // gateway has locked are skipped (no deadlock between two of these), a later
                // exchange takes them.
                try await connection.query(
                    """
                    DELETE FROM quota_usage WHERE ctid IN (
                        SELECT ctid FROM quota_usage
                        WHERE tenant_id = \(request.tenantID) AND subscription_id = \(request.subscriptionID) AND length(period) > 7
                          AND period < to_char(now() AT TIME ZONE 'UTC' - interval '2 days', 'YYYY-MM-DD')
                        FOR UPDATE SKIP LOCKED)
                    """, logger: logger)
            }
            try await connection.query(
                """
                INSERT INTO quota_usage (tenant_id, subscription_id, period) VALUES (\(request.tenantID), \(request.subscriptionID), \(request.period))
                ON CONFLICT (tenant_id, subscription_id, period) DO NOTHING
                """, logger: logger)
            var usageUsed: Int64 = 0
            for try await used in try await connection.query(
                """
                SELECT used FROM quota_usage WHERE tenant_id = \(request.tenantID) AND subscription_id = \(request.subscriptionID) AND period = \(request.period)
                FOR UPDATE
                """, logger: logger
            ).decode(Int64.self) { usageUsed = used }
            var rows: [LeaseRow] = []
            for try await (id, granted, used, live) in try await connection.query(
                """
                SELECT id, granted, used, expires_at > now() FROM quota_leases
                WHERE tenant_id = \(request.tenantID) AND subscription_id = \(request.subscriptionID) AND period = \(request.period)
                """, logger: logger
            ).decode((UUID, Int64, Int64, Bool).self) { rows.append(LeaseRow(id: id, granted: granted, used: used, live: live)) }

            let outcome = LeaseLedger.decide(quota: request.quota, usageUsed: usageUsed, rows: rows, request: request, sizing: sizing)

            if outcome.usageDelta > 0 {
                try await connection.query(
                    """
                    UPDATE quota_usage SET used = used + \(outcome.usageDelta), updated_at = now()
                    WHERE tenant_id = \(request.tenantID) AND subscription_id = \(request.subscriptionID) AND period = \(request.period)
                    """, logger: logger)
            }
            if let row = outcome.row {
                try await connection.query(
                    """
                    INSERT INTO quota_leases (id, tenant_id, subscription_id, period, holder, granted, used, expires_at)
                    VALUES (\(row.id), \(request.tenantID), \(request.subscriptionID), \(request.period), \(request.holder), \(row.granted), \(row.used),
                            now() + \(request.leaseSeconds) * interval '1 second')
                    ON CONFLICT (id) DO UPDATE SET granted = EXCLUDED.granted, used = EXCLUDED.used, expires_at = EXCLUDED.expires_at, updated_at = now()
                    """, logger: logger)
            } else {
                try await connection.query("DELETE FROM quota_leases WHERE id = \(request.leaseID)", logger: logger)
            }
            // Rows of leases long expired (crashed gateways) only matter for their `used`, which
            // quota_usage already holds; a returning holder falls back to its own `reported`.
            try await connection.query(
                """
                DELETE FROM quota_leases WHERE tenant_id = \(request.tenantID) AND subscription_id = \(request.subscriptionID)
                AND expires_at < now() - interval '1 day' AND id <> \(request.leaseID)
                """, logger: logger)
            return outcome.answer
        }
    }
}
