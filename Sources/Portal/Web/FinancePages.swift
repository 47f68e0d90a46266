import Billing
import Foundation
import Hummingbird

/// Finance pages (invoices, usage filters, reconciliation, CSV downloads), invoice pages for team
/// owners, and usage analytics with server-rendered SVG charts.
struct FinancePages: Sendable {
    let services: PortalServices

    func addRoutes(to group: RouterGroup<AppRequestContext>) {
        group.get("/finance", use: overview)
        group.form("/finance/refresh", page: "/finance", use: refresh)
        group.form("/finance/close", page: "/finance", use: close)
        group.get("/finance/usage", use: usage)
        group.get("/finance/usage.csv", use: usageCSV)
        group.get("/finance/invoices.csv", use: invoicesCSV)
        group.get("/finance/reconcile", use: reconcile)
        group.get("/invoices", use: invoices)
        group.get("/invoices/:invoice", use: invoice)
        group.form("/invoices/:invoice/void", page: "/invoices/:invoice", use: void)
        group.form("/invoices/:invoice/reissue", page: "/invoices/:invoice", use: reissue)
        group.get("/analytics", use: analytics)
    }

    /// The tenant's invoices of a period (filters: period, team, status) and the last 30 days' calls.
    @Sendable func overview(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (tenant, principal) = (try context.requireTenant(), try context.requirePrincipal())
        try FinanceService.require(principal, .viewFinance)
        let query = FinanceQuery(request)
        let period = try query.period()
        let status = try query.status()
        let list = try await services.finance.invoices(tenant: tenant, actor: principal, period: period, team: try query.uuid("team_id"), status: status)
        let pageRequest = try PageRequest(request)
        let page = ListPage.slice(list, pageRequest, key: Self.invoiceKey)
        let window = UsageScope.last("30d")!
        let (report, _) = try await services.finance.analytics(tenant: tenant, actor: principal, scope: UsageScope(from: window.from, to: window.to))
        let month = Rating.month(period)!
        let values: [String: Any] = [
            "period": period, "invoices": page.items.map(Self.invoiceRow), "count": Self.count(list.count, "invoice"),
            "pager": page.pager(
                path: context.base + "/finance", query: ListPageQuery.of(request).filter { !["done", "count"].contains($0.0) }, size: pageRequest.size),
            "total": Self.totals(list), "can_manage": Policy.allows(principal, .manageBilling),
            "statuses": InvoiceSummary.Status.allCases.map { ["name": $0.rawValue, "selected": $0 == status] }, "chart": Self.chart(report, title: "Calls per day, last 30 days (errors in red)"),
            "calls": report.calls, "from": DisplayDate.day(month.start), "to": DisplayDate.day(month.end),
        ]
        return services.views.render("finance", values, page: services.chrome("Finance", context: context, notice: Self.notice(query)))
    }

    /// A notice after a finance form's redirect, from a fixed set (the address never carries text).
    static func notice(_ query: FinanceQuery) -> String? {
        let n = query.values["count"].flatMap { Int($0) }.map { max(0, $0) } ?? 0
        switch query.values["done"] {
        case "refreshed": return "\(count(n, "draft invoice")) recomputed."
        case "closed": return "\(count(n, "invoice")) issued."
        case "voided": return "The invoice is void. Close the period to issue its replacement."
        case "reissued": return "The invoice is void and its replacement is issued."
        default: return nil
        }
    }

    /// "1 invoice", "2 invoices".
    static func count(_ n: Int, _ noun: String) -> String { n == 1 ? "1 \(noun)" : "\(n) \(noun)s" }

