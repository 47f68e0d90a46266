import Foundation
import Logging
import PostgresNIO

/// A stored invoice without its lines.
public struct InvoiceSummary: Sendable, Equatable {
    public enum Status: String, Sendable, CaseIterable { case draft, issued, void }

    public var id: UUID
    public var number: String?
    public var teamID: UUID
    public var teamName: String
    /// `YYYY-MM`
    public var period: String
    public var status: Status
    public var currency: String
    public var totalMinor: Int64
    /// The number of the void invoice this one replaces; nil when it replaces none.
    public var replacesNumber: String?
    public var updatedAt: Date
    public var issuedAt: Date?
    public var voidReason: String?
    public var voidedAt: Date? = nil
    /// Who voided it (an email, or `cli:<operator>`).
    public var voidedBy: String? = nil
    /// The number (or "draft") of the invoice that replaces this void one; nil when none does yet.
    public var replacedByNumber: String? = nil
    public var replacedByID: UUID? = nil
}

/// A stored invoice line.
public struct StoredInvoiceLine: Sendable, Equatable {
    public var position: Int
    public var subscriptionID: UUID
    public var appName: String
    public var apiName: String
    public var planName: String
    public var kind: LineItem.Kind
    public var description: String
    public var quantity: Int64
    public var unitPriceMicros: Int64
    public var amountMinor: Int64
    /// What `quantity` counts: `day` (fee lines) or `request`.
    public var unit: String { Rating.unit(of: kind) }
}

/// What a close or re-issue did.
public struct CloseResult: Sendable, Equatable {
    /// Numbers issued by this run.
    public var issued: [String]
    /// Invoices of the period that were already issued before the run.
    public var alreadyIssued: Int

    public init(issued: [String], alreadyIssued: Int) {
        self.issued = issued
        self.alreadyIssued = alreadyIssued
    }
}

public enum InvoiceError: Error, Equatable, CustomStringConvertible {
    case unknownTenant(String)
    case notFound(String)
    case notIssued(String)
    case blankReason
    /// An amount of the period does not fit in 64 bits (period, what).
    case overflow(String, String)

    public var description: String {
        switch self {
        case .blankReason: "Give a reason (1 to 500 characters); it stays with the void invoice."
        case .overflow(let period, let what): "The invoices of \(period) cannot be computed: \(what). Check the plan's prices and the usage."
        case .unknownTenant(let slug): "There is no tenant \(slug)."
        case .notFound(let number): "There is no invoice \(number)."
        case .notIssued(let number): "Invoice \(number) is not issued, so it cannot be voided."
        }
    }
}

/// Invoices in Postgres: drafts recomputed from subscriptions, plans and rollups; closing issues
/// them with gap-free numbers per tenant; voiding and re-issuing correct them. Every query names
/// the tenant, so the functions work in the tenant's RLS scope (portal) and in system scope (CLI,
/// background refresh) alike. Callers run them inside a transaction.
public struct InvoiceBook: Sendable {
    public let logger: Logger

    public init(logger: Logger) { self.logger = logger }

    /// Settings for the rest of a transaction that reads whole tenants (invoice runs, exports,
    /// reconciliation). The row-level-security predicate (`tenant_id = … OR system scope`) makes
    /// the planner estimate a few thousand rows where there are millions, and pick nested loops or
    /// merge joins on the (constant) tenant id that took minutes on the benchmark's data; hash
    /// joins take seconds. JIT costs more than it saves
    /// at these sizes (~1 s measured).
    public static func planForBulkReads(on connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query(
            "SELECT set_config('enable_nestloop', 'off', true), set_config('enable_mergejoin', 'off', true), set_config('jit', 'off', true)", logger: logger)
    }

    /// Serializes invoice runs of one tenant (refresh, close, void) for the rest of the transaction.
    func lock(tenant: UUID, on connection: PostgresConnection) async throws {
        try await connection.query("SELECT pg_advisory_xact_lock(hashtextextended('tollgate_invoices:' || \(tenant)::text, 0))", logger: logger)
    }

