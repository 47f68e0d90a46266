import Billing
import Foundation
import Hummingbird
import HummingbirdTesting
import PostgresNIO
import Testing

@testable import Portal

/// Calls answered from the gateway's response cache: the plan's choice whether they bill, the
/// flag stored with each event, and the hit ratio analytics shows.
@Suite struct CacheHitMeteringTests {
    @Test func thePlanSaysWhetherHitsBillThroughTheJSONAPIAndTheForm() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                // act: one plan leaves the field out, one makes hits free, one sends a wrong type
                let plain = try await APITests.call(client, .post, "/t/acme/api/v1/apis/\(id)/plans", token: world.provider, body: PlanAPITests.pro)
                let free = try await APITests.call(
                    client, .post, "/t/acme/api/v1/apis/\(id)/plans", token: world.provider,
                    body: PlanAPITests.pro.replacingOccurrences(of: "\"Pro\"", with: "\"Cached\"").replacingOccurrences(
                        of: "\"burst\":20,", with: "\"burst\":20,\"cache_hits_billable\":false,"))
                let wrong = try await APITests.call(
                    client, .post, "/t/acme/api/v1/apis/\(id)/plans", token: world.provider,
                    body: PlanAPITests.pro.replacingOccurrences(of: "\"Pro\"", with: "\"Odd\"").replacingOccurrences(
                        of: "\"burst\":20,", with: "\"burst\":20,\"cache_hits_billable\":\"no\","))
                // assert: the default is written out, the choice kept, bad input a 4xx
                #expect(plain.status == .created)
                #expect((try APITests.json(plain)["terms"] as? [String: Any])?["cache_hits_billable"] as? Bool == true)
                #expect(free.status == .created)
                #expect((try APITests.json(free)["terms"] as? [String: Any])?["cache_hits_billable"] as? Bool == false)
                #expect((400..<500).contains(Int(wrong.status.code)))

                // the form: "free" is kept and shown on the API page; a forged value is marked
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let newForm = "/t/acme/catalog/apis/\(id)/plans/new"
                let formPage = try await provider.get(client, newForm)
                #expect(formPage.text.contains("name=\"cache_hits\""))
                let fields: [(String, String)] = [
                    ("name", "Edge"), ("rate_per_second", "50"), ("burst", "100"), ("monthly_quota", "100000"), ("monthly_fee", "49"),
                    ("included_requests", "50000"), ("tier_mode", "flat"), ("tiers", "* 0.002"), ("approval", "manual"), ("visibility", "public"),
                    ("cache_hits", "sometimes"),
                ]
                let refused = try await provider.submit(client, "/t/acme/catalog/apis/\(id)/plans", from: newForm, fields: fields)
                #expect(refused.status == .unprocessableContent)
                #expect(refused.text.contains("Choose whether cache hits are billed."))
                let created = try await provider.submit(
                    client, "/t/acme/catalog/apis/\(id)/plans", from: newForm, fields: fields.map { $0.0 == "cache_hits" ? ("cache_hits", "free") : $0 })
                #expect(created.status == .seeOther)
                let page = try await provider.get(client, "/t/acme/catalog/apis/\(id)")
                #expect(page.text.components(separatedBy: "; cache hits free").count - 1 == 2)  // Cached and Edge, not Pro
            }
        }
    }

    @Test func hitsAreStoredWithTheirFlagAndShowAsAHitRatio() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup: 10 answered calls in October, 4 of them hits (one unbilled), and 2 refusals
                let b = try await InvoiceTests.proSubscription(portal, client)
                let at = InvoiceTests.october.start.addingTimeInterval(9 * 86_400 + 3_600)
                var events: [UsageEvent] = (0..<12).map { i in
                    UsageEvent(
                        at: at.addingTimeInterval(Double(i)), tenantID: b.tenant, apiID: nil, appID: b.app, subscriptionID: b.subscription, planID: b.plan,
                        method: "GET", status: i < 10 ? 200 : 429, latencyMicroseconds: 500, bytesIn: 0, bytesOut: 10, rejection: i < 10 ? nil : .rateLimited,
                        forwarded: i < 10)
                }
                for i in 0..<3 { events[i].cache = .hit }
                events[3].cache = .unbilledHit
                let tally = AnsweredCount(meterID: "g1", tenantID: b.tenant, subscriptionID: b.subscription, hour: at, answered: 10, billable: 9)
                // act
                try await UsageStore(logger: TestDatabase.logger).write(UsageBatch(meterID: "g1", events: events, answered: [tally]), client: portal.database.client)
                // assert: the events keep the flag
                let stored = try await portal.database.withSystemScope { connection in
                    var counts: [String: Int64] = [:]
                    for try await (cache, n) in try await connection.query(
                        "SELECT coalesce(cache, '-'), count(*) FROM usage_events WHERE tenant_id = \(b.tenant) GROUP BY 1", logger: TestDatabase.logger
                    ).decode((String, Int64).self) { counts[cache] = n }
                    return counts
                }
                #expect(stored == ["-": 8, "hit": 3, "unbilled_hit": 1])
                // analytics, before and after the rollups fold: 4 hits of 10 answered calls
                let tenant = try #require(try await portal.database.withPlatform { try await TenantRepository(logger: TestDatabase.logger).find(slug: "acme", on: $0) })
                let fin = try await Fixtures.user(portal.database, tenant: tenant, email: "fin@example.com", roles: [.finance])
                let finance = try await APITests.token(portal, tenant: tenant, user: fin, scopes: [.read])
                for round in ["live", "folded"] {
                    if round == "folded" {
                        _ = try await portal.database.withSystemScope { connection in
                            try await connection.query("SELECT tollgate_fold_usage()", logger: TestDatabase.logger)
                        }
                    }
                    let analytics = try APITests.json(
                        try await APITests.call(client, .get, "/t/acme/api/v1/analytics?range=custom&from=2026-10-01&to=2026-11-01", token: finance))
                    #expect(analytics["calls"] as? Int == 12, "\(round)")
                    #expect(analytics["billable"] as? Int == 9, "\(round)")
                    #expect(analytics["cache_hits"] as? Int == 4, "\(round)")
                    #expect(analytics["cache_hit_ratio"] as? Double == 0.4, "\(round)")
                }
                var browser = Browser()
                _ = try await browser.signIn(client, tenant: "acme", email: "fin@example.com")
                let page = try await browser.get(client, "/t/acme/analytics?range=custom&from=2026-10-01&to=2026-11-01")
                #expect(page.text.contains("4 (40.0 % of answered calls)"))
            }
        }
    }
}
