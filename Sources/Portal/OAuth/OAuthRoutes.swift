import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdAuth
import PostgresNIO

/// The tenant's OAuth2 authorization server: token endpoint (client credentials), JWKS and
/// RFC 8414 metadata. Errors follow RFC 6749 §5.2, not problem+json.
struct OAuthRoutes: Sendable {
    let services: PortalServices
    let tokens: OAuthTokenService

    init(services: PortalServices, secret: SecretKey) {
        self.services = services
        self.tokens = OAuthTokenService(
            database: services.database, keys: SigningKeyStore(secret: secret, logger: services.logger),
            throttle: LoginThrottle(budget: .oauthClient, perAccount: 10, perClient: 60, logger: services.logger), tokenLifetime: services.config.accessTokenLifetime,
            logger: services.logger)
    }

    func addRoutes(tenant group: RouterGroup<AppRequestContext>, root router: Router<AppRequestContext>) {
        group.post("/oauth2/token", use: token)
        group.post("/oauth2/introspect", use: introspect)
        group.post("/oauth2/revoke", use: revoke)
        group.get("/.well-known/jwks.json", use: jwks)
        group.get("/.well-known/oauth-authorization-server", use: metadata)
        router.group("/.well-known/oauth-authorization-server/t/:tenant")
            .add(middleware: TenantMiddleware(database: services.database, tenants: services.tenants))
            .get(use: metadata)
    }

    /// `grant_type=client_credentials` with `client_secret_basic` or `client_secret_post`.
    @Sendable func token(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let form: FormData, clientID: String, secret: String
        switch try await Self.clientRequest(request) {
        case .failure(let error): return Self.error(error)
        case .success(let parsed): (form, clientID, secret) = parsed
        }
        guard let grant = form["grant_type"], !grant.isEmpty else {
            return Self.error(.init(code: "invalid_request", description: "grant_type is required."))
        }
        guard grant == "client_credentials" else {
            return Self.error(.init(code: "unsupported_grant_type", description: "Only client_credentials is supported."))
        }
        let issuer = services.publicBase(tenant)
        switch try await tokens.issue(
            tenant: tenant, issuer: issuer, clientID: clientID, clientSecret: secret, requestedScope: form["scope"], clientIP: context.clientIP)
        {
        case .failure(let error):
            return Self.error(error)
        case .success(let issued):
            var object: [String: Any] = ["access_token": issued.accessToken, "token_type": "Bearer", "expires_in": issued.expiresIn]
            if !issued.scope.isEmpty { object["scope"] = issued.scope }
            return Self.json(object, status: .ok)
        }
    }

    /// RFC 7662: a client may introspect only its own tokens; anything else is `{"active": false}`.
    @Sendable func introspect(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await withClientAndToken(request, context) { tenant, claims, _ in
            guard let claims else { return Self.json(["active": false], status: .ok) }
            var body: [String: Any] = [
                "active": true, "client_id": claims.client_id, "sub": claims.sub, "aud": claims.aud, "iss": claims.iss, "exp": claims.exp,
                "iat": claims.iat, "jti": claims.jti, "token_type": "Bearer",
            ]
            if let scope = claims.scope { body["scope"] = scope }
            return Self.json(body, status: .ok)
        }
    }

    /// RFC 7009: revokes the client's own token; answers 200 whether or not the token was valid.
    @Sendable func revoke(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await withClientAndToken(request, context) { tenant, claims, connection in
            if let claims { try await tokens.revoke(claims, tenantID: tenant.id, on: connection) }
            return Response(status: .ok, headers: [.cacheControl: "no-store"])
        }
    }

    /// Authenticates the client and verifies the `token` parameter; `body` gets the token's claims
    /// only if the token is valid and was issued to this client.
    private func withClientAndToken(
        _ request: Request, _ context: AppRequestContext,
        _ body: (Tenant, AccessTokenClaims?, PostgresConnection) async throws -> Response
    ) async throws -> Response {
        let tenant = try context.requireTenant()
        let form: FormData, clientID: String, secret: String
        switch try await Self.clientRequest(request) {
        case .failure(let error): return Self.error(error)
        case .success(let parsed): (form, clientID, secret) = parsed
        }
        guard let token = form["token"], !token.isEmpty else { return Self.error(.init(code: "invalid_request", description: "token is required.")) }
        return try await services.database.withTenant(tenant.id) { connection in
            if case .failure(let error) = try await tokens.authenticateClient(
                tenantID: tenant.id, clientID: clientID, secret: secret, clientIP: context.clientIP, on: connection)
            {
                return Self.error(error)
            }
            let claims = try await tokens.verify(token: token, tenant: tenant, on: connection)
            return try await body(tenant, claims?.client_id == clientID ? claims : nil, connection)
        }
    }