    /// Recomputes the drafts of `period` (`YYYY-MM`) for every team with something to bill; teams
    /// whose invoice for the period is issued keep it untouched. Returns the drafts' count.
    @discardableResult
    public func refreshDrafts(tenant: UUID, period: String, on connection: PostgresConnection) async throws -> Int {
        guard let month = Rating.month(period) else { throw InvoiceError.notFound(period) }
        try await lock(tenant: tenant, on: connection)
        try await Self.planForBulkReads(on: connection, logger: logger)
        let currency = try await self.currency(tenant: tenant, on: connection)
        let subscriptions = try await billableSubscriptions(tenant: tenant, from: month.start, to: month.end, on: connection)
        let plans = try await planVersions(tenant: tenant, on: connection)
        let calls = try await billableCalls(tenant: tenant, from: month.start, to: month.end, on: connection)
        let invoices: [AssembledInvoice]
        do {
            invoices = try InvoiceAssembly.assemble(subscriptions: subscriptions, plans: plans, billableCalls: calls, periodStart: month.start, periodEnd: month.end)
        } catch {
            throw InvoiceError.overflow(period, error.what)
        }
        let periodDay = month.start

        // upsert one draft per team (issued invoices do not conflict-update: their row stays)
        let rows = try await connection.query(
            """
            INSERT INTO invoices (tenant_id, team_id, team_name, period, status, currency, total_minor)
            SELECT \(tenant), team, name, (\(periodDay) AT TIME ZONE 'UTC')::date, 'draft', \(currency), total
            FROM unnest(\(invoices.map(\.teamID))::uuid[], \(invoices.map(\.teamName))::text[], \(invoices.map(\.totalMinor))::bigint[]) AS i(team, name, total)
            ON CONFLICT (tenant_id, team_id, period) WHERE status IN ('draft', 'issued')
            DO UPDATE SET team_name = EXCLUDED.team_name, currency = EXCLUDED.currency, total_minor = EXCLUDED.total_minor, updated_at = now()
               WHERE invoices.status = 'draft'
            RETURNING team_id, id
            """, logger: logger)
        var draftByTeam: [UUID: UUID] = [:]
        for try await (team, id) in rows.decode((UUID, UUID).self) { draftByTeam[team] = id }
        let drafts = Array(draftByTeam.values)
        try await connection.query(
            """
            DELETE FROM invoices WHERE tenant_id = \(tenant) AND period = (\(periodDay) AT TIME ZONE 'UTC')::date AND status = 'draft' AND NOT (id = ANY(\(drafts)::uuid[]))
            """, logger: logger)
        try await connection.query("DELETE FROM invoice_lines WHERE tenant_id = \(tenant) AND invoice_id = ANY(\(drafts)::uuid[])", logger: logger)
        // a team whose invoice was voided: its new draft replaces the latest void one nothing replaces yet
        try await connection.query(
            """
            UPDATE invoices d SET replaces_id = (
                SELECT v.id FROM invoices v
                WHERE v.tenant_id = d.tenant_id AND v.team_id = d.team_id AND v.period = d.period AND v.status = 'void'
                  AND NOT EXISTS (SELECT 1 FROM invoices r WHERE r.tenant_id = v.tenant_id AND r.replaces_id = v.id AND r.id <> d.id)
                ORDER BY v.voided_at DESC, v.number DESC LIMIT 1)
            WHERE d.tenant_id = \(tenant) AND d.id = ANY(\(drafts)::uuid[]) AND d.replaces_id IS NULL
            """, logger: logger)

        var invoiceIDs: [UUID] = [], positions: [Int32] = [], subscriptionIDs: [UUID] = [], appIDs: [UUID] = [], apiIDs: [UUID] = []
        var planIDs: [UUID] = [], appNames: [String] = [], apiNames: [String] = [], planNames: [String] = [], kinds: [String] = []
        var descriptions: [String] = [], quantities: [Int64] = [], prices: [Int64] = [], amounts: [Int64] = []
        for invoice in invoices {
            guard let id = draftByTeam[invoice.teamID] else { continue }
            for (index, line) in invoice.lines.enumerated() {
                invoiceIDs.append(id)
                positions.append(Int32(index + 1))
                subscriptionIDs.append(line.subscriptionID)
                appIDs.append(line.appID)
                apiIDs.append(line.apiID)
                planIDs.append(line.planID)
                appNames.append(line.appName)
                apiNames.append(line.apiName)
                planNames.append(line.planName)
                kinds.append(line.item.kind.rawValue)
                descriptions.append(line.item.description)
                quantities.append(line.item.quantity)
                prices.append(line.item.unitPriceMicros)
                amounts.append(line.item.amountMinor)
            }
        }
        if !invoiceIDs.isEmpty {
            try await connection.query(
                """
                INSERT INTO invoice_lines (tenant_id, invoice_id, position, subscription_id, app_id, api_id, plan_id, app_name, api_name, plan_name, kind,
                                           description, quantity, unit_price_micros, amount_minor)
                SELECT \(tenant), * FROM unnest(\(invoiceIDs)::uuid[], \(positions)::int[], \(subscriptionIDs)::uuid[], \(appIDs)::uuid[], \(apiIDs)::uuid[],
                                               \(planIDs)::uuid[], \(appNames)::text[], \(apiNames)::text[], \(planNames)::text[], \(kinds)::text[],
                                               \(descriptions)::text[], \(quantities)::bigint[], \(prices)::bigint[], \(amounts)::bigint[])
                """, logger: logger)
        }
        return drafts.count
    }

