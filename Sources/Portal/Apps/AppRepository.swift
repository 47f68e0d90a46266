import Foundation
import Logging
import PostgresNIO

/// SQL for apps and their credentials, inside a tenant transaction.
struct AppRepository: Sendable {
    let logger: Logger

    func create(tenantID: UUID, _ new: NewApp, on connection: PostgresConnection) async throws -> ConsumerApp {
        do {
            let rows = try await connection.query(
                """
                INSERT INTO apps (tenant_id, team_id, name, description, callback_url, client_id)
                VALUES (\(tenantID), \(new.teamID), \(new.name), \(new.description), \(new.callbackURL), \(CredentialRules.generateClientID()))
                RETURNING \(unescaped: Self.columns)
                """, logger: logger)
            guard let app = try await decode(rows).first else { throw AppError.conflict("App was not created.") }
            return app
        } catch where error.postgresCode == .uniqueViolation {
            throw AppError.conflict("The team already has an app named \(new.name).", fields: ["name": "Already used."])
        }
    }

    func find(id: UUID, on connection: PostgresConnection) async throws -> ConsumerApp? {
        try await decode(connection.query("SELECT \(unescaped: Self.columns) FROM apps WHERE id = \(id)", logger: logger)).first
    }

    /// Apps of the given teams (nil: every app of the tenant), by name.
    func list(teamIDs: [UUID]?, on connection: PostgresConnection) async throws -> [ConsumerApp] {
        if let teamIDs {
            return try await decode(
                connection.query(
                    "SELECT \(unescaped: Self.columns) FROM apps WHERE team_id = ANY(\(teamIDs)) ORDER BY lower(name), id", logger: logger))
        }
        return try await decode(connection.query("SELECT \(unescaped: Self.columns) FROM apps ORDER BY lower(name), id", logger: logger))
    }

    func addCredential(
        tenantID: UUID, appID: UUID, kind: AppCredential.Kind, name: String, secret: SecretToken, expiresInDays: Int?, on connection: PostgresConnection
    ) async throws -> AppCredential {
        let rows = try await connection.query(
            """
            INSERT INTO app_credentials (tenant_id, app_id, kind, name, prefix, secret_hash, expires_at)
            VALUES (\(tenantID), \(appID), \(kind.rawValue), \(name), \(secret.displayPrefix), \(Data(secret.sha256)),
                    CASE WHEN \(expiresInDays)::int IS NULL THEN NULL ELSE now() + make_interval(days => \(expiresInDays)::int) END)
            RETURNING id, kind, name, prefix, created_at, expires_at, revoked_at
            """, logger: logger)
        guard let credential = try await decodeCredentials(rows).first else { throw AppError.conflict("Credential was not created.") }
        return credential
    }

    func credentials(appID: UUID, on connection: PostgresConnection) async throws -> [AppCredential] {
        try await decodeCredentials(
            connection.query(
                """
                SELECT id, kind, name, prefix, created_at, expires_at, revoked_at FROM app_credentials
                WHERE app_id = \(appID) ORDER BY created_at DESC, id
                """, logger: logger))
    }

    func revokeCredential(id: UUID, appID: UUID, on connection: PostgresConnection) async throws -> AppCredential? {
        try await decodeCredentials(
            connection.query(
                """
                UPDATE app_credentials SET revoked_at = coalesce(revoked_at, now()) WHERE id = \(id) AND app_id = \(appID)
                RETURNING id, kind, name, prefix, created_at, expires_at, revoked_at
                """, logger: logger)
        ).first
    }

    /// Serialises credential changes of one app (the "two active secrets" rule must not race).
    func lock(appID: UUID, on connection: PostgresConnection) async throws {
        try await connection.query("SELECT id FROM apps WHERE id = \(appID) FOR UPDATE", logger: logger)
    }

    private static let columns = "id, team_id, name, description, callback_url, client_id, created_at"

    private func decode(_ rows: PostgresRowSequence) async throws -> [ConsumerApp] {
        var apps: [ConsumerApp] = []
        for try await (id, team, name, description, callback, clientID, created) in rows.decode(
            (UUID, UUID, String, String, String?, String, Date).self)
        {
            apps.append(ConsumerApp(id: id, teamID: team, name: name, description: description, callbackURL: callback, clientID: clientID, createdAt: created))
        }
        return apps
    }

    private func decodeCredentials(_ rows: PostgresRowSequence) async throws -> [AppCredential] {
        var result: [AppCredential] = []
        for try await (id, kind, name, prefix, created, expires, revoked) in rows.decode((UUID, String, String, String, Date, Date?, Date?).self) {
            result.append(
                AppCredential(
                    id: id, kind: AppCredential.Kind(rawValue: kind) ?? .apiKey, name: name, prefix: prefix, createdAt: created, expiresAt: expires,
                    revokedAt: revoked))
        }
        return result
    }
}
