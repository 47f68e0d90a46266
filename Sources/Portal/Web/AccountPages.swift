import Foundation
import Hummingbird

/// The signed-in user's own account: profile, password, personal access tokens.
struct AccountPages: Sendable {
    let services: PortalServices

    func addRoutes(to group: RouterGroup<AppRequestContext>) {
        group.get("/account", use: account)
        group.form("/account/password", page: "/account", use: changePassword)
        group.form("/account/tokens", page: "/account", use: createToken)
        group.form("/account/tokens/:id/revoke", page: "/account", use: revokeToken)
    }

    /// Profile, roles, teams, password form and the token list.
    @Sendable func account(_ request: Request, context: AppRequestContext) async throws -> Response {
        let flash = try await services.flashes.take(for: context)
        var extra: [String: Any] = [:]
        if let flash, let secret = flash.secret { extra["new_token"] = ["secret": secret, "name": flash.secretLabel ?? ""] }
        return try await page(
            context, tokens: try PageRequest(request), extra: extra,
            notice: flash?.notice ?? Notices.message(request.uri.queryParameters["notice"].map(String.init)))
    }

    @Sendable func changePassword(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        let form = context.form
        do {
            try await services.identity.changePassword(
                tenant: tenant, user: principal.user, session: context.session, current: form["current_password"] ?? "",
                new: form["new_password"] ?? "", confirmation: form["new_password_confirmation"] ?? "", clientIP: context.clientIP)
            return .redirect(to: context.base + "/account?notice=password-changed")
        } catch let error as AppError where error.status == .unprocessableContent {
            return try await page(context, extra: ["password_errors": error.fieldErrors], status: error.status)
        }
    }

    /// Creates a token and shows its secret exactly once.
    @Sendable func createToken(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        let form = context.form
        do {
            let days = form["expires_in_days"].flatMap { $0.isEmpty ? nil : $0 }
            let parsedDays = try days.map { text -> Int in
                guard let value = Int(text) else { throw AppError.validation(["expires_in_days": "Enter a number of days."]) }
                return value
            }
            let new = try TokenService.NewToken.validated(name: form["name"], scopes: form.values("scopes"), expiresInDays: parsedDays)
            let (token, secret) = try await services.tokenService.create(tenant: tenant, actor: principal, new, clientIP: context.clientIP)
            try await services.flashes.put(Flash(secretLabel: token.name, secret: secret), for: context)
            return .redirect(to: context.base + "/account#new-token")
        } catch let error as AppError where error.status == .unprocessableContent {
            return try await page(context, extra: ["token_errors": error.fieldErrors, "token_name": form["name"] ?? ""], status: error.status)
        }
    }

    @Sendable func revokeToken(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        guard let id = context.parameters.get("id").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("Token") }
        try await services.tokenService.revoke(tenant: tenant, actor: principal, id: id, clientIP: context.clientIP)
        return .redirect(to: context.base + "/account?notice=token-revoked")
    }

    private func page(
        _ context: AppRequestContext, tokens request: PageRequest = PageRequest(), extra: [String: Any] = [:], notice: String? = nil,
        status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        let page = ListPage.slice(try await services.tokenService.list(tenant: tenant, actor: principal), request, key: Self.tokenKey)
        let tokens = page.items
        var values: [String: Any] = [
            "pager": page.pager(path: context.base + "/account", size: request.size),
            "email": principal.user.email,
            "display_name": principal.user.displayName,
            "roles": principal.user.roles.sorted().map { ["label": $0.label] },
            "tokens": tokens.map { token -> [String: Any] in
                [
                    "id": token.id.uuidString, "name": token.name, "prefix": token.prefix,
                    "scopes": token.scopes.map(\.rawValue).sorted().joined(separator: ", "),
                    "created": DisplayDate.format(token.createdAt), "expires": token.expiresAt.map(DisplayDate.format) ?? "never",
                    "last_used": token.lastUsedAt.map(DisplayDate.format) ?? "never", "active": token.isActive,
                ]
            },
            "can_admin_scope": principal.has(.admin),
        ]
        for (key, value) in extra { values[key] = value }
        return services.views.render("account", values, page: services.chrome("Your account", context: context, notice: notice), status: status)
    }

    /// Tokens newest first (the sort key of their pages).
    static func tokenKey(_ token: PersonalAccessToken) -> String { SortKey.join(SortKey.date(token.createdAt, descending: true), token.id.uuidString) }
}

enum DisplayDate {
    static func format(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withFullDate, .withTime, .withColonSeparatorInTime, .withSpaceBetweenDateAndTime]
        return formatter.string(from: date) + " UTC"
    }

    /// `2027-06-30` (UTC).
    static func day(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withFullDate]
        return formatter.string(from: date)
    }

    /// Midnight UTC of a `YYYY-MM-DD` day, or nil.
    static func parseDay(_ text: String) -> Date? {
        guard text.count == 10 else { return nil }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withFullDate]
        return formatter.date(from: text)
    }
}