    /// Refreshes the period's drafts and issues all of them, numbered in team-name order. Safe to
    /// re-run: invoices already issued stay as they are and are only counted.
    public func close(tenant: UUID, period: String, on connection: PostgresConnection) async throws -> CloseResult {
        try await refreshDrafts(tenant: tenant, period: period, on: connection)
        let month = Rating.month(period)!.start
        let rows = try await connection.query(
            """
            SELECT id, status FROM invoices WHERE tenant_id = \(tenant) AND period = (\(month) AT TIME ZONE 'UTC')::date AND status IN ('draft', 'issued')
            ORDER BY team_name, team_id
            """, logger: logger)
        var drafts: [UUID] = []
        var issued = 0
        for try await (id, status) in rows.decode((UUID, String).self) {
            if status == "draft" { drafts.append(id) } else { issued += 1 }
        }
        return CloseResult(issued: try await issue(drafts, tenant: tenant, on: connection), alreadyIssued: issued)
    }

    /// Voids an issued invoice (it stays, marked void, with the reason).
    public func void(tenant: UUID, number: String, reason: String, by actor: String, on connection: PostgresConnection) async throws -> InvoiceSummary {
        let reason = reason.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (1...500).contains(reason.count) else { throw InvoiceError.blankReason }
        try await lock(tenant: tenant, on: connection)
        guard let invoice = try await find(tenant: tenant, number: number, on: connection) else { throw InvoiceError.notFound(number) }
        guard invoice.status == .issued else { throw InvoiceError.notIssued(number) }
        try await connection.query(
            "UPDATE invoices SET status = 'void', voided_at = now(), voided_by = \(actor), void_reason = \(reason), updated_at = now() WHERE tenant_id = \(tenant) AND id = \(invoice.id)",
            logger: logger)
        return try await find(tenant: tenant, number: number, on: connection)!
    }

