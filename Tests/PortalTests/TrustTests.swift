import Foundation
import Gateway
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import JWTKit
import Testing

@testable import Portal

/// Values that decide routing or identity (custom hosts, webhook hosts, the public URL) are judged
/// in canonical form: one rule for every spelling.
@Suite struct HostRuleTests {
    @Test(arguments: [
        ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("0", "0.0.0.0"),
        ("0x7f.1", "127.0.0.1"), ("10.0.258", "10.0.1.2"), ("192.168.1.1", "192.168.1.1"),
    ])
    func resolverSpellingsOfIPv4AreRecognised(text: String, dotted: String) {
        #expect(HostName.legacyIPv4(text) == dotted)
    }

    @Test(arguments: ["example.com", "1.2.3.4.5", "256.1.1.1", "08.1.1.1", "api.1e100.net", "1.2.3.256", ""])
    func namesAndOutOfRangeNumbersAreNotIPv4(text: String) {
        #expect(HostName.legacyIPv4(text) == nil)
    }

    @Test(arguments: [
        ("127.0.0.1", CustomHostRule.Refusal.addressLiteral), ("2130706433", .addressLiteral), ("[::1]", .addressLiteral), ("localhost", .local),
        ("LOCALHOST.", .local), ("demo.localhost", .local), ("intranet", .notQualified), ("bad host.com", .syntax), ("-a.example.com", .syntax),
        ("a..example.com", .syntax),
    ])
    func customHostsRefuseWhatWouldHijackTraffic(text: String, refusal: CustomHostRule.Refusal) {
        #expect(CustomHostRule.check(text, baseDomain: "localhost") == .failure(refusal))
    }

    @Test func customHostsUnderTheBaseDomainAreOtherTenantsAddresses() {
        #expect(CustomHostRule.check("demo.tollgate.example", baseDomain: "tollgate.example") == .failure(.underBaseDomain("tollgate.example")))
        #expect(CustomHostRule.check("tollgate.example", baseDomain: "tollgate.example") == .failure(.underBaseDomain("tollgate.example")))
    }

    @Test func customHostsAreCanonical() {
        #expect(CustomHostRule.check("Portal.ACME.example.", baseDomain: "localhost") == .success("portal.acme.example"))
    }

    @Test func aStoredHostThatBreaksTheRuleRoutesNothing() {
        let hijacker = TenantConfig(
            id: UUID(), slug: "empty", customHost: "demo.localhost", issuer: "http://127.0.0.1:8080/t/empty", routes: [], appsByKeyHash: [:],
            apps: [:], signingKeys: [:], revokedTokenIDs: [])
        let fine = TenantConfig(
            id: UUID(), slug: "acme", customHost: "API.acme.example", issuer: "http://api.acme.example", routes: [], appsByKeyHash: [:], apps: [:],
            signingKeys: [:], revokedTokenIDs: [])
        let snapshot = GatewaySnapshot(version: 1, loadedAt: Date(), tenants: [hijacker, fine], baseDomain: "localhost")
        #expect(snapshot.tenantsByHost == ["api.acme.example": "acme"])
    }

    @Test(arguments: ["http://2130706433/hook", "http://0x7f000001/hook", "http://0177.0.0.1/hook", "http://127.1/", "http://0/", "http://LOCALHOST./x"])
    func webhookTargetsRefuseEverySpellingOfLoopback(url: String) {
        #expect(throws: AppError.self) { try WebhookTargetPolicy().validate(url) }
    }

    @Test func publicURLsAreOriginsOnly() throws {
        #expect(try PublicBaseURL("https://Portal.Example.com/").text == "https://portal.example.com")
        #expect(try PublicBaseURL("http://127.0.0.1:8080").tenantBase(slug: "demo", customHost: nil) == "http://127.0.0.1:8080/t/demo")
        #expect(try PublicBaseURL("http://127.0.0.1:8080").tenantBase(slug: "demo", customHost: "api.acme.example") == "http://api.acme.example:8080")
        for bad in ["ftp://x.example", "https://x.example/path", "https://u:p@x.example", "https://x.example?q=1", "portal.example.com"] {
            #expect(throws: PublicBaseURL.Problem.self) { try PublicBaseURL(bad) }
        }
    }
}

