import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import Portal

/// The rules behind the web pages: line-based fields, empty values, return paths, summaries.
@Suite struct WebRuleTests {
    @Test(arguments: [
        ("https://a.example\r\nhttps://b.example", ["https://a.example", "https://b.example"]),
        ("https://a.example\nhttps://b.example\n", ["https://a.example", "https://b.example"]),
        ("https://a.example\rhttps://b.example", ["https://a.example", "https://b.example"]),
        ("  one  \r\n\r\n two\r\n", ["one", "two"]),
        ("", []), ("\r\n", []),
    ])
    func linesSplitOnCRLFToo(text: String, expected: [String]) {
        #expect(TextLines.split(text) == expected)
    }

    @Test func itemsSplitOnLinesCommasAndSpaces() {
        #expect(TextLines.items("GET, POST\r\nPUT DELETE") == ["GET", "POST", "PUT", "DELETE"])
        #expect(TextLines.all("a\r\n\r\nb\nc\r") == ["a", "", "b", "c", ""])
    }

    @Test func targetsAndTiersFromABrowserTextArea() throws {
        let targets = try CatalogPages.parseTargets("http://127.0.0.1:9100 3\r\nhttp://127.0.0.1:9101\r\n")
        #expect(targets.map(\.url) == ["http://127.0.0.1:9100", "http://127.0.0.1:9101"])
        #expect(targets.map(\.weight) == [3, 1])
    }

    @Test(arguments: [
        ("/t/acme/apps", "/t/acme/apps"), ("/t/acme/apps?x=1", "/t/acme/apps?x=1"), ("https://evil.example/", "/t/acme/"),
        ("//evil.example/", "/t/acme/"), ("/\\evil.example/", "/t/acme/"), ("\\\\evil.example", "/t/acme/"), ("/t/acme/\t/evil.example", "/t/acme/"),
        ("\t//evil.example", "/t/acme/"), ("/%2F%2Fevil.example", "/t/acme/"), ("/%252F%252Fevil.example", "/t/acme/"),
        ("/t/acme/%5C%5Cevil.example", "/t/acme/"), ("/t/acme/../other/", "/t/acme/"), ("/t/other/apps", "/t/acme/"),
        ("javascript:alert(1)", "/t/acme/"), ("/t/acme/\nLocation: x", "/t/acme/"), ("", "/t/acme/"), ("/t/acmeevil/", "/t/acme/"),
        ("/t/acme/%09/evil", "/t/acme/"),
    ])
    func loginReturnPaths(next: String, expected: String) {
        #expect(ReturnPath.safe(next, base: "/t/acme") == expected, "\(next)")
    }

    @Test func returnPathsOnATenantHost() {
        #expect(ReturnPath.safe("/apps", base: "") == "/apps")
        #expect(ReturnPath.safe("//evil.example", base: "") == "/")
        #expect(ReturnPath.safe("/\\evil.example", base: "") == "/")
    }

    @Test func emptyValuesAreNotSet() {
        let none: String? = nil
        let values = Views.presentable([
            "missing": none as Any, "empty": "", "set": "x", "list": [["a": ""]] as [[String: Any]], "none": [] as [[String: Any]],
            "dict": [String: Any](),
        ])
        #expect(values["missing"] == nil)
        #expect(values["empty"] == nil)
        #expect(values["dict"] == nil)
        #expect(values["set"] as? String == "x")
        #expect(values["has_list"] as? Bool == true)
        #expect(values["has_none"] == nil)
        #expect((values["list"] as? [[String: Any]])?.first?["a"] == nil)
    }

    @Test func catalogSummaryIsTheFirstParagraphAsPlainText() {
        #expect(Markdown.summary("Returns **what** you [send](https://x.example) & `more`.\r\n\r\nSecond.") == "Returns what you send & more.")
        #expect(Markdown.summary("\r\n```\ncode\n```\n\n# Title\n\nBody") == "Title")
        #expect(Markdown.summary(String(repeating: "word ", count: 100), limit: 20) == "word word word word…")
    }