    /// Voids an issued invoice and issues its replacement from today's data, linked to it.
    public func reissue(
        tenant: UUID, number: String, reason: String, by actor: String, on connection: PostgresConnection
    ) async throws -> (void: InvoiceSummary, issued: String?) {
        let voided = try await void(tenant: tenant, number: number, reason: reason, by: actor, on: connection)
        try await refreshDrafts(tenant: tenant, period: voided.period, on: connection)
        let rows = try await connection.query(
            """
            UPDATE invoices SET replaces_id = \(voided.id)
            WHERE tenant_id = \(tenant) AND team_id = \(voided.teamID) AND period = (\(Rating.month(voided.period)!.start) AT TIME ZONE 'UTC')::date AND status = 'draft'
            RETURNING id
            """, logger: logger)
        var ids: [UUID] = []
        for try await id in rows.decode(UUID.self) { ids.append(id) }
        return (voided, try await issue(ids, tenant: tenant, on: connection).first)
    }

    private func issue(_ drafts: [UUID], tenant: UUID, on connection: PostgresConnection) async throws -> [String] {
        guard !drafts.isEmpty else { return [] }
        let prefix = try await slug(tenant: tenant, on: connection).uppercased()
        try await connection.query("INSERT INTO invoice_counters (tenant_id, last_number) VALUES (\(tenant), 0) ON CONFLICT DO NOTHING", logger: logger)
        var last: Int64 = 0
        for try await value in try await connection.query(
            "SELECT last_number FROM invoice_counters WHERE tenant_id = \(tenant) FOR UPDATE", logger: logger
        ).decode(Int64.self) { last = value }
        let numbers = drafts.indices.map { Self.number(prefix: prefix, sequence: last + Int64($0) + 1) }
        try await connection.query(
            """
            UPDATE invoices SET status = 'issued', number = n.number, issued_at = now(), updated_at = now()
            FROM unnest(\(drafts)::uuid[], \(numbers)::text[]) AS n(id, number)
            WHERE invoices.tenant_id = \(tenant) AND invoices.id = n.id AND invoices.status = 'draft'
            """, logger: logger)
        try await connection.query("UPDATE invoice_counters SET last_number = \(last + Int64(drafts.count)) WHERE tenant_id = \(tenant)", logger: logger)
        return numbers
    }

    /// `DEMO-000042`: the tenant's slug and a sequence without gaps.
    static func number(prefix: String, sequence: Int64) -> String {
        let digits = String(sequence)
        return prefix + "-" + String(repeating: "0", count: max(0, 6 - digits.count)) + digits
    }

    // MARK: reading

    /// Invoices of the tenant, newest period first; each filter is optional.
    public func list(
        tenant: UUID, period: String? = nil, team: UUID? = nil, status: InvoiceSummary.Status? = nil, id: UUID? = nil, number: String? = nil,
        on connection: PostgresConnection
    ) async throws -> [InvoiceSummary] {
        let month = period.flatMap(Rating.month)?.start
        let rows = try await connection.query(
            """
            SELECT ARRAY[i.id::text, coalesce(i.number, ''), i.team_id::text, i.team_name, to_char(i.period, 'YYYY-MM'), i.status, i.currency,
                         i.total_minor::text, coalesce(r.number, ''), to_char(i.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                         coalesce(to_char(i.issued_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), ''), coalesce(i.void_reason, ''),
                         coalesce(to_char(i.voided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), ''), coalesce(i.voided_by, ''),
                         coalesce(rb.number, CASE WHEN rb.id IS NULL THEN '' ELSE 'draft' END), coalesce(rb.id::text, '')]
            FROM invoices i LEFT JOIN invoices r ON r.tenant_id = i.tenant_id AND r.id = i.replaces_id
            LEFT JOIN LATERAL (SELECT x.id, x.number FROM invoices x WHERE x.tenant_id = i.tenant_id AND x.replaces_id = i.id
                               ORDER BY x.created_at DESC LIMIT 1) rb ON true
            WHERE i.tenant_id = \(tenant) AND ((\(month) AT TIME ZONE 'UTC')::date IS NULL OR i.period = (\(month) AT TIME ZONE 'UTC')::date)
              AND (\(team)::uuid IS NULL OR i.team_id = \(team)) AND (\(status?.rawValue)::text IS NULL OR i.status = \(status?.rawValue))
              AND (\(id)::uuid IS NULL OR i.id = \(id)) AND (\(number)::text IS NULL OR i.number = \(number))
            ORDER BY i.period DESC, i.team_name, i.created_at
            """, logger: logger)
        var result: [InvoiceSummary] = []
        for try await fields in rows.decode([String].self) {
            if let summary = Self.summary(fields) { result.append(summary) }
        }
        return result
    }

