import Foundation
import Hummingbird
import HummingbirdTesting
import PostgresNIO
import Testing

@testable import Portal

/// One-time messages after a post/redirect/get live in PostgreSQL, sealed, bound to one browser.
@Suite struct WebFlashTests {
    static func secret(in html: String) -> String? {
        guard html.contains("id=\"new-secret\"") else { return nil }
        return html.components(separatedBy: "id=\"new-secret\">").last?.components(separatedBy: "<").first
    }

    static func flashRows(_ portal: TestPortal) async throws -> [(sealed: Data, expired: Bool, tenant: UUID?)] {
        try await portal.database.withSystemScope { connection in
            var rows: [(Data, Bool, UUID?)] = []
            for try await row in try await connection.query(
                "SELECT sealed, expires_at < now(), tenant_id FROM web_flashes ORDER BY created_at", logger: TestDatabase.logger
            ).decode((Data, Bool, UUID?).self) {
                rows.append(row)
            }
            return rows
        }
    }

    /// A browser signed in as the world's developer.
    static func developer(_ client: some TestClientProtocol) async throws -> Browser {
        var browser = Browser()
        _ = try await browser.signIn(client, tenant: "acme", email: "dev@example.com")
        return browser
    }

    /// Registers an app through the form; answers the redirect.
    static func createApp(_ browser: inout Browser, _ client: some TestClientProtocol, team: UUID, name: String) async throws -> TestResponse {
        try await browser.submit(client, "/t/acme/apps", from: "/t/acme/apps", fields: [("team_id", team.uuidString), ("name", name)])
    }

    @Test func aSecretShowsOnceToItsSessionEvenFromAnotherPortalProcess() async throws {
        try await TestPortal.with { portal in
            // setup: two portal processes on one database (as behind a load balancer), one server key
            let world = try await CatalogAPITests.world(portal)
            let other = try await TestPortal.make(portal.database)
            try await portal.application().test(.router) { first in
                try await other.application().test(.router) { second in
                    var dev = try await Self.developer(first)
                    var sameUserElsewhere = try await Self.developer(second)
                    // act: the form posts to one process ...
                    let created = try await Self.createApp(&dev, first, team: world.consumerTeam, name: "Balanced app")
                    #expect(created.status == .seeOther)
                    let page = created.headers[.location] ?? ""
                    let stored = try await Self.flashRows(portal)
                    #expect(stored.count == 1)
                    // assert: another session of the same user sees no secret
                    #expect(Self.secret(in: try await sameUserElsewhere.get(second, page).text) == nil)
                    // ... and the redirect lands on the other process, which shows it once
                    let shown = try #require(Self.secret(in: try await dev.get(second, page).text))
                    #expect(shown.hasPrefix("tgs_") && shown.count > 30)
                    #expect(try await Self.flashRows(portal).isEmpty)  // consumed on read
                    #expect(Self.secret(in: try await dev.get(second, page).text) == nil)
                    #expect(Self.secret(in: try await dev.get(first, page).text) == nil)
                    // sealed: the stored bytes do not carry the secret
                    let sealed = try #require(stored.first?.sealed)
                    #expect(sealed.range(of: Data(shown.utf8)) == nil)
                    #expect(sealed.range(of: Data("Client secret".utf8)) == nil)
                    #expect(stored.first?.tenant != nil)
                }
            }
        }
    }

    @Test func anExpiredFlashIsNotShownAndIsDeletedByTheNextWrite() async throws {
        try await TestPortal.with { portal in
            let world = try await CatalogAPITests.world(portal)
            try await portal.application().test(.router) { client in
                var dev = try await Self.developer(client)
                var other = try await Self.developer(client)
                // setup: a flash left unread for longer than its lifetime
                let created = try await Self.createApp(&dev, client, team: world.consumerTeam, name: "Slow reader")
                try await portal.database.withSystemScope { connection in
                    _ = try await connection.query("UPDATE web_flashes SET expires_at = now() - interval '1 minute'", logger: TestDatabase.logger)
                }
                // act: another browser's write
                _ = try await Self.createApp(&other, client, team: world.consumerTeam, name: "Fresh")
                // assert: the expired row went with it; only the fresh one is left
                let rows = try await Self.flashRows(portal)
                #expect(rows.count == 1)
                #expect(rows.allSatisfy { !$0.expired })
                #expect(Self.secret(in: try await dev.get(client, created.headers[.location] ?? "").text) == nil)
            }
        }
    }

    @Test func aFlashMovedToAnotherBrowserOrReadWithAnotherKeyDoesNotOpen() async throws {
        try await TestPortal.with { portal in
            let world = try await CatalogAPITests.world(portal)
            let tenant = try #require(try await portal.database.withPlatform { try await portal.services.tenants.find(slug: "acme", on: $0) })
            try await portal.application().test(.router) { client in
                var dev = try await Self.developer(client)
                var thief = try await Self.developer(client)
                let created = try await Self.createApp(&dev, client, team: world.consumerTeam, name: "Sealed")
                // act: someone with write access to the table rebinds the row to another session
                let thiefKey = FlashStore.key(try #require(thief.cookies["tg_session"]), secret: portal.services.secret)
                try await portal.database.withSystemScope { connection in
                    _ = try await connection.query("UPDATE web_flashes SET binding_hash = \(thiefKey)", logger: TestDatabase.logger)
                }
                // assert: the seal is bound to the browser it was written for
                #expect(Self.secret(in: try await thief.get(client, created.headers[.location] ?? "").text) == nil)
                #expect(try await Self.flashRows(portal).isEmpty)
                // and a process with another server key opens nothing it did not seal
                let session = try #require(dev.cookies["tg_session"])
                try await portal.services.flashes.put(Flash(secretLabel: "x", secret: "s3cret"), tenantID: tenant.id, binding: session)
                let stranger = FlashStore(database: portal.database, secret: SecretKey(bytes: Array(repeating: 9, count: 32)), logger: TestDatabase.logger)
                #expect(try await stranger.take(tenantID: tenant.id, binding: session) == nil)
                #expect(try await portal.services.flashes.take(tenantID: tenant.id, binding: session)?.secret == "s3cret")
                #expect(try await portal.services.flashes.take(tenantID: tenant.id, binding: session) == nil)
            }
        }
    }

    @Test func thePlatformConsoleShowsANewTokenOnceWithNoTenantSelected() async throws {
        try await TestPortal.with { portal in
            let (password, _) = try await PlatformTests.admin(portal)
            try await portal.application().test(.router) { client in
                var browser = Browser()
                _ = try await browser.submit(client, "/platform/login", from: "/platform/login", fields: [("email", "ops@example.com"), ("password", password)])
                // act
                let created = try await browser.submit(client, "/platform/tokens", from: "/platform/", fields: [("name", "ci")])
                // assert: post/redirect/get, a platform-scoped row, shown once
                #expect(created.status == .seeOther)
                let rows = try await Self.flashRows(portal)
                #expect(rows.count == 1 && rows.first?.tenant == nil)
                let console = try await browser.get(client, "/platform/")
                #expect(console.text.contains("id=\"new-token\""))
                #expect(console.text.contains("tgx_"))
                #expect(!(try await browser.get(client, "/platform/").text.contains("id=\"new-token\"")))
                // a tenant's scope does not see platform rows (and the reverse)
                let tenant = try await Fixtures.tenant(portal.database, slug: "acme")
                let visible = try await portal.database.withTenant(tenant.id) { connection in
                    try await connection.query("SELECT count(*) FROM web_flashes", logger: TestDatabase.logger).decode(Int.self).reduce(0, +)
                }
                #expect(visible == 0)
            }
        }
    }
}
