import Foundation
import Hummingbird

/// Consumer apps and their credentials.
struct AppPages: Sendable {
    let services: PortalServices

    func addRoutes(to group: RouterGroup<AppRequestContext>) {
        group.get("/apps", use: list)
        group.post("/apps", use: create)
        group.get("/apps/:app", use: show)
        group.form("/apps/:app/client-secrets", page: "/apps/:app", use: addClientSecret)
        group.form("/apps/:app/api-keys", page: "/apps/:app", use: addAPIKey)
        group.form("/apps/:app/credentials/:credential/revoke", page: "/apps/:app", use: revoke)
    }

    @Sendable func list(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await listPage(context, page: try PageRequest(request))
    }

    /// Registers an app and shows its client id and first secret once.
    @Sendable func create(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        let form = context.form
        do {
            let new = try NewApp.validated(
                teamID: form["team_id"].flatMap(UUID.init(uuidString:)), name: form["name"], description: form["description"],
                callbackURL: form["callback_url"])
            let (app, created) = try await services.appService.create(tenant: tenant, actor: principal, new, clientIP: context.clientIP)
            // post/redirect/get: the secret travels in the session's one-time flash, never in the URL
            try await services.flashes.put(Flash(notice: "App created.", secretLabel: "Client secret", secret: created.secret), for: context)
            return .redirect(to: context.base + "/apps/" + app.id.uuidString)
        } catch let error as AppError where error.status == .unprocessableContent || error.status == .conflict {
            return try await listPage(
                context, extra: ["errors": error.fieldErrors, "error": error.detail, "name": form["name"] ?? "", "description": form["description"] ?? ""],
                status: error.status)
        }
    }

    /// The app, its credentials and subscriptions; a secret created just before shows here once.
    @Sendable func show(_ request: Request, context: AppRequestContext) async throws -> Response {
        let flash = try await services.flashes.take(for: context)
        return try await detailPage(request, context, id: try appID(context), newSecret: flash?.secretValues, notice: flash?.notice)
    }

    @Sendable func addClientSecret(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await add(request, context, kind: .clientSecret, label: "Client secret")
    }

    @Sendable func addAPIKey(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await add(request, context, kind: .apiKey, label: "API key")
    }