    public func find(tenant: UUID, id: UUID, on connection: PostgresConnection) async throws -> InvoiceSummary? {
        try await list(tenant: tenant, id: id, on: connection).first
    }

    public func find(tenant: UUID, number: String, on connection: PostgresConnection) async throws -> InvoiceSummary? {
        try await list(tenant: tenant, number: number, on: connection).first
    }

    public func lines(tenant: UUID, invoice: UUID, on connection: PostgresConnection) async throws -> [StoredInvoiceLine] {
        let rows = try await connection.query(
            """
            SELECT position, subscription_id, app_name, api_name, plan_name, kind, description, quantity, unit_price_micros, amount_minor
            FROM invoice_lines WHERE tenant_id = \(tenant) AND invoice_id = \(invoice) ORDER BY position
            """, logger: logger)
        var lines: [StoredInvoiceLine] = []
        for try await (position, subscription, app, api, plan, kind, description, quantity, price, amount) in rows.decode(
            (Int32, UUID, String, String, String, String, String, Int64, Int64, Int64).self)
        {
            lines.append(
                StoredInvoiceLine(
                    position: Int(position), subscriptionID: subscription, appName: app, apiName: api, planName: plan, kind: LineItem.Kind(rawValue: kind) ?? .usage,
                    description: description, quantity: quantity, unitPriceMicros: price, amountMinor: amount))
        }
        return lines
    }

    static func summary(_ fields: [String]) -> InvoiceSummary? {
        guard fields.count == 16, let id = UUID(uuidString: fields[0]), let team = UUID(uuidString: fields[2]),
            let status = InvoiceSummary.Status(rawValue: fields[5]), let total = Int64(fields[7])
        else { return nil }
        let iso = ISO8601DateFormatter()
        return InvoiceSummary(
            id: id, number: fields[1].isEmpty ? nil : fields[1], teamID: team, teamName: fields[3], period: fields[4], status: status, currency: fields[6],
            totalMinor: total, replacesNumber: fields[8].isEmpty ? nil : fields[8], updatedAt: iso.date(from: fields[9]) ?? Date(timeIntervalSince1970: 0),
            issuedAt: iso.date(from: fields[10]), voidReason: fields[11].isEmpty ? nil : fields[11], voidedAt: iso.date(from: fields[12]),
            voidedBy: fields[13].isEmpty ? nil : fields[13], replacedByNumber: fields[14].isEmpty ? nil : fields[14], replacedByID: UUID(uuidString: fields[15]))
    }

    // MARK: inputs

    func currency(tenant: UUID, on connection: PostgresConnection) async throws -> String {
        for try await code in try await connection.query("SELECT currency::text FROM tenants WHERE id = \(tenant)", logger: logger).decode(String.self) {
            return code
        }
        throw InvoiceError.unknownTenant(tenant.uuidString)
    }

    func slug(tenant: UUID, on connection: PostgresConnection) async throws -> String {
        for try await slug in try await connection.query("SELECT slug FROM tenants WHERE id = \(tenant)", logger: logger).decode(String.self) {
            return slug
        }
        throw InvoiceError.unknownTenant(tenant.uuidString)
    }