    /// Recomputes the period's drafts now (they are also refreshed in the background).
    @Sendable func refresh(_ request: Request, context: AppRequestContext) async throws -> Response {
        let period = try FinanceQuery(values: ["period": context.form["period"] ?? ""]).period()
        let count = try await services.finance.refreshDrafts(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), period: period, clientIP: context.clientIP)
        return .redirect(to: context.base + "/finance?period=\(period)&done=refreshed&count=\(count)")
    }

    /// Issues the period's drafts (and replacements of void invoices); asks for confirmation first.
    @Sendable func close(_ request: Request, context: AppRequestContext) async throws -> Response {
        let period = try FinanceQuery(values: ["period": context.form["period"] ?? ""]).period()
        guard context.form["confirm"] == "yes" else {
            throw AppError.validation(["confirm": "Tick the box to confirm: issued invoices cannot change."])
        }
        let result = try await services.finance.close(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), period: period, clientIP: context.clientIP)
        return .redirect(to: context.base + "/finance?period=\(period)&done=closed&count=\(result.issued.count)")
    }

    /// Usage by day × subscription, filtered by days, team, app, API and plan (chosen by name). A
    /// bad filter shows the form again with the message next to the field and what was typed.
    @Sendable func usage(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (tenant, principal) = (try context.requireTenant(), try context.requirePrincipal())
        let query = FinanceQuery(request)
        let options = try await services.finance.usageFilterOptions(tenant: tenant, actor: principal)
        var errors: [String: String] = [:]
        var days: (from: Date, to: Date)?
        var filter = UsageFilter(teamID: nil, appID: nil, apiID: nil, planID: nil)
        // each message next to its field, in full ("from must be a day like 2026-11-01.")
        func note(_ error: AppError) { for field in error.fieldErrors.keys.sorted() { errors[field] = error.detail } }
        do { days = try query.days() } catch let error as AppError { note(error) }
        for name in ["team_id", "app_id", "api_id", "plan_id"] {
            do { _ = try query.uuid(name) } catch let error as AppError { errors[name] = "Choose from the list (\(error.detail))" }
        }
        if errors.keys.allSatisfy({ !$0.hasSuffix("_id") }) { filter = try query.usageFilter() }
        var values: [String: Any] = [
            "from": query.values["from"] ?? days.map { DisplayDate.day($0.from) } ?? "", "to": query.values["to"] ?? days.map { DisplayDate.day($0.to) } ?? "",
            "teams": Self.choices(options.teams, selected: query.values["team_id"]), "apps": Self.choices(options.apps, selected: query.values["app_id"]),
            "apis": Self.choices(options.apis, selected: query.values["api_id"]), "plans": Self.choices(options.plans, selected: query.values["plan_id"]),
        ]
        if let days, days.from == query.values["from"].flatMap(DisplayDate.parseDay) ?? days.from {
            values["from"] = DisplayDate.day(days.from)
            values["to"] = DisplayDate.day(days.to)
        }
        guard errors.isEmpty, let days else {
            values["errors"] = errors
            values["rows"] = [[String: Any]]()
            values["invalid"] = true
            return services.views.render("finance_usage", values, page: services.chrome("Usage", context: context), status: .badRequest)
        }
        let window = try await UsageWindow.resolve(try PageRequest(query: ListPageQuery.of(request)), from: days.from) { from, limit in
            try await services.finance.usage(tenant: tenant, actor: principal, from: from, to: days.to, filter: filter, limit: limit)
        }
        var csvQuery = "from=\(DisplayDate.day(days.from))&to=\(DisplayDate.day(days.to))"
        for (name, id) in [("team_id", filter.teamID), ("app_id", filter.appID), ("api_id", filter.apiID), ("plan_id", filter.planID)] {
            if let id { csvQuery += "&\(name)=\(id.uuidString)" }
        }
        values["rows"] = window.rows.map { f -> [String: Any] in
            [
                "date": f[0], "team": f[3], "team_id": f[2], "app": f[5], "app_id": f[4], "api": f[7] + (f[8].isEmpty ? "" : " " + f[8]), "api_id": f[6],
                "plan": f[10], "plan_id": f[9], "calls": f[12], "billable": f[13], "rejected": f[14], "errors": f[15],
            ]
        }
        values["csv_query"] = csvQuery
        values["pager"] = window.pager(path: context.base + "/finance/usage", query: ListPageQuery.of(request))
        return services.views.render("finance_usage", values, page: services.chrome("Usage", context: context))
    }

    static func choices(_ options: [(UUID, String)], selected: String?) -> [[String: Any]] {
        let selected = selected.flatMap(UUID.init(uuidString:))
        return options.map { ["id": $0.0.uuidString, "name": $0.1, "selected": $0.0 == selected] }
    }

    @Sendable func usageCSV(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (tenant, principal) = (try context.requireTenant(), try context.requirePrincipal())
        try FinanceService.require(principal, .viewFinance)
        let query = FinanceQuery(request)
        let days = try query.days()
        let filter = try query.usageFilter()
        let export = UsageExport(client: services.database.client, logger: services.logger)
        return Self.csv(name: "usage-\(tenant.slug)-\(DisplayDate.day(days.from)).csv") { write in
            try await export.run(tenant: tenant.slug, from: days.from, to: days.to, filter: filter, write: write)
        }
    }

    @Sendable func invoicesCSV(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (tenant, principal) = (try context.requireTenant(), try context.requirePrincipal())
        try FinanceService.require(principal, .viewFinance)
        let query = FinanceQuery(request)
        let days = try query.days()
        let drafts = query.values["drafts"] == "true"
        let export = InvoiceExport(client: services.database.client, logger: services.logger)
        return Self.csv(name: "invoices-\(tenant.slug)-\(DisplayDate.day(days.from)).csv") { write in
            try await export.run(tenant: tenant.slug, from: days.from, to: days.to, includeDrafts: drafts, write: write)
        }
    }

    /// A streamed CSV download: rows go out as Postgres returns them.
    static func csv(name: String, _ produce: @escaping @Sendable (_ write: (String) async throws -> Void) async throws -> Int) -> Response {
        Response(
            status: .ok,
            headers: [.contentType: "text/csv; charset=utf-8", .contentDisposition: "attachment; filename=\"\(name)\""],
            body: ResponseBody { writer in
                _ = try await produce { chunk in try await writer.write(ByteBuffer(string: chunk)) }
                try await writer.finish(nil)
            })
    }

    @Sendable func reconcile(_ request: Request, context: AppRequestContext) async throws -> Response {
        let period = try FinanceQuery(request).period()
        let report = try await services.finance.reconcile(tenant: try context.requireTenant(), actor: try context.requirePrincipal(), period: period)
        let values: [String: Any] = [
            "period": period, "balanced": report.isBalanced, "unreplaced_voids": report.unreplacedVoids,
            "rows": report.rows.map { row -> [String: Any] in
                [
                    "label": row.label, "answered": row.answered, "events": row.events, "rollups": row.rollupCalls, "billable": row.rollupBillable,
                    "invoiced": row.invoiced.map(String.init) ?? (row.subscriptionID == nil ? "n/a" : "—"), "differences": row.differences,
                    "ok": row.differences.isEmpty,
                ]
            },
        ]
        return services.views.render("reconcile", values, page: services.chrome("Reconciliation", context: context))
    }

    /// Invoices the signed-in person may see: all of them for finance, their teams' for team owners and admins.
    @Sendable func invoices(_ request: Request, context: AppRequestContext) async throws -> Response {
        let list = try await services.finance.invoices(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), period: nil, team: try FinanceQuery(request).uuid("team_id"), status: nil)
        let pageRequest = try PageRequest(request)
        let page = ListPage.slice(list, pageRequest, key: Self.invoiceKey)
        let values: [String: Any] = [
            "invoices": page.items.map(Self.invoiceRow),
            "pager": page.pager(path: context.base + "/invoices", query: ListPageQuery.of(request), size: pageRequest.size),
        ]
        return services.views.render("invoices", values, page: services.chrome("Invoices", context: context))
    }

    @Sendable func invoice(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard let id = context.parameters.get("invoice").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("Invoice") }
        let principal = try context.requirePrincipal()
        let (invoice, lines) = try await services.finance.invoice(tenant: try context.requireTenant(), actor: principal, id: id)
        return services.views.render(
            "invoice", Self.invoiceValues(invoice, lines, principal: principal),
            page: services.chrome("Invoice \(invoice.number ?? "draft")", context: context, notice: Self.notice(FinanceQuery(request))))
    }

    static func invoiceValues(_ invoice: InvoiceSummary, _ lines: [StoredInvoiceLine], principal: Principal) -> [String: Any] {
        [
            "invoice": Self.invoiceRow(invoice),
            "can_correct": invoice.status == .issued && Policy.allows(principal, .manageBilling),
            "lines": lines.map { line -> [String: Any] in
                [
                    "subscription": "\(line.appName) → \(line.apiName)", "description": line.description,
                    "quantity": "\(line.quantity) \(line.unit)\(line.quantity == 1 ? "" : "s")",
                    "unit_price": Money.formatUnitPrice(micros: line.unitPriceMicros, currency: invoice.currency) + " \(invoice.currency) / \(line.unit)",
                    "amount": Money.format(minor: line.amountMinor, currency: invoice.currency),
                ]
            },
        ]
    }

    /// Voids an issued invoice (kept, marked void with the reason).
    @Sendable func void(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await correct(context, reissue: false)
    }

    /// Voids an issued invoice and issues its replacement from current data.
    @Sendable func reissue(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await correct(context, reissue: true)
    }

    private func correct(_ context: AppRequestContext, reissue: Bool) async throws -> Response {
        guard let id = context.parameters.get("invoice").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("Invoice") }
        let (tenant, principal) = (try context.requireTenant(), try context.requirePrincipal())
        do {
            guard context.form["confirm"] == "yes" else {
                throw AppError.validation(["confirm": "Tick the box to confirm: a void invoice stays void."])
            }
            let result = try await services.finance.correct(
                tenant: tenant, actor: principal, id: id, reason: context.form["reason"] ?? "", reissue: reissue, clientIP: context.clientIP)
            return .redirect(to: context.base + "/invoices/" + result.id.uuidString + "?done=" + (reissue ? "reissued" : "voided"))
        } catch let error as AppError where error.status == .unprocessableContent {
            // the form again, the message next to its field, the reason kept
            let (invoice, lines) = try await services.finance.invoice(tenant: tenant, actor: principal, id: id)
            var values = Self.invoiceValues(invoice, lines, principal: principal)
            values["errors"] = error.fieldErrors
            values["reason"] = context.form["reason"] ?? ""
            return services.views.render(
                "invoice", values, page: services.chrome("Invoice \(invoice.number ?? "draft")", context: context), status: .unprocessableContent)
        }
    }

    /// Calls, error rate, latency percentiles, status classes, rejections and top apps, for the
    /// tenant, one API (`api_id`) or one app (`app_id`), over 24 h, 7 d, 30 d or custom days.
    @Sendable func analytics(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (tenant, principal) = (try context.requireTenant(), try context.requirePrincipal())
        let query = FinanceQuery(request)
        let window = try query.window()
        let scope = UsageScope(from: window.from, to: window.to, apiID: try query.uuid("api_id"), appID: try query.uuid("app_id"))
        let (report, title) = try await services.finance.analytics(tenant: tenant, actor: principal, scope: scope)
        var values = Self.analyticsValues(report)
        values["title"] = title
        values["range"] = window.range
        values["from"] = DisplayDate.day(window.from)
        // the form's end day is excluded: offer the day after the window's last day, so pressing
        // Custom straight away shows the same calls (a 24 h window ends today, not at midnight)
        let endDay = (window.to.timeIntervalSince1970 / 86_400).rounded(.down) * 86_400
        values["to"] = DisplayDate.day(Date(timeIntervalSince1970: endDay == window.to.timeIntervalSince1970 ? endDay : endDay + 86_400))
        var selector = ""
        if let api = scope.apiID { selector = "&api_id=\(api.uuidString)" }
        if let app = scope.appID {
            selector = "&app_id=\(app.uuidString)"
            values["quota"] = try await services.finance.quotaUse(tenant: tenant, actor: principal, app: app).map { use -> [String: Any] in
                [
                    "api": use.api, "plan": use.plan, "rate": use.ratePerSecond, "used": use.used, "rejected": use.rejected,
                    "quota": use.monthlyQuota.map(String.init) ?? "unlimited",
                    "percent": use.monthlyQuota.map { String(format: "%.1f %%", Double(use.used) * 100 / Double(max(1, $0))) } ?? "—",
                ]
            }
        }
        values["ranges"] = ["24h", "7d", "30d"].map { ["range": $0, "href": context.base + "/analytics?range=\($0)" + selector, "current": $0 == window.range] }
        values["selector_api"] = scope.apiID?.uuidString ?? ""
        values["selector_app"] = scope.appID?.uuidString ?? ""
        return services.views.render("analytics", values, page: services.chrome("Analytics", context: context))
    }

    static func analyticsValues(_ report: UsageReport) -> [String: Any] {
        func ms(_ micros: Int64?) -> String {
            guard let micros else { return "—" }
            return micros == Int64.max ? "> 60 s" : String(format: "≤ %.1f ms", Double(micros) / 1000)
        }
        return [
            "chart": chart(report, title: report.scope.bucketSeconds == 3600 ? "Calls per hour (errors in red)" : "Calls per day (errors in red)"),
            "calls": report.calls, "billable": report.billable, "errors": report.errors, "error_rate": String(format: "%.2f %%", report.errorRate * 100),
            // shown only where the cache answered something: most APIs have no cache
            "has_cache_hits": report.cacheHits > 0, "cache_hits": report.cacheHits, "cache_hit_ratio": String(format: "%.1f %%", report.cacheHitRatio * 100),
            "p50": ms(report.latencyPercentile(0.5)), "p95": ms(report.latencyPercentile(0.95)), "p99": ms(report.latencyPercentile(0.99)),
            "statuses": zip(["2xx", "3xx", "4xx", "5xx"], report.statusClasses).map { ["class": $0.0, "count": $0.1] },
            "rejections": report.rejections.sorted { $0.key < $1.key }.map { ["reason": $0.key, "count": $0.value] },
            "top_apps": report.topApps.map { ["name": $0.name, "calls": $0.calls] },
        ]
    }

    static func chart(_ report: UsageReport, title: String) -> String {
        let hourly = report.scope.bucketSeconds == 3600
        let formatter = ISO8601DateFormatter()
        return SVGChart.bars(
            report.series.map { point in
                let text = formatter.string(from: point.start)
                return SVGChart.Bar(label: hourly ? String(text.prefix(13)).replacingOccurrences(of: "T", with: " ") + ":00" : String(text.prefix(10)), value: point.calls, part: point.errors)
            }, title: title)
    }

    /// Newest period first, then team and number (the sort key of invoice pages).
    static func invoiceKey(_ invoice: InvoiceSummary) -> String {
        let newestFirst = String(invoice.period.map { $0.isNumber ? Character(String(9 - ($0.wholeNumberValue ?? 0))) : $0 })
        return SortKey.join(newestFirst, invoice.teamName.lowercased(), invoice.number ?? "", invoice.id.uuidString)
    }

    static func invoiceRow(_ invoice: InvoiceSummary) -> [String: Any] {
        var row: [String: Any] = [
            "id": invoice.id.uuidString, "number": invoice.number ?? "draft", "team": invoice.teamName, "period": invoice.period, "status": invoice.status.rawValue,
            "total": Money.format(minor: invoice.totalMinor, currency: invoice.currency), "updated": DisplayDate.format(invoice.updatedAt),
            "issued": invoice.issuedAt.map(DisplayDate.format) ?? "", "void_reason": invoice.voidReason ?? "",
            "is_void": invoice.status == .void, "is_draft": invoice.status == .draft,
        ]
        // keys absent (not "") when unset: an empty string still opens a mustache section
        if let number = invoice.replacesNumber { row["replaces"] = ["number": number] }
        if let at = invoice.voidedAt { row["voided"] = ["at": DisplayDate.format(at), "by": invoice.voidedBy ?? "unknown"] }
        if let number = invoice.replacedByNumber { row["replaced_by"] = ["number": number, "id": invoice.replacedByID?.uuidString ?? ""] }
        return row
    }

    static func totals(_ invoices: [InvoiceSummary]) -> String {
        let byCurrency = Dictionary(grouping: invoices.filter { $0.status != .void }, by: \.currency)
        return byCurrency.keys.sorted().map { currency in
            guard let total = try? Checked.sum(byCurrency[currency]!.map(\.totalMinor), "total") else { return "more than 64 bits of " + currency }
            return Money.format(minor: total, currency: currency)
        }
        .joined(separator: ", ")
    }
}

