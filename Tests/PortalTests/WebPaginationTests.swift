import Foundation
import Hummingbird
import HummingbirdTesting
import PostgresNIO
import Testing

@testable import Portal

/// Every list of the web pages comes in pages with links only to pages that exist.
@Suite struct WebPaginationTests {
    /// The page's links: first, previous, next (as hrefs, entities decoded), nil when absent.
    static func links(_ html: String) -> (first: String?, previous: String?, next: String?) {
        func href(_ label: String) -> String? {
            guard let end = html.range(of: "\">\(label)</a>") else { return nil }
            let before = html[..<end.lowerBound]
            guard let start = before.range(of: "href=\"", options: .backwards) else { return nil }
            return String(before[start.upperBound...]).replacingOccurrences(of: "&amp;", with: "&")
        }
        return (href("First page"), href("Previous page"), href("Next page"))
    }

    static func count(_ needle: String, in html: String) -> Int { html.components(separatedBy: needle).count - 1 }

    static func acme(_ portal: TestPortal) async throws -> Tenant {
        try #require(try await portal.database.withPlatform { try await portal.services.tenants.find(slug: "acme", on: $0) })
    }

    static func sql(_ portal: TestPortal, _ query: PostgresQuery) async throws {
        try await portal.database.withSystemScope { connection in _ = try await connection.query(query, logger: TestDatabase.logger) }
    }