    /// Subscriptions that were open at some point of [from, to): open now, or changed since `from`.
    func billableSubscriptions(tenant: UUID, from: Date, to: Date, on connection: PostgresConnection) async throws -> [BillableSubscription] {
        let rows = try await connection.query(
            """
            SELECT s.id, a.team_id, tm.name, s.app_id, a.name, s.api_id, api.name || ' ' || api.version
            FROM subscriptions s
            JOIN apps a ON a.tenant_id = s.tenant_id AND a.id = s.app_id
            JOIN teams tm ON tm.tenant_id = a.tenant_id AND tm.id = a.team_id
            JOIN apis api ON api.tenant_id = s.tenant_id AND api.id = s.api_id
            WHERE s.tenant_id = \(tenant) AND s.created_at < \(to)
              AND (s.state IN ('pending', 'active', 'suspended')
                   OR EXISTS (SELECT 1 FROM subscription_events e WHERE e.tenant_id = s.tenant_id AND e.subscription_id = s.id AND e.at >= \(from)))
            """, logger: logger)
        var subscriptions: [UUID: BillableSubscription] = [:]
        for try await (id, team, teamName, app, appName, api, apiName) in rows.decode((UUID, UUID, String, UUID, String, UUID, String).self) {
            subscriptions[id] = BillableSubscription(
                id: id, teamID: team, teamName: teamName, appID: app, appName: appName, apiID: api, apiName: apiName, changes: [])
        }
        guard !subscriptions.isEmpty else { return [] }
        let events = try await connection.query(
            """
            SELECT subscription_id, at, to_state, to_plan_id FROM subscription_events
            WHERE tenant_id = \(tenant) AND at < \(to) AND subscription_id = ANY(\(Array(subscriptions.keys))::uuid[])
            ORDER BY subscription_id, at, id
            """, logger: logger)
        for try await (subscription, at, state, plan) in events.decode((UUID, Date, String, UUID).self) {
            subscriptions[subscription]?.changes.append(SubscriptionChange(at: at, state: state, planID: plan))
        }
        return Array(subscriptions.values)
    }

    func planVersions(tenant: UUID, on connection: PostgresConnection) async throws -> [UUID: PlanVersion] {
        let rows = try await connection.query(
            "SELECT id, name, monthly_fee_minor, included_requests, tier_mode, tiers::text FROM plans WHERE tenant_id = \(tenant)", logger: logger)
        var plans: [UUID: PlanVersion] = [:]
        for try await (id, name, fee, included, mode, tiers) in rows.decode((UUID, String, Int64, Int64, String, String).self) {
            plans[id] = PlanVersion(
                id: id, name: name,
                terms: PricingTerms(
                    monthlyFeeMinor: fee, includedRequests: included, tierMode: PricingTerms.TierMode(rawValue: mode) ?? .flat,
                    tiers: PricingTerms.tiers(storedJSON: tiers)))
        }
        return plans
    }

    /// Billable calls per subscription and plan version over [from, to), from the daily rollups.
    func billableCalls(tenant: UUID, from: Date, to: Date, on connection: PostgresConnection) async throws -> [UUID: [UUID: Int64]] {
        let rows = try await connection.query(
            """
            SELECT subscription_id, plan_id, sum(billable)::bigint FROM usage_daily_live
            WHERE tenant_id = \(tenant) AND day >= (\(from) AT TIME ZONE 'UTC')::date AND day < (\(to) AT TIME ZONE 'UTC')::date
              AND subscription_id <> \(UsageStore.none) AND plan_id <> \(UsageStore.none)
            GROUP BY subscription_id, plan_id HAVING sum(billable) > 0
            """, logger: logger)
        var calls: [UUID: [UUID: Int64]] = [:]
        for try await (subscription, plan, count) in rows.decode((UUID, UUID, Int64).self) { calls[subscription, default: [:]][plan] = count }
        return calls
    }
}

extension PricingTerms {
    /// Tiers from the plans table's JSON (`[{"up_to": 100000 | null, "unit_price_micros": 50}]`).
    public static func tiers(storedJSON: String) -> [Tier] {
        guard let data = storedJSON.data(using: .utf8), let array = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]] else { return [] }
        return array.map { tier in
            Tier(upTo: (tier["up_to"] as? NSNumber)?.int64Value, unitPriceMicros: (tier["unit_price_micros"] as? NSNumber)?.int64Value ?? 0)
        }
    }
}
