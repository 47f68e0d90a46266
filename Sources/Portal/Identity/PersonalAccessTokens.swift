import Foundation
import Logging
import PostgresNIO

/// A personal access token as listed (never with its secret).
struct PersonalAccessToken: Sendable, Equatable {
    let id: UUID
    var name: String
    var prefix: String
    var scopes: Set<TokenScope>
    var createdAt: Date
    var expiresAt: Date?
    var lastUsedAt: Date?
    var revokedAt: Date?

    var isActive: Bool { revokedAt == nil && (expiresAt.map { $0 > Date() } ?? true) }
}

/// SQL for personal access tokens. The secret is `tgp_` + 43 base64url characters (256 bits);
/// only its SHA-256 is stored.
struct PersonalAccessTokenRepository: Sendable {
    let logger: Logger
    static let prefix = "tgp_"
    static let maximumLifetimeDays = 366

    func create(
        tenantID: UUID, userID: UUID, name: String, scopes: Set<TokenScope>, expiresInDays: Int?, on connection: PostgresConnection
    ) async throws -> (PersonalAccessToken, secret: String) {
        let secret = SecretToken.generate(prefix: Self.prefix)
        let names = scopes.map(\.rawValue).sorted()
        let rows = try await connection.query(
            """
            INSERT INTO personal_access_tokens (tenant_id, user_id, name, prefix, token_hash, scopes, expires_at)
            VALUES (\(tenantID), \(userID), \(name), \(secret.displayPrefix), \(Data(secret.sha256)), \(names),
                    CASE WHEN \(expiresInDays)::int IS NULL THEN NULL ELSE now() + make_interval(days => \(expiresInDays)::int) END)
            RETURNING \(unescaped: Self.columns)
            """, logger: logger)
        guard let token = try await decode(rows).first else { throw AppError.conflict("Token was not created.") }
        return (token, secret.value)
    }

    func list(userID: UUID, on connection: PostgresConnection) async throws -> [PersonalAccessToken] {
        try await decode(
            connection.query(
                "SELECT \(unescaped: Self.columns) FROM personal_access_tokens WHERE user_id = \(userID) ORDER BY created_at DESC, id",
                logger: logger))
    }

    func revoke(id: UUID, userID: UUID, on connection: PostgresConnection) async throws -> Bool {
        let rows = try await connection.query(
            """
            UPDATE personal_access_tokens SET revoked_at = coalesce(revoked_at, now())
            WHERE id = \(id) AND user_id = \(userID) RETURNING id
            """, logger: logger)
        for try await _ in rows.decode(UUID.self) { return true }
        return false
    }

    /// The user id and scopes for an active token secret.
    func authenticate(secret: String, on connection: PostgresConnection) async throws -> (userID: UUID, scopes: Set<TokenScope>)? {
        guard secret.hasPrefix(Self.prefix) else { return nil }
        let hash = SecretToken.sha256(secret)
        let rows = try await connection.query(
            """
            UPDATE personal_access_tokens SET last_used_at = now()
            WHERE token_hash = \(Data(hash)) AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
            RETURNING user_id, scopes, token_hash
            """, logger: logger)
        for try await (userID, scopes, stored) in rows.decode((UUID, [String], Data).self) {
            // The index lookup already matched; this keeps the final decision constant-time.
            guard constantTimeEquals(Array(stored), hash) else { return nil }
            return (userID, Set(scopes.compactMap(TokenScope.init(rawValue:))))
        }
        return nil
    }

    private static let columns = "id, name, prefix, scopes, created_at, expires_at, last_used_at, revoked_at"

    private func decode(_ rows: PostgresRowSequence) async throws -> [PersonalAccessToken] {
        var tokens: [PersonalAccessToken] = []
        for try await (id, name, prefix, scopes, created, expires, used, revoked) in rows.decode(
            (UUID, String, String, [String], Date, Date?, Date?, Date?).self)
        {
            tokens.append(
                PersonalAccessToken(
                    id: id, name: name, prefix: prefix, scopes: Set(scopes.compactMap(TokenScope.init(rawValue:))),
                    createdAt: created, expiresAt: expires, lastUsedAt: used, revokedAt: revoked))
        }
        return tokens
    }
}
