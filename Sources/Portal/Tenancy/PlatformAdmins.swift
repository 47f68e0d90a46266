import Foundation
import Logging
import PostgresNIO

/// Installation operators and their API tokens (platform level, no tenant).
struct PlatformAdminRepository: Sendable {
    let logger: Logger
    static let tokenPrefix = "tgx_"

    func create(email: String, passwordHash: String, on connection: PostgresConnection) async throws -> UUID {
        do {
            let rows = try await connection.query(
                "INSERT INTO platform_admins (email, password_hash) VALUES (\(Email.normalize(email)), \(passwordHash)) RETURNING id",
                logger: logger)
            for try await id in rows.decode(UUID.self) { return id }
            throw AppError.conflict("Platform admin was not created.")
        } catch where error.postgresCode == .uniqueViolation {
            throw AppError.conflict("A platform admin with this email exists.", fields: ["email": "Already registered."])
        }
    }

    func find(email: String, on connection: PostgresConnection) async throws -> (id: UUID, passwordHash: String)? {
        let rows = try await connection.query(
            "SELECT id, password_hash FROM platform_admins WHERE email = \(Email.normalize(email))", logger: logger)
        for try await (id, hash) in rows.decode((UUID, String).self) { return (id, hash) }
        return nil
    }

    func email(id: UUID, on connection: PostgresConnection) async throws -> String? {
        let rows = try await connection.query("SELECT email FROM platform_admins WHERE id = \(id)", logger: logger)
        for try await email in rows.decode(String.self) { return email }
        return nil
    }

    func createToken(adminID: UUID, name: String, on connection: PostgresConnection) async throws -> String {
        let secret = SecretToken.generate(prefix: Self.tokenPrefix)
        try await connection.query(
            """
            INSERT INTO platform_tokens (platform_admin_id, name, prefix, token_hash)
            VALUES (\(adminID), \(name), \(secret.displayPrefix), \(Data(secret.sha256)))
            """, logger: logger)
        return secret.value
    }

    func authenticate(token: String, on connection: PostgresConnection) async throws -> UUID? {
        guard token.hasPrefix(Self.tokenPrefix) else { return nil }
        let hash = SecretToken.sha256(token)
        let rows = try await connection.query(
            """
            SELECT platform_admin_id, token_hash FROM platform_tokens
            WHERE token_hash = \(Data(hash)) AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
            """, logger: logger)
        for try await (id, stored) in rows.decode((UUID, Data).self) where constantTimeEquals(Array(stored), hash) { return id }
        return nil
    }
}