    @Sendable func revoke(_ request: Request, context: AppRequestContext) async throws -> Response {
        let id = try appID(context)
        guard let credential = context.parameters.get("credential").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("Credential") }
        try await services.appService.revokeCredential(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), appID: id, credentialID: credential, clientIP: context.clientIP)
        return .redirect(to: context.base + "/apps/" + id.uuidString)
    }

    private func add(_ request: Request, _ context: AppRequestContext, kind: AppCredential.Kind, label: String) async throws -> Response {
        let id = try appID(context)
        do {
            let days = context.form["expires_in_days"].flatMap { Int($0) }
            let created = try await services.appService.addCredential(
                tenant: try context.requireTenant(), actor: try context.requirePrincipal(), appID: id, kind: kind, name: context.form["name"],
                expiresInDays: days, clientIP: context.clientIP)
            try await services.flashes.put(Flash(notice: "\(label) created.", secretLabel: label, secret: created.secret), for: context)
            return .redirect(to: context.base + "/apps/" + id.uuidString)
        } catch let error as AppError where error.status == .unprocessableContent || error.status == .conflict {
            return try await detailPage(request, context, id: id, error: error.detail, status: error.status)
        }
    }

    private func appID(_ context: AppRequestContext) throws -> UUID {
        guard let id = context.parameters.get("app").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("App") }
        return id
    }

    private func listPage(
        _ context: AppRequestContext, page request: PageRequest = PageRequest(), extra: [String: Any] = [:], status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        let apps = try await services.appService.list(tenant: tenant, actor: principal)
        let page = ListPage.slice(apps, request, key: Self.sortKey)
        // the teams this user may register apps for: a bounded choice that says when it is cut
        let teams = BoundedChoices(
            try await ListPage<Team>.filtered(
                .after(nil), limit: BoundedChoices<Team>.bound + 1, key: \.slug, include: { Policy.allows(principal, .manageApps(team: $0.id)) }
            ) { try await services.teamService.page(tenant: tenant, actor: principal, $0, limit: $1) })
        let teamNames = try await services.database.withTenant(tenant.id) {
            try await services.identity.teams.names(ids: Array(Set(page.items.map(\.teamID))), on: $0)
        }
        var values: [String: Any] = [
            "apps": page.items.map { ["id": $0.id.uuidString, "name": $0.name, "team": teamNames[$0.teamID] ?? "", "client_id": $0.clientID] },
            "pager": page.pager(path: context.base + "/apps", size: request.size),
            "count_text": Plural.count(apps.count, "app"),
            "teams": teams.items.map { ["id": $0.id.uuidString, "name": $0.name] }, "teams_note": teams.note("teams"),
            "can_create": !teams.items.isEmpty,
        ]
        for (key, value) in extra { values[key] = value }
        return services.views.render("apps", values, page: services.chrome("Apps", context: context), status: status)
    }

    /// Apps in name order (the sort key of their pages).
    static func sortKey(_ app: ConsumerApp) -> String { SortKey.join(app.name.lowercased(), app.id.uuidString) }

    private func detailPage(
        _ request: Request, _ context: AppRequestContext, id: UUID, newSecret: [String: String]? = nil, error: String? = nil, notice: String? = nil,
        status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        let (app, credentials) = try await services.appService.show(tenant: tenant, actor: principal, id: id)
        func rows(_ kind: AppCredential.Kind) -> [[String: Any]] {
            credentials.filter { $0.kind == kind }.map {
                [
                    "id": $0.id.uuidString, "name": $0.name, "prefix": $0.prefix, "created": DisplayDate.format($0.createdAt),
                    "expires": $0.expiresAt.map(DisplayDate.format) ?? "never", "active": $0.isActive(),
                ]
            }
        }
        var values: [String: Any] = [
            "app": ["id": app.id.uuidString, "name": app.name, "description": app.description, "client_id": app.clientID],
            "secrets": rows(.clientSecret), "keys": rows(.apiKey), "can_manage": Policy.allows(principal, .manageApps(team: app.teamID)),
            "token_url": services.publicBase(tenant) + "/oauth2/token",
        ]
        let subscriptions = try await services.subscriptionService.list(tenant: tenant, actor: principal, appID: app.id)
        values["subscriptions"] = subscriptions.map(SubscriptionPages.row)
        var offers: [[String: Any]] = []
        // an API this app already holds a subscription to is changed on that subscription's page,
        // not offered again here (a second subscription would only answer 409)
        let held = Set(subscriptions.filter { $0.state.isOpen }.map(\.apiID))
        let apis = BoundedChoices(
            try await services.catalog.list(tenant: tenant, viewer: principal, after: nil, limit: BoundedChoices<APIProduct>.bound + 1), bound: BoundedChoices<APIProduct>.bound)
        values["offers_note"] = apis.truncated ? "Only plans of the first \(apis.items.count) APIs of the catalog are offered here; subscribe to others from their catalog page or the JSON API." : ""
        for api in apis.items
        where api.state.acceptsNewSubscriptions && CatalogVisibility.isOpen(api, toTeam: app.teamID) && !held.contains(api.id) {
            for plan in try await services.planService.list(tenant: tenant, viewer: principal, apiID: api.id) where plan.terms.visibility == .public {
                offers.append(["id": plan.id.uuidString, "label": "\(api.name) \(api.version) — \(plan.terms.name)"])
            }
        }
        values["offers"] = offers
        if let newSecret { values["new_secret"] = newSecret }
        if let error { values["error"] = error }
        return services.views.render("app", values, page: services.chrome(app.name, context: context, notice: notice), status: status)
    }
}
