import Billing
import Foundation
import HummingbirdTesting
import PostgresNIO
import Testing

@testable import Portal

/// Invoices and the reconciliation against the real database: drafts from subscriptions and
/// rollups, closing, immutability, void and re-issue, the invoice CSV.
@Suite struct InvoiceTests {
    static let october = Rating.month("2026-10")!

    struct Billed {
        var tenant: UUID
        var subscription: UUID
        var plan: UUID
        var app: UUID
    }

    /// A developer app actively on Pro (49.00, 1,000 included, then 100 micros of a cent per call up
    /// to 50,000, graduated) for all of October 2026.
    static func proSubscription(_ portal: TestPortal, _ client: some TestClientProtocol) async throws -> Billed {
        let s = try await SubscriptionTests.setup(portal, client)
        let requested = try APITests.json(try await SubscriptionTests.subscribe(client, s, plan: s.proPlan))
        let id = requested["id"] as? String ?? ""
        _ = try await SubscriptionTests.act(client, s.world.provider, id, #"{"action":"approve"}"#)
        let tenant = try #require(try await portal.database.withPlatform { try await TenantRepository(logger: TestDatabase.logger).find(slug: "acme", on: $0) })
        let subscription = try #require(UUID(uuidString: id))
        try await portal.database.withSystemScope { connection in
            try await connection.query("UPDATE subscriptions SET created_at = \(october.start) WHERE id = \(subscription)", logger: TestDatabase.logger)
            try await connection.query("UPDATE subscription_events SET at = \(october.start) WHERE subscription_id = \(subscription)", logger: TestDatabase.logger)
        }
        return Billed(tenant: tenant.id, subscription: subscription, plan: try #require(UUID(uuidString: s.proPlan)), app: try #require(UUID(uuidString: s.appID)))
    }

    /// Stores `count` calls (status 200) in October with a gateway tally that matches them.
    static func calls(_ portal: TestPortal, _ b: Billed, count: Int, day: Int = 10, meter: String = "g1") async throws {
        let at = october.start.addingTimeInterval(Double(day - 1) * 86_400 + 3_600)
        let events = (0..<count).map { i in
            UsageEvent(
                at: at.addingTimeInterval(Double(i) / 1000), tenantID: b.tenant, apiID: nil, appID: b.app, subscriptionID: b.subscription, planID: b.plan,
                method: "GET", status: 200, latencyMicroseconds: 500, bytesIn: 0, bytesOut: 10, rejection: nil, forwarded: true)
        }
        let tally = AnsweredCount(meterID: meter, tenantID: b.tenant, subscriptionID: b.subscription, hour: at, answered: Int64(count), billable: Int64(count))
        try await UsageStore(logger: TestDatabase.logger).write(UsageBatch(meterID: meter, events: events, answered: [tally]), client: portal.database.client)
    }

    static func inTenant<T: Sendable>(_ portal: TestPortal, _ b: Billed, _ body: @escaping @Sendable (InvoiceBook, PostgresConnection) async throws -> T)
        async throws -> T
    {
        try await portal.database.withTenant(b.tenant) { try await body(InvoiceBook(logger: TestDatabase.logger), $0) }
    }

    @Test func draftsFollowUsageAndClosingIssuesNumberedImmutableInvoices() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let b = try await Self.proSubscription(portal, client)
                try await Self.calls(portal, b, count: 26_000)
                // act: a draft from the usage so far
                try await Self.inTenant(portal, b) { book, c in try await book.refreshDrafts(tenant: b.tenant, period: "2026-10", on: c) }
                let draft = try #require(try await Self.inTenant(portal, b) { book, c in try await book.list(tenant: b.tenant, period: "2026-10", on: c) }.first)
                let lines = try await Self.inTenant(portal, b) { book, c in try await book.lines(tenant: b.tenant, invoice: draft.id, on: c) }
                // assert: a month's fee, 1,000 included, 25,000 beyond at 100 micros: 2.5 cents, rounded once to 3
                #expect(draft.status == .draft)
                #expect(draft.number == nil)
                #expect(lines.map(\.kind) == [.fee, .included, .usage])
                #expect(lines.map(\.quantity) == [31, 1_000, 25_000])
                #expect(lines.map(\.amountMinor) == [4_900, 0, 3])
                #expect(draft.totalMinor == 4_903)

                // more usage updates the same draft
                try await Self.calls(portal, b, count: 10_000, day: 20)
                try await Self.inTenant(portal, b) { book, c in try await book.refreshDrafts(tenant: b.tenant, period: "2026-10", on: c) }
                let updated = try #require(try await Self.inTenant(portal, b) { book, c in try await book.list(tenant: b.tenant, period: "2026-10", on: c) }.first)
                #expect(updated.id == draft.id)
                #expect(updated.totalMinor == 4_904)

                // closing issues it with the tenant's first number; closing again changes nothing
                let closed = try await Self.inTenant(portal, b) { book, c in try await book.close(tenant: b.tenant, period: "2026-10", on: c) }
                #expect(closed == CloseResult(issued: ["ACME-000001"], alreadyIssued: 0))
                let again = try await Self.inTenant(portal, b) { book, c in try await book.close(tenant: b.tenant, period: "2026-10", on: c) }
                #expect(again == CloseResult(issued: [], alreadyIssued: 1))

                // an issued invoice cannot be changed, not even by SQL
                await #expect(throws: (any Error).self) {
                    try await portal.database.withTenant(b.tenant) { c in
                        try await c.query("UPDATE invoices SET total_minor = 1 WHERE id = \(draft.id)", logger: TestDatabase.logger)
                    }
                }
                await #expect(throws: (any Error).self) {
                    try await portal.database.withTenant(b.tenant) { c in
                        try await c.query("DELETE FROM invoice_lines WHERE invoice_id = \(draft.id)", logger: TestDatabase.logger)
                    }
                }
                await #expect(throws: (any Error).self) {
                    try await portal.database.withTenant(b.tenant) { c in
                        try await c.query("UPDATE invoice_lines SET amount_minor = 0 WHERE invoice_id = \(draft.id)", logger: TestDatabase.logger)
                    }
                }
                await #expect(throws: (any Error).self) {
                    try await portal.database.withTenant(b.tenant) { c in
                        try await c.query(
                            "INSERT INTO invoice_lines SELECT tenant_id, invoice_id, position + 100, subscription_id, app_id, api_id, plan_id, app_name, api_name, plan_name, kind, description, quantity, unit_price_micros, amount_minor FROM invoice_lines WHERE invoice_id = \(draft.id)",
                            logger: TestDatabase.logger)
                    }
                }
                let issued = try #require(try await Self.inTenant(portal, b) { book, c in try await book.find(tenant: b.tenant, number: "ACME-000001", on: c) })
                #expect(issued.totalMinor == 4_904)
                #expect(issued.status == .issued)
            }
        }
    }

    @Test func reconciliationBalancesUntilUsageArrivesAfterClosingAndReissueCorrectsIt() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup: calls stored with a matching gateway tally, the period closed
                let b = try await Self.proSubscription(portal, client)
                try await Self.calls(portal, b, count: 1_100)
                _ = try await Self.inTenant(portal, b) { book, c in try await book.close(tenant: b.tenant, period: "2026-10", on: c) }
                let reconcile: @Sendable () async throws -> ReconciliationReport = {
                    try await Self.inTenant(portal, b) { book, c in
                        try await Reconciliation(logger: book.logger).run(tenant: b.tenant, slug: "acme", period: "2026-10", on: c)
                    }
                }
                // assert: every count agrees
                let balanced = try await reconcile()
                #expect(balanced.isBalanced)
                #expect(balanced.text.hasPrefix("balanced"))
                #expect(balanced.rows.first?.invoiced == 1_100)

                // act: late calls (another gateway) after closing → the invoice is short by them
                try await Self.calls(portal, b, count: 5, day: 30, meter: "g2")
                let late = try await reconcile()
                #expect(!late.isBalanced)
                #expect(late.rows.first?.differences == ["1105 billable calls in the rollups, 1100 units invoiced"])

                // a gateway that answered calls whose events never arrived is caught too
                try await UsageStore(logger: TestDatabase.logger).write(
                    UsageBatch(
                        meterID: "g3",
                        answered: [AnsweredCount(meterID: "g3", tenantID: b.tenant, subscriptionID: b.subscription, hour: Self.october.start, answered: 2, billable: 2)]),
                    client: portal.database.client)
                let lost = try await reconcile()
                #expect(lost.rows.first?.differences.first == "gateway answered 1107 calls, 1105 events stored")

                // re-issue: the old invoice is void and kept, the new one carries the late calls
                let reissued = try await Self.inTenant(portal, b) { book, c in
                    try await book.reissue(tenant: b.tenant, number: "ACME-000001", reason: "late usage", by: "test", on: c)
                }
                #expect(reissued.void.status == .void)
                #expect(reissued.issued == "ACME-000002")
                let all = try await Self.inTenant(portal, b) { book, c in try await book.list(tenant: b.tenant, period: "2026-10", on: c) }
                #expect(Set(all.map(\.status)) == [.void, .issued])
                #expect(all.first { $0.status == .issued }?.replacesNumber == "ACME-000001")

                // the invoice CSV lists both, with money as decimals and the currency
                var csv = ""
                let rows = try await InvoiceExport(client: portal.database.client, logger: TestDatabase.logger).run(
                    tenant: "acme", from: Self.october.start, to: Self.october.end
                ) { csv += $0 }
                #expect(rows == 6)
                let lines = csv.components(separatedBy: "\r\n").filter { !$0.isEmpty }
                #expect(lines.first == InvoiceExport.header.joined(separator: ","))
                #expect(lines.contains { $0.hasPrefix("ACME-000001,void,2026-10,") && $0.contains(",late usage,2026-") && $0.hasSuffix(",ACME-000002") })
                #expect(lines.contains { $0.hasPrefix("ACME-000002,issued,2026-10,") && $0.contains(",EUR,49.00,") && $0.hasSuffix(",ACME-000001,,,") })
                #expect(lines.contains { $0.contains(",usage,") && $0.contains(",105,request,0.000001,0.00,") })
                // a fee line reads days × daily price = amount: 31 × 1.58064516 = 49.00
                #expect(lines.contains { $0.contains(",fee,") && $0.contains(",31,day,1.58064516,49.00,") })
            }
        }
    }
}

