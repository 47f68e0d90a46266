import Foundation
import Logging
import PostgresNIO

/// A pending invitation, loaded by its one-time token.
struct Invitation: Sendable, Equatable {
    let id: UUID
    var email: String
    var roles: Set<TenantRole>
    var teamID: UUID?
    var teamRole: TeamRole?
    var expiresAt: Date
}

/// Invitations to join a tenant (optionally a team). The link holds a 256-bit token shown once to
/// the inviter; only its hash is stored. No mail server is needed: the inviter passes the link on.
struct InvitationRepository: Sendable {
    let logger: Logger
    static let lifetimeDays = 7

    func create(
        tenantID: UUID, email: String, roles: Set<TenantRole>, teamID: UUID?, teamRole: TeamRole?, invitedBy: UUID?,
        on connection: PostgresConnection
    ) async throws -> (Invitation, token: String) {
        let token = SecretToken.generate(prefix: "")
        let rows = try await connection.query(
            """
            INSERT INTO invitations (tenant_id, email, roles, team_id, team_role, token_hash, invited_by, expires_at)
            VALUES (\(tenantID), \(email), \(roles.map(\.rawValue).sorted()), \(teamID), \(teamRole?.rawValue), \(Data(token.sha256)), \(invitedBy),
                    now() + make_interval(days => \(Self.lifetimeDays)::int))
            RETURNING id, email, roles, team_id, team_role, expires_at
            """, logger: logger)
        guard let invitation = try await decode(rows).first else { throw AppError.conflict("Invitation was not created.") }
        return (invitation, token.value)
    }

    /// The open invitation for a token (not expired, accepted or revoked).
    func find(token: String, on connection: PostgresConnection) async throws -> Invitation? {
        try await decode(
            connection.query(
                """
                SELECT id, email, roles, team_id, team_role, expires_at FROM invitations
                WHERE token_hash = \(Data(SecretToken.sha256(token))) AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > now()
                """, logger: logger)
        ).first
    }

    /// Marks accepted; false if someone accepted it concurrently.
    func markAccepted(id: UUID, on connection: PostgresConnection) async throws -> Bool {
        let rows = try await connection.query(
            "UPDATE invitations SET accepted_at = now() WHERE id = \(id) AND accepted_at IS NULL RETURNING id", logger: logger)
        for try await _ in rows.decode(UUID.self) { return true }
        return false
    }

    func listOpen(on connection: PostgresConnection) async throws -> [Invitation] {
        try await decode(
            connection.query(
                """
                SELECT id, email, roles, team_id, team_role, expires_at FROM invitations
                WHERE accepted_at IS NULL AND revoked_at IS NULL AND expires_at > now() ORDER BY created_at DESC
                """, logger: logger))
    }

    private func decode(_ rows: PostgresRowSequence) async throws -> [Invitation] {
        var result: [Invitation] = []
        for try await (id, email, roles, team, teamRole, expires) in rows.decode((UUID, String, [String], UUID?, String?, Date).self) {
            result.append(
                Invitation(
                    id: id, email: email, roles: Set(roles.compactMap(TenantRole.init(rawValue:))), teamID: team,
                    teamRole: teamRole.flatMap(TeamRole.init(rawValue:)), expiresAt: expires))
        }
        return result
    }
}
