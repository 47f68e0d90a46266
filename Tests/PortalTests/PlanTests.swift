import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import Portal

@Suite struct PlanTermsTests {
    static let valid = PlanTerms(
        name: "Pro", ratePerSecond: 10, burst: 20, monthlyQuota: 1_000_000, monthlyFeeMinor: 4_900, includedRequests: 100_000, tierMode: .graduated,
        tiers: [.init(upTo: 500_000, unitPriceMicros: 100), .init(upTo: nil, unitPriceMicros: 50)], approval: .manual, visibility: .public)

    static func variant(_ change: (inout PlanTerms) -> Void) -> PlanTerms {
        var terms = valid
        change(&terms)
        return terms
    }

    @Test func validTermsHaveNoProblems() {
        #expect(Self.valid.problems().isEmpty)
    }

    @Test(arguments: [
        ("burst below rate", variant { $0.burst = 5 }, "burst"),
        ("zero rate", variant { $0.ratePerSecond = 0 }, "rate_per_second"),
        ("zero quota", variant { $0.monthlyQuota = 0 }, "monthly_quota"),
        ("included above quota", variant { $0.includedRequests = 2_000_000 }, "included_requests"),
        ("negative fee", variant { $0.monthlyFeeMinor = -1 }, "monthly_fee_minor"),
        ("no tiers", variant { $0.tiers = [] }, "tiers"),
        ("bounded last tier", variant { $0.tiers = [.init(upTo: 10, unitPriceMicros: 1)] }, "tiers"),
        ("open middle tier", variant { $0.tiers = [.init(upTo: nil, unitPriceMicros: 1), .init(upTo: nil, unitPriceMicros: 1)] }, "tiers"),
        ("decreasing bounds", variant {
            $0.tiers = [.init(upTo: 10, unitPriceMicros: 1), .init(upTo: 5, unitPriceMicros: 1), .init(upTo: nil, unitPriceMicros: 1)] }, "tiers"),
        ("flat with two tiers", variant { $0.tierMode = .flat }, "tiers"),
        ("negative price", variant { $0.tiers = [.init(upTo: nil, unitPriceMicros: -1)]; $0.tierMode = .flat }, "tiers"),
        ("blank name", variant { $0.name = "  " }, "name"),
        // bounds that keep rating's arithmetic in 64 bits
        ("included 10^18", variant { $0.monthlyQuota = nil; $0.includedRequests = 1_000_000_000_000_000_000 }, "included_requests"),
        ("quota 10^18", variant { $0.monthlyQuota = 1_000_000_000_000_000_000 }, "monthly_quota"),
        ("fee above 10^11", variant { $0.monthlyFeeMinor = 100_000_000_001 }, "monthly_fee_minor"),
        ("price 10^12 micros", variant { $0.tiers = [.init(upTo: nil, unitPriceMicros: 1_000_000_000_000)]; $0.tierMode = .flat }, "tiers"),
        ("tier bound 10^18", variant {
            $0.tiers = [.init(upTo: 1_000_000_000_000_000_000, unitPriceMicros: 1), .init(upTo: nil, unitPriceMicros: 1)] }, "tiers"),
    ])
    func problems(name: String, terms: PlanTerms, field: String) {
        #expect(terms.problems()[field] != nil, "\(name)")
    }

    @Test func unlimitedQuotaAllowsAnyIncludedAmount() {
        var terms = Self.valid
        terms.monthlyQuota = nil
        terms.includedRequests = 10_000_000_000
        #expect(terms.problems().isEmpty)
    }

    @Test(arguments: [(Int64(0), "USD", "0.00 USD"), (4_900, "EUR", "49.00 EUR"), (5, "USD", "0.05 USD"), (1_234, "JPY", "1234 JPY"), (-250, "GBP", "-2.50 GBP")])
    func moneyDisplay(minor: Int64, currency: String, expected: String) {
        #expect(Money.format(minor: minor, currency: currency) == expected)
    }
}

@Suite struct PlanAPITests {
    static let pro = """
        {"name":"Pro","rate_per_second":10,"burst":20,"monthly_quota":100000,"monthly_fee_minor":4900,"included_requests":1000,
         "tier_mode":"graduated","tiers":[{"up_to":50000,"unit_price_micros":100},{"unit_price_micros":50}],"approval":"manual","visibility":"public"}
        """