/// The issuer, metadata and absolute links come from configuration, never from the Host header.
@Suite struct IssuerTests {
    @Test func aForgedHostReachesNeitherMetadataNorTokens() async throws {
        try await TestPortal.with(configure: { $0.publicURL = try! PublicBaseURL("https://portal.tollgate.example") }) { portal in
            try await portal.application().test(.router) { client in
                let (clientID, secret) = try await OAuthTests.subscribedClient(portal, client)
                let evil: HTTPFields = [HTTPField.Name("Host")!: "evil.example"]
                let meta = try APITests.json(
                    try await client.execute(uri: "/t/acme/.well-known/oauth-authorization-server", method: .get, headers: evil))
                #expect(meta["issuer"] as? String == "https://portal.tollgate.example/t/acme")
                #expect(meta["token_endpoint"] as? String == "https://portal.tollgate.example/t/acme/oauth2/token")
                var headers = evil
                headers[.contentType] = "application/x-www-form-urlencoded"
                headers[.authorization] = "Basic " + Data("\(clientID):\(secret)".utf8).base64EncodedString()
                let issued = try APITests.json(
                    try await client.execute(
                        uri: "/t/acme/oauth2/token", method: .post, headers: headers, body: ByteBuffer(string: "grant_type=client_credentials")))
                let token = issued["access_token"] as? String ?? ""
                let payload = try JSONSerialization.jsonObject(with: Data(Base64URL.decode(String(token.split(separator: ".")[1])) ?? [])) as? [String: Any]
                #expect(payload?["iss"] as? String == "https://portal.tollgate.example/t/acme")
                // the gateway accepts exactly that issuer
                let snapshot = try await portal.snapshot()
                #expect(snapshot.tenantsBySlug["acme"]?.issuer == "https://portal.tollgate.example/t/acme")
            }
        }
    }

    @Test func metadataListsWhatExistsAndNothingElse() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                _ = try await OAuthTests.subscribedClient(portal, client)
                let meta = try APITests.json(try await client.execute(uri: "/.well-known/oauth-authorization-server/t/acme", method: .get))
                #expect(meta["introspection_endpoint"] as? String == "http://127.0.0.1:8080/t/acme/oauth2/introspect")
                #expect(meta["revocation_endpoint"] as? String == "http://127.0.0.1:8080/t/acme/oauth2/revoke")
                #expect(meta["introspection_endpoint_auth_methods_supported"] as? [String] == ["client_secret_basic", "client_secret_post"])
                #expect(meta["scopes_supported"] as? [String] == ["echo"])
                #expect(meta["response_types_supported"] as? [String] == [])
                #expect(meta["token_endpoint_auth_signing_alg_values_supported"] == nil)
            }
        }
    }

    @Test func repeatedParametersAtTheTokenEndpointAreInvalidRequests() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let (clientID, secret) = try await OAuthTests.subscribedClient(portal, client)
                let twice = try await OAuthTests.form(client, [("grant_type", "client_credentials"), ("grant_type", "password")], basic: (clientID, secret))
                #expect(twice.status == .badRequest)
                #expect(try APITests.json(twice)["error"] as? String == "invalid_request")
            }
        }
    }

    /// Failed client authentications from an address do not lock the same address out of signing in.
    @Test func clientAuthenticationAndSignInHaveSeparateBudgets() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let (clientID, _) = try await OAuthTests.subscribedClient(portal, client)
                for _ in 0..<35 {
                    _ = try await OAuthTests.form(client, [("grant_type", "client_credentials")], basic: (clientID + "x\(Int.random(in: 0..<1_000_000))", "tgs_guess"))
                }
                var browser = Browser()
                let signedIn = try await browser.signIn(client, tenant: "acme", email: "dev@example.com")
                #expect(signedIn.status == .seeOther)
            }
        }
    }
}

