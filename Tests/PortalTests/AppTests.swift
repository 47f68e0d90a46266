import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import Portal

/// Consumer apps and credentials through the JSON API and the pages.
@Suite struct AppTests {
    static func createApp(_ client: some TestClientProtocol, _ world: CatalogAPITests.World) async throws -> [String: Any] {
        let response = try await APITests.call(
            client, .post, "/t/acme/api/v1/apps", token: world.developer, body: #"{"team_id":"\#(world.consumerTeam)","name":"Billing sync"}"#)
        #expect(response.status == .created)
        return try APITests.json(response)
    }

    @Test func anAppGetsAClientIDAndAOneTimeSecret() async throws {
        try await TestPortal.with { portal in
            let world = try await CatalogAPITests.world(portal)
            try await portal.application().test(.router) { client in
                // act
                let created = try await Self.createApp(client, world)
                // assert
                let app = created["app"] as? [String: Any] ?? [:]
                let secret = created["secret"] as? String ?? ""
                #expect((app["client_id"] as? String)?.hasPrefix("tgc_") == true)
                #expect(secret.hasPrefix("tgs_"))
                let detail = try await APITests.call(client, .get, "/t/acme/api/v1/apps/\(app["id"] as? String ?? "")", token: world.developer)
                #expect(detail.status == .ok)
                #expect(!detail.text.contains(secret))
                #expect(detail.text.contains(String(secret.prefix(12))))
                let duplicate = try await APITests.call(
                    client, .post, "/t/acme/api/v1/apps", token: world.developer, body: #"{"team_id":"\#(world.consumerTeam)","name":"Billing sync"}"#)
                #expect(duplicate.status == .conflict)
            }
        }
    }

    @Test func rotationAllowsTwoActiveSecretsAtMost() async throws {
        try await TestPortal.with { portal in
            let world = try await CatalogAPITests.world(portal)
            try await portal.application().test(.router) { client in
                let created = try await Self.createApp(client, world)
                let appID = (created["app"] as? [String: Any])?["id"] as? String ?? ""
                let firstID = (created["credential"] as? [String: Any])?["id"] as? String ?? ""
                let second = try await APITests.call(client, .post, "/t/acme/api/v1/apps/\(appID)/client-secrets", token: world.developer, body: "{}")
                #expect(second.status == .created)
                let third = try await APITests.call(client, .post, "/t/acme/api/v1/apps/\(appID)/client-secrets", token: world.developer, body: "{}")
                #expect(third.status == .conflict)
                let revoked = try await APITests.call(client, .delete, "/t/acme/api/v1/apps/\(appID)/credentials/\(firstID)", token: world.developer)
                #expect(revoked.status == .noContent)
                let afterRevoke = try await APITests.call(
                    client, .post, "/t/acme/api/v1/apps/\(appID)/client-secrets", token: world.developer, body: #"{"expires_in_days":30}"#)
                #expect(afterRevoke.status == .created)
                #expect(((try APITests.json(afterRevoke))["credential"] as? [String: Any])?["expires_at"] != nil)
                let badLifetime = try await APITests.call(
                    client, .post, "/t/acme/api/v1/apps/\(appID)/api-keys", token: world.developer, body: #"{"expires_in_days":0}"#)
                #expect(badLifetime.status == .unprocessableContent)
                let key = try await APITests.call(client, .post, "/t/acme/api/v1/apps/\(appID)/api-keys", token: world.developer, body: #"{"name":"ci"}"#)
                #expect(((try APITests.json(key))["secret"] as? String)?.hasPrefix("tgk_") == true)
                let audit = try await portal.database.withTenant(try await Fixtures.tenantID(portal, "acme")) {
                    try await AuditLog(logger: portal.database.logger).list(before: nil, limit: 50, on: $0).map(\.action)
                }
                #expect(audit.contains("app.credentials_rotated"))
                #expect(audit.contains("app.credential_revoked"))
            }
        }
    }

    @Test func otherTeamsCannotSeeOrManageAnApp() async throws {
        try await TestPortal.with { portal in
            let world = try await CatalogAPITests.world(portal)
            try await portal.application().test(.router) { client in
                let created = try await Self.createApp(client, world)
                let appID = (created["app"] as? [String: Any])?["id"] as? String ?? ""
                // the provider is not in the consumer team
                #expect(try await APITests.call(client, .get, "/t/acme/api/v1/apps/\(appID)", token: world.provider).status == .notFound)
                let sneaky = try await APITests.call(client, .post, "/t/acme/api/v1/apps/\(appID)/api-keys", token: world.provider, body: "{}")
                #expect(sneaky.status == .notFound)
                let list = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/apps", token: world.provider))
                #expect((list["items"] as? [Any])?.isEmpty == true)
                let foreignTeam = try await APITests.call(
                    client, .post, "/t/acme/api/v1/apps", token: world.provider, body: #"{"team_id":"\#(world.consumerTeam)","name":"Mine now"}"#)
                #expect(foreignTeam.status == .forbidden)
            }
        }
    }

    @Test func registeringAnAppThroughThePageShowsTheSecretOnce() async throws {
        try await TestPortal.with { portal in
            let world = try await CatalogAPITests.world(portal)
            try await portal.application().test(.router) { client in
                var browser = Browser()
                _ = try await browser.signIn(client, tenant: "acme", email: "dev@example.com")
                let created = try await browser.submit(
                    client, "/t/acme/apps", from: "/t/acme/apps", fields: [("team_id", world.consumerTeam.uuidString), ("name", "Dashboard")])
                #expect(created.status == .seeOther)  // post/redirect/get
                let shown = try await browser.get(client, created.headers[.location] ?? "")
                #expect(shown.text.contains("id=\"new-secret\">tgs_"))
                #expect(!(try await browser.get(client, created.headers[.location] ?? "")).text.contains("id=\"new-secret\""))
                let list = try await browser.get(client, "/t/acme/apps")
                #expect(list.text.contains("Dashboard"))
                #expect(!list.text.contains("tgs_"))
            }
        }
    }
}

extension Fixtures {
    static func tenantID(_ portal: TestPortal, _ slug: String) async throws -> UUID {
        let tenant = try await portal.database.withPlatform { try await TenantRepository(logger: portal.database.logger).find(slug: slug, on: $0) }
        guard let tenant else { throw AppError.notFound("Tenant") }
        return tenant.id
    }
}
