import Foundation
import Gateway
import Hummingbird
import HummingbirdTesting
import Testing

@testable import Portal

@Suite struct PlatformTests {
    static func admin(_ portal: TestPortal) async throws -> (password: String, token: String) {
        let hash = try await Fixtures.hasher.hash("platform passphrase")
        let token = try await portal.database.withPlatform { connection in
            let admins = PlatformAdminRepository(logger: portal.database.logger)
            let id = try await admins.create(email: "ops@example.com", passwordHash: hash, on: connection)
            return try await admins.createToken(adminID: id, name: "test", on: connection)
        }
        return ("platform passphrase", token)
    }

    @Test func platformAPICreatesAndListsTenants() async throws {
        try await TestPortal.with { portal in
            let (_, token) = try await Self.admin(portal)
            try await portal.application().test(.router) { client in
                let anonymous = try await APITests.call(client, .get, "/api/v1/tenants", token: nil)
                #expect(anonymous.status == .unauthorized)
                let created = try await APITests.call(
                    client, .post, "/api/v1/tenants", token: token, body: #"{"slug":"initech","name":"Initech","currency":"EUR","signup_policy":"invite_only"}"#)
                #expect(created.status == .created)
                #expect(try APITests.json(created)["currency"] as? String == "EUR")
                let again = try await APITests.call(client, .post, "/api/v1/tenants", token: token, body: #"{"slug":"initech","name":"Again"}"#)
                #expect(again.status == .conflict)
                let invalid = try await APITests.call(client, .post, "/api/v1/tenants", token: token, body: #"{"slug":"-x-","name":""}"#)
                #expect(invalid.status == .unprocessableContent)
                let list = try APITests.json(try await APITests.call(client, .get, "/api/v1/tenants", token: token))
                #expect((list["items"] as? [[String: Any]])?.compactMap { $0["slug"] as? String } == ["initech"])
                // a tenant token is not a platform token
                #expect(try await APITests.call(client, .get, "/api/v1/tenants", token: "tgp_x").status == .unauthorized)
            }
        }
    }

    @Test func platformConsoleCreatesATenantThroughTheForm() async throws {
        try await TestPortal.with { portal in
            let (password, _) = try await Self.admin(portal)
            try await portal.application().test(.router) { client in
                var browser = Browser()
                #expect(try await browser.get(client, "/platform/").status == .seeOther)
                let login = try await browser.submit(
                    client, "/platform/login", from: "/platform/login", fields: [("email", "ops@example.com"), ("password", password)])
                #expect(login.status == .seeOther)
                let created = try await browser.submit(
                    client, "/platform/tenants", from: "/platform/",
                    fields: [("slug", "hooli"), ("name", "Hooli"), ("currency", "USD"), ("signup_policy", "open"), ("custom_host", "")])
                #expect(created.status == .seeOther)
                let landing = try await browser.get(client, "/")
                #expect(landing.text.contains("/t/hooli/"))
                let badForm = try await browser.submit(
                    client, "/platform/tenants", from: "/platform/", fields: [("slug", "Hooli!"), ("name", "x"), ("currency", "USD")])
                #expect(badForm.status == .unprocessableContent)
                #expect(badForm.text.contains(Slug.rule))
            }
        }
    }

    @Test func healthReadinessAndMetrics() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let health = try await client.execute(uri: "/healthz", method: .get)
                #expect(health.status == .ok)
                let ready = try await client.execute(uri: "/readyz", method: .get)
                #expect(ready.status == .ok)
                #expect(String(buffer: ready.body).contains("\"migrations\":true"))
                let metrics = try await client.execute(uri: "/metrics", method: .get)
                #expect(metrics.status == .ok)
                #expect(metrics.headers[.contentType]?.hasPrefix("text/plain") == true)
            }
        }
    }

    @Test func readinessReportsPendingMigrations() async throws {
        try await TestDatabase.withDatabase(migrate: false) { database in
            let portal = try await TestPortal.make(database)
            let report = await portal.services.checkReadiness()
            #expect(report.databaseReachable)
            #expect(!report.migrationsCurrent)
            #expect(!report.isReady)
        }
    }
}