    @Test func plurals() {
        #expect(Plural.count(1, "app") == "1 app")
        #expect(Plural.count(2, "app") == "2 apps")
        #expect(Plural.count(0, "team") == "0 teams")
    }

    @Test func aPageInMemoryLinksOnlyToPagesThatExist() throws {
        let items = (1...5).map { String(format: "k%02d", $0) }
        // only page: no links at all
        let only = ListPage.slice(items, PageRequest(size: 10), key: { $0 })
        #expect(only.items == items)
        #expect(only.pager(path: "/x").isEmpty)
        // first of three: next only
        let first = ListPage.slice(items, PageRequest(size: 2), key: { $0 })
        #expect(first.items == ["k01", "k02"])
        #expect(first.previous == nil && first.isFirst)
        let next = try #require(first.next)
        #expect(!next.contains("k02"))  // opaque: base64url of the sort key
        #expect(try PageRequest.decode(next) == "k02")
        // middle: both ways, and a first-page link
        let middle = ListPage.slice(items, PageRequest(position: .after("k02"), size: 2), key: { $0 })
        #expect(middle.items == ["k03", "k04"])
        let links = middle.pager(path: "/x", query: [("period", "2026-11"), ("after", "old")], size: 2)
        #expect(links["first_href"] as? String == "/x?period=2026-11&limit=2")
        #expect((links["next_href"] as? String)?.hasPrefix("/x?period=2026-11&limit=2&after=") == true)
        #expect((links["previous_href"] as? String)?.contains("before=") == true)
        // back from the middle: the first page again, with no previous link
        let back = ListPage.slice(items, PageRequest(position: .before("k03"), size: 2), key: { $0 })
        #expect(back.items == ["k01", "k02"])
        #expect(back.isFirst && back.previous == nil && back.next != nil)
        // last page: previous only
        let last = ListPage.slice(items, PageRequest(position: .after("k04"), size: 2), key: { $0 })
        #expect(last.items == ["k05"])
        #expect(last.next == nil && last.previous != nil)
    }

    @Test func badCursorsAndLimitsAreBadRequests() throws {
        for query in [[("after", "%%%")], [("before", "!!")], [("limit", "0")], [("limit", "101")], [("limit", "ten")], [("after", "YQ"), ("before", "YQ")]] {
            #expect(throws: AppError.self) { try PageRequest(query: query) }
            do { _ = try PageRequest(query: query) } catch let error as AppError { #expect(error.status == .badRequest) } catch {}
        }
        #expect(try PageRequest(query: [("after", PageRequest.encode("acme")), ("limit", "20")]) == PageRequest(position: .after("acme"), size: 20))
    }
}

/// The pages as a browser sees them, with the HTML asserted.
@Suite struct WebPagesTests {
    static func location(_ response: TestResponse) -> String { response.headers[.location] ?? "" }

    @Test func anAppsSecretShowsOnceAfterTheRedirect() async throws {
        try await TestPortal.with { portal in
            let world = try await CatalogAPITests.world(portal)
            try await portal.application().test(.router) { client in
                var dev = Browser()
                _ = try await dev.signIn(client, tenant: "acme", email: "dev@example.com")
                // act
                let created = try await dev.submit(
                    client, "/t/acme/apps", from: "/t/acme/apps", fields: [("team_id", world.consumerTeam.uuidString), ("name", "Web app")])
                // assert: post/redirect/get, nothing secret in the address
                #expect(created.status == .seeOther)
                let page = Self.location(created)
                #expect(page.hasPrefix("/t/acme/apps/"))
                #expect(!page.contains("tgs_"))
                let first = try await dev.get(client, page)
                #expect(first.text.contains("id=\"new-secret\""))
                let secret = first.text.components(separatedBy: "id=\"new-secret\">").last?.components(separatedBy: "<").first ?? ""
                #expect(secret.hasPrefix("tgs_") && secret.count > 30)
                let reload = try await dev.get(client, page)
                #expect(!reload.text.contains("id=\"new-secret\""))
                #expect(!reload.text.contains(secret))
                // a new API key: one redirect, one key, whatever the reloads
                let key = try await dev.submit(client, page + "/api-keys", from: page, fields: [("name", "ci")])
                #expect(key.status == .seeOther)
                #expect(try await dev.get(client, page).text.contains("id=\"new-secret\""))
                let keys = try await APITests.call(client, .get, "/t/acme/api/v1/apps/\(page.split(separator: "/").last ?? "")", token: world.developer)
                #expect(keys.text.components(separatedBy: "\"api_key\"").count - 1 <= 1)
                // the form's own address, loaded, leads back to the app
                let dead = try await dev.get(client, page + "/api-keys")
                #expect(dead.status == .seeOther)
                #expect(Self.location(dead) == page)
                // revoking asks first (no script: a second button inside a disclosure)
                #expect(reload.text.contains("Revoke for good"))
                // the second person in the same team sees no secret
                let list = try await dev.get(client, "/t/acme/apps")
                #expect(list.text.contains("1 app<"))
            }
        }
    }

