import Crypto
import Foundation
import Hummingbird
import HummingbirdTesting
import JWTKit
import Testing

@testable import Portal

/// The client-credentials grant end to end: app, subscription, token, verification against JWKS.
@Suite struct OAuthTests {
    static func form(
        _ client: some TestClientProtocol, _ fields: [(String, String)], basic: (String, String)? = nil, path: String = "/t/acme/oauth2/token"
    ) async throws -> TestResponse {
        var headers: HTTPFields = [.contentType: "application/x-www-form-urlencoded"]
        if let (id, secret) = basic {
            headers[.authorization] = "Basic " + Data("\(Browser.encode(id)):\(Browser.encode(secret))".utf8).base64EncodedString()
        }
        let body = fields.map { "\(Browser.encode($0.0))=\(Browser.encode($0.1))" }.joined(separator: "&")
        return try await client.execute(uri: path, method: .post, headers: headers, body: ByteBuffer(string: body))
    }

    /// An app subscribed (actively) to the Echo API; returns client id and secret.
    static func subscribedClient(_ portal: TestPortal, _ client: some TestClientProtocol) async throws -> (id: String, secret: String) {
        let s = try await SubscriptionTests.setup(portal, client)
        _ = try await SubscriptionTests.subscribe(client, s, plan: s.freePlan)
        let detail = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/apps/\(s.appID)", token: s.world.developer))
        let clientID = (detail["app"] as? [String: Any])?["client_id"] as? String ?? ""
        let secret = try APITests.json(
            try await APITests.call(client, .post, "/t/acme/api/v1/apps/\(s.appID)/client-secrets", token: s.world.developer, body: "{}"))["secret"] as? String ?? ""
        return (clientID, secret)
    }