    static func publishedAPI(_ client: some TestClientProtocol, _ world: CatalogAPITests.World) async throws -> String {
        let created = try APITests.json(
            try await APITests.call(client, .post, "/t/acme/api/v1/apis", token: world.provider, body: CatalogAPITests.createBody(team: world.providerTeam)))
        let id = created["id"] as? String ?? ""
        _ = try await APITests.call(client, .post, "/t/acme/api/v1/apis/\(id)/transitions", token: world.provider, body: #"{"transition":"publish"}"#)
        return id
    }

    @Test func revisingAPlanCreatesANewVersionAndKeepsTheOld() async throws {
        try await TestPortal.with { portal in
            let world = try await CatalogAPITests.world(portal)
            try await portal.application().test(.router) { client in
                // setup
                let api = try await Self.publishedAPI(client, world)
                let created = try await APITests.call(client, .post, "/t/acme/api/v1/apis/\(api)/plans", token: world.provider, body: Self.pro)
                #expect(created.status == .created)
                let v1 = try APITests.json(created)
                let v1ID = v1["id"] as? String ?? ""
                #expect(v1["version"] as? Int == 1)
                #expect(v1["currency"] as? String == "EUR")
                #expect(((v1["terms"] as? [String: Any])?["tiers"] as? [[String: Any]])?.count == 2)
                // act
                let revised = try await APITests.call(
                    client, .post, "/t/acme/api/v1/plans/\(v1ID)/versions", token: world.provider, body: Self.pro.replacingOccurrences(of: "4900", with: "5900"))
                // assert
                #expect(revised.status == .created)
                let v2 = try APITests.json(revised)
                #expect(v2["version"] as? Int == 2)
                #expect(v2["family_id"] as? String == v1["family_id"] as? String)
                let old = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/plans/\(v1ID)", token: world.provider))
                #expect(old["current"] as? Bool == false)
                #expect((old["terms"] as? [String: Any])?["monthly_fee_minor"] as? Int == 4900)
                let listed = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/apis/\(api)/plans", token: world.developer))
                #expect((listed["items"] as? [[String: Any]])?.compactMap { $0["version"] as? Int } == [2])
                let again = try await APITests.call(client, .post, "/t/acme/api/v1/plans/\(v1ID)/versions", token: world.provider, body: Self.pro)
                #expect(again.status == .conflict)
            }
        }
    }

    @Test func onlyTheProviderTeamManagesPlansAndHiddenPlansStayHidden() async throws {
        try await TestPortal.with { portal in
            let world = try await CatalogAPITests.world(portal)
            try await portal.application().test(.router) { client in
                let api = try await Self.publishedAPI(client, world)
                let denied = try await APITests.call(client, .post, "/t/acme/api/v1/apis/\(api)/plans", token: world.developer, body: Self.pro)
                #expect(denied.status == .forbidden)
                let hidden = Self.pro.replacingOccurrences(of: "\"public\"", with: "\"hidden\"")
                #expect(try await APITests.call(client, .post, "/t/acme/api/v1/apis/\(api)/plans", token: world.provider, body: hidden).status == .created)
                let duplicate = try await APITests.call(client, .post, "/t/acme/api/v1/apis/\(api)/plans", token: world.provider, body: Self.pro)
                #expect(duplicate.status == .conflict)
                let forDeveloper = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/apis/\(api)/plans", token: world.developer))
                #expect((forDeveloper["items"] as? [Any])?.isEmpty == true)
                let forProvider = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/apis/\(api)/plans", token: world.provider))
                #expect((forProvider["items"] as? [Any])?.count == 1)
                let invalid = try await APITests.call(
                    client, .post, "/t/acme/api/v1/apis/\(api)/plans", token: world.provider, body: Self.pro.replacingOccurrences(of: "\"burst\":20", with: "\"burst\":2"))
                #expect(invalid.status == .unprocessableContent)
                #expect(invalid.text.contains("burst"))
                // terms rating could not carry are a problem+json with the field, not a crash later
                let huge = try await APITests.call(
                    client, .post, "/t/acme/api/v1/apis/\(api)/plans", token: world.provider,
                    body: Self.pro.replacingOccurrences(of: "\"monthly_quota\":100000", with: "\"monthly_quota\":null")
                        .replacingOccurrences(of: "\"included_requests\":1000", with: "\"included_requests\":1000000000000000000")
                        .replacingOccurrences(of: "\"unit_price_micros\":50}", with: "\"unit_price_micros\":1000000000000}"))
                #expect(huge.status == .unprocessableContent)
                #expect(huge.headers[.contentType] == "application/problem+json")
                let errors = try APITests.json(huge)["errors"] as? [String: String]
                #expect(errors?["included_requests"] != nil && errors?["tiers"] != nil)
            }
        }
    }
}
