import Foundation
import Logging
import PostgresNIO

/// The four counts of one subscription's period that must agree.
public struct ReconciliationRow: Sendable, Equatable {
    /// nil: calls that matched no subscription (unauthenticated, unknown route); they are never
    /// invoiced but must still be stored and rolled up.
    public var subscriptionID: UUID?
    public var label: String
    /// The gateways' own running totals (`usage_answered`).
    public var answered: Int64
    public var answeredBillable: Int64
    /// Rows in `usage_events`.
    public var events: Int64
    public var eventsBillable: Int64
    /// Sums over the hourly rollups (folded or not).
    public var rollupCalls: Int64
    public var rollupBillable: Int64
    /// Included + usage units on the period's issued invoice (or the draft while none is issued);
    /// nil when the subscription is on no invoice.
    public var invoiced: Int64?

    public init(
        subscriptionID: UUID?, label: String, answered: Int64, answeredBillable: Int64, events: Int64, eventsBillable: Int64, rollupCalls: Int64,
        rollupBillable: Int64, invoiced: Int64?
    ) {
        self.subscriptionID = subscriptionID
        self.label = label
        self.answered = answered
        self.answeredBillable = answeredBillable
        self.events = events
        self.eventsBillable = eventsBillable
        self.rollupCalls = rollupCalls
        self.rollupBillable = rollupBillable
        self.invoiced = invoiced
    }

    /// Each disagreement, in words. Pure.
    public var differences: [String] {
        var found: [String] = []
        if answered != events { found.append("gateway answered \(answered) calls, \(events) events stored") }
        if answeredBillable != eventsBillable { found.append("gateway answered \(answeredBillable) billable calls, \(eventsBillable) billable events stored") }
        if events != rollupCalls { found.append("\(events) events stored, \(rollupCalls) calls in the hourly rollups") }
        if eventsBillable != rollupBillable { found.append("\(eventsBillable) billable events stored, \(rollupBillable) billable in the hourly rollups") }
        if subscriptionID != nil {
            let invoiced = invoiced ?? 0
            if invoiced != rollupBillable {
                found.append(
                    self.invoiced == nil
                        ? "\(rollupBillable) billable calls in the rollups, but the subscription is on no invoice"
                        : "\(rollupBillable) billable calls in the rollups, \(invoiced) units invoiced")
            }
        }
        return found
    }
}

/// The reconciliation of a tenant's period.
public struct ReconciliationReport: Sendable, Equatable {
    public var tenant: String
    public var period: String
    public var rows: [ReconciliationRow]
    /// Void invoices of the period that no issued invoice replaces, in words; each one makes the
    /// period unbalanced (what it billed is billed nowhere).
    public var unreplacedVoids: [String] = []

    public init(tenant: String, period: String, rows: [ReconciliationRow], unreplacedVoids: [String] = []) {
        self.tenant = tenant
        self.period = period
        self.rows = rows
        self.unreplacedVoids = unreplacedVoids
    }

    public var isBalanced: Bool { unreplacedVoids.isEmpty && rows.allSatisfy { $0.differences.isEmpty } }

    /// "balanced" or one line per difference; what the CLI prints.
    public var text: String {
        guard !isBalanced else {
            // saturating: a display figure, never a trap
            let calls = rows.reduce(Int64(0)) { total, row in
                let (sum, overflow) = total.addingReportingOverflow(row.answered)
                return overflow ? Int64.max : sum
            }
            return "balanced: \(tenant) \(period), \(rows.count) subscriptions, \(calls) calls answered, stored, rolled up and invoiced alike\n"
        }
        var out = "NOT balanced: \(tenant) \(period)\n"
        for void in unreplacedVoids { out += "  \(void)\n" }
        for row in rows where !row.differences.isEmpty {
            for difference in row.differences { out += "  \(row.label): \(difference)\n" }
        }
        return out
    }
}

/// Compares, per subscription, what the gateways counted, what was stored, what the rollups hold
/// and what was invoiced. Drafts of the period are refreshed first (a draft is meant to show the
/// usage so far); issued invoices are compared as they are, so usage that arrived after closing
/// shows up as a difference.
public struct Reconciliation: Sendable {
    let logger: Logger

    public init(logger: Logger) { self.logger = logger }

