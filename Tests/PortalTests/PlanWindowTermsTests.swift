import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import Portal

/// Plans' minute, hour and day windows in the portal: validation, the JSON API, the plan form.
@Suite struct PlanWindowTermsTests {
    @Test(arguments: [
        ("zero minute", PlanTermsTests.variant { $0.perMinute = 0 }, "per_minute"),
        ("huge day", PlanTermsTests.variant { $0.perDay = 2_000_000_000_000 }, "per_day"),
        ("hour below minute", PlanTermsTests.variant { $0.perMinute = 100; $0.perHour = 50 }, "per_hour"),
        ("day below hour", PlanTermsTests.variant { $0.perHour = 100; $0.perDay = 99 }, "per_day"),
        ("day above the quota", PlanTermsTests.variant { $0.perDay = 2_000_000 }, "per_day"),
    ])
    func windowProblems(name: String, terms: PlanTerms, field: String) {
        #expect(terms.problems()[field] != nil, "\(name)")
    }

    @Test func consistentWindowsAreFine() {
        let terms = PlanTermsTests.variant {
            $0.perMinute = 600
            $0.perHour = 600
            $0.perDay = 10_000
        }
        #expect(terms.problems().isEmpty)
        #expect(terms.windowsSummary == "600/min, 600/hour, 10000/day")
        #expect(PlanTermsTests.valid.windowsSummary == "")
    }

    @Test func windowsTravelThroughTheJSONAPIAndShowOnTheAPIPage() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let body = PlanAPITests.pro.replacingOccurrences(of: "\"burst\":20,", with: "\"burst\":20,\"per_minute\":500,\"per_day\":50000,")
                // act
                let created = try await APITests.call(client, .post, "/t/acme/api/v1/apis/\(id)/plans", token: world.provider, body: body)
                let refused = try await APITests.call(
                    client, .post, "/t/acme/api/v1/apis/\(id)/plans", token: world.provider,
                    body: body.replacingOccurrences(of: "\"per_day\":50000", with: "\"per_day\":5").replacingOccurrences(of: "\"Pro\"", with: "\"Other\""))
                // assert
                #expect(created.status == .created)
                let terms = try APITests.json(created)["terms"] as? [String: Any]
                #expect(terms?["per_minute"] as? Int == 500)
                #expect(terms?["per_day"] as? Int == 50_000)
                #expect(terms?["per_hour"] == nil)
                #expect(refused.status == .unprocessableContent)
                #expect((try APITests.json(refused)["errors"] as? [String: String])?["per_day"]?.contains("at least the 500 requests of a minute") == true)
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let page = try await provider.get(client, "/t/acme/catalog/apis/\(id)")
                #expect(page.text.contains("10/s (burst 20), 500/min, 50000/day"))
            }
        }
    }

    @Test func thePlanFormTakesWindowsAndMarksABadOne() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let newForm = "/t/acme/catalog/apis/\(id)/plans/new"
                let fields: [(String, String)] = [
                    ("name", "Scale"), ("rate_per_second", "50"), ("burst", "100"), ("monthly_quota", "100000"), ("monthly_fee", "49"),
                    ("included_requests", "50000"), ("tier_mode", "flat"), ("tiers", "* 0.002"), ("approval", "manual"), ("visibility", "public"),
                    ("per_minute", "1000"), ("per_hour", "ten"), ("per_day", ""),
                ]
                // act
                let refused = try await provider.submit(client, "/t/acme/catalog/apis/\(id)/plans", from: newForm, fields: fields)
                let created = try await provider.submit(
                    client, "/t/acme/catalog/apis/\(id)/plans", from: newForm, fields: fields.map { $0.0 == "per_hour" ? ("per_hour", "20000") : $0 })
                // assert
                #expect(refused.status == .unprocessableContent)
                #expect(refused.text.contains("id=\"per_hour-error\""))
                #expect(refused.text.contains("value=\"ten\""))
                #expect(created.status == .seeOther)
                let page = try await provider.get(client, "/t/acme/catalog/apis/\(id)")
                #expect(page.text.contains("1000/min, 20000/hour"))
            }
        }
    }
}
