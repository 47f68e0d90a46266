import Billing
import Foundation
import Hummingbird

/// Plan forms for providers: add a plan to an API, revise a plan's terms (a new version).
struct PlanPages: Sendable {
    let services: PortalServices

    func addRoutes(to group: RouterGroup<AppRequestContext>) {
        group.get("/catalog/apis/:api/plans/new", use: newForm)
        group.form("/catalog/apis/:api/plans", page: "/catalog/apis/:api/plans/new", use: create)
        group.get("/catalog/plans/:plan", use: editForm)
        group.form("/catalog/plans/:plan/versions", page: "/catalog/plans/:plan", use: revise)
    }

    @Sendable func newForm(_ request: Request, context: AppRequestContext) async throws -> Response {
        let api = try await managedAPI(context)
        let tenant = try context.requireTenant()
        return render(context, api: api, values: PlanForm.values(for: PlanForm.blank, currency: tenant.currency), action: "/catalog/apis/\(api.id)/plans")
    }

    @Sendable func create(_ request: Request, context: AppRequestContext) async throws -> Response {
        let api = try await managedAPI(context)
        let tenant = try context.requireTenant()
        do {
            let terms = try PlanForm.terms(from: context.form, currency: tenant.currency)
            _ = try await services.planService.create(tenant: tenant, actor: try context.requirePrincipal(), apiID: api.id, terms: terms, clientIP: context.clientIP)
            return .redirect(to: context.base + "/catalog/apis/" + api.id.uuidString)
        } catch let error as AppError where error.status == .unprocessableContent || error.status == .conflict {
            var values = PlanForm.echo(context.form)
            values["errors"] = error.fieldErrors
            values["error"] = error.detail
            return render(context, api: api, values: values, action: "/catalog/apis/\(api.id)/plans", status: error.status)
        }
    }

    @Sendable func editForm(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let (plan, versions) = try await services.planService.show(tenant: tenant, viewer: try context.requirePrincipal(), planID: try planID(context))
        let api = try await services.catalog.show(tenant: tenant, viewer: context.principal, id: plan.apiID)
        try Policy.authorize(try context.requirePrincipal(), .manageAPIs(team: api.teamID))
        var values = PlanForm.values(for: plan.terms, currency: tenant.currency)
        values["versions"] = Self.versionLines(versions)
        values["revising"] = true
        return render(context, api: api, values: values, action: "/catalog/plans/\(plan.id)/versions")
    }

    @Sendable func revise(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let id = try planID(context)
        let (plan, versions) = try await services.planService.show(tenant: tenant, viewer: try context.requirePrincipal(), planID: id)
        let api = try await services.catalog.show(tenant: tenant, viewer: context.principal, id: plan.apiID)
        do {
            let terms = try PlanForm.terms(from: context.form, currency: tenant.currency)
            _ = try await services.planService.revise(tenant: tenant, actor: try context.requirePrincipal(), planID: id, terms: terms, clientIP: context.clientIP)
            return .redirect(to: context.base + "/catalog/apis/" + api.id.uuidString)
        } catch let error as AppError where error.status == .unprocessableContent || error.status == .conflict {
            var values = PlanForm.echo(context.form)
            values["errors"] = error.fieldErrors
            values["error"] = error.detail
            values["revising"] = true
            values["versions"] = Self.versionLines(versions)  // the page keeps its history on an error
            return render(context, api: api, values: values, action: "/catalog/plans/\(id)/versions", status: error.status)
        }
    }

    static func versionLines(_ versions: [Plan]) -> [[String: Any]] {
        versions.map { ["version": $0.version, "created": DisplayDate.format($0.createdAt), "current": $0.isCurrent] as [String: Any] }
    }

    private func render(
        _ context: AppRequestContext, api: APIProduct, values: [String: Any], action: String, status: HTTPResponse.Status = .ok
    ) -> Response {
        var values = values
        values["api"] = ["id": api.id.uuidString, "name": api.name, "version": api.version]
        values["action"] = context.base + action
        values["currency"] = context.tenant?.currency ?? ""
        return services.views.render("plan_form", values, page: services.chrome("Plan for \(api.name)", context: context), status: status)
    }

    private func managedAPI(_ context: AppRequestContext) async throws -> APIProduct {
        guard let id = context.parameters.get("api").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("API") }
        let principal = try context.requirePrincipal()
        let api = try await services.catalog.show(tenant: try context.requireTenant(), viewer: principal, id: id)
        try Policy.authorize(principal, .manageAPIs(team: api.teamID))
        return api
    }

    private func planID(_ context: AppRequestContext) throws -> UUID {
        guard let id = context.parameters.get("plan").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("Plan") }
        return id
    }
}

/// The plan form's fields ⇄ `PlanTerms`. Money is typed in the currency's major unit (`49.00`,
/// `0.002`) and converted exactly; price tiers are lines of `<up to> <price>` with a last open line
/// `* <price>`. Pure.
enum PlanForm {
    static let blank = PlanTerms(
        name: "", ratePerSecond: 10, burst: 20, monthlyQuota: nil, monthlyFeeMinor: 0, includedRequests: 0, tierMode: .flat,
        tiers: [.init(upTo: nil, unitPriceMicros: 0)], approval: .automatic, visibility: .public)

