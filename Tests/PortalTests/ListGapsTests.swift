import Foundation
import Hummingbird
import HummingbirdTesting
import PostgresNIO
import Testing

@testable import Portal

/// Lists that were cut or answered from a whole-tenant list: webhook endpoints past 500, an app's
/// own subscriptions, `next_cursor` on a list of exactly one page, and the audit log's cursor.
@Suite struct ListGapsTests {
    static func sql(_ portal: TestPortal, _ query: PostgresQuery) async throws {
        try await WebPaginationTests.sql(portal, query)
    }

    static func adminToken(_ portal: TestPortal, _ tenant: Tenant, email: String = "ada@example.com") async throws -> String {
        let user = try #require(try await portal.database.withTenant(tenant.id) { try await portal.services.identity.users.find(email: email, on: $0) })
        return try await APITests.token(portal, tenant: tenant, user: user, scopes: [.read, .write, .admin])
    }

    @Test func webhookEndpointsPastFiveHundredAreReachableOnThePageAndInTheAPI() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            // setup: 505 endpoints of the tenant, more than the old 500-row cut
            let tenant = try await WebPaginationTests.acme(portal)
            try await Self.sql(
                portal,
                """
                INSERT INTO webhook_endpoints (tenant_id, url, secret_sealed, secret_prefix)
                SELECT \(tenant.id), 'https://hooks.example/e' || lpad(i::text, 3, '0'), '\\x00'::bytea, 'whsec_x' FROM generate_series(1, 505) i
                """)
            let token = try await Self.adminToken(portal, tenant)
            try await portal.application().test(.router) { client in
                var admin = Browser()
                _ = try await admin.signIn(client, tenant: "acme", email: "ada@example.com")
                // act: follow "Next page" from the first page to the last
                var seen: Set<String> = []
                var path: String? = "/t/acme/webhooks"
                var pages: [String] = []
                while let next = path, pages.count < 20 {
                    let page = try await admin.get(client, next)
                    #expect(page.status == .ok)
                    pages.append(page.text)
                    for i in 1...505 where page.text.contains("https://hooks.example/e" + String(format: "%03d", i) + "<") {
                        seen.insert(String(i))
                    }
                    path = WebPaginationTests.links(page.text).next
                }
                // assert: every endpoint on exactly one of 11 pages, in address order, and back again
                #expect(pages.count == 11)
                #expect(seen.count == 505)
                #expect(pages[0].contains("hooks.example/e001<") && pages[10].contains("hooks.example/e505<"))
                let back = try #require(WebPaginationTests.links(pages[10]).previous)
                let previous = try await admin.get(client, back).text
                #expect(previous.contains("hooks.example/e451<") && previous.contains("hooks.example/e500<") && !previous.contains("hooks.example/e501<"))
                #expect(try await admin.get(client, "/t/acme/webhooks?after=\(PageRequest.encode("not-an-endpoint"))").status == .badRequest)
                // the JSON API pages them with next_cursor to the end
                var urls: [String] = []
                var cursor: String?
                var calls = 0
                repeat {
                    let body = try APITests.json(
                        try await APITests.call(client, .get, "/t/acme/api/v1/webhooks?limit=100" + (cursor.map { "&cursor=\($0)" } ?? ""), token: token))
                    urls += ((body["items"] as? [[String: Any]]) ?? []).compactMap { $0["url"] as? String }
                    cursor = body["next_cursor"] as? String
                    calls += 1
                } while cursor != nil && calls < 20
                #expect(urls.count == 505 && Set(urls).count == 505)
                #expect(calls == 6)
                #expect(urls.last == "https://hooks.example/e505")
            }
        }
    }

    @Test func theAppPageAndTheConflictAnswerReadTheAppsOwnSubscriptions() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup: the app's one subscription is older than 1,000 subscriptions of its team's other apps
                let s = try await SubscriptionTests.setup(portal, client)
                let subscribed = try await SubscriptionTests.subscribe(client, s, plan: s.freePlan)
                let id = try #require(try APITests.json(subscribed)["id"] as? String)
                let tenant = try await WebPaginationTests.acme(portal)
                let app = try #require(UUID(uuidString: s.appID))
                let (subscription, api, plan) = (try #require(UUID(uuidString: id)), try #require(UUID(uuidString: s.apiID)), try #require(UUID(uuidString: s.freePlan)))
                try await Self.sql(portal, "UPDATE subscriptions SET created_at = now() - interval '1 day' WHERE id = \(subscription)")
                try await Self.sql(
                    portal,
                    """
                    WITH a AS (
                        INSERT INTO apps (tenant_id, team_id, name, client_id)
                        SELECT \(tenant.id), (SELECT team_id FROM apps WHERE id = \(app)), 'Other app ' || i, 'other-' || i
                        FROM generate_series(1, 1001) i RETURNING id
                    )
                    INSERT INTO subscriptions (tenant_id, app_id, api_id, plan_id, state)
                    SELECT \(tenant.id), a.id, \(api), \(plan), 'active' FROM a
                    """)
                var developer = Browser()
                _ = try await developer.signIn(client, tenant: "acme", email: "dev@example.com")
                // act
                let page = try await developer.get(client, "/t/acme/apps/\(s.appID)")
                let again = try await developer.submit(
                    client, "/t/acme/apps/\(s.appID)/subscriptions", from: "/t/acme/apps/\(s.appID)", fields: [("plan_id", s.proPlan)])
                // assert: the page lists it (and does not offer the API again); a second subscription leads to it
                #expect(page.status == .ok)
                #expect(page.text.contains("/subscriptions/\(id)"))
                #expect(!page.text.contains("value=\"\(s.proPlan)\""))
                #expect(again.status == .conflict)
                #expect(again.text.contains("already has a subscription to this API"))
                #expect(again.text.contains(id))
            }
        }
    }

    @Test func aListOfExactlyOnePageHasNoNextCursor() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup: 2 teams, 1 API, 3 users, one tenant, some audit events
                let world = try await CatalogAPITests.world(portal)
                _ = try await PlanAPITests.publishedAPI(client, world)
                let tenant = try await WebPaginationTests.acme(portal)
                _ = try await Fixtures.user(portal.database, tenant: tenant, email: "ada@example.com", roles: [.admin])
                let admin = try await Self.adminToken(portal, tenant)
                let events = try await portal.database.withTenant(tenant.id) { connection in
                    var count = 0
                    for try await n in try await connection.query("SELECT count(*)::int FROM audit_events", logger: TestDatabase.logger).decode(Int.self) {
                        count = n
                    }
                    return count
                }
                #expect(events >= 2)
                let (_, platform) = try await PlatformTests.admin(portal)
                let lists: [(path: String, token: String, count: Int)] = [
                    ("/t/acme/api/v1/teams", admin, 2), ("/t/acme/api/v1/apis", world.provider, 1), ("/t/acme/api/v1/users", admin, 3),
                    ("/t/acme/api/v1/audit-events", admin, events), ("/api/v1/tenants", platform, 1),
                ]
                for list in lists {
                    // act + assert: exactly one page: no next_cursor
                    let whole = try APITests.json(try await APITests.call(client, .get, list.path + "?limit=\(list.count)", token: list.token))
                    #expect((whole["items"] as? [Any])?.count == list.count, "\(list.path)")
                    #expect(whole["next_cursor"] == nil, "\(list.path)")
                    // one short of the list: a next page that holds the last item and ends the list
                    let short = try APITests.json(try await APITests.call(client, .get, list.path + "?limit=\(list.count - 1 == 0 ? 1 : list.count - 1)", token: list.token))
                    if list.count > 1 {
                        let cursor = try #require(short["next_cursor"] as? String, "\(list.path)")
                        let rest = try APITests.json(
                            try await APITests.call(client, .get, list.path + "?limit=\(list.count - 1)&cursor=\(cursor)", token: list.token))
                        #expect((rest["items"] as? [Any])?.count == 1, "\(list.path)")
                        #expect(rest["next_cursor"] == nil, "\(list.path)")
                    }
                }
            }
        }
    }

    @Test func aBadAuditCursorIsAReadable400Page() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            try await portal.application().test(.router) { client in
                // setup: more than a page of events (100)
                let tenant = try await WebPaginationTests.acme(portal)
                try await Self.sql(
                    portal,
                    "INSERT INTO audit_events (tenant_id, actor, action) SELECT \(tenant.id), 'ada@example.com', 'team.created' FROM generate_series(1, 120)")
                var admin = Browser()
                _ = try await admin.signIn(client, tenant: "acme", email: "ada@example.com")
                // act + assert: the page's own "Older events" link works
                let first = try await admin.get(client, "/t/acme/admin/audit").text
                let marker = "/t/acme/admin/audit?before="
                let start = try #require(first.range(of: marker))
                let older = String(first[start.lowerBound...].prefix { $0 != "\"" })
                #expect(try await admin.get(client, older).status == .ok)
                // a cursor it did not make is the 400 page other lists give, not the newest events again
                for before in ["nonsense", "%25%25", UUID().uuidString] {
                    let page = try await admin.get(client, "/t/acme/admin/audit?before=\(before)")
                    #expect(page.status == .badRequest, "\(before)")
                    #expect(page.headers[.contentType]?.hasPrefix("text/html") == true)
                    #expect(page.text.contains("first page"), "\(before)")
                }
            }
        }
    }
}