extension InvoiceTests {
    @Test func theBackgroundRefreshKeepsDraftsOfTheRunningAndPreviousMonth() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup: October usage, "now" in the first days of November
                let b = try await Self.proSubscription(portal, client)
                try await Self.calls(portal, b, count: 10)
                let refresher = DraftInvoiceRefresher(database: portal.database, interval: .seconds(60), logger: TestDatabase.logger)
                // act
                await refresher.refreshAll(now: try #require(ISO8601DateFormatter().date(from: "2026-11-02T08:00:00Z")))
                // assert: October's draft exists (its previous month) and November's too (the subscription stays active)
                let drafts = try await Self.inTenant(portal, b) { book, c in try await book.list(tenant: b.tenant, status: .draft, on: c) }
                #expect(Set(drafts.map(\.period)) == ["2026-10", "2026-11"])
                #expect(drafts.first { $0.period == "2026-10" }?.totalMinor == 4_900)
            }
        }
    }

    /// The event numbers against the real database: a gap in a gateway run's numbers, and calls its
    /// tally reported beyond the highest stored number, are named as missing, each by its numbers.
    @Test func missingEventNumbersAreNamedPerGatewayRun() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup: a run that stored #1–3, #5, #6 and #9 and reported answering 10 calls
                let b = try await Self.proSubscription(portal, client)
                let at = Self.october.start.addingTimeInterval(5 * 86_400)
                let events = [1, 2, 3, 5, 6, 9].map { number -> UsageEvent in
                    var event = UsageEvent(
                        at: at.addingTimeInterval(Double(number)), tenantID: b.tenant, apiID: nil, appID: b.app, subscriptionID: b.subscription, planID: b.plan,
                        method: "GET", status: 200, latencyMicroseconds: 500, bytesIn: 0, bytesOut: 10, rejection: nil, forwarded: true)
                    event.sequence = Int64(number)
                    return event
                }
                let tally = AnsweredCount(meterID: "g9/run1", tenantID: b.tenant, subscriptionID: b.subscription, hour: at, answered: 10, billable: 10)
                try await UsageStore(logger: TestDatabase.logger).write(UsageBatch(meterID: "g9/run1", events: events, answered: [tally]), client: portal.database.client)
                // act
                let report = try await Self.inTenant(portal, b) { book, c in
                    try await Reconciliation(logger: book.logger).run(tenant: b.tenant, slug: "acme", period: "2026-10", on: c)
                }
                // assert: not balanced, the run's row and words name the four missing numbers
                #expect(!report.isBalanced)
                let run = try #require(report.meters.first { $0.meterID == "g9/run1" })
                #expect(run.stored == 6 && run.highest == 9 && run.missing == 4)
                #expect(run.missingRanges == [4...4, 7...8])
                #expect(report.text.contains("gateway g9/run1: 4 answered calls not stored (event numbers #4, #7–#8, #10)"), "\(report.text)")
                #expect(report.rows.first?.differences.first == "gateway answered 10 calls, 6 events stored")
            }
        }
    }
}