/// The pages of the usage table (day × subscription, in export order). A page starts at a row
/// given by its day, how many rows of that day come before it, and its position in the whole
/// table: `after=` that start, so reading a page reads only its own day's earlier rows. "Previous"
/// (`before=` a start) counts back from the first day once, when it is followed.
struct UsageWindow {
    struct Start: Equatable {
        var day: String
        var skip: Int
        var offset: Int

        var cursor: String { PageRequest.encode("\(day)|\(skip)|\(offset)") }

        init(day: String, skip: Int, offset: Int) {
            self.day = day
            self.skip = skip
            self.offset = offset
        }

        /// From a decoded cursor (`day|skip|offset`).
        init(key: String) throws {
            let parts = key.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 3, DisplayDate.parseDay(parts[0]) != nil, let skip = Int(parts[1]), let offset = Int(parts[2]),
                skip >= 0, offset >= skip, offset <= 100_000_000
            else { throw PageRequest.invalidCursor }
            self.init(day: parts[0], skip: skip, offset: offset)
        }
    }

    var rows: [[String]]
    var start: Start?
    var next: Start?
    var size: Int

    /// `fetch(from, limit)`: up to `limit` rows from the day `from` on (fields in `UsageExport.header` order).
    static func resolve(_ request: PageRequest, from: Date, fetch: (Date, Int) async throws -> [[String]]) async throws -> UsageWindow {
        var start: Start?
        switch request.position {
        case .after(nil): start = nil
        case .after(let key?): start = try Start(key: key)
        case .before(let key):
            // the start of the page before `key`: back `size` rows from it
            let later = try Start(key: key)
            let target = max(0, later.offset - request.size)
            if target == 0 {
                start = nil
            } else if later.skip >= request.size {
                start = Start(day: later.day, skip: later.skip - request.size, offset: target)
            } else {
                let rows = try await fetch(from, target + 1)
                guard rows.count > target else { throw PageRequest.invalidCursor }
                start = Start(day: rows[target][0], skip: rows[..<target].reversed().prefix { $0[0] == rows[target][0] }.count, offset: target)
            }
        }
        let skip = start?.skip ?? 0
        let first = max(from, start.flatMap { DisplayDate.parseDay($0.day) } ?? from)
        let fetched = try await fetch(first, skip + request.size + 1)
        let rows = Array(fetched.dropFirst(skip).prefix(request.size))
        var next: Start?
        if fetched.count > skip + request.size {
            let following = fetched[skip + request.size]
            let sameDay = fetched[..<(skip + request.size)].reversed().prefix { $0[0] == following[0] }.count
            next = Start(day: following[0], skip: sameDay, offset: (start?.offset ?? 0) + request.size)
        }
        return UsageWindow(rows: rows, start: start, next: next, size: request.size)
    }

    func pager(path: String, query: [(String, String)]) -> [String: Any] {
        let page = ListPage<[String]>(items: rows, next: next?.cursor, previous: start?.cursor, isFirst: start == nil)
        return page.pager(path: path, query: query, size: size)
    }
}

