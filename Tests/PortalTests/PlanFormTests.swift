import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import Portal

/// Money typed by people and the plan form, pure and through the pages.
@Suite struct PlanFormTests {
    @Test(arguments: [
        ("49", 2, Int64(4900)), ("49.5", 2, 4950), ("49.00", 2, 4900), (".5", 2, 50), ("0.002", 8, 200_000), ("0", 8, 0), ("1000", 0, 1000),
    ])
    func decimalsConvertExactly(text: String, digits: Int, expected: Int64) {
        #expect(Money.parseDecimal(text, digits: digits) == expected)
    }

    @Test(arguments: ["", "-1", "1.234", "1,5", "abc", "1e3", "99999999999999999999", "."])
    func malformedAmountsAreRefused(text: String) {
        #expect(Money.parseDecimal(text, digits: 2) == nil)
    }

    @Test func unitPricesRoundTrip() {
        #expect(Money.formatUnitPrice(micros: 200_000, currency: "USD") == "0.002")
        #expect(Money.formatUnitPrice(micros: 0, currency: "USD") == "0")
        #expect(Money.formatUnitPrice(micros: 150_000_000, currency: "USD") == "1.5")
        #expect(Money.parseUnitPrice("0.002", currency: "USD") == 200_000)
        #expect(Money.parseUnitPrice("5", currency: "JPY") == 5_000_000)
    }

    @Test func tiersAndFeesBecomeTerms() throws {
        let form = FormData(
            urlencoded: "name=Scale&rate_per_second=50&burst=100&monthly_quota=&monthly_fee=99.90&included_requests=1000"
                + "&tier_mode=graduated&tiers=100000+0.001%0A*+0.0005&approval=manual&visibility=public")
        let terms = try PlanForm.terms(from: form, currency: "USD")
        #expect(terms.monthlyFeeMinor == 9990)
        #expect(terms.monthlyQuota == nil)
        #expect(terms.tiers == [.init(upTo: 100_000, unitPriceMicros: 100_000), .init(upTo: nil, unitPriceMicros: 50_000)])
        #expect(terms.approval == .manual)
        let values = PlanForm.values(for: terms, currency: "USD")
        #expect(values["monthly_fee"] as? String == "99.90")
        #expect(values["tiers"] as? String == "100000 0.001\n* 0.0005")
        let bad = FormData(urlencoded: "name=X&rate_per_second=ten&burst=1&monthly_fee=1.234&included_requests=0&tier_mode=flat&tiers=cheap&approval=x&visibility=public")
        #expect(throws: AppError.self) { try PlanForm.terms(from: bad, currency: "USD") }
    }

    @Test func providersAddAndReviseAPlanThroughTheForms() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let newForm = "/t/acme/catalog/apis/\(id)/plans/new"
                let fields: [(String, String)] = [
                    ("name", "Scale"), ("rate_per_second", "50"), ("burst", "100"), ("monthly_quota", "100000"), ("monthly_fee", "49"),
                    ("included_requests", "50000"), ("tier_mode", "flat"), ("tiers", "* 0.002"), ("approval", "manual"), ("visibility", "public"),
                ]
                // act: a mistake first, then the real thing
                let refused = try await provider.submit(
                    client, "/t/acme/catalog/apis/\(id)/plans", from: newForm, fields: fields.map { $0.0 == "burst" ? ("burst", "10") : $0 })
                let huge = try await provider.submit(
                    client, "/t/acme/catalog/apis/\(id)/plans", from: newForm,
                    fields: fields.map { $0.0 == "monthly_quota" ? ("monthly_quota", "") : $0.0 == "included_requests" ? ("included_requests", "1000000000000000000") : $0 })
                let created = try await provider.submit(client, "/t/acme/catalog/apis/\(id)/plans", from: newForm, fields: fields)
                // assert
                #expect(refused.status == .unprocessableContent)
                #expect(refused.text.contains("Burst is at least the rate per second"))
                #expect(huge.status == .unprocessableContent)
                #expect(huge.text.contains("Include 0 to 1,000,000,000,000 requests."))
                #expect(huge.text.contains("1000000000000000000"))  // what was typed stays
                #expect(created.status == .seeOther || created.status == .found)
                let page = try await provider.get(client, "/t/acme/catalog/apis/\(id)")
                #expect(page.text.contains("then 0.002 EUR/request"))
                let plans = try await portal.services.planService.list(
                    tenant: try #require(try await portal.database.withPlatform { try await TenantRepository(logger: TestDatabase.logger).find(slug: "acme", on: $0) }),
                    viewer: nil, apiID: try #require(UUID(uuidString: id)))
                let scale = try #require(plans.first { $0.terms.name == "Scale" })
                #expect(scale.terms.monthlyFeeMinor == 4900)
                // revising makes version 2
                let edit = "/t/acme/catalog/plans/\(scale.id)"
                let revised = try await provider.submit(
                    client, edit + "/versions", from: edit, fields: fields.map { $0.0 == "monthly_fee" ? ("monthly_fee", "59") : $0 })
                #expect(revised.status == .seeOther || revised.status == .found)
                let after = try await provider.get(client, "/t/acme/catalog/apis/\(id)")
                #expect(after.text.contains("revise (v2)"))
            }
        }
    }
}