    @Test func aPolicyTypedInABrowserSavesBothOriginsAndErrorsStayByTheirField() async throws {
        try await TestPortal.with { portal in
            let world = try await CatalogAPITests.world(portal)
            try await portal.application().test(.router) { client in
                let id = try await PlanAPITests.publishedAPI(client, world)
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let page = "/t/acme/catalog/apis/\(id)"
                // act: CRLF as browsers send text areas
                let saved = try await provider.submit(
                    client, page + "/policy", from: page,
                    fields: [("cors_origins", "https://one.example\r\nhttps://two.example"), ("ip_deny", "198.51.100.0/24\r\n203.0.113.9")])
                // assert
                #expect(saved.status == .seeOther)
                let shown = try await provider.get(client, page)
                #expect(shown.text.contains("Gateway policy saved."))
                #expect(shown.text.contains("https://one.example\nhttps://two.example"))
                #expect(shown.text.contains("203.0.113.9"))
                #expect(!(try await provider.get(client, page)).text.contains("Gateway policy saved."))
                // a mistake: the message next to the field, the typed text kept, no internal names
                let refused = try await provider.submit(
                    client, page + "/policy", from: page, fields: [("cors_origins", "https://three.example\r\nnot an origin/"), ("max_request_bytes", "lots")])
                #expect(refused.status == .unprocessableContent)
                #expect(refused.text.contains("id=\"cors_origins-error\""))
                #expect(refused.text.contains("id=\"max_request_bytes-error\""))
                #expect(refused.text.contains("https://three.example"))
                #expect(refused.text.contains("value=\"lots\""))
                #expect(!refused.text.contains("cors.allowed_origins"))
            }
        }
    }

    @Test func emptyValuesDoNotRenderAsSet() async throws {
        try await TestPortal.with { portal in
            let world = try await CatalogAPITests.world(portal)
            try await portal.application().test(.router) { client in
                let id = try await PlanAPITests.publishedAPI(client, world)
                _ = try await APITests.call(client, .post, "/t/acme/api/v1/apis/\(id)/plans", token: world.provider, body: SubscriptionTests.free)
                var dev = Browser()
                _ = try await dev.signIn(client, tenant: "acme", email: "dev@example.com")
                let page = try await dev.get(client, "/t/acme/catalog/apis/\(id)")
                #expect(page.status == .ok)
                #expect(!page.text.contains("download OpenAPI ()"))
                #expect(!page.text.contains("/openapi\">download"))
                #expect(page.text.contains("No OpenAPI document"))
                #expect(!page.text.contains(", then <"))
                #expect(!page.text.contains(", then\n"))
                #expect(!page.text.contains("then </td>"))
            }
        }
    }

