import Foundation
import Logging
import PostgresNIO

/// Limits password guessing: at most `perAccount` failures per account and `perClient` per client
/// IP within `window`. Counts live in Postgres so several portal processes share them.
///
/// Each `Budget` counts apart: failed OAuth client authentications from an address never lock
/// people out of the browser sign-in from that address, nor the other way round.
struct LoginThrottle: Sendable {
    enum Budget: String, Sendable {
        /// Browser and platform sign-ins (accounts are email addresses).
        case signIn = "login"
        /// OAuth2 client authentication at the token, introspection and revocation endpoints.
        case oauthClient = "oauth"
    }

    var budget: Budget = .signIn
    var perAccount = 5
    var perClient = 30
    var window: Duration = .seconds(15 * 60)
    let logger: Logger

    func accountKey(_ account: String) -> String {
        budget.rawValue + ":account:" + (budget == .signIn ? Email.normalize(account) : account)
    }
    func clientKey(_ ip: String) -> String { budget.rawValue + ":ip:" + ip }

    /// Seconds until the next attempt is allowed, or nil if one is allowed now.
    func retryAfter(email: String, clientIP: String, tenantID: UUID?, on connection: PostgresConnection) async throws -> Int? {
        let seconds = Int(window.components.seconds)
        let rows = try await connection.query(
            """
            SELECT key, count(*)::int, extract(epoch FROM (min(at) + make_interval(secs => \(seconds)) - now()))::int
            FROM login_failures
            WHERE key IN (\(accountKey(email)), \(clientKey(clientIP)))
              AND tenant_id IS NOT DISTINCT FROM \(tenantID)
              AND at > now() - make_interval(secs => \(seconds))
            GROUP BY key
            """, logger: logger)
        var wait: Int?
        for try await (key, count, remaining) in rows.decode((String, Int, Int).self) {
            let limit = key == clientKey(clientIP) ? perClient : perAccount
            if count >= limit { wait = max(wait ?? 0, max(1, remaining)) }
        }
        return wait
    }

    func recordFailure(email: String, clientIP: String, tenantID: UUID?, on connection: PostgresConnection) async throws {
        try await connection.query(
            """
            INSERT INTO login_failures (tenant_id, key) VALUES (\(tenantID), \(accountKey(email))), (\(tenantID), \(clientKey(clientIP)))
            """, logger: logger)
        let seconds = Int(window.components.seconds) * 4
        try await connection.query(
            "DELETE FROM login_failures WHERE at < now() - make_interval(secs => \(seconds))", logger: logger)
    }

    func recordSuccess(email: String, tenantID: UUID?, on connection: PostgresConnection) async throws {
        try await connection.query(
            "DELETE FROM login_failures WHERE key = \(accountKey(email)) AND tenant_id IS NOT DISTINCT FROM \(tenantID)",
            logger: logger)
    }
}
