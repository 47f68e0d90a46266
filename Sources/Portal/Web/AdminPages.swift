import Foundation
import Hummingbird

/// Tenant administration: users and roles, invitations, audit log.
struct AdminPages: Sendable {
    let services: PortalServices

    func addRoutes(to group: RouterGroup<AppRequestContext>) {
        group.get("/admin/users", use: users)
        group.form("/admin/users/:user/roles", page: "/admin/users", use: setRoles)
        group.get("/admin/invitations", use: invitations)
        group.post("/admin/invitations", use: invite)
        group.get("/admin/audit", use: audit)
    }

    @Sendable func users(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await usersPage(context, page: try PageRequest(request), notice: Notices.message(request.uri.queryParameters["notice"].map(String.init)))
    }

    @Sendable func setRoles(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        guard let userID = context.parameters.get("user").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("User") }
        let roles = Set(context.form.values("roles").compactMap(TenantRole.init(rawValue:)))
        do {
            _ = try await services.identity.setRoles(tenant: tenant, actor: principal, userID: userID, roles: roles, clientIP: context.clientIP)
        } catch let error as AppError where error.status == .conflict {
            return try await usersPage(context, error: error.detail, status: .conflict)
        }
        return .redirect(to: context.base + "/admin/users?notice=roles-saved")
    }

    /// Open invitations and the form; an invitation created just before shows its link here once.
    @Sendable func invitations(_ request: Request, context: AppRequestContext) async throws -> Response {
        var extra: [String: Any] = [:]
        if let flash = try await services.flashes.take(for: context), let link = flash.secret {
            extra["new_invitation"] = ["email": flash.secretLabel ?? "", "link": link]
        }
        return try await invitationsPage(context, page: try PageRequest(request), extra: extra)
    }

    /// Creates an invitation; its one-time link travels in the session's flash to the page (PRG).
    @Sendable func invite(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        let form = context.form
        let roles = Set(form.values("roles").compactMap(TenantRole.init(rawValue:)))
        let teamID = form["team_id"].flatMap(UUID.init(uuidString:))
        do {
            let (invitation, token) = try await services.identity.invite(
                tenant: tenant, actor: principal, email: form["email"] ?? "", roles: roles, teamID: teamID,
                teamRole: form["team_role"].flatMap(TeamRole.init(rawValue:)), clientIP: context.clientIP)
            let link = services.publicBase(tenant) + "/invitations/" + token
            try await services.flashes.put(Flash(secretLabel: invitation.email, secret: link), for: context)
            return .redirect(to: context.base + "/admin/invitations#new-invitation")
        } catch let error as AppError where error.status == .unprocessableContent || error.status == .conflict {
            return try await invitationsPage(context, extra: ["errors": error.fieldErrors, "email": form["email"] ?? ""], status: error.status)
        }
    }

    @Sendable func audit(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        try Policy.authorize(principal, .viewAuditLog)
        // a cursor this log did not make (not an id, or not an event of this tenant) is the 400
        // page every list gives, not silently the newest events
        var before: UUID?
        if let text = request.uri.queryParameters["before"].map(String.init), !text.isEmpty {
            guard let id = UUID(uuidString: text) else { throw PageRequest.invalidCursor }
            before = id
        }
        let pageSize = 100
        // one more than a page: "Older events" shows only when there are older events
        let fetched = try await services.database.withTenant(tenant.id) { connection in
            if let before, try await !services.identity.audit.contains(before, on: connection) { throw PageRequest.invalidCursor }
            return try await services.identity.audit.list(before: before, limit: pageSize + 1, on: connection)
        }
        let events = Array(fetched.prefix(pageSize))
        let values: [String: Any] = [
            "events": events.map { event -> [String: Any] in
                [
                    "at": DisplayDate.format(event.at), "actor": event.actor, "action": event.action, "target": event.target ?? "",
                    "ip": event.clientIP ?? "", "details": event.details == "{}" ? "" : event.details,
                ]
            },
            "older": fetched.count > pageSize ? (events.last?.id.uuidString.lowercased() ?? "") : "",
            "paged": before != nil,
        ]
        return services.views.render("audit", values, page: services.chrome("Audit log", context: context))
    }

    private func usersPage(
        _ context: AppRequestContext, page request: PageRequest = PageRequest(), error: String? = nil, notice: String? = nil,
        status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        try Policy.authorize(principal, .listUsers)
        let page = try await ListPage<User>.load(request, key: \.email) { position, limit in
            try await services.database.withTenant(tenant.id) { try await services.identity.users.page(position, limit: limit, on: $0) }
        }
        let canManage = Policy.allows(principal, .manageUsers)
        var values: [String: Any] = [
            "pager": page.pager(path: context.base + "/admin/users", size: request.size),
            "users": page.items.map { user -> [String: Any] in
                [
                    "id": user.id.uuidString, "email": user.email, "display_name": user.displayName,
                    "roles": TenantRole.allCases.map { ["name": $0.rawValue, "label": $0.label, "checked": user.roles.contains($0)] },
                    "role_list": user.roles.sorted().map(\.rawValue).joined(separator: ", "),
                ]
            },
            "can_manage": canManage,
        ]
        if let error { values["error"] = error }
        return services.views.render("users", values, page: services.chrome("Users", context: context, notice: notice), status: status)
    }

    /// Open invitations by email (the sort key of their pages).
    static func invitationKey(_ invitation: Invitation) -> String { SortKey.join(invitation.email.lowercased(), invitation.id.uuidString) }

    private func invitationsPage(
        _ context: AppRequestContext, page request: PageRequest = PageRequest(), extra: [String: Any] = [:], status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        try Policy.authorize(principal, .inviteUsers)
        let (open, teams) = try await services.database.withTenant(tenant.id) { connection in
            (
                try await services.identity.invitations.listOpen(on: connection),
                BoundedChoices(try await services.identity.teams.list(after: nil, limit: BoundedChoices<Team>.bound + 1, on: connection))
            )
        }
        let page = ListPage.slice(open, request, key: Self.invitationKey)
        var values: [String: Any] = [
            "invitations": page.items.map {
                ["email": $0.email, "roles": $0.roles.map(\.rawValue).sorted().joined(separator: ", "), "expires": DisplayDate.format($0.expiresAt)]
            },
            "pager": page.pager(path: context.base + "/admin/invitations", size: request.size),
            "teams": teams.items.map { ["id": $0.id.uuidString, "name": $0.name] }, "teams_note": teams.note("teams"),
            "role_options": TenantRole.allCases.map { ["name": $0.rawValue, "label": $0.label, "checked": $0 == .developer] },
        ]
        for (key, value) in extra { values[key] = value }
        return services.views.render("invitations", values, page: services.chrome("Invitations", context: context), status: status)
    }

}