    @Test func clientCredentialsTokenVerifiesAgainstTheJWKS() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let (clientID, secret) = try await Self.subscribedClient(portal, client)
                // act
                let response = try await Self.form(client, [("grant_type", "client_credentials")], basic: (clientID, secret))
                // assert
                #expect(response.status == .ok)
                #expect(response.headers[.cacheControl] == "no-store")
                let body = try APITests.json(response)
                #expect(body["token_type"] as? String == "Bearer")
                #expect(body["expires_in"] as? Int == 3600)
                #expect(body["scope"] as? String == "echo")
                let token = body["access_token"] as? String ?? ""
                let jwks = String(buffer: try await client.execute(uri: "/t/acme/.well-known/jwks.json", method: .get).body)
                let keys = try await JWTKeyCollection().add(jwksJSON: jwks)
                let claims = try await keys.verify(token, as: AccessTokenClaims.self)
                #expect(claims.client_id == clientID)
                #expect(claims.sub == clientID)
                #expect(claims.aud == "urn:tollgate:gateway:acme")
                #expect(claims.iss.hasSuffix("/t/acme"))
                #expect(claims.exp - claims.iat == 3600)
                let header = try JSONSerialization.jsonObject(with: Data(Base64URL.decode(String(token.split(separator: ".")[0])) ?? [])) as? [String: Any]
                #expect(header?["typ"] as? String == "at+jwt")
                #expect(header?["alg"] as? String == "ES256")
                // client_secret_post works too
                let posted = try await Self.form(client, [("grant_type", "client_credentials"), ("client_id", clientID), ("client_secret", secret)])
                #expect(posted.status == .ok)
            }
        }
    }

    @Test func errorsFollowRFC6749() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let (clientID, secret) = try await Self.subscribedClient(portal, client)
                let wrong = try await Self.form(client, [("grant_type", "client_credentials")], basic: (clientID, "tgs_wrong"))
                #expect(wrong.status == .unauthorized)
                #expect(try APITests.json(wrong)["error"] as? String == "invalid_client")
                #expect(wrong.headers[.wwwAuthenticate]?.hasPrefix("Basic") == true)
                let grant = try await Self.form(client, [("grant_type", "password")], basic: (clientID, secret))
                #expect(try APITests.json(grant)["error"] as? String == "unsupported_grant_type")
                let missing = try await Self.form(client, [], basic: (clientID, secret))
                #expect(try APITests.json(missing)["error"] as? String == "invalid_request")
                let scope = try await Self.form(client, [("grant_type", "client_credentials"), ("scope", "echo billing")], basic: (clientID, secret))
                #expect(scope.status == .badRequest)
                #expect(try APITests.json(scope)["error"] as? String == "invalid_scope")
                let both = try await Self.form(
                    client, [("grant_type", "client_credentials"), ("client_id", clientID), ("client_secret", secret)], basic: (clientID, secret))
                #expect(try APITests.json(both)["error"] as? String == "invalid_request")
            }
        }
    }

    @Test func repeatedClientAuthenticationFailuresAreThrottled() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let (clientID, secret) = try await Self.subscribedClient(portal, client)
                for _ in 0..<10 { _ = try await Self.form(client, [("grant_type", "client_credentials")], basic: (clientID, "tgs_guess")) }
                let blocked = try await Self.form(client, [("grant_type", "client_credentials")], basic: (clientID, secret))
                #expect(blocked.status == .unauthorized)
                #expect((try APITests.json(blocked)["error_description"] as? String)?.contains("Too many") == true)
            }
        }
    }

    @Test func rotationKeepsTheOldKeyPublished() async throws {
        try await TestPortal.with { portal in
            let tenant = try await Fixtures.tenant(portal.database, slug: "acme")
            let store = SigningKeyStore(secret: portal.services.secret, logger: portal.database.logger)
            let (first, second) = try await portal.database.withTenant(tenant.id) { connection in
                let first = try await store.current(tenantID: tenant.id, on: connection)
                let second = try await store.rotate(tenantID: tenant.id, tokenLifetime: .seconds(3600), on: connection)
                return (first.kid, second.kid)
            }
            try await portal.application().test(.router) { client in
                let jwks = try APITests.json(try await client.execute(uri: "/t/acme/.well-known/jwks.json", method: .get))
                let kids = (jwks["keys"] as? [[String: Any]])?.compactMap { $0["kid"] as? String } ?? []
                #expect(Set(kids) == [first, second])
                let meta = try APITests.json(try await client.execute(uri: "/.well-known/oauth-authorization-server/t/acme", method: .get))
                #expect((meta["token_endpoint"] as? String)?.hasSuffix("/t/acme/oauth2/token") == true)
                #expect((meta["grant_types_supported"] as? [String]) == ["client_credentials"])
            }
            // once the old tokens' lifetime has passed the old key is no longer published
            try await portal.database.withTenant(tenant.id) { connection in
                try await connection.query("UPDATE signing_keys SET published_until = now() - interval '1 second' WHERE retired_at IS NOT NULL", logger: portal.database.logger)
            }
            let published = try await portal.database.withTenant(tenant.id) { try await store.published(on: $0).map(\.kid) }
            #expect(published == [second])
        }
    }

    @Test func introspectionAndRevocation() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let (clientID, secret) = try await Self.subscribedClient(portal, client)
                let token = try APITests.json(try await Self.form(client, [("grant_type", "client_credentials")], basic: (clientID, secret)))["access_token"] as? String ?? ""
                let introspect = "/t/acme/oauth2/introspect"
                let active = try APITests.json(try await Self.form(client, [("token", token)], basic: (clientID, secret), path: introspect))
                #expect(active["active"] as? Bool == true)
                #expect(active["client_id"] as? String == clientID)
                #expect(active["scope"] as? String == "echo")
                let garbage = try APITests.json(try await Self.form(client, [("token", "not.a.jwt")], basic: (clientID, secret), path: introspect))
                #expect(garbage["active"] as? Bool == false)
                let unauthenticated = try await Self.form(client, [("token", token)], basic: (clientID, "tgs_nope"), path: introspect)
                #expect(unauthenticated.status == .unauthorized)
                // revoke: 200 even for junk, and the real token turns inactive
                #expect(try await Self.form(client, [("token", "junk")], basic: (clientID, secret), path: "/t/acme/oauth2/revoke").status == .ok)
                #expect(try await Self.form(client, [("token", token)], basic: (clientID, secret), path: "/t/acme/oauth2/revoke").status == .ok)
                let after = try APITests.json(try await Self.form(client, [("token", token)], basic: (clientID, secret), path: introspect))
                #expect(after["active"] as? Bool == false)
            }
        }
    }

    @Test func jwkCarriesTheCurvePoint() {
        let key = P256.Signing.PrivateKey()
        let jwk = SigningKey(kid: "k1", privateKey: key, publicKey: key.publicKey, retiredAt: nil).jwk
        #expect(jwk["kty"] == "EC")
        #expect(jwk["crv"] == "P-256")
        #expect(Base64URL.decode(jwk["x"] ?? "")?.count == 32)
        #expect(Base64URL.decode(jwk["y"] ?? "")?.count == 32)
    }
}