    public func run(tenant: UUID, slug: String, period: String, on connection: PostgresConnection) async throws -> ReconciliationReport {
        guard let month = Rating.month(period) else { throw InvoiceError.notFound(period) }
        try await InvoiceBook(logger: logger).refreshDrafts(tenant: tenant, period: period, on: connection)
        let rows = try await connection.query(
            """
            WITH answered AS (
                SELECT subscription_id, sum(answered) AS answered, sum(billable) AS billable FROM usage_answered
                WHERE tenant_id = \(tenant) AND hour >= \(month.start) AND hour < \(month.end) GROUP BY subscription_id
            ), events AS (
                SELECT coalesce(subscription_id, \(UsageStore.none)) AS subscription_id, count(*) AS calls, count(*) FILTER (WHERE billable) AS billable
                FROM usage_events WHERE tenant_id = \(tenant) AND at >= \(month.start) AND at < \(month.end) GROUP BY 1
            ), rollups AS (
                SELECT subscription_id, sum(calls) AS calls, sum(billable) AS billable FROM usage_hourly_live
                WHERE tenant_id = \(tenant) AND hour >= \(month.start) AND hour < \(month.end) GROUP BY subscription_id
            ), invoiced AS (
                SELECT l.subscription_id, sum(l.quantity) FILTER (WHERE l.kind IN ('included', 'usage')) AS units
                FROM invoice_lines l JOIN invoices i ON i.tenant_id = l.tenant_id AND i.id = l.invoice_id
                WHERE i.tenant_id = \(tenant) AND i.period = (\(month.start) AT TIME ZONE 'UTC')::date AND i.status IN ('draft', 'issued') GROUP BY l.subscription_id
            ), keys AS (
                SELECT subscription_id FROM answered UNION SELECT subscription_id FROM events UNION SELECT subscription_id FROM rollups
                UNION SELECT subscription_id FROM invoiced
            )
            SELECT ARRAY[k.subscription_id::text,
                         coalesce(tm.name || ' / ' || a.name || ' → ' || api.name || ' ' || api.version, ''),
                         coalesce(an.answered, 0)::text, coalesce(an.billable, 0)::text, coalesce(e.calls, 0)::text, coalesce(e.billable, 0)::text,
                         coalesce(r.calls, 0)::text, coalesce(r.billable, 0)::text, coalesce(inv.units::text, '')]
            FROM keys k
            LEFT JOIN answered an ON an.subscription_id = k.subscription_id
            LEFT JOIN events e ON e.subscription_id = k.subscription_id
            LEFT JOIN rollups r ON r.subscription_id = k.subscription_id
            LEFT JOIN invoiced inv ON inv.subscription_id = k.subscription_id
            LEFT JOIN subscriptions s ON s.tenant_id = \(tenant) AND s.id = k.subscription_id
            LEFT JOIN apps a ON a.tenant_id = s.tenant_id AND a.id = s.app_id
            LEFT JOIN teams tm ON tm.tenant_id = a.tenant_id AND tm.id = a.team_id
            LEFT JOIN apis api ON api.tenant_id = s.tenant_id AND api.id = s.api_id
            ORDER BY 1
            """, logger: logger)
        var result: [ReconciliationRow] = []
        for try await fields in rows.decode([String].self) {
            guard fields.count == 9, let id = UUID(uuidString: fields[0]) else { continue }
            let subscription = id == UsageStore.none ? nil : id
            let label = subscription == nil ? "calls without a subscription" : (fields[1].isEmpty ? "subscription \(id)" : fields[1] + " (\(id))")
            let n = fields[2...7].map { Int64($0) ?? 0 }
            result.append(
                ReconciliationRow(
                    subscriptionID: subscription, label: label, answered: n[0], answeredBillable: n[1], events: n[2], eventsBillable: n[3], rollupCalls: n[4],
                    rollupBillable: n[5], invoiced: Int64(fields[8])))
        }
        let voids = try await connection.query(
            """
            SELECT v.number, v.team_name, coalesce(d.status, '') FROM invoices v
            LEFT JOIN invoices d ON d.tenant_id = v.tenant_id AND d.replaces_id = v.id AND d.status IN ('draft', 'issued')
            WHERE v.tenant_id = \(tenant) AND v.period = (\(month.start) AT TIME ZONE 'UTC')::date AND v.status = 'void'
              AND NOT EXISTS (SELECT 1 FROM invoices r WHERE r.tenant_id = v.tenant_id AND r.replaces_id = v.id AND r.status IN ('issued', 'void'))
            ORDER BY v.number
            """, logger: logger)
        var unreplaced: [String] = []
        for try await (number, team, replacement) in voids.decode((String, String, String).self) {
            unreplaced.append(
                replacement == "draft"
                    ? "invoice \(number) (\(team)) is void and its replacement is only a draft: issue it with billing close"
                    : "invoice \(number) (\(team)) is void and nothing replaces it")
        }
        return ReconciliationReport(tenant: slug, period: period, rows: result, unreplacedVoids: unreplaced)
    }
}
