import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import Portal

/// The tenant JSON API with personal access tokens.
@Suite struct APITests {
    static func token(_ portal: TestPortal, tenant: Tenant, user: User, scopes: Set<TokenScope>) async throws -> String {
        let principal = Principal(user: user, teamRoles: [:], scopes: nil)
        return try await portal.services.tokenService.create(
            tenant: tenant, actor: principal, .init(name: "test", scopes: scopes, expiresInDays: nil), clientIP: nil
        ).secret
    }

    static func json(_ response: TestResponse) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any] ?? [:]
    }

    static func call(
        _ client: some TestClientProtocol, _ method: HTTPRequest.Method, _ path: String, token: String?, body: String? = nil
    ) async throws -> TestResponse {
        var headers: HTTPFields = [:]
        if let token { headers[.authorization] = "Bearer \(token)" }
        if body != nil { headers[.contentType] = "application/json" }
        return try await client.execute(uri: path, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) })
    }

    @Test func meRequiresAValidBearerToken() async throws {
        try await TestPortal.with { portal in
            let tenant = try await Fixtures.tenant(portal.database, slug: "acme")
            let user = try await Fixtures.user(portal.database, tenant: tenant, email: "ada@example.com", roles: [.admin])
            let token = try await Self.token(portal, tenant: tenant, user: user, scopes: [.read])
            try await portal.application().test(.router) { client in
                let anonymous = try await Self.call(client, .get, "/t/acme/api/v1/me", token: nil)
                #expect(anonymous.status == .unauthorized)
                #expect(anonymous.headers[.contentType] == "application/problem+json")
                #expect(anonymous.headers[.wwwAuthenticate]?.hasPrefix("Bearer") == true)
                let bogus = try await Self.call(client, .get, "/t/acme/api/v1/me", token: "tgp_nope")
                #expect(bogus.status == .unauthorized)
                let me = try await Self.call(client, .get, "/t/acme/api/v1/me", token: token)
                #expect(me.status == .ok)
                let body = try Self.json(me)
                #expect((body["user"] as? [String: Any])?["email"] as? String == "ada@example.com")
                #expect(body["scopes"] as? [String] == ["read"])
            }
        }
    }

    @Test func aTokenOfOneTenantIsUselessInAnother() async throws {
        try await TestPortal.with { portal in
            let acme = try await Fixtures.tenant(portal.database, slug: "acme")
            _ = try await Fixtures.tenant(portal.database, slug: "globex")
            let user = try await Fixtures.user(portal.database, tenant: acme, email: "ada@example.com", roles: [.admin])
            let token = try await Self.token(portal, tenant: acme, user: user, scopes: [.read])
            try await portal.application().test(.router) { client in
                let response = try await Self.call(client, .get, "/t/globex/api/v1/me", token: token)
                #expect(response.status == .unauthorized)
            }
        }
    }

    @Test func scopesLimitWhatATokenCanDo() async throws {
        try await TestPortal.with { portal in
            let tenant = try await Fixtures.tenant(portal.database, slug: "acme")
            let user = try await Fixtures.user(portal.database, tenant: tenant, email: "ada@example.com", roles: [.admin])
            let readOnly = try await Self.token(portal, tenant: tenant, user: user, scopes: [.read])
            let writer = try await Self.token(portal, tenant: tenant, user: user, scopes: [.read, .write])
            try await portal.application().test(.router) { client in
                let denied = try await Self.call(client, .post, "/t/acme/api/v1/teams", token: readOnly, body: #"{"name":"Core"}"#)
                #expect(denied.status == .forbidden)
                let created = try await Self.call(client, .post, "/t/acme/api/v1/teams", token: writer, body: #"{"name":"Core"}"#)
                #expect(created.status == .created)
                #expect(try Self.json(created)["slug"] as? String == "core")
                // admin endpoints need the admin scope even for an admin user
                #expect(try await Self.call(client, .get, "/t/acme/api/v1/audit-events", token: writer).status == .forbidden)
                // a token cannot mint a token with more scopes than it has
                let escalate = try await Self.call(
                    client, .post, "/t/acme/api/v1/tokens", token: writer, body: #"{"name":"x","scopes":["admin"]}"#)
                #expect(escalate.status == .unprocessableContent)
            }
        }
    }

    @Test func revokedAndExpiredTokensStopWorking() async throws {
        try await TestPortal.with { portal in
            let tenant = try await Fixtures.tenant(portal.database, slug: "acme")
            let user = try await Fixtures.user(portal.database, tenant: tenant, email: "ada@example.com", roles: [.developer])
            let token = try await Self.token(portal, tenant: tenant, user: user, scopes: [.read, .write])
            try await portal.application().test(.router) { client in
                let created = try await Self.call(
                    client, .post, "/t/acme/api/v1/tokens", token: token, body: #"{"name":"ci","scopes":["read"],"expires_in_days":30}"#)
                #expect(created.status == .created)
                let body = try Self.json(created)
                let secret = body["secret"] as? String ?? ""
                let id = (body["token"] as? [String: Any])?["id"] as? String ?? ""
                #expect(secret.hasPrefix("tgp_"))
                #expect(try await Self.call(client, .get, "/t/acme/api/v1/me", token: secret).status == .ok)
                // the secret is never listed again
                let list = try await Self.call(client, .get, "/t/acme/api/v1/tokens", token: token)
                #expect(!list.text.contains(secret))
                #expect(list.text.contains(String(secret.prefix(12))))
                #expect(try await Self.call(client, .delete, "/t/acme/api/v1/tokens/\(id)", token: token).status == .noContent)
                #expect(try await Self.call(client, .get, "/t/acme/api/v1/me", token: secret).status == .unauthorized)
                #expect(try await Self.call(client, .delete, "/t/acme/api/v1/tokens/\(UUID())", token: token).status == .notFound)
            }
            // expire the original token in the database and try again
            try await portal.database.withTenant(tenant.id) { connection in
                try await connection.query("UPDATE personal_access_tokens SET expires_at = now() - interval '1 second'", logger: portal.database.logger)
            }
            try await portal.application().test(.router) { client in
                let response = try await Self.call(client, .get, "/t/acme/api/v1/me", token: token)
                #expect(response.status == .unauthorized)
            }
        }
    }

    @Test func tokensAreStoredOnlyAsHashes() async throws {
        try await TestPortal.with { portal in
            let tenant = try await Fixtures.tenant(portal.database, slug: "acme")
            let user = try await Fixtures.user(portal.database, tenant: tenant, email: "ada@example.com", roles: [.developer])
            let token = try await Self.token(portal, tenant: tenant, user: user, scopes: [.read])
            let stored = try await portal.database.withTenant(tenant.id) { connection -> [String] in
                var texts: [String] = []
                let rows = try await connection.query(
                    "SELECT prefix || encode(token_hash, 'hex') || name FROM personal_access_tokens", logger: portal.database.logger)
                for try await text in rows.decode(String.self) { texts.append(text) }
                return texts
            }
            #expect(stored.count == 1)
            #expect(!(stored.first ?? "").contains(String(token.dropFirst(12))))
        }
    }

    @Test func badBodiesAreProblemsNotCrashes() async throws {
        try await TestPortal.with { portal in
            let tenant = try await Fixtures.tenant(portal.database, slug: "acme")
            let user = try await Fixtures.user(portal.database, tenant: tenant, email: "ada@example.com", roles: [.admin])
            let token = try await Self.token(portal, tenant: tenant, user: user, scopes: [.read, .write, .admin])
            try await portal.application().test(.router) { client in
                let cases: [(String, HTTPResponse.Status)] = [
                    ("{", .badRequest), (#"{"name": 5}"#, .badRequest), ("{}", .badRequest), (#"{"name": ""}"#, .unprocessableContent),
                    (#"{"name": "nul\u0000byte"}"#, .unprocessableContent), (#"{"name":"ok","slug":"Not A Slug"}"#, .unprocessableContent),
                ]
                for (body, status) in cases {
                    let response = try await Self.call(client, .post, "/t/acme/api/v1/teams", token: token, body: body)
                    #expect(response.status == status, "body \(body)")
                    #expect(response.headers[.contentType] == "application/problem+json")
                }
                let wrongType = try await client.execute(
                    uri: "/t/acme/api/v1/teams", method: .post, headers: [.authorization: "Bearer \(token)", .contentType: "text/plain"],
                    body: ByteBuffer(string: "name=x"))
                #expect(wrongType.status == .unsupportedMediaType)
                let duplicate1 = try await Self.call(client, .post, "/t/acme/api/v1/teams", token: token, body: #"{"name":"Core"}"#)
                let duplicate2 = try await Self.call(client, .post, "/t/acme/api/v1/teams", token: token, body: #"{"name":"Core"}"#)
                #expect(duplicate1.status == .created)
                #expect(duplicate2.status == .conflict)
                #expect(try await Self.call(client, .get, "/t/acme/api/v1/users?limit=0", token: token).status == .badRequest)
                #expect(try await Self.call(client, .get, "/t/acme/api/v1/users?cursor=%%%", token: token).status == .badRequest)
                #expect(try await Self.call(client, .put, "/t/acme/api/v1/users/not-a-uuid/roles", token: token, body: #"{"roles":[]}"#).status == .notFound)
                #expect(try await Self.call(client, .get, "/t/acme/api/v1/teams/NUL%00", token: token).status == .notFound)
            }
        }
    }

    @Test func listsPaginateWithCursors() async throws {
        try await TestPortal.with { portal in
            let tenant = try await Fixtures.tenant(portal.database, slug: "acme")
            let admin = try await Fixtures.user(portal.database, tenant: tenant, email: "admin@example.com", roles: [.admin])
            for i in 0..<4 { _ = try await Fixtures.user(portal.database, tenant: tenant, email: "user\(i)@example.com", roles: [.developer]) }
            let token = try await Self.token(portal, tenant: tenant, user: admin, scopes: [.read])
            try await portal.application().test(.router) { client in
                var emails: [String] = []
                var cursor: String?
                var pages = 0
                repeat {
                    let query = "limit=2" + (cursor.map { "&cursor=\($0)" } ?? "")
                    let page = try Self.json(try await Self.call(client, .get, "/t/acme/api/v1/users?\(query)", token: token))
                    emails += (page["items"] as? [[String: Any]] ?? []).compactMap { $0["email"] as? String }
                    cursor = page["next_cursor"] as? String
                    pages += 1
                } while cursor != nil && pages < 10
                #expect(emails == ["admin@example.com", "user0@example.com", "user1@example.com", "user2@example.com", "user3@example.com"])
                #expect(pages == 3)
            }
        }
    }

    @Test func adminChangesRolesButNotTheirOwnAdminRole() async throws {
        try await TestPortal.with { portal in
            let tenant = try await Fixtures.tenant(portal.database, slug: "acme")
            let admin = try await Fixtures.user(portal.database, tenant: tenant, email: "admin@example.com", roles: [.admin])
            let dev = try await Fixtures.user(portal.database, tenant: tenant, email: "dev@example.com", roles: [.developer])
            let token = try await Self.token(portal, tenant: tenant, user: admin, scopes: [.read, .write, .admin])
            try await portal.application().test(.router) { client in
                let promoted = try await Self.call(
                    client, .put, "/t/acme/api/v1/users/\(dev.id)/roles", token: token, body: #"{"roles":["developer","provider"]}"#)
                #expect(promoted.status == .ok)
                #expect(try Self.json(promoted)["roles"] as? [String] == ["developer", "provider"])
                let selfDemote = try await Self.call(client, .put, "/t/acme/api/v1/users/\(admin.id)/roles", token: token, body: #"{"roles":["finance"]}"#)
                #expect(selfDemote.status == .conflict)
                let bad = try await Self.call(client, .put, "/t/acme/api/v1/users/\(dev.id)/roles", token: token, body: #"{"roles":["root"]}"#)
                #expect(bad.status == .unprocessableContent)
                let audit = try await Self.call(client, .get, "/t/acme/api/v1/audit-events", token: token)
                #expect(audit.text.contains("user.roles_changed"))
            }
        }
    }

    @Test func invitationsViaAPIReturnAOneTimeLink() async throws {
        try await TestPortal.with { portal in
            let tenant = try await Fixtures.tenant(portal.database, slug: "acme")
            let admin = try await Fixtures.user(portal.database, tenant: tenant, email: "admin@example.com", roles: [.admin])
            let token = try await Self.token(portal, tenant: tenant, user: admin, scopes: [.read, .write, .admin])
            try await portal.application().test(.router) { client in
                let created = try await Self.call(
                    client, .post, "/t/acme/api/v1/invitations", token: token, body: #"{"email":"New@Example.com","roles":["provider"]}"#)
                #expect(created.status == .created)
                let body = try Self.json(created)
                #expect((body["accept_url"] as? String)?.contains("/t/acme/invitations/") == true)
                #expect((body["invitation"] as? [String: Any])?["email"] as? String == "new@example.com")
                let existing = try await Self.call(client, .post, "/t/acme/api/v1/invitations", token: token, body: #"{"email":"admin@example.com"}"#)
                #expect(existing.status == .conflict)
                let listed = try Self.json(try await Self.call(client, .get, "/t/acme/api/v1/invitations", token: token))
                #expect((listed["items"] as? [Any])?.count == 1)
            }
        }
    }

    @Test func openAPIDocumentDescribesTheRoutes() async throws {
        try await TestPortal.with { portal in
            _ = try await Fixtures.tenant(portal.database, slug: "acme")
            try await portal.application().test(.router) { client in
                let response = try await client.execute(uri: "/t/acme/api/v1/openapi.json", method: .get)
                #expect(response.status == .ok)
                let document = try Self.json(response)
                #expect(document["openapi"] as? String == "3.1.0")
                let paths = document["paths"] as? [String: Any] ?? [:]
                for path in ["/me", "/users", "/users/{user}/roles", "/teams", "/teams/{team}/members/{user}", "/tokens", "/tokens/{id}", "/invitations", "/audit-events"] {
                    #expect(paths[path] != nil, "missing \(path)")
                }
                let platform = try Self.json(try await client.execute(uri: "/api/v1/openapi.json", method: .get))
                #expect((platform["paths"] as? [String: Any])?["/tenants"] != nil)
            }
        }
    }
}
