import Foundation
import Logging
import PostgresNIO

/// Team workflows shared by HTML and JSON routes; authorization through `Policy`.
struct TeamService: Sendable {
    let database: Database
    let teams: TeamRepository
    let users: UserRepository
    let audit: AuditLog

    func list(tenant: Tenant, actor: Principal, after cursor: String?, limit: Int) async throws -> [Team] {
        try Policy.authorize(actor, .listTeams)
        return try await database.withTenant(tenant.id) { try await teams.list(after: cursor, limit: limit, on: $0) }
    }

    /// A keyset page (by slug) of the teams the actor may open (admins and finance: all).
    func page(tenant: Tenant, actor: Principal, _ position: Keyset, limit: Int) async throws -> [Team] {
        try Policy.authorize(actor, .listTeams)
        return try await database.withTenant(tenant.id) { connection in
            try await ListPage<Team>.filtered(position, limit: limit, key: \.slug, include: { Policy.allows(actor, .viewTeam($0.id)) }) {
                try await teams.page($0, limit: $1, on: connection)
            }
        }
    }

    func create(tenant: Tenant, actor: Principal, _ new: NewTeam, clientIP: String?) async throws -> Team {
        try Policy.authorize(actor, .createTeam)
        return try await database.withTenant(tenant.id) { connection in
            let team = try await teams.create(tenantID: tenant.id, new, owner: actor.user.id, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .teamCreated, target: team.slug, clientIP: clientIP,
                on: connection)
            return team
        }
    }

    /// The team and its members, if the actor may see it.
    func show(tenant: Tenant, actor: Principal, slug: String) async throws -> (Team, [TeamMember]) {
        try await database.withTenant(tenant.id) { connection in
            // a team the actor may not see answers like one that does not exist (no existence oracle)
            guard let team = try await teams.find(slug: slug, on: connection), Policy.allows(actor, .viewTeam(team.id)) else {
                throw AppError.notFound("Team")
            }
            return (team, try await teams.members(teamID: team.id, on: connection))
        }
    }

    /// Adds a tenant member to the team or changes their team role.
    func setMember(tenant: Tenant, actor: Principal, slug: String, email: String?, userID: UUID?, role: TeamRole, clientIP: String?) async throws -> TeamMember {
        try await database.withTenant(tenant.id) { connection in
            guard let team = try await teams.find(slug: slug, on: connection), Policy.allows(actor, .viewTeam(team.id)) else {
                throw AppError.notFound("Team")
            }
            try Policy.authorize(actor, .manageTeamMembers(team.id))
            let target: User?
            if let userID { target = try await users.find(id: userID, on: connection) } else { target = try await users.find(email: email ?? "", on: connection) }
            guard let target else {
                throw AppError.validation(["email": "No account with this email in this marketplace. Invite them first."])
            }
            let current = try await teams.members(teamID: team.id, on: connection).first { $0.userID == target.id }
            if role == .owner || current?.role == .owner {
                // Only owners (or tenant admins) hand out or take away ownership.
                guard actor.has(.admin) || actor.teamRoles[team.id] == .owner else { throw AppError.forbidden }
            }
            if current?.role == .owner, role != .owner, try await teams.ownerCount(teamID: team.id, on: connection) <= 1 {
                throw AppError.conflict("A team needs at least one owner.", fields: ["role": "Keep owner."])
            }
            try await teams.setMember(tenantID: tenant.id, teamID: team.id, userID: target.id, role: role, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .teamMemberChanged, target: "\(team.slug)/\(target.email)",
                clientIP: clientIP, details: ["role": role.rawValue], on: connection)
            guard let member = try await teams.members(teamID: team.id, on: connection).first(where: { $0.userID == target.id }) else {
                throw AppError.notFound("Member")
            }
            return member
        }
    }

    func removeMember(tenant: Tenant, actor: Principal, slug: String, userID: UUID, clientIP: String?) async throws {
        try await database.withTenant(tenant.id) { connection in
            guard let team = try await teams.find(slug: slug, on: connection), Policy.allows(actor, .viewTeam(team.id)) else {
                throw AppError.notFound("Team")
            }
            // Members may leave on their own; otherwise team admins and owners manage membership.
            if userID != actor.user.id { try Policy.authorize(actor, .manageTeamMembers(team.id)) }
            let members = try await teams.members(teamID: team.id, on: connection)
            guard let member = members.first(where: { $0.userID == userID }) else { throw AppError.notFound("Member") }
            if member.role == .owner {
                guard actor.has(.admin) || actor.teamRoles[team.id] == .owner else { throw AppError.forbidden }
                if members.filter({ $0.role == .owner }).count <= 1 {
                    throw AppError.conflict("A team needs at least one owner; make someone else owner first.")
                }
            }
            _ = try await teams.removeMember(teamID: team.id, userID: userID, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .teamMemberRemoved, target: "\(team.slug)/\(member.email)",
                clientIP: clientIP, on: connection)
        }
    }
}
