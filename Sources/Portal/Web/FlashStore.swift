import Crypto
import Foundation
import Logging
import PostgresNIO

/// One-time messages (and secrets shown once) carried across a post/redirect/get, kept in
/// PostgreSQL (`web_flashes`, migration 0021) so that any portal process behind a load balancer
/// shows them, and a restart does not lose them.
///
/// A flash belongs to one browser: the row's key is HMAC(server key, its session token or, before
/// sign-in, its anonymous CSRF cookie), never the token itself; the message is sealed with
/// AES-GCM under the server key with that key as associated data, so a database reader learns no
/// secret and a row copied to another browser does not open. It is scoped like its page (the
/// tenant's RLS scope, or none for the platform console), read at most once (DELETE ...
/// RETURNING) and expires after `lifetime`; expired rows are deleted when the next one is written.
struct FlashStore: Sendable {
    static let lifetime: TimeInterval = 300

    let database: Database
    let secret: SecretKey
    let logger: Logger

    /// Stores `flash` for the browser behind `context` (it replaces one still unread).
    func put(_ flash: Flash, for context: AppRequestContext) async throws {
        guard let binding = context.csrfBinding else { return }
        try await put(flash, tenantID: context.tenant?.id, binding: binding)
    }

    /// The browser's pending flash, deleted as it is read; nil when there is none, it expired, or
    /// it does not open (another server key, or a row moved to another browser).
    func take(for context: AppRequestContext) async throws -> Flash? {
        guard let binding = context.csrfBinding else { return nil }
        return try await take(tenantID: context.tenant?.id, binding: binding)
    }

    func put(_ flash: Flash, tenantID: UUID?, binding: String) async throws {
        let key = Self.key(binding, secret: secret)
        let sealed = try AES.GCM.seal(JSONEncoder().encode(flash), using: secret.key, authenticating: key).combined ?? Data()
        let expires = Date().addingTimeInterval(Self.lifetime)
        try await scoped(tenantID) { connection in
            try await connection.query("DELETE FROM web_flashes WHERE expires_at < now() OR binding_hash = \(key)", logger: logger)
            try await connection.query(
                "INSERT INTO web_flashes (tenant_id, binding_hash, sealed, expires_at) VALUES (\(tenantID), \(key), \(sealed), \(expires))", logger: logger)
        }
    }

    func take(tenantID: UUID?, binding: String) async throws -> Flash? {
        let key = Self.key(binding, secret: secret)
        let rows = try await scoped(tenantID) { connection -> [(Data, Date)] in
            var found: [(Data, Date)] = []
            let rows = try await connection.query(
                "DELETE FROM web_flashes WHERE binding_hash = \(key) RETURNING sealed, expires_at", logger: logger)
            for try await row in rows.decode((Data, Date).self) { found.append(row) }
            return found
        }
        guard let (sealed, expires) = rows.max(by: { $0.1 < $1.1 }), expires > Date() else { return nil }
        guard let box = try? AES.GCM.SealedBox(combined: sealed), let plain = try? AES.GCM.open(box, using: secret.key, authenticating: key) else {
            logger.warning("a one-time message did not open with this server key and browser; dropped")
            return nil
        }
        return try? JSONDecoder().decode(Flash.self, from: plain)
    }

    /// The row key of a browser binding: an HMAC, so the table never holds a usable session token.
    static func key(_ binding: String, secret: SecretKey) -> Data {
        Data(secret.mac("flash|" + binding))
    }

    private func scoped<Result: Sendable>(_ tenantID: UUID?, _ body: (PostgresConnection) async throws -> Result) async throws -> Result {
        if let tenantID { return try await database.withTenant(tenantID, body) }
        return try await database.withPlatform(body)
    }
}

extension PortalServices {
    /// The one-time messages of the web pages (in PostgreSQL, shared by every portal process).
    var flashes: FlashStore { FlashStore(database: database, secret: secret, logger: logger) }
}
