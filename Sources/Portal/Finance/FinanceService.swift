import Billing
import Foundation
import PostgresNIO

/// Finance and analytics for people and automation: who may see which invoices and usage, and
/// the Billing calls behind the pages and the JSON API, each in the tenant's RLS scope.
struct FinanceService: Sendable {
    let database: Database

    private var book: InvoiceBook { InvoiceBook(logger: database.logger) }

    static func require(_ principal: Principal, _ action: Action) throws {
        guard Policy.allows(principal, action) else { throw AppError.forbidden }
    }

    /// Teams whose invoices the principal may see; nil means all of them (finance, admins).
    static func invoiceTeams(_ principal: Principal) -> Set<UUID>? {
        if Policy.allows(principal, .viewFinance) { return nil }
        return Set(principal.teamRoles.filter { $0.value >= .admin }.keys)
    }

    func invoices(tenant: Tenant, actor: Principal, period: String?, team: UUID?, status: InvoiceSummary.Status?) async throws -> [InvoiceSummary] {
        if let period, Rating.month(period) == nil { throw AppError.badRequest("period must be a month like 2026-11.") }
        let visible = Self.invoiceTeams(actor)
        if let team, let visible, !visible.contains(team) { throw AppError.forbidden }
        let all = try await database.withTenant(tenant.id) { connection in
            try await book.list(tenant: tenant.id, period: period, team: team, status: status, on: connection)
        }
        guard let visible else { return all }
        return all.filter { visible.contains($0.teamID) }
    }

    func invoice(tenant: Tenant, actor: Principal, id: UUID) async throws -> (InvoiceSummary, [StoredInvoiceLine]) {
        let found = try await database.withTenant(tenant.id) { connection -> (InvoiceSummary, [StoredInvoiceLine])? in
            guard let invoice = try await book.find(tenant: tenant.id, id: id, on: connection) else { return nil }
            return (invoice, try await book.lines(tenant: tenant.id, invoice: id, on: connection))
        }
        // someone who may not see it learns nothing about its existence
        guard let found, Policy.allows(actor, .viewInvoices(team: found.0.teamID)) else { throw AppError.notFound("Invoice") }
        return found
    }

