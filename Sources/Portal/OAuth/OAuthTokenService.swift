import Crypto
import Foundation
import JWTKit
import Logging
import PostgresNIO

/// Claims of an access token (RFC 9068 JWT profile).
struct AccessTokenClaims: JWTPayload, Equatable {
    var iss: String
    var sub: String
    var aud: String
    var client_id: String
    var scope: String?
    var jti: String
    var iat: Int
    var exp: Int

    func verify(using algorithm: some JWTAlgorithm) async throws {
        guard Double(exp) > Date().timeIntervalSince1970 else { throw JWTError.claimVerificationFailure(failedClaim: nil, reason: "expired") }
    }
}

/// The client-credentials grant: authenticates the app, works out the scope from its active
/// subscriptions, and signs an ES256 access token with the tenant's current key.
struct OAuthTokenService: Sendable {
    let database: Database
    let keys: SigningKeyStore
    let throttle: LoginThrottle
    let tokenLifetime: Duration
    let logger: Logger

    /// RFC 6749 §5.2 error.
    struct OAuthError: Error, Equatable {
        let code: String
        let description: String
        let status: Int

        init(code: String, description: String, status: Int? = nil) {
            self.code = code
            self.description = description
            self.status = status ?? (code == "invalid_client" ? 401 : (code == "slow_down" ? 429 : 400))
        }
    }

    struct IssuedToken: Sendable {
        let accessToken: String
        let expiresIn: Int
        let scope: String
    }

    static func audience(tenantSlug: String) -> String { "urn:tollgate:gateway:\(tenantSlug)" }

    func issue(tenant: Tenant, issuer: String, clientID: String, clientSecret: String, requestedScope: String?, clientIP: String) async throws
        -> Result<IssuedToken, OAuthError>
    {
        let clientID = TextInput.sanitized(clientID, maxLength: 100)
        return try await database.withTenant(tenant.id) { connection -> Result<IssuedToken, OAuthError> in
            let appID: UUID
            switch try await authenticateClient(tenantID: tenant.id, clientID: clientID, secret: clientSecret, clientIP: clientIP, on: connection) {
            case .failure(let error): return .failure(error)
            case .success(let id): appID = id
            }
            let subscribed = try await subscribedAPISlugs(appID: appID, on: connection)
            var scopes = subscribed
            if let requested = requestedScope?.split(separator: " ").map(String.init), !requested.isEmpty {
                if let unknown = requested.first(where: { !subscribed.contains($0) }) {
                    return .failure(OAuthError(code: "invalid_scope", description: "The app has no active subscription to '\(unknown)'."))
                }
                scopes = Set(requested)
            }
            let key = try await keys.current(tenantID: tenant.id, on: connection)
            guard let privateKey = key.privateKey else { throw AppError.conflict("No usable signing key.") }
            let now = Int(Date().timeIntervalSince1970)
            let lifetime = Int(tokenLifetime.components.seconds)
            let scope = scopes.sorted().joined(separator: " ")
            let claims = AccessTokenClaims(
                iss: issuer, sub: clientID, aud: Self.audience(tenantSlug: tenant.slug), client_id: clientID, scope: scope.isEmpty ? nil : scope,
                jti: UUID().uuidString.lowercased(), iat: now, exp: now + lifetime)
            let collection = JWTKeyCollection()
            await collection.add(ecdsa: try ES256PrivateKey(pem: privateKey.pemRepresentation), kid: JWKIdentifier(string: key.kid))
            var header = JWTHeader()
            header.typ = "at+jwt"
            let token = try await collection.sign(claims, kid: JWKIdentifier(string: key.kid), header: header)
            return .success(IssuedToken(accessToken: token, expiresIn: lifetime, scope: scope))
        }
    }

    /// Client authentication shared by the token, introspection and revocation endpoints, behind
    /// the failure throttle.
    func authenticateClient(tenantID: UUID, clientID: String, secret: String, clientIP: String, on connection: PostgresConnection) async throws
        -> Result<UUID, OAuthError>
    {
        let throttleKey = clientID
        if try await throttle.retryAfter(email: throttleKey, clientIP: clientIP, tenantID: tenantID, on: connection) != nil {
            return .failure(OAuthError(code: "invalid_client", description: "Too many failed attempts; try again later."))
        }
        guard let appID = try await authenticate(clientID: clientID, secret: secret, on: connection) else {
            try await throttle.recordFailure(email: throttleKey, clientIP: clientIP, tenantID: tenantID, on: connection)
            return .failure(OAuthError(code: "invalid_client", description: "Client authentication failed."))
        }
        try await throttle.recordSuccess(email: throttleKey, tenantID: tenantID, on: connection)
        return .success(appID)
    }

    /// Verified claims of one of this tenant's tokens (signature by a published key, not expired,
    /// not revoked), or nil.
    func verify(token: String, tenant: Tenant, on connection: PostgresConnection) async throws -> AccessTokenClaims? {
        let collection = JWTKeyCollection()
        for key in try await keys.published(on: connection) {
            await collection.add(ecdsa: try ES256PublicKey(pem: key.publicKey.pemRepresentation), kid: JWKIdentifier(string: key.kid))
        }
        guard let claims = try? await collection.verify(token, as: AccessTokenClaims.self),
            claims.aud == Self.audience(tenantSlug: tenant.slug)
        else { return nil }
        let rows = try await connection.query("SELECT 1 FROM revoked_tokens WHERE jti = \(claims.jti)", logger: logger)
        for try await _ in rows.decode(Int.self) { return nil }
        return claims
    }

    /// Records a token as revoked until it would have expired anyway.
    func revoke(_ claims: AccessTokenClaims, tenantID: UUID, on connection: PostgresConnection) async throws {
        try await connection.query(
            """
            INSERT INTO revoked_tokens (tenant_id, jti, expires_at) VALUES (\(tenantID), \(claims.jti), to_timestamp(\(Double(claims.exp))))
            ON CONFLICT DO NOTHING
            """, logger: logger)
        try await connection.query("DELETE FROM revoked_tokens WHERE expires_at < now() - interval '1 day'", logger: logger)
    }

    /// The app id for valid client credentials (an active client secret, compared in constant time).
    private func authenticate(clientID: String, secret: String, on connection: PostgresConnection) async throws -> UUID? {
        let rows = try await connection.query(
            """
            SELECT a.id, c.secret_hash FROM apps a JOIN app_credentials c ON c.app_id = a.id
            WHERE a.client_id = \(clientID) AND c.kind = 'client_secret' AND c.revoked_at IS NULL AND (c.expires_at IS NULL OR c.expires_at > now())
            """, logger: logger)
        let presented = SecretToken.sha256(secret)
        var match: UUID?
        for try await (appID, stored) in rows.decode((UUID, Data).self) where constantTimeEquals(Array(stored), presented) { match = appID }
        return match
    }

    private func subscribedAPISlugs(appID: UUID, on connection: PostgresConnection) async throws -> Set<String> {
        let rows = try await connection.query(
            """
            SELECT DISTINCT api.slug FROM subscriptions s JOIN apis api ON api.id = s.api_id JOIN apps a ON a.id = s.app_id
            WHERE s.app_id = \(appID) AND s.state = 'active' AND api.state IN ('published', 'deprecated')
                AND tollgate_api_open_to_team(api.id, a.team_id)
            """, logger: logger)
        var slugs = Set<String>()
        for try await slug in rows.decode(String.self) { slugs.insert(slug) }
        return slugs
    }
}
