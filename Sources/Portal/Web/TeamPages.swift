import Foundation
import Hummingbird

/// Teams: list, create, members.
struct TeamPages: Sendable {
    let services: PortalServices

    func addRoutes(to group: RouterGroup<AppRequestContext>) {
        group.get("/teams", use: list)
        group.post("/teams", use: create)
        group.get("/teams/:team", use: show)
        group.form("/teams/:team/members", page: "/teams/:team", use: setMember)
        group.form("/teams/:team/members/:user/remove", page: "/teams/:team", use: removeMember)
    }

    @Sendable func list(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await listPage(context, page: try PageRequest(request))
    }

    @Sendable func create(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        do {
            let new = try NewTeam.validated(name: context.form["name"], slug: context.form["slug"])
            let team = try await services.teamService.create(tenant: tenant, actor: principal, new, clientIP: context.clientIP)
            return .redirect(to: context.base + "/teams/" + team.slug)
        } catch let error as AppError where error.status == .unprocessableContent || error.status == .conflict {
            return try await listPage(
                context, extra: ["errors": error.fieldErrors, "name": context.form["name"] ?? "", "slug": context.form["slug"] ?? ""], status: error.status)
        }
    }

    @Sendable func show(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await teamPage(
            context, slug: context.parameters.get("team") ?? "", page: try PageRequest(request),
            notice: Notices.message(request.uri.queryParameters["notice"].map(String.init)))
    }

    @Sendable func setMember(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        let slug = context.parameters.get("team") ?? ""
        do {
            guard let role = TeamRole(rawValue: context.form["role"] ?? "") else { throw AppError.validation(["role": "Choose owner, admin or member."]) }
            _ = try await services.teamService.setMember(
                tenant: tenant, actor: principal, slug: slug, email: context.form["email"], userID: nil, role: role, clientIP: context.clientIP)
            return .redirect(to: context.base + "/teams/\(slug)?notice=member-saved")
        } catch let error as AppError where error.status == .unprocessableContent || error.status == .conflict {
            return try await teamPage(context, slug: slug, extra: ["errors": error.fieldErrors, "error": error.detail, "email": context.form["email"] ?? ""], status: error.status)
        }
    }

    @Sendable func removeMember(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        let slug = context.parameters.get("team") ?? ""
        guard let userID = context.parameters.get("user").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("Member") }
        do {
            try await services.teamService.removeMember(tenant: tenant, actor: principal, slug: slug, userID: userID, clientIP: context.clientIP)
        } catch let error as AppError where error.status == .conflict {
            return try await teamPage(context, slug: slug, extra: ["error": error.detail], status: error.status)
        }
        return .redirect(to: context.base + "/teams/\(slug)?notice=member-removed")
    }

    private func listPage(
        _ context: AppRequestContext, page request: PageRequest = PageRequest(), extra: [String: Any] = [:], status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        // only teams this user can open: a link that answers 404 is a dead end
        let page = try await ListPage<Team>.load(request, key: \.slug) {
            try await services.teamService.page(tenant: tenant, actor: principal, $0, limit: $1)
        }
        var values: [String: Any] = [
            "pager": page.pager(path: context.base + "/teams", size: request.size),
            "teams": page.items.map { team -> [String: Any] in
                ["slug": team.slug, "name": team.name, "members": Plural.count(team.memberCount, "member"), "my_role": principal.teamRoles[team.id]?.rawValue ?? ""]
            },
            "can_create": Policy.allows(principal, .createTeam),
        ]
        for (key, value) in extra { values[key] = value }
        return services.views.render("teams", values, page: services.chrome("Teams", context: context), status: status)
    }

    private func teamPage(
        _ context: AppRequestContext, slug: String, page request: PageRequest = PageRequest(), extra: [String: Any] = [:], notice: String? = nil,
        status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        let (team, members) = try await services.teamService.show(tenant: tenant, actor: principal, slug: slug)
        let canManage = Policy.allows(principal, .manageTeamMembers(team.id))
        let page = ListPage.slice(members, request, key: Self.memberKey)
        var values: [String: Any] = [
            "team": ["slug": team.slug, "name": team.name, "id": team.id.uuidString],
            "pager": page.pager(path: context.base + "/teams/" + team.slug, size: request.size),
            "members": page.items.map { member -> [String: Any] in
                [
                    "user_id": member.userID.uuidString, "email": member.email, "display_name": member.displayName, "role": member.role.rawValue,
                    "joined": DisplayDate.format(member.joinedAt), "removable": canManage || member.userID == principal.user.id,
                ]
            },
            "can_manage": canManage, "can_view_invoices": Policy.allows(principal, .viewInvoices(team: team.id)),
        ]
        for (key, value) in extra { values[key] = value }
        return services.views.render("team", values, page: services.chrome(team.name, context: context, notice: notice), status: status)
    }

    /// Members in email order (the sort key of their pages).
    static func memberKey(_ member: TeamMember) -> String { SortKey.join(member.email.lowercased(), member.userID.uuidString) }
}