    /// Invoice errors as the user's: an overflow or a blank reason is the request's problem (422), not the server's.
    static func mapped<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as InvoiceError {
            throw appError(error)
        }
    }

    static func appError(_ error: InvoiceError) -> AppError {
        switch error {
        case .notFound: .notFound("Invoice")
        case .blankReason: .validation(["reason": error.description])
        case .notIssued: .conflict(error.description)
        case .overflow: AppError(status: .unprocessableContent, title: "Invoice cannot be computed", detail: error.description)
        case .unknownTenant: .notFound("Tenant")
        }
    }

    /// Voids an issued invoice, or voids it and issues its replacement (`reissue`); finance only.
    /// Written to the audit log with who, when and why.
    func correct(tenant: Tenant, actor: Principal, id: UUID, reason: String, reissue: Bool, clientIP: String? = nil) async throws -> InvoiceSummary {
        try Self.require(actor, .manageBilling)
        let reason = reason.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (1...500).contains(reason.count), !TextInput.hasControlCharacters(reason) else {
            throw AppError.validation(["reason": "Give a reason of 1 to 500 characters; it stays with the void invoice."])
        }
        return try await Self.mapped {
            try await database.withTenant(tenant.id) { connection in
                guard let invoice = try await book.find(tenant: tenant.id, id: id, on: connection) else { throw AppError.notFound("Invoice") }
                guard invoice.status == .issued, let number = invoice.number else {
                    throw AppError.conflict("Only issued invoices can be voided; this one is \(invoice.status.rawValue).")
                }
                let audit = AuditLog(logger: database.logger)
                if reissue {
                    let (_, issued) = try await book.reissue(tenant: tenant.id, number: number, reason: reason, by: actor.user.email, on: connection)
                    try await audit.record(
                        tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .invoiceReissued, target: number, clientIP: clientIP,
                        details: ["reason": reason, "replaced_by": issued ?? ""], on: connection)
                    if let issued, let replacement = try await book.find(tenant: tenant.id, number: issued, on: connection) { return replacement }
                    return try await book.find(tenant: tenant.id, id: id, on: connection) ?? invoice
                }
                let voided = try await book.void(tenant: tenant.id, number: number, reason: reason, by: actor.user.email, on: connection)
                try await audit.record(
                    tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .invoiceVoided, target: number, clientIP: clientIP,
                    details: ["reason": reason], on: connection)
                return voided
            }
        }
    }

    func refreshDrafts(tenant: Tenant, actor: Principal, period: String, clientIP: String? = nil) async throws -> Int {
        try Self.require(actor, .manageBilling)
        guard Rating.month(period) != nil else { throw AppError.badRequest("period must be a month like 2026-11.", fields: ["period": "Use YYYY-MM."]) }
        return try await Self.mapped {
            try await database.withTenant(tenant.id) { connection in
                let count = try await book.refreshDrafts(tenant: tenant.id, period: period, on: connection)
                try await AuditLog(logger: database.logger).record(
                    tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .invoiceDraftsRefreshed, target: period, clientIP: clientIP,
                    details: ["drafts": String(count)], on: connection)
                return count
            }
        }
    }

    /// Issues the period's drafts (numbered), including replacements of void invoices; finance only.
    func close(tenant: Tenant, actor: Principal, period: String, clientIP: String? = nil) async throws -> CloseResult {
        try Self.require(actor, .manageBilling)
        guard Rating.month(period) != nil else { throw AppError.badRequest("period must be a month like 2026-11.", fields: ["period": "Use YYYY-MM."]) }
        return try await Self.mapped {
            try await database.withTenant(tenant.id) { connection in
                let result = try await book.close(tenant: tenant.id, period: period, on: connection)
                try await AuditLog(logger: database.logger).record(
                    tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .invoicePeriodClosed, target: period, clientIP: clientIP,
                    details: ["issued": result.issued.joined(separator: " "), "already_issued": String(result.alreadyIssued)], on: connection)
                return result
            }
        }
    }

    func reconcile(tenant: Tenant, actor: Principal, period: String) async throws -> ReconciliationReport {
        try Self.require(actor, .viewFinance)
        guard Rating.month(period) != nil else { throw AppError.badRequest("period must be a month like 2026-11.") }
        return try await Self.mapped {
            try await database.withTenant(tenant.id) {
                try await Reconciliation(logger: database.logger).run(tenant: tenant.id, slug: tenant.slug, period: period, on: $0)
            }
        }
    }

    /// Usage by day × subscription (at most `limit` rows), fields in `UsageExport.header` order.
    func usage(tenant: Tenant, actor: Principal, from: Date, to: Date, filter: UsageFilter, limit: Int) async throws -> [[String]] {
        try Self.require(actor, .viewFinance)
        // one row per key: what the meters appended since their last fold is folded first
        try await UsageStore(logger: database.logger).fold(client: database.client)
        return try await database.withTenant(tenant.id) {
            try await UsageExport.rows(tenant: tenant.slug, from: from, to: to, filter: filter, limit: limit, on: $0, logger: database.logger)
        }
    }

    /// The choices of the usage filters, by name: teams, apps, APIs and plan versions (finance).
    func usageFilterOptions(tenant: Tenant, actor: Principal) async throws -> UsageFilterOptions {
        try Self.require(actor, .viewFinance)
        return try await database.withTenant(tenant.id) { connection in
            func pairs(_ query: PostgresQuery) async throws -> [(UUID, String)] {
                var result: [(UUID, String)] = []
                for try await row in try await connection.query(query, logger: database.logger).decode((UUID, String).self) { result.append(row) }
                return result
            }
            return UsageFilterOptions(
                teams: try await pairs("SELECT id, name FROM teams WHERE tenant_id = \(tenant.id) ORDER BY lower(name), id"),
                apps: try await pairs(
                    """
                    SELECT a.id, a.name || ' (' || t.name || ')' FROM apps a JOIN teams t ON t.tenant_id = a.tenant_id AND t.id = a.team_id
                    WHERE a.tenant_id = \(tenant.id) ORDER BY lower(a.name), lower(t.name), a.id
                    """),
                apis: try await pairs("SELECT id, name || ' ' || version FROM apis WHERE tenant_id = \(tenant.id) ORDER BY lower(name), version, id"),
                plans: try await pairs(
                    """
                    SELECT p.id, api.name || ' ' || api.version || ' · ' || p.name || ' v' || p.version FROM plans p
                    JOIN apis api ON api.tenant_id = p.tenant_id AND api.id = p.api_id
                    WHERE p.tenant_id = \(tenant.id) ORDER BY lower(api.name), api.version, lower(p.name), p.version, p.id
                    """))
        }
    }

    /// Analytics of one API (its provider team), one app (its team) or the whole tenant.
    func analytics(tenant: Tenant, actor: Principal, scope: UsageScope) async throws -> (report: UsageReport, title: String) {
        try await database.withTenant(tenant.id) { connection in
            var title = tenant.name
            if let api = scope.apiID {
                guard let (team, name) = try await owner(of: "apis", api, on: connection) else { throw AppError.notFound("API") }
                try Self.require(actor, .viewUsage(team: team))
                title = name
            } else if let app = scope.appID {
                guard let (team, name) = try await owner(of: "apps", app, on: connection) else { throw AppError.notFound("App") }
                try Self.require(actor, .viewUsage(team: team))
                title = name
            } else {
                try Self.require(actor, .viewUsage(team: nil))
            }
            return (try await UsageAnalytics(logger: database.logger).report(tenant: tenant.id, scope: scope, on: connection), title)
        }
    }

    /// Usage of an app's subscriptions this month against each plan's quota and rate limit.
    func quotaUse(tenant: Tenant, actor: Principal, app: UUID, now: Date = Date()) async throws -> [QuotaUse] {
        let month = Rating.month(String(ISO8601DateFormatter().string(from: now).prefix(7)))!
        return try await database.withTenant(tenant.id) { connection in
            guard let (team, _) = try await owner(of: "apps", app, on: connection) else { throw AppError.notFound("App") }
            try Self.require(actor, .viewUsage(team: team))
            let rows = try await connection.query(
                """
                SELECT s.id, api.name || ' ' || api.version, p.name, p.rate_per_second, p.monthly_quota,
                       coalesce((SELECT sum(h.billable) FROM usage_hourly_live h WHERE h.tenant_id = s.tenant_id AND h.subscription_id = s.id
                                 AND h.hour >= \(month.start) AND h.hour < \(month.end)), 0)::bigint,
                       coalesce((SELECT sum((SELECT coalesce(sum(value::bigint), 0) FROM jsonb_each_text(h.rejected))) FROM usage_hourly_live h
                                 WHERE h.tenant_id = s.tenant_id AND h.subscription_id = s.id AND h.hour >= \(month.start) AND h.hour < \(month.end)), 0)::bigint
                FROM subscriptions s JOIN apis api ON api.tenant_id = s.tenant_id AND api.id = s.api_id
                JOIN plans p ON p.tenant_id = s.tenant_id AND p.id = s.plan_id
                WHERE s.tenant_id = \(tenant.id) AND s.app_id = \(app) AND s.state IN ('active', 'suspended')
                ORDER BY 2
                """, logger: database.logger)
            var result: [QuotaUse] = []
            for try await (id, api, plan, rate, quota, used, rejected) in rows.decode((UUID, String, String, Int32, Int64?, Int64, Int64).self) {
                result.append(QuotaUse(subscriptionID: id, api: api, plan: plan, ratePerSecond: Int(rate), monthlyQuota: quota, used: used, rejected: rejected))
            }
            return result
        }
    }

    private func owner(of table: String, _ id: UUID, on connection: PostgresConnection) async throws -> (UUID, String)? {
        let query: PostgresQuery =
            table == "apis"
            ? "SELECT team_id, name || ' ' || version FROM apis WHERE id = \(id)" : "SELECT team_id, name FROM apps WHERE id = \(id)"
        for try await row in try await connection.query(query, logger: database.logger).decode((UUID, String).self) { return row }
        return nil
    }
}

/// One subscription's month so far against its plan.
struct QuotaUse: Sendable, Equatable {
    var subscriptionID: UUID
    var api: String
    var plan: String
    var ratePerSecond: Int
    var monthlyQuota: Int64?
    var used: Int64
    var rejected: Int64
}

/// Named choices for the usage filters.
struct UsageFilterOptions: Sendable {
    var teams: [(UUID, String)]
    var apps: [(UUID, String)]
    var apis: [(UUID, String)]
    var plans: [(UUID, String)]
}