/// Every size limit answers 413 in the shape of its surface.
@Suite struct SizeLimitTests {
    @Test func oversizedBodiesAre413NotServerErrors() async throws {
        try await TestPortal.with { portal in
            let (_, platformToken) = try await PlatformTests.admin(portal)
            let world = try await CatalogAPITests.world(portal)
            try await portal.application().test(.router) { client in
                // signed out, an HTML form
                let login = try await client.execute(
                    uri: "/t/acme/login", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
                    body: ByteBuffer(string: "email=" + String(repeating: "a", count: 100_000)))
                #expect(login.status == .contentTooLarge)
                #expect(login.headers[.contentType]?.hasPrefix("text/html") == true)
                // JSON API over 1 MiB
                let big = #"{"name":""# + String(repeating: "x", count: 1_100_000) + #""}"#
                let api = try await APITests.call(client, .post, "/t/acme/api/v1/teams", token: world.developer, body: big)
                #expect(api.status == .contentTooLarge)
                #expect(api.headers[.contentType] == "application/problem+json")
                // the platform API
                #expect(try await APITests.call(client, .post, "/api/v1/tenants", token: platformToken, body: big).status == .contentTooLarge)
                // the token endpoint answers in RFC 6749's shape
                let token = try await OAuthTests.form(client, [("grant_type", "client_credentials"), ("scope", String(repeating: "s", count: 20_000))])
                #expect(token.status == .contentTooLarge)
                #expect(try APITests.json(token)["error"] as? String == "invalid_request")
                // OpenAPI documents over 2 MiB: the JSON API, and the upload form (just over, and beyond the form's allowance)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let document = #"{"openapi":"3.1.0","info":{"title":"Big","version":"1"},"paths":{},"x-pad":""# + String(repeating: "p", count: 2 << 20) + #""}"#
                let put = try await APIDocumentFlowTests.put(client, "/t/acme/api/v1/apis/\(id)/openapi", token: world.provider, type: "application/json", body: document)
                #expect(put.status == .contentTooLarge)
                #expect(put.headers[.contentType] == "application/problem+json")
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let csrf = Browser.csrfToken(in: try await provider.get(client, "/t/acme/catalog/apis/\(id)").text) ?? ""
                for file in [document, document + String(repeating: " ", count: 1 << 20)] {
                    let boundary = "tollgate-test-boundary"
                    let body = "--\(boundary)\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\n\(csrf)\r\n"
                        + "--\(boundary)\r\nContent-Disposition: form-data; name=\"document\"; filename=\"big.json\"\r\nContent-Type: application/json\r\n\r\n"
                        + file + "\r\n--\(boundary)--\r\n"
                    let upload = try await client.execute(
                        uri: "/t/acme/catalog/apis/\(id)/openapi", method: .post,
                        headers: [Browser.hostField: "localhost", .cookie: provider.cookieHeader, .contentType: "multipart/form-data; boundary=\(boundary)"],
                        body: ByteBuffer(string: body))
                    #expect(upload.status == .contentTooLarge, "\(file.utf8.count) bytes")
                    #expect(upload.headers[.contentType]?.hasPrefix("text/html") == true)
                    #expect(upload.text.contains("2 MiB"))
                }
            }
        }
    }
}

