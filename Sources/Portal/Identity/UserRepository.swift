import Foundation
import Logging
import PostgresNIO

/// SQL for users and their tenant roles. Runs inside a tenant transaction (RLS applies).
struct UserRepository: Sendable {
    let logger: Logger

    func create(tenantID: UUID, account: NewAccount, passwordHash: String, roles: Set<TenantRole>, on connection: PostgresConnection) async throws -> User {
        let id: UUID
        do {
            let rows = try await connection.query(
                """
                INSERT INTO users (tenant_id, email, display_name, password_hash)
                VALUES (\(tenantID), \(account.email), \(account.displayName), \(passwordHash))
                RETURNING id
                """, logger: logger)
            guard let row = try await rows.decode(UUID.self).first(where: { _ in true }) else { throw AppError.conflict("User was not created.") }
            id = row
        } catch where error.postgresCode == .uniqueViolation {
            throw AppError.conflict("An account with this email already exists.", fields: ["email": "Already registered."])
        }
        try await setRoles(userID: id, tenantID: tenantID, roles: roles, on: connection)
        guard let user = try await find(id: id, on: connection) else { throw AppError.notFound("User") }
        return user
    }

    func setRoles(userID: UUID, tenantID: UUID, roles: Set<TenantRole>, on connection: PostgresConnection) async throws {
        let names = roles.map(\.rawValue).sorted()
        try await connection.query("DELETE FROM user_roles WHERE user_id = \(userID) AND NOT (role = ANY(\(names)))", logger: logger)
        try await connection.query(
            """
            INSERT INTO user_roles (tenant_id, user_id, role)
            SELECT \(tenantID), \(userID), unnest(\(names)::text[]) ON CONFLICT DO NOTHING
            """, logger: logger)
    }

    func find(id: UUID, on connection: PostgresConnection) async throws -> User? {
        try await decode(connection.query("\(unescaped: Self.select) WHERE u.id = \(id) GROUP BY u.id", logger: logger)).first
    }

    func find(email: String, on connection: PostgresConnection) async throws -> User? {
        guard Email.isValid(Email.normalize(email)) else { return nil }
        return try await decode(connection.query("\(unescaped: Self.select) WHERE u.email = \(Email.normalize(email)) GROUP BY u.id", logger: logger)).first
    }

    /// The stored PHC hash, for login and password change.
    func passwordHash(userID: UUID, on connection: PostgresConnection) async throws -> String? {
        let rows = try await connection.query("SELECT password_hash FROM users WHERE id = \(userID)", logger: logger)
        for try await hash in rows.decode(String.self) { return hash }
        return nil
    }

    func updatePassword(userID: UUID, hash: String, on connection: PostgresConnection) async throws {
        try await connection.query(
            "UPDATE users SET password_hash = \(hash), password_changed_at = now() WHERE id = \(userID)", logger: logger)
    }

    /// Users ordered by email, after the cursor email.
    func list(after cursor: String?, limit: Int, on connection: PostgresConnection) async throws -> [User] {
        try await decode(
            connection.query(
                "\(unescaped: Self.select) WHERE u.email > \(cursor ?? "") GROUP BY u.id ORDER BY u.email LIMIT \(limit)", logger: logger))
    }

    /// A keyset page by email: after an email in email order, or before one nearest first.
    func page(_ position: Keyset, limit: Int, on connection: PostgresConnection) async throws -> [User] {
        switch position {
        case .after(let cursor): return try await list(after: cursor, limit: limit, on: connection)
        case .before(let cursor):
            return try await decode(
                connection.query(
                    "\(unescaped: Self.select) WHERE u.email < \(cursor) GROUP BY u.id ORDER BY u.email DESC LIMIT \(limit)", logger: logger))
        }
    }

    private static let select = """
        SELECT u.id, u.tenant_id, u.email, u.display_name, u.created_at,
               coalesce(array_agg(r.role) FILTER (WHERE r.role IS NOT NULL), '{}')
        FROM users u LEFT JOIN user_roles r ON r.user_id = u.id AND r.tenant_id = u.tenant_id
        """

    private func decode(_ rows: PostgresRowSequence) async throws -> [User] {
        var users: [User] = []
        for try await (id, tenantID, email, name, created, roles) in rows.decode((UUID, UUID, String, String, Date, [String]).self) {
            users.append(
                User(
                    id: id, tenantID: tenantID, email: email, displayName: name,
                    roles: Set(roles.compactMap(TenantRole.init(rawValue:))), createdAt: created))
        }
        return users
    }
}