    /// A token, introspection or revocation request is a few hundred bytes; 16 KiB leaves room.
    static let maxBodyBytes = 16 * 1024

    /// The form and client credentials of an endpoint request (Basic or in the body, not both).
    static func clientRequest(_ request: Request) async throws -> Result<(FormData, String, String), OAuthTokenService.OAuthError> {
        guard (request.headers[.contentType] ?? "").hasPrefix("application/x-www-form-urlencoded") else {
            return .failure(.init(code: "invalid_request", description: "Send the request as application/x-www-form-urlencoded."))
        }
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: Self.maxBodyBytes)
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            return .failure(.init(code: "invalid_request", description: "The request body is larger than \(Self.maxBodyBytes / 1024) KiB.", status: 413))
        }
        let form = FormData(urlencoded: String(buffer: body))
        // RFC 6749 §3.2: parameters must not be included more than once.
        var seen = Set<String>()
        if let repeated = form.pairs.first(where: { !seen.insert($0.0).inserted }) {
            return .failure(.init(code: "invalid_request", description: "The parameter \(TextInput.sanitized(repeated.0, maxLength: 40)) is repeated."))
        }
        let basic = request.headers.basic
        if basic != nil && (form["client_id"] != nil || form["client_secret"] != nil) {
            return .failure(.init(code: "invalid_request", description: "Use one client authentication method, not two."))
        }
        // RFC 6749 §2.3.1: Basic credentials are form-urlencoded before base64.
        let clientID = basic.map { $0.username.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? $0.username } ?? form["client_id"]
        let secret = basic.map { $0.password.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? $0.password } ?? form["client_secret"]
        guard let clientID, let secret, !clientID.isEmpty, !secret.isEmpty else {
            return .failure(.init(code: "invalid_client", description: "Client authentication is required."))
        }
        return .success((form, TextInput.sanitized(clientID, maxLength: 100), secret))
    }

    /// The tenant's public signing keys (current and recently rotated).
    @Sendable func jwks(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let keys = try await services.database.withTenant(tenant.id) { connection -> [[String: String]] in
            var published = try await tokens.keys.published(on: connection)
            if published.isEmpty { published = [try await tokens.keys.current(tenantID: tenant.id, on: connection)] }
            return published.map(\.jwk)
        }
        var response = Self.json(["keys": keys], status: .ok)
        response.headers[.cacheControl] = "public, max-age=300"
        return response
    }

    /// RFC 8414 authorization server metadata: the endpoints that exist and nothing else. The
    /// issuer comes from configuration, so a forged Host cannot reach this (publicly cached) answer.
    @Sendable func metadata(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let issuer = services.publicBase(tenant)
        let scopes = try await services.catalog.list(tenant: tenant, viewer: nil, after: nil, limit: 500)
            .filter { $0.state.servesTraffic && $0.visibility == .public }.map(\.slug)
        let clientAuth = ["client_secret_basic", "client_secret_post"]
        var response = Self.json(
            [
                "issuer": issuer, "token_endpoint": issuer + "/oauth2/token", "jwks_uri": issuer + "/.well-known/jwks.json",
                "introspection_endpoint": issuer + "/oauth2/introspect", "revocation_endpoint": issuer + "/oauth2/revoke",
                "grant_types_supported": ["client_credentials"], "token_endpoint_auth_methods_supported": clientAuth,
                "introspection_endpoint_auth_methods_supported": clientAuth, "revocation_endpoint_auth_methods_supported": clientAuth,
                // No authorization endpoint, so no response type (RFC 8414 requires the member).
                "response_types_supported": [String](),
                "scopes_supported": Array(Set(scopes)).sorted(),
            ], status: .ok)
        response.headers[.cacheControl] = "public, max-age=300"
        return response
    }

    static func error(_ error: OAuthTokenService.OAuthError) -> Response {
        var response = json(["error": error.code, "error_description": error.description], status: .init(code: error.status))
        if error.code == "invalid_client" { response.headers[.wwwAuthenticate] = "Basic realm=\"tollgate\"" }
        return response
    }

    static func json(_ object: [String: Any], status: HTTPResponse.Status) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return Response(
            status: status, headers: [.contentType: "application/json", .cacheControl: "no-store", .pragma: "no-cache"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

extension HTTPField.Name {
    static let pragma = Self("Pragma")!
}
