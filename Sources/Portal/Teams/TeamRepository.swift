import Foundation
import Logging
import PostgresNIO

/// SQL for teams and memberships, inside a tenant transaction.
struct TeamRepository: Sendable {
    let logger: Logger

    func create(tenantID: UUID, _ new: NewTeam, owner: UUID, on connection: PostgresConnection) async throws -> Team {
        let id: UUID
        do {
            let rows = try await connection.query(
                "INSERT INTO teams (tenant_id, slug, name) VALUES (\(tenantID), \(new.slug), \(new.name)) RETURNING id", logger: logger)
            guard let created = try await rows.decode(UUID.self).first(where: { _ in true }) else { throw AppError.conflict("Team was not created.") }
            id = created
        } catch where error.postgresCode == .uniqueViolation {
            throw AppError.conflict("A team with slug \(new.slug) already exists.", fields: ["slug": "Already taken."])
        }
        try await setMember(tenantID: tenantID, teamID: id, userID: owner, role: .owner, on: connection)
        guard let team = try await find(id: id, on: connection) else { throw AppError.notFound("Team") }
        return team
    }

    func find(id: UUID, on connection: PostgresConnection) async throws -> Team? {
        try await decode(connection.query("\(unescaped: Self.select) WHERE t.id = \(id) GROUP BY t.id", logger: logger)).first
    }

    func find(slug: String, on connection: PostgresConnection) async throws -> Team? {
        guard Slug.isValid(slug) else { return nil }
        return try await decode(connection.query("\(unescaped: Self.select) WHERE t.slug = \(slug) GROUP BY t.id", logger: logger)).first
    }

    /// All teams of the tenant, by slug, after the cursor slug.
    func list(after cursor: String?, limit: Int, on connection: PostgresConnection) async throws -> [Team] {
        try await decode(
            connection.query(
                "\(unescaped: Self.select) WHERE t.slug > \(cursor ?? "") GROUP BY t.id ORDER BY t.slug LIMIT \(limit)", logger: logger))
    }

    /// A keyset page by slug: after a slug in slug order, or before one nearest first.
    func page(_ position: Keyset, limit: Int, on connection: PostgresConnection) async throws -> [Team] {
        switch position {
        case .after(let cursor): return try await list(after: cursor, limit: limit, on: connection)
        case .before(let cursor):
            return try await decode(
                connection.query(
                    "\(unescaped: Self.select) WHERE t.slug < \(cursor) GROUP BY t.id ORDER BY t.slug DESC LIMIT \(limit)", logger: logger))
        }
    }

    /// Team id → name, for the teams named on one page of another list.
    func names(ids: [UUID], on connection: PostgresConnection) async throws -> [UUID: String] {
        var names: [UUID: String] = [:]
        guard !ids.isEmpty else { return names }
        let rows = try await connection.query("SELECT id, name FROM teams WHERE id = ANY(\(ids))", logger: logger)
        for try await (id, name) in rows.decode((UUID, String).self) { names[id] = name }
        return names
    }

    /// Team id → the user's role in it.
    func memberships(userID: UUID, on connection: PostgresConnection) async throws -> [UUID: TeamRole] {
        var result: [UUID: TeamRole] = [:]
        let rows = try await connection.query("SELECT team_id, role FROM team_members WHERE user_id = \(userID)", logger: logger)
        for try await (team, role) in rows.decode((UUID, String).self) { result[team] = TeamRole(rawValue: role) }
        return result
    }

    func members(teamID: UUID, on connection: PostgresConnection) async throws -> [TeamMember] {
        let rows = try await connection.query(
            """
            SELECT u.id, u.email, u.display_name, m.role, m.joined_at
            FROM team_members m JOIN users u ON u.id = m.user_id
            WHERE m.team_id = \(teamID) ORDER BY u.email
            """, logger: logger)
        var members: [TeamMember] = []
        for try await (id, email, name, role, joined) in rows.decode((UUID, String, String, String, Date).self) {
            members.append(TeamMember(userID: id, email: email, displayName: name, role: TeamRole(rawValue: role) ?? .member, joinedAt: joined))
        }
        return members
    }

    func setMember(tenantID: UUID, teamID: UUID, userID: UUID, role: TeamRole, on connection: PostgresConnection) async throws {
        try await connection.query(
            """
            INSERT INTO team_members (tenant_id, team_id, user_id, role) VALUES (\(tenantID), \(teamID), \(userID), \(role.rawValue))
            ON CONFLICT (tenant_id, team_id, user_id) DO UPDATE SET role = EXCLUDED.role
            """, logger: logger)
    }

    func removeMember(teamID: UUID, userID: UUID, on connection: PostgresConnection) async throws -> Bool {
        let rows = try await connection.query(
            "DELETE FROM team_members WHERE team_id = \(teamID) AND user_id = \(userID) RETURNING user_id", logger: logger)
        for try await _ in rows.decode(UUID.self) { return true }
        return false
    }

    func ownerCount(teamID: UUID, on connection: PostgresConnection) async throws -> Int {
        let rows = try await connection.query(
            "SELECT count(*)::int FROM team_members WHERE team_id = \(teamID) AND role = 'owner'", logger: logger)
        for try await count in rows.decode(Int.self) { return count }
        return 0
    }

    private static let select = """
        SELECT t.id, t.slug, t.name, t.created_at, count(m.user_id)::int
        FROM teams t LEFT JOIN team_members m ON m.team_id = t.id
        """

    private func decode(_ rows: PostgresRowSequence) async throws -> [Team] {
        var teams: [Team] = []
        for try await (id, slug, name, created, count) in rows.decode((UUID, String, String, Date, Int).self) {
            teams.append(Team(id: id, slug: slug, name: name, createdAt: created, memberCount: count))
        }
        return teams
    }
}