    @Test func teamsPageForwardAndBackWithOpaqueCursors() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            // setup: 60 teams, more than one page of 50
            let tenant = try await Self.acme(portal)
            try await Self.sql(
                portal,
                "INSERT INTO teams (tenant_id, slug, name) SELECT \(tenant.id), 'team-' || lpad(i::text, 3, '0'), 'Team ' || i FROM generate_series(1, 60) i")
            try await portal.application().test(.router) { client in
                var admin = Browser()
                _ = try await admin.signIn(client, tenant: "acme", email: "ada@example.com")
                // act + assert: the first page links onwards only
                let first = try await admin.get(client, "/t/acme/teams").text
                #expect(Self.count("href=\"/t/acme/teams/team-", in: first) == 50)
                #expect(first.contains("team-001") && first.contains("team-050") && !first.contains("team-051"))
                let firstLinks = Self.links(first)
                #expect(firstLinks.first == nil && firstLinks.previous == nil)
                let next = try #require(firstLinks.next)
                #expect(!next.contains("team-050"))  // the cursor is not the key in clear
                // the second (last) page: back links, no next
                let second = try await admin.get(client, next).text
                #expect(Self.count("href=\"/t/acme/teams/team-", in: second) == 10)
                #expect(second.contains("team-051") && second.contains("team-060") && !second.contains("team-050\""))
                let secondLinks = Self.links(second)
                #expect(secondLinks.next == nil)
                #expect(secondLinks.first == "/t/acme/teams")
                let previous = try #require(secondLinks.previous)
                let back = try await admin.get(client, previous).text
                #expect(Self.count("href=\"/t/acme/teams/team-", in: back) == 50)
                #expect(back.contains("team-001") && back.contains("team-050"))
                #expect(Self.links(back).previous == nil && Self.links(back).next != nil)
                // a smaller page on request, bounded
                let small = try await admin.get(client, "/t/acme/teams?limit=20").text
                #expect(Self.count("href=\"/t/acme/teams/team-", in: small) == 20)
                #expect(Self.links(small).next?.contains("limit=20") == true)
                #expect(try await admin.get(client, "/t/acme/teams?limit=100000").status == .badRequest)
            }
        }
    }

    @Test func aBadCursorIsAReadable400Page() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            try await portal.application().test(.router) { client in
                var admin = Browser()
                _ = try await admin.signIn(client, tenant: "acme", email: "ada@example.com")
                for path in ["/t/acme/teams?after=%25%25", "/t/acme/apps?before=***", "/t/acme/admin/users?after=x&before=y", "/t/acme/catalog?after=@@"] {
                    let page = try await admin.get(client, path)
                    #expect(page.status == .badRequest, "\(path)")
                    #expect(page.headers[.contentType]?.hasPrefix("text/html") == true)
                    #expect(page.text.contains("first page") || page.text.contains("page links"), "\(path)")
                }
            }
        }
    }

    @Test func theOnlyPageHasNoPageLinks() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            try await portal.application().test(.router) { client in
                var admin = Browser()
                _ = try await admin.signIn(client, tenant: "acme", email: "ada@example.com")
                for path in ["/t/acme/teams", "/t/acme/apps", "/t/acme/admin/users", "/t/acme/catalog", "/t/acme/subscriptions", "/t/acme/webhooks", "/t/acme/account"] {
                    let page = try await admin.get(client, path)
                    #expect(page.status == .ok, "\(path)")
                    #expect(!page.text.contains("class=\"pages\""), "\(path)")
                }
            }
        }
    }

    @Test func appsUsersAndDeliveriesArePaged() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            // setup: 55 apps, 55 more users, an endpoint with 55 deliveries
            let tenant = try await Self.acme(portal)
            try await Self.sql(portal, "INSERT INTO teams (tenant_id, slug, name) VALUES (\(tenant.id), 'crew', 'Crew')")
            try await Self.sql(
                portal,
                """
                INSERT INTO apps (tenant_id, team_id, name, client_id)
                SELECT \(tenant.id), (SELECT id FROM teams WHERE slug = 'crew'), 'App ' || lpad(i::text, 2, '0'), 'client-' || i FROM generate_series(1, 55) i
                """)
            try await Self.sql(
                portal,
                """
                INSERT INTO users (tenant_id, email, display_name, password_hash)
                SELECT \(tenant.id), 'user' || lpad(i::text, 2, '0') || '@example.com', 'User ' || i, 'x' FROM generate_series(1, 55) i
                """)
            let endpoint = UUID()
            try await Self.sql(
                portal,
                """
                INSERT INTO webhook_endpoints (id, tenant_id, url, secret_sealed, secret_prefix)
                VALUES (\(endpoint), \(tenant.id), 'https://hooks.example/in', '\\x00'::bytea, 'whsec_x')
                """)
            try await Self.sql(
                portal,
                """
                WITH e AS (
                    INSERT INTO webhook_events (tenant_id, type, payload)
                    SELECT \(tenant.id), 'app.created', jsonb_build_object('n', i) FROM generate_series(1, 55) i RETURNING id, payload
                )
                INSERT INTO webhook_deliveries (tenant_id, endpoint_id, event_id, created_at)
                SELECT \(tenant.id), \(endpoint), e.id, now() - make_interval(secs => (e.payload->>'n')::int) FROM e
                """)
            try await portal.application().test(.router) { client in
                var admin = Browser()
                _ = try await admin.signIn(client, tenant: "acme", email: "ada@example.com")
                // apps (a list kept in memory), in name order
                let apps = try await admin.get(client, "/t/acme/apps").text
                #expect(apps.contains("App 01") && apps.contains("App 50") && !apps.contains("App 51"))
                let appsNext = try #require(Self.links(apps).next)
                let apps2 = try await admin.get(client, appsNext).text
                #expect(apps2.contains("App 51") && apps2.contains("App 55") && !apps2.contains("App 50<"))
                #expect(Self.links(apps2).next == nil && Self.links(apps2).previous != nil)
                // users (keyset in SQL): 56 with the admin
                let users = try await admin.get(client, "/t/acme/admin/users").text
                let usersNext = try #require(Self.links(users).next)
                let users2 = try await admin.get(client, usersNext).text
                #expect(Self.count("<tr><td>", in: users) == 50)
                #expect(Self.count("<tr><td>", in: users2) == 6)
                #expect(Self.links(users2).next == nil)
                // deliveries (keyset on time, newest first): 50, then 5, then back
                let log = try await admin.get(client, "/t/acme/webhooks/\(endpoint)").text
                #expect(Self.count("/deliveries/", in: log) >= 50)
                let logNext = try #require(Self.links(log).next)
                let log2 = try await admin.get(client, logNext).text
                #expect(Self.links(log2).next == nil)
                let log2Rows = Self.count("<code>app.created</code>", in: log2)
                #expect(log2Rows == 5)
                let logBack = try await admin.get(client, try #require(Self.links(log2).previous)).text
                #expect(Self.count("<code>app.created</code>", in: logBack) == 50)
                #expect(Self.links(logBack).previous == nil)
                // the JSON API pages the same lists with next_cursor
                let token = try await APITests.token(
                    portal, tenant: tenant, user: try #require(try await portal.database.withTenant(tenant.id) {
                        try await portal.services.identity.users.find(email: "ada@example.com", on: $0)
                    }), scopes: [.read, .write, .admin])
                var seen = 0
                var cursor: String?
                repeat {
                    let path = "/t/acme/api/v1/webhooks/\(endpoint)/deliveries?limit=20" + (cursor.map { "&cursor=\($0)" } ?? "")
                    let body = try APITests.json(try await APITests.call(client, .get, path, token: token))
                    seen += (body["items"] as? [Any])?.count ?? 0
                    cursor = body["next_cursor"] as? String
                } while cursor != nil && seen < 200
                #expect(seen == 55)
                let appsPage = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/apps?limit=50", token: token))
                #expect((appsPage["items"] as? [Any])?.count == 50)
                let appsCursor = try #require(appsPage["next_cursor"] as? String)
                let appsRest = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/apps?limit=50&cursor=\(appsCursor)", token: token))
                #expect((appsRest["items"] as? [Any])?.count == 5)
                #expect(appsRest["next_cursor"] == nil)
            }
        }
    }

    @Test func theProvidersQueueIsPagedInSQLAwaitingFirst() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup: one real subscription, then 54 more apps subscribed in SQL, 5 of them pending
                let s = try await SubscriptionTests.setup(portal, client)
                #expect(try await SubscriptionTests.subscribe(client, s, plan: s.freePlan).status == .created)
                let tenant = try await Self.acme(portal)
                try await Self.sql(
                    portal,
                    """
                    WITH a AS (
                        INSERT INTO apps (tenant_id, team_id, name, client_id)
                        SELECT \(tenant.id), (SELECT team_id FROM apps WHERE id = \(UUID(uuidString: s.appID)!)), 'Queue app ' || i, 'queue-' || i
                        FROM generate_series(1, 54) i RETURNING id, name
                    )
                    INSERT INTO subscriptions (tenant_id, app_id, api_id, plan_id, state, created_at)
                    SELECT \(tenant.id), a.id, \(UUID(uuidString: s.apiID)!), \(UUID(uuidString: s.freePlan)!),
                        CASE WHEN split_part(a.name, ' ', 3)::int <= 5 THEN 'pending' ELSE 'active' END,
                        now() - make_interval(mins => 100 - split_part(a.name, ' ', 3)::int)
                    FROM a
                    """)
                var admin = Browser()
                let ada = try await Fixtures.user(portal.database, tenant: tenant, email: "ada@example.com", roles: [.admin])
                _ = try await admin.signIn(client, tenant: "acme", email: "ada@example.com")
                // act + assert: 50, then 5; what awaits the provider first
                let first = try await admin.get(client, "/t/acme/subscriptions").text
                #expect(Self.count("/t/acme/subscriptions/", in: first) == 50)
                let pending = first.components(separatedBy: "pending approval").count - 1
                #expect(pending == 5)
                let firstRows = first.components(separatedBy: "<tr>").dropFirst(2)
                #expect(firstRows.prefix(5).allSatisfy { $0.contains("pending approval") })
                let next = try #require(Self.links(first).next)
                let second = try await admin.get(client, next).text
                #expect(Self.count("/t/acme/subscriptions/", in: second) == 5)
                #expect(Self.links(second).next == nil)
                let back = try await admin.get(client, try #require(Self.links(second).previous)).text
                #expect(Self.count("/t/acme/subscriptions/", in: back) == 50)
                #expect(Self.links(back).previous == nil)
                #expect(try await admin.get(client, "/t/acme/subscriptions?after=" + PageRequest.encode("not-a-uuid")).status == .badRequest)
                // the JSON API: the same pages, the queue filter in SQL
                let token = try await APITests.token(portal, tenant: tenant, user: ada, scopes: [.read])
                let queue = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/subscriptions?awaiting=provider", token: token))
                #expect((queue["items"] as? [Any])?.count == 5)
                #expect(queue["next_cursor"] == nil)
                var seen = 0
                var cursor: String?
                repeat {
                    let body = try APITests.json(
                        try await APITests.call(client, .get, "/t/acme/api/v1/subscriptions?limit=20" + (cursor.map { "&cursor=\($0)" } ?? ""), token: token))
                    seen += (body["items"] as? [Any])?.count ?? 0
                    cursor = body["next_cursor"] as? String
                } while cursor != nil && seen < 200
                #expect(seen == 55)
            }
        }
    }

    @Test func usageRowsArePagedByDayAndPosition() async throws {
        // setup: 7 days × 15 rows, pages of 50 that cross day boundaries
        let day0 = try #require(DisplayDate.parseDay("2026-11-01"))
        let all: [[String]] = (0..<7).flatMap { d in
            (0..<15).map { r in [DisplayDate.day(day0.addingTimeInterval(Double(d) * 86400)), "acme", "row \(d)-\(r)"] }
        }
        func fetch(_ from: Date, _ limit: Int) async throws -> [[String]] {
            Array(all.filter { DisplayDate.parseDay($0[0])! >= from }.prefix(limit))
        }
        // act: forward through every page, then back
        var pages: [[[String]]] = []
        var window = try await UsageWindow.resolve(PageRequest(size: 50), from: day0, fetch: fetch)
        pages.append(window.rows)
        while let next = window.next {
            window = try await UsageWindow.resolve(PageRequest(position: .after(try PageRequest.decode(next.cursor)), size: 50), from: day0, fetch: fetch)
            pages.append(window.rows)
        }
        // assert
        #expect(pages.map(\.count) == [50, 50, 5])
        #expect(pages.flatMap { $0 } == all)
        let back = try await UsageWindow.resolve(
            PageRequest(position: .before(try PageRequest.decode(try #require(window.start).cursor)), size: 50), from: day0, fetch: fetch)
        #expect(back.rows == pages[1])
        let backAgain = try await UsageWindow.resolve(
            PageRequest(position: .before(try PageRequest.decode(try #require(back.start).cursor)), size: 50), from: day0, fetch: fetch)
        #expect(backAgain.rows == pages[0])
        #expect(backAgain.start == nil)
        // a tampered cursor is a bad request, not a crash
        await #expect(throws: AppError.self) {
            _ = try await UsageWindow.resolve(PageRequest(position: .after("2026-11-01|-3|1"), size: 50), from: day0, fetch: fetch)
        }
    }
}