    static func terms(from form: FormData, currency: String) throws -> PlanTerms {
        var errors: [String: String] = [:]
        func integer(_ field: String, _ message: String) -> Int64? {
            let text = (form[field] ?? "").trimmingCharacters(in: .whitespaces)
            guard let value = Int64(text) else {
                errors[field] = message
                return nil
            }
            return value
        }
        let rate = integer("rate_per_second", "Enter requests per second.")
        let burst = integer("burst", "Enter the burst size.")
        let quotaText = (form["monthly_quota"] ?? "").trimmingCharacters(in: .whitespaces)
        let quota = quotaText.isEmpty ? nil : Int64(quotaText)
        if !quotaText.isEmpty && quota == nil { errors["monthly_quota"] = "Enter a number of requests, or leave empty for unlimited." }
        let fee = Money.parseDecimal(form["monthly_fee"] ?? "0", digits: ISO4217.minorUnits[currency] ?? 2)
        if fee == nil { errors["monthly_fee_minor"] = "Enter an amount such as 49.00." }
        let included = integer("included_requests", "Enter a number of requests (0 for none).")
        func optional(_ field: String) -> Int64? {
            let text = (form[field] ?? "").trimmingCharacters(in: .whitespaces)
            guard !text.isEmpty else { return nil }
            guard let value = Int64(text) else {
                errors[field] = "Enter a number of requests, or leave it empty for no limit."
                return nil
            }
            return value
        }
        let (perMinute, perHour, perDay) = (optional("per_minute"), optional("per_hour"), optional("per_day"))
        var tiers: [PlanTerms.Tier] = []
        for line in TextLines.split(form["tiers"] ?? "") {
            let parts = line.split(whereSeparator: \.isWhitespace)
            let price = parts.last.flatMap { Money.parseUnitPrice(String($0), currency: currency) }
            let bound: Int64?? = parts.count == 1 || parts.first == "*" ? .some(nil) : Int64(parts[0]).map { .some($0) }
            guard parts.count <= 2, let price, let bound else {
                errors["tiers"] = "Write one tier per line: '<up to> <price per request>', the last one '* <price>'."
                break
            }
            tiers.append(.init(upTo: bound, unitPriceMicros: price))
        }
        let mode = PlanTerms.TierMode(rawValue: form["tier_mode"] ?? "")
        let approval = PlanTerms.Approval(rawValue: form["approval"] ?? "")
        let visibility = PlanTerms.Visibility(rawValue: form["visibility"] ?? "")
        if mode == nil { errors["tier_mode"] = "Choose flat, graduated or volume." }
        if approval == nil { errors["approval"] = "Choose automatic or manual approval." }
        if visibility == nil { errors["visibility"] = "Choose public or hidden." }
        // a form from before the field existed bills hits, as the plan did then
        let cacheHits = form["cache_hits"] ?? "billed"
        if cacheHits != "billed" && cacheHits != "free" { errors["cache_hits"] = "Choose whether cache hits are billed." }
        guard errors.isEmpty, let rate, let burst, let fee, let included, let mode, let approval, let visibility,
            let rateInt = Int(exactly: rate), let burstInt = Int(exactly: burst)
        else { throw AppError.validation(errors) }
        return PlanTerms(
            name: form["name"] ?? "", ratePerSecond: rateInt, burst: burstInt, monthlyQuota: quota, monthlyFeeMinor: fee, includedRequests: included,
            tierMode: mode, tiers: tiers, approval: approval, visibility: visibility, perMinute: perMinute, perHour: perHour, perDay: perDay,
            cacheHitsBillable: cacheHits == "billed")
    }

    /// Form values showing `terms`.
    static func values(for terms: PlanTerms, currency: String) -> [String: Any] {
        let digits = ISO4217.minorUnits[currency] ?? 2
        var scale: Int64 = 1
        for _ in 0..<digits { scale *= 10 }
        let fee = digits == 0 ? "\(terms.monthlyFeeMinor)" : "\(terms.monthlyFeeMinor / scale)." + {
            let f = String(terms.monthlyFeeMinor % scale)
            return String(repeating: "0", count: digits - f.count) + f
        }()
        let tiers = terms.tiers.map { tier in
            (tier.upTo.map(String.init) ?? "*") + " " + Money.formatUnitPrice(micros: tier.unitPriceMicros, currency: currency)
        }
        return [
            "name": terms.name, "rate_per_second": "\(terms.ratePerSecond)", "burst": "\(terms.burst)",
            "monthly_quota": terms.monthlyQuota.map(String.init) ?? "", "monthly_fee": fee, "included_requests": "\(terms.includedRequests)",
            "tiers": tiers.joined(separator: "\n"), "modes": modes(selected: terms.tierMode.rawValue),
            "manual": terms.approval == .manual, "hidden": terms.visibility == .hidden, "cache_hits_free": !terms.billsCacheHits,
            "per_minute": terms.perMinute.map(String.init) ?? "", "per_hour": terms.perHour.map(String.init) ?? "",
            "per_day": terms.perDay.map(String.init) ?? "",
        ]
    }

    /// What the user typed, to show the form again with errors.
    static func echo(_ form: FormData) -> [String: Any] {
        var values: [String: Any] = [:]
        for key in ["name", "rate_per_second", "burst", "monthly_quota", "monthly_fee", "included_requests", "tiers", "per_minute", "per_hour", "per_day"] {
            values[key] = form[key] ?? ""
        }
        values["modes"] = modes(selected: form["tier_mode"] ?? "flat")
        values["manual"] = form["approval"] == "manual"
        values["hidden"] = form["visibility"] == "hidden"
        values["cache_hits_free"] = form["cache_hits"] == "free"
        return values
    }

    private static func modes(selected: String) -> [[String: Any]] {
        PlanTerms.TierMode.allCases.map { ["name": $0.rawValue, "selected": $0.rawValue == selected] }
    }
}