    @Test func catalogCardsShowTheFirstParagraphAsText() async throws {
        try await TestPortal.with { portal in
            let world = try await CatalogAPITests.world(portal)
            try await portal.application().test(.router) { client in
                let id = try await PlanAPITests.publishedAPI(client, world)
                _ = try await APITests.call(
                    client, .patch, "/t/acme/api/v1/apis/\(id)", token: world.provider,
                    body: ##"{"description":"# Echo\r\n\r\nReturns **what** you [send](https://example.com).\r\n\r\n- second"}"##)
                var anonymous = Browser()
                let page = try await anonymous.get(client, "/t/acme/catalog")
                #expect(page.text.contains("Echo"))
                #expect(!page.text.contains("**"))
                #expect(!page.text.contains("[send]"))
            }
        }
    }

    @Test func otherTeamsAnswerNotFoundAndAreNotLinked() async throws {
        try await TestPortal.with { portal in
            _ = try await CatalogAPITests.world(portal)
            try await portal.application().test(.router) { client in
                var dev = Browser()
                _ = try await dev.signIn(client, tenant: "acme", email: "dev@example.com")
                // act
                let other = try await dev.get(client, "/t/acme/teams/makers")
                let missing = try await dev.get(client, "/t/acme/teams/no-such-team")
                let list = try await dev.get(client, "/t/acme/teams")
                let own = try await dev.get(client, "/t/acme/teams/users")
                let add = try await dev.submit(
                    client, "/t/acme/teams/makers/members", from: "/t/acme/teams", fields: [("email", "dev@example.com"), ("role", "owner")])
                // assert
                #expect(other.status == .notFound)
                #expect(missing.status == .notFound)
                #expect(add.status == .notFound)
                #expect(!list.text.contains("/teams/makers"))
                #expect(list.text.contains("/teams/users"))
                #expect(own.status == .ok)
            }
        }
    }

    @Test func pagesHaveAFaviconAndTheTenantNameOnce() async throws {
        try await TestPortal.with { portal in
            _ = try await Fixtures.tenant(portal.database, slug: "acme")
            try await portal.application().test(.router) { client in
                var anonymous = Browser()
                let home = try await anonymous.get(client, "/t/acme/")
                #expect(home.text.contains("<link rel=\"icon\" href=\"data:image/svg+xml"))
                let title = home.text.components(separatedBy: "<title>").last?.components(separatedBy: "</title>").first ?? ""
                let name = title.components(separatedBy: " · ").first ?? ""
                #expect(title.components(separatedBy: name).count == 2, "\(title)")
            }
        }
    }

    @Test func appAnalyticsShowTheMonthAgainstQuotaAndRateLimit() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let s = try await SubscriptionTests.setup(portal, client)
                #expect(try await SubscriptionTests.subscribe(client, s, plan: s.freePlan).status == .created)
                var dev = Browser()
                _ = try await dev.signIn(client, tenant: "acme", email: "dev@example.com")
                // act
                let page = try await dev.get(client, "/t/acme/analytics?app_id=\(s.appID)")
                // assert
                #expect(page.status == .ok)
                #expect(page.text.contains("This month against the plan"))
                #expect(page.text.contains("/s</td>"))
                // the app page offers no second subscription to the same API (it would answer 409)
                let app = try await dev.get(client, "/t/acme/apps/\(s.appID)")
                #expect(!app.text.contains("value=\"\(s.proPlan)\""))
                #expect(!app.text.contains("value=\"\(s.freePlan)\""))
                #expect(app.text.contains("open the subscription"))
            }
        }
    }

    @Test func theOnlyPageOfTheAuditLogOffersNoOlderEvents() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            try await portal.application().test(.router) { client in
                var admin = Browser()
                _ = try await admin.signIn(client, tenant: "acme", email: "ada@example.com")
                let page = try await admin.get(client, "/t/acme/admin/audit")
                #expect(page.status == .ok)
                #expect(page.text.contains("login"))
                #expect(!page.text.contains("Older events"))
            }
        }
    }

    @Test func signInReturnsOnlyToThisPortal() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            try await portal.application().test(.router) { client in
                for next in ["/\\evil.example", "/%2F%2Fevil.example", "\t//evil.example", "/t/acme/apps"] {
                    var browser = Browser()
                    let response = try await browser.submit(
                        client, "/t/acme/login", from: "/t/acme/login", fields: [("email", "ada@example.com"), ("password", Fixtures.password), ("next", next)])
                    let location = Self.location(response)
                    #expect(location.hasPrefix("/t/acme/"), "\(next) → \(location)")
                    #expect(!location.contains("evil"), "\(next) → \(location)")
                }
            }
        }
    }
}
