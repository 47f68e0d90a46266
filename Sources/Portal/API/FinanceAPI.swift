import Billing
import Foundation
import Hummingbird

/// The finance and analytics part of the tenant JSON API: invoices, usage rows, analytics and the
/// reconciliation, with the same policy and query parameters as the pages.
struct FinanceAPI: Sendable {
    let services: PortalServices

    func addRoutes(to authed: RouterGroup<AppRequestContext>) {
        authed.get("/invoices", use: listInvoices)
        authed.get("/invoices/:invoice", use: showInvoice)
        authed.post("/invoices/:invoice/void", use: voidInvoice)
        authed.post("/invoices/:invoice/reissue", use: reissueInvoice)
        authed.post("/billing/refresh", use: refreshDrafts)
        authed.post("/billing/close", use: closePeriod)
        authed.get("/usage", use: usage)
        authed.get("/analytics", use: analytics)
        authed.get("/reconciliation", use: reconciliation)
    }

    /// Invoices you may see (finance: all), filtered by `period`, `team_id` and `status`.
    @Sendable func listInvoices(_ request: Request, context: AppRequestContext) async throws -> Response {
        let query = FinanceQuery(request)
        let period = query.values["period"].flatMap { $0.isEmpty ? nil : $0 }
        if let period, Rating.month(period) == nil { throw AppError.badRequest("period must be a month like 2026-11.") }
        let page = try Pagination(request)
        let list = try await services.finance.invoices(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), period: period, team: try query.uuid("team_id"), status: try query.status())
        return try .json(page.page(list, key: FinancePages.invoiceKey, Invoice.init))
    }

    @Sendable func showInvoice(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard let id = context.parameters.get("invoice").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("Invoice") }
        let (invoice, lines) = try await services.finance.invoice(tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: id)
        return try .json(InvoiceDetail(invoice: Invoice(invoice), lines: lines.map { Line($0, currency: invoice.currency) }))
    }

    /// Voids an issued invoice (finance): body `{"reason": "…"}`; the reason is required.
    @Sendable func voidInvoice(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await correct(request, context, reissue: false)
    }

    /// Voids an issued invoice and issues its replacement from current data (finance); answers the replacement.
    @Sendable func reissueInvoice(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await correct(request, context, reissue: true)
    }

    private func correct(_ request: Request, _ context: AppRequestContext, reissue: Bool) async throws -> Response {
        guard let id = context.parameters.get("invoice").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("Invoice") }
        let body = try await request.decodeJSON(Correction.self, context: context)
        let result = try await services.finance.correct(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: id, reason: body.reason, reissue: reissue, clientIP: context.clientIP)
        return try .json(Invoice(result))
    }

    /// Recomputes a period's drafts now (finance): body `{"period": "2026-11"}`.
    @Sendable func refreshDrafts(_ request: Request, context: AppRequestContext) async throws -> Response {
        let body = try await request.decodeJSON(PeriodBody.self, context: context)
        let count = try await services.finance.refreshDrafts(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), period: body.period, clientIP: context.clientIP)
        return try .json(RefreshResult(period: body.period, drafts: count))
    }

    /// Closes a period (finance): issues its drafts, numbered, and the replacements of void invoices; safe to repeat.
    @Sendable func closePeriod(_ request: Request, context: AppRequestContext) async throws -> Response {
        let body = try await request.decodeJSON(PeriodBody.self, context: context)
        let result = try await services.finance.close(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), period: body.period, clientIP: context.clientIP)
        return try .json(CloseBody(period: body.period, issued: result.issued, alreadyIssued: result.alreadyIssued))
    }

    /// Usage by UTC day × subscription (finance), in pages (`cursor`, `limit`); the CSV export has all rows at once.
    @Sendable func usage(_ request: Request, context: AppRequestContext) async throws -> Response {
        let query = FinanceQuery(request)
        let page = try Pagination(request)
        let days = try query.days()
        let filter = try query.usageFilter()
        let (tenant, principal) = (try context.requireTenant(), try context.requirePrincipal())
        let window = try await UsageWindow.resolve(page.page, from: days.from) { from, limit in
            try await services.finance.usage(tenant: tenant, actor: principal, from: from, to: days.to, filter: filter, limit: limit)
        }
        return try .json(APIModel.Page(items: window.rows.compactMap(UsageRow.init), nextCursor: window.next?.cursor))
    }

    /// The same figures as the analytics pages: series, totals, percentiles, status classes, rejections, top apps.
    @Sendable func analytics(_ request: Request, context: AppRequestContext) async throws -> Response {
        let query = FinanceQuery(request)
        let window = try query.window()
        let scope = UsageScope(from: window.from, to: window.to, apiID: try query.uuid("api_id"), appID: try query.uuid("app_id"))
        let (report, _) = try await services.finance.analytics(tenant: try context.requireTenant(), actor: try context.requirePrincipal(), scope: scope)
        return try .json(Analytics(report))
    }

    /// Per subscription: answered, stored, rolled up, invoiced; `balanced` when all agree.
    @Sendable func reconciliation(_ request: Request, context: AppRequestContext) async throws -> Response {
        let period = try FinanceQuery(request).period()
        let report = try await services.finance.reconcile(tenant: try context.requireTenant(), actor: try context.requirePrincipal(), period: period)
        return try .json(
            Reconciliation(
                period: period, balanced: report.isBalanced, unreplacedVoids: report.unreplacedVoids,
                rows: report.rows.map {
                    .init(
                        subscriptionId: $0.subscriptionID, label: $0.label, answered: $0.answered, events: $0.events, rollupCalls: $0.rollupCalls,
                        rollupBillable: $0.rollupBillable, invoiced: $0.invoiced, differences: $0.differences)
                }))
    }

    // MARK: bodies

    struct Invoice: Codable, Sendable {
        let id: UUID
        let number: String?
        let teamId: UUID
        let teamName: String
        let period: String
        let status: String
        let currency: String
        let total: String
        let totalMinor: Int64
        let replaces: String?
        let issuedAt: Date?
        let updatedAt: Date
        let voidReason: String?
        let voidedAt: Date?
        let voidedBy: String?
        /// The number of the invoice replacing this void one ("draft" while it is not issued).
        let replacedBy: String?

        init(_ i: InvoiceSummary) {
            id = i.id
            number = i.number
            teamId = i.teamID
            teamName = i.teamName
            period = i.period
            status = i.status.rawValue
            currency = i.currency
            total = ISO4217.decimal(minor: i.totalMinor, currency: i.currency)
            totalMinor = i.totalMinor
            replaces = i.replacesNumber
            issuedAt = i.issuedAt
            updatedAt = i.updatedAt
            voidReason = i.voidReason
            voidedAt = i.voidedAt
            voidedBy = i.voidedBy
            replacedBy = i.replacedByNumber
        }
    }

    struct Line: Codable, Sendable {
        let position: Int
        let subscriptionId: UUID
        let app: String
        let api: String
        let plan: String
        let kind: String
        let description: String
        let quantity: Int64
        /// `day` (fee lines) or `request`: quantity × unit price = amount.
        let unit: String
        let unitPriceMicros: Int64
        let amount: String
        let amountMinor: Int64

        init(_ l: StoredInvoiceLine, currency: String) {
            position = l.position
            subscriptionId = l.subscriptionID
            app = l.appName
            api = l.apiName
            plan = l.planName
            kind = l.kind.rawValue
            description = l.description
            quantity = l.quantity
            unit = l.unit
            unitPriceMicros = l.unitPriceMicros
            amount = ISO4217.decimal(minor: l.amountMinor, currency: currency)
            amountMinor = l.amountMinor
        }
    }

    struct InvoiceDetail: Codable, Sendable {
        let invoice: Invoice
        let lines: [Line]
    }

    struct UsageRow: Codable, Sendable {
        let date: String
        let teamId: String
        let team: String
        let appId: String
        let app: String
        let apiId: String
        let api: String
        let apiVersion: String
        let planId: String
        let plan: String
        let subscriptionId: String
        let calls: Int64
        let billableCalls: Int64
        let rejectedCalls: Int64
        let serverErrors: Int64
        let bytesIn: Int64
        let bytesOut: Int64

        /// From fields in `UsageExport.header` order.
        init?(_ f: [String]) {
            guard f.count == UsageExport.header.count else { return nil }
            (date, teamId, team, appId, app, apiId, api, apiVersion, planId, plan, subscriptionId) = (f[0], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11])
            let n = f[12...].map { Int64($0) ?? 0 }
            (calls, billableCalls, rejectedCalls, serverErrors, bytesIn, bytesOut) = (n[0], n[1], n[2], n[3], n[4], n[5])
        }
    }

    struct Analytics: Codable, Sendable {
        struct Point: Codable, Sendable {
            let start: Date
            let calls: Int64
            let billable: Int64
            let errors: Int64
            let rejected: Int64
        }
        struct App: Codable, Sendable {
            let appId: UUID
            let name: String
            let calls: Int64
        }
        let from: Date
        let to: Date
        let bucketSeconds: Int
        let series: [Point]
        let calls: Int64
        let billable: Int64
        let errors: Int64
        let errorRate: Double
        let cacheHits: Int64
        let cacheHitRatio: Double
        let latencyP50Us: Int64?
        let latencyP95Us: Int64?
        let latencyP99Us: Int64?
        let statusClasses: [String: Int64]
        let rejections: [String: Int64]
        let topApps: [App]

        init(_ r: UsageReport) {
            from = r.scope.from
            to = r.scope.to
            bucketSeconds = r.scope.bucketSeconds
            series = r.series.map { Point(start: $0.start, calls: $0.calls, billable: $0.billable, errors: $0.errors, rejected: $0.rejected) }
            calls = r.calls
            billable = r.billable
            errors = r.errors
            errorRate = r.errorRate
            cacheHits = r.cacheHits
            cacheHitRatio = r.cacheHitRatio
            // the open last bucket has no finite bound
            func bound(_ q: Double) -> Int64? { r.latencyPercentile(q).flatMap { $0 == Int64.max ? nil : $0 } }
            latencyP50Us = bound(0.5)
            latencyP95Us = bound(0.95)
            latencyP99Us = bound(0.99)
            statusClasses = Dictionary(uniqueKeysWithValues: zip(["2xx", "3xx", "4xx", "5xx"], r.statusClasses))
            rejections = r.rejections
            topApps = r.topApps.map { App(appId: $0.appID, name: $0.name, calls: $0.calls) }
        }
    }

    struct Reconciliation: Codable, Sendable {
        struct Row: Codable, Sendable {
            let subscriptionId: UUID?
            let label: String
            let answered: Int64
            let events: Int64
            let rollupCalls: Int64
            let rollupBillable: Int64
            let invoiced: Int64?
            let differences: [String]
        }
        let period: String
        let balanced: Bool
        let unreplacedVoids: [String]
        let rows: [Row]
    }

    struct Correction: Codable, Sendable {
        let reason: String
    }

    struct PeriodBody: Codable, Sendable {
        let period: String
    }

    struct RefreshResult: Codable, Sendable {
        let period: String
        let drafts: Int
    }

    struct CloseBody: Codable, Sendable {
        let period: String
        let issued: [String]
        let alreadyIssued: Int
    }
}