/// The operator edits a marketplace and gives a new one its first administrator.
@Suite struct TenantAdministrationTests {
    @Test func platformAPIEditsCustomHostsAndInvitesTheFirstAdmin() async throws {
        try await TestPortal.with { portal in
            let (_, token) = try await PlatformTests.admin(portal)
            try await portal.application().test(.router) { client in
                _ = try await APITests.call(client, .post, "/api/v1/tenants", token: token, body: #"{"slug":"initech","name":"Initech"}"#)
                _ = try await APITests.call(client, .post, "/api/v1/tenants", token: token, body: #"{"slug":"hooli","name":"Hooli"}"#)
                // hijacking names are refused with the reason
                for host in ["127.0.0.1", "localhost", "demo.localhost", "2130706433"] {
                    let refused = try await APITests.call(client, .patch, "/api/v1/tenants/initech", token: token, body: #"{"custom_host":"\#(host)"}"#)
                    #expect(refused.status == .unprocessableContent, "\(host)")
                }
                let set = try await APITests.call(client, .patch, "/api/v1/tenants/initech", token: token, body: #"{"custom_host":"Portal.Initech.example."}"#)
                #expect(try APITests.json(set)["custom_host"] as? String == "portal.initech.example")
                // unique whatever the spelling
                let taken = try await APITests.call(client, .patch, "/api/v1/tenants/hooli", token: token, body: #"{"custom_host":"PORTAL.initech.example"}"#)
                #expect(taken.status == .conflict)
                let renamed = try APITests.json(try await APITests.call(client, .patch, "/api/v1/tenants/initech", token: token, body: #"{"name":"Initech Inc"}"#))
                #expect(renamed["custom_host"] as? String == "portal.initech.example")
                #expect(renamed["name"] as? String == "Initech Inc")
                let removed = try APITests.json(try await APITests.call(client, .patch, "/api/v1/tenants/initech", token: token, body: #"{"custom_host":null}"#))
                #expect(removed["custom_host"] == nil)
                // first admin: an invitation link on the configured public URL, then refused once an admin exists
                let invited = try await APITests.call(
                    client, .post, "/api/v1/tenants/initech/admin-invitations", token: token, body: #"{"email":"boss@initech.example"}"#)
                #expect(invited.status == .created)
                let link = try APITests.json(invited)["accept_url"] as? String ?? ""
                #expect(link.hasPrefix("http://127.0.0.1:8080/t/initech/invitations/"))
                let tenant = try #require(try await portal.database.withPlatform { try await portal.services.tenants.find(slug: "initech", on: $0) })
                _ = try await Fixtures.user(portal.database, tenant: tenant, email: "boss@initech.example", roles: [.admin])
                let again = try await APITests.call(
                    client, .post, "/api/v1/tenants/initech/admin-invitations", token: token, body: #"{"email":"other@initech.example"}"#)
                #expect(again.status == .conflict)
                #expect(try await APITests.call(client, .get, "/api/v1/tenants/nope", token: token).status == .notFound)
            }
        }
    }

    @Test func platformConsoleEditsATenantAndKeepsWhatWasTyped() async throws {
        try await TestPortal.with { portal in
            let (password, token) = try await PlatformTests.admin(portal)
            try await portal.application().test(.router) { client in
                _ = try await APITests.call(client, .post, "/api/v1/tenants", token: token, body: #"{"slug":"initech","name":"Initech"}"#)
                var browser = Browser()
                _ = try await browser.submit(client, "/platform/login", from: "/platform/login", fields: [("email", "ops@example.com"), ("password", password)])
                let page = try await browser.get(client, "/platform/tenants/initech")
                #expect(page.text.contains("none yet"))
                let bad = try await browser.submit(
                    client, "/platform/tenants/initech", from: "/platform/tenants/initech",
                    fields: [("name", "Initech"), ("signup_policy", "open"), ("custom_host", "demo.localhost")])
                #expect(bad.status == .unprocessableContent)
                #expect(bad.text.contains("value=\"demo.localhost\""))
                #expect(bad.text.contains("always mean this machine"))
                let saved = try await browser.submit(
                    client, "/platform/tenants/initech", from: "/platform/tenants/initech",
                    fields: [("name", "Initech"), ("signup_policy", "open"), ("custom_host", "portal.initech.example")])
                #expect(saved.status == .seeOther)
                #expect(try await browser.get(client, "/platform/tenants/initech").text.contains("value=\"portal.initech.example\""))
                let invited = try await browser.submit(
                    client, "/platform/tenants/initech/admin-invitations", from: "/platform/tenants/initech", fields: [("email", "boss@initech.example")])
                #expect(invited.status == .seeOther)
                // post/redirect/get: the link shows once on the page, from the console session's flash
                #expect(try await browser.get(client, "/platform/tenants/initech").text.contains("/invitations/"))
                #expect(!(try await browser.get(client, "/platform/tenants/initech").text.contains("/invitations/")))
            }
        }
    }
}

/// A request head trickled a byte at a time ends at the portal's head deadline, a body that stalls
/// at its body deadline (slowloris): 408 and a close, not a silent drop.
@Suite struct PortalSlowClientTests {
    @Test func aDribbledHeadIsAnswered408AndClosed() async throws {
        try await TestPortal.with(configure: { $0.requestHeadTimeout = .milliseconds(700) }) { portal in
            try await portal.application().test(.live) { client in
                let port = try #require(client.port)
                let socket = try await RawSocket.connect(port: port)
                // ~140 bytes at 50 ms each take 7 s; the head deadline is 0.7 s
                let head = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + String(repeating: "a", count: 100) + "\r\n\r\n"
                var sent = 0
                for byte in head.utf8 {
                    guard socket.channel.isActive else { break }
                    try? await socket.channel.writeAndFlush(ByteBuffer(bytes: [byte]))
                    sent += 1
                    try? await Task.sleep(for: .milliseconds(50))
                }
                let text = try await socket.received.get()
                #expect(text.hasPrefix("HTTP/1.1 408"))
                #expect(sent < head.utf8.count)
            }
        }
    }

    @Test func aStalledBodyIsAnswered408AndClosed() async throws {
        try await TestPortal.with(configure: { $0.requestBodyTimeout = .milliseconds(700) }) { portal in
            let world = try await CatalogAPITests.world(portal)
            try await portal.application().test(.live) { client in
                // setup: a JSON route that reads its body; the head is whole, the body promised but not sent
                let port = try #require(client.port)
                let socket = try await RawSocket.connect(port: port)
                let head = "POST /t/acme/api/v1/teams HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(world.developer)\r\n"
                    + "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
                // act: a few bytes, 50 ms apart, well past the body deadline of 0.7 s
                try await socket.channel.writeAndFlush(ByteBuffer(string: head))
                for byte in #"{"name":"#.utf8 {
                    guard socket.channel.isActive else { break }
                    try? await socket.channel.writeAndFlush(ByteBuffer(bytes: [byte]))
                    try? await Task.sleep(for: .milliseconds(50))
                }
                let text = try await socket.received.get()
                // assert: answered, not just dropped
                #expect(text.hasPrefix("HTTP/1.1 408"), "\(text)")
                #expect(text.lowercased().contains("connection: close"))
                #expect(!text.contains("HTTP/1.1 500"))
            }
        }
    }
}

/// Keys reach gateways before tokens are signed with them.
@Suite struct SigningKeyLeadTests {
    @Test func aRotatedInKeyIsPublishedBeforeItSignsAndANewTenantHasItsKeyFromTheStart() async throws {
        try await TestPortal.with { portal in
            let (_, token) = try await PlatformTests.admin(portal)
            try await portal.application().test(.router) { client in
                _ = try await APITests.call(client, .post, "/api/v1/tenants", token: token, body: #"{"slug":"initech","name":"Initech"}"#)
            }
            // the new tenant's key is in the gateway snapshot before any token exists
            let snapshot = try await portal.snapshot()
            let initech = try #require(snapshot.tenantsBySlug["initech"])
            #expect(initech.signingKeys.count == 1)
            let tenant = try #require(try await portal.database.withPlatform { try await portal.services.tenants.find(slug: "initech", on: $0) })
            let store = SigningKeyStore(secret: portal.services.secret, logger: portal.database.logger)
            let (signing, rotated, stillSigning) = try await portal.database.withTenant(tenant.id) { connection in
                let signing = try await store.current(tenantID: tenant.id, on: connection)
                let rotated = try await store.rotate(tenantID: tenant.id, tokenLifetime: .seconds(3600), lead: .seconds(30), on: connection)
                return (signing.kid, rotated.kid, try await store.current(tenantID: tenant.id, on: connection).kid)
            }
            #expect(initech.signingKeys.keys.contains(signing))
            // published (gateways load it) but the old key keeps signing during the lead
            #expect(stillSigning == signing)
            #expect(try await portal.snapshot().tenantsBySlug["initech"]?.signingKeys.keys.contains(rotated) == true)
            // once the lead has passed the new key signs
            try await portal.database.withTenant(tenant.id) { connection in
                try await connection.query(
                    "UPDATE signing_keys SET signs_from = now() - interval '1 second' WHERE kid = \(rotated)", logger: portal.database.logger)
                try await connection.query(
                    "UPDATE signing_keys SET retired_at = now() - interval '1 second' WHERE kid = \(signing)", logger: portal.database.logger)
            }
            let later = try await portal.database.withTenant(tenant.id) { try await store.current(tenantID: tenant.id, on: $0).kid }
            #expect(later == rotated)
        }
    }
}

/// Audit events carry random ids: nothing in them counts other tenants' events.
@Suite struct AuditIDTests {
    @Test func auditIDsAreRandomAndPageWithinTheTenant() async throws {
        try await TestPortal.with { portal in
            let acme = try await Fixtures.tenant(portal.database, slug: "acme")
            let admin = try await Fixtures.user(portal.database, tenant: acme, email: "ada@example.com", roles: [.admin])
            let token = try await APITests.token(portal, tenant: acme, user: admin, scopes: [.read, .admin])
            try await portal.application().test(.router) { client in
                for name in ["One", "Two", "Three"] {
                    _ = try await APITests.call(client, .post, "/t/acme/api/v1/teams", token: token, body: #"{"name":"\#(name)","slug":"\#(name.lowercased())"}"#)
                }
                let first = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/audit-events?limit=2", token: token))
                let items = first["items"] as? [[String: Any]] ?? []
                #expect(items.count == 2)
                #expect(items.allSatisfy { ($0["id"] as? String).flatMap(UUID.init(uuidString:)) != nil })
                let cursor = first["next_cursor"] as? String ?? ""
                let second = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/audit-events?limit=2&cursor=\(cursor)", token: token))
                let secondIDs = (second["items"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
                #expect(!secondIDs.isEmpty)
                #expect(Set(secondIDs).isDisjoint(with: items.compactMap { $0["id"] as? String }))
            }
        }
    }
}

@Suite struct SubscriptionNoticeTests {
    @Test func noticesComeFromAFixedSetAndSayWhetherAChangeWasOnlyRequested() {
        #expect(SubscriptionPages.notice("plan_change_requested")?.contains("requested") == true)
        #expect(SubscriptionPages.notice("change_plan") == "Plan changed.")
        #expect(SubscriptionPages.notice("<script>alert(1)</script>") == nil)
        #expect(SubscriptionPages.notice(nil) == nil)
    }
}
