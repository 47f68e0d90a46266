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

/// One meter run's events of a tenant's period, checked by their numbers: the run numbers its
/// events 1, 2, 3, … per tenant and month, and reports how many it was handed (the tally) on a
/// path apart from the events. Every number up to the larger of the highest stored and the tally
/// must be stored once.
public struct MeterSequenceRow: Sendable, Equatable {
    public var meterID: String
    /// Numbered events stored.
    public var stored: Int64
    public var highest: Int64
    /// Calls the run reported answering.
    public var answered: Int64
    /// The first missing ranges (at most `MeterSequenceRow.rangesShown`).
    public var missingRanges: [ClosedRange<Int64>]
    /// How the run ended: running, clean, crashed; nil when it never reported.
    public var runState: String?
    public var lastReport: Date?

    public static let rangesShown = 20

    public init(
        meterID: String, stored: Int64, highest: Int64, answered: Int64, missingRanges: [ClosedRange<Int64>], runState: String?, lastReport: Date?
    ) {
        self.meterID = meterID
        self.stored = stored
        self.highest = highest
        self.answered = answered
        self.missingRanges = missingRanges
        self.runState = runState
        self.lastReport = lastReport
    }

    /// Events the numbers say are missing. Saturating: a display figure.
    public var missing: Int64 {
        let expected = max(highest, answered)
        let (difference, overflow) = expected.subtractingReportingOverflow(stored)
        return overflow ? Int64.max : max(0, difference)
    }

    /// Each finding, in words. Pure.
    public func differences(now: Date = Date()) -> [String] {
        var found: [String] = []
        if missing > 0 {
            var ranges = missingRanges
            if answered > highest, ranges.count < Self.rangesShown { ranges.append((highest + 1)...answered) }
            let shown = ranges.prefix(Self.rangesShown).map { $0.lowerBound == $0.upperBound ? "#\($0.lowerBound)" : "#\($0.lowerBound)–#\($0.upperBound)" }
            found.append(
                "gateway \(meterID): \(missing) answered call\(missing == 1 ? "" : "s") not stored (event numbers \(shown.joined(separator: ", "))\(ranges.count > Self.rangesShown ? ", …" : ""))")
        }
        switch runState {
        case "crashed":
            found.append(
                "gateway \(meterID) was killed or crashed (found by the run that replayed its spool): its durable events end at #\(highest); calls it answered in its last ~50 ms after that may be missing without a number to show it")
        case "running":
            if let lastReport, now.timeIntervalSince(lastReport) > 120 {
                found.append(
                    "gateway \(meterID) has not reported since \(ISO8601DateFormatter().string(from: lastReport)) and did not shut down cleanly: calls of its last moments may be missing")
            }
        default: break
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
    /// Per meter run: the numbers of its stored events.
    public var meters: [MeterSequenceRow] = []
    public var checkedAt = Date()

    public init(tenant: String, period: String, rows: [ReconciliationRow], unreplacedVoids: [String] = [], meters: [MeterSequenceRow] = []) {
        self.tenant = tenant
        self.period = period
        self.rows = rows
        self.unreplacedVoids = unreplacedVoids
        self.meters = meters
    }

    public var isBalanced: Bool {
        unreplacedVoids.isEmpty && rows.allSatisfy { $0.differences.isEmpty } && meters.allSatisfy { $0.differences(now: checkedAt).isEmpty }
    }

    /// "balanced" or one line per difference; what the CLI prints.
    public var text: String {
        guard !isBalanced else {
            // saturating: a display figure, never a trap
            let calls = rows.reduce(Int64(0)) { total, row in
                let (sum, overflow) = total.addingReportingOverflow(row.answered)
                return overflow ? Int64.max : sum
            }
            return
                "balanced: \(tenant) \(period), \(rows.count) subscriptions, \(calls) calls answered, stored, rolled up and invoiced alike; \(meters.count) gateway run\(meters.count == 1 ? "" : "s"), no event number missing\n"
        }
        var out = "NOT balanced: \(tenant) \(period)\n"
        for void in unreplacedVoids { out += "  \(void)\n" }
        for meter in meters {
            for difference in meter.differences(now: checkedAt) { out += "  \(difference)\n" }
        }
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
        let meters = try await meterSequences(tenant: tenant, month: month, on: connection)
        return ReconciliationReport(tenant: slug, period: period, rows: result, unreplacedVoids: unreplaced, meters: meters)
    }

    /// Per meter run with numbered events (or a tally) in the period: what it stored, the gaps in
    /// the numbers, what it reported answering and how it ended. A sequential pass over the
    /// month's events (a window over the numbers), which is what an offline check can afford.
    func meterSequences(tenant: UUID, month: (start: Date, end: Date), on connection: PostgresConnection) async throws -> [MeterSequenceRow] {
        let summary = try await connection.query(
            """
            WITH per_meter AS (
                SELECT gateway AS meter_id, count(*) AS stored, max(seq) AS highest FROM usage_events
                WHERE tenant_id = \(tenant) AND at >= \(month.start) AND at < \(month.end) AND seq > 0 GROUP BY gateway
            ), answered AS (
                SELECT meter_id, sum(answered)::bigint AS answered FROM usage_answered
                WHERE tenant_id = \(tenant) AND hour >= \(month.start) AND hour < \(month.end) GROUP BY meter_id
            ), meters AS (
                SELECT meter_id FROM per_meter UNION SELECT a.meter_id FROM answered a JOIN meter_runs r ON r.meter_id = a.meter_id
            )
            SELECT m.meter_id, coalesce(p.stored, 0), coalesce(p.highest, 0), coalesce(a.answered, 0), coalesce(r.state, ''),
                   coalesce(extract(epoch FROM r.last_report_at)::float8, 0)
            FROM meters m LEFT JOIN per_meter p USING (meter_id) LEFT JOIN answered a USING (meter_id) LEFT JOIN meter_runs r USING (meter_id)
            ORDER BY 1
            """, logger: logger)
        var rows: [MeterSequenceRow] = []
        for try await (meter, stored, highest, answered, state, lastReport) in summary.decode((String, Int64, Int64, Int64, String, Double).self) {
            rows.append(
                MeterSequenceRow(
                    meterID: meter, stored: stored, highest: highest, answered: answered, missingRanges: [], runState: state.isEmpty ? nil : state,
                    lastReport: lastReport > 0 ? Date(timeIntervalSince1970: lastReport) : nil))
        }
        guard rows.contains(where: { $0.stored < $0.highest }) else { return rows }
        let gaps = try await connection.query(
            """
            SELECT gateway, seq - step + 1, seq - 1 FROM (
                SELECT gateway, seq, seq - lag(seq, 1, 0::bigint) OVER (PARTITION BY gateway ORDER BY seq) AS step FROM usage_events
                WHERE tenant_id = \(tenant) AND at >= \(month.start) AND at < \(month.end) AND seq > 0
            ) numbered WHERE step > 1 ORDER BY gateway, seq LIMIT 2000
            """, logger: logger)
        for try await (meter, from, to) in gaps.decode((String, Int64, Int64).self) {
            guard let index = rows.firstIndex(where: { $0.meterID == meter }), rows[index].missingRanges.count <= MeterSequenceRow.rangesShown else { continue }
            rows[index].missingRanges.append(from...to)
        }
        return rows
    }
}
