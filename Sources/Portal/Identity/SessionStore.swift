import Foundation
import Logging
import PostgresNIO

/// Who a browser session belongs to.
enum SessionOwner: Sendable, Equatable {
    case user(tenantID: UUID, userID: UUID)
    case platformAdmin(UUID)
}

/// A live session as loaded for a request.
struct Session: Sendable, Equatable {
    let token: String
    let owner: SessionOwner
}

/// Server-side sessions in Postgres, keyed by SHA-256 of the cookie value.
///
/// A session ends after `idleTimeout` without requests or `absoluteTimeout` after login,
/// whichever comes first; logout deletes the row.
struct SessionStore: Sendable {
    let idleTimeout: Duration
    let absoluteTimeout: Duration
    let logger: Logger

    func create(owner: SessionOwner, clientIP: String?, userAgent: String?, on connection: PostgresConnection) async throws -> Session {
        let token = SecretToken.generate(prefix: "")
        let absolute = Int(absoluteTimeout.components.seconds)
        let hash = Data(token.sha256)
        switch owner {
        case .user(let tenantID, let userID):
            try await connection.query(
                """
                INSERT INTO sessions (id_hash, tenant_id, user_id, expires_at, client_ip, user_agent)
                VALUES (\(hash), \(tenantID), \(userID), now() + make_interval(secs => \(absolute)), \(clientIP), \(userAgent.map { String($0.prefix(300)) }))
                """, logger: logger)
        case .platformAdmin(let adminID):
            try await connection.query(
                """
                INSERT INTO sessions (id_hash, platform_admin_id, expires_at, client_ip, user_agent)
                VALUES (\(hash), \(adminID), now() + make_interval(secs => \(absolute)), \(clientIP), \(userAgent.map { String($0.prefix(300)) }))
                """, logger: logger)
        }
        return Session(token: token.value, owner: owner)
    }

    /// The session for a cookie value, if it exists and has not expired; refreshes its idle clock.
    func find(token: String, on connection: PostgresConnection) async throws -> Session? {
        let hash = Data(SecretToken.sha256(token))
        let idle = Int(idleTimeout.components.seconds)
        let rows = try await connection.query(
            """
            UPDATE sessions SET last_seen_at = now()
            WHERE id_hash = \(hash) AND expires_at > now() AND last_seen_at > now() - make_interval(secs => \(idle))
            RETURNING tenant_id, user_id, platform_admin_id
            """, logger: logger)
        for try await (tenantID, userID, adminID) in rows.decode((UUID?, UUID?, UUID?).self) {
            if let tenantID, let userID { return Session(token: token, owner: .user(tenantID: tenantID, userID: userID)) }
            if let adminID { return Session(token: token, owner: .platformAdmin(adminID)) }
        }
        return nil
    }

    func delete(token: String, on connection: PostgresConnection) async throws {
        try await connection.query("DELETE FROM sessions WHERE id_hash = \(Data(SecretToken.sha256(token)))", logger: logger)
    }

    /// Ends every other session of a user (after a password change).
    func deleteOthers(userID: UUID, keeping token: String, on connection: PostgresConnection) async throws {
        try await connection.query(
            "DELETE FROM sessions WHERE user_id = \(userID) AND id_hash <> \(Data(SecretToken.sha256(token)))", logger: logger)
    }
}
