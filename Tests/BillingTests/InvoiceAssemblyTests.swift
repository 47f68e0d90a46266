import Foundation
import Testing

@testable import Billing

/// Which days go to which plan, and how subscriptions become team invoices. Pure.
@Suite struct InvoiceAssemblyTests {
    static let november = Rating.month("2026-11")!
    static func date(_ text: String) -> Date { ISO8601DateFormatter().date(from: text)! }
    static let free = UUID(), pro = UUID()

    static func days(_ changes: [(String, String, UUID)]) -> [UUID: Int] {
        SubscriptionTimeline.chargedDays(
            changes.map { SubscriptionChange(at: date($0.0), state: $0.1, planID: $0.2) }, periodStart: november.start, periodEnd: november.end)
    }

    @Test func aDayIsChargedToThePlanActiveAtItsEnd() {
        // active all month
        #expect(Self.days([("2026-10-05T10:00:00Z", "active", Self.free)]) == [Self.free: 30])
        // pending until approved on the 3rd: charged from the 3rd
        #expect(Self.days([("2026-11-01T08:00:00Z", "pending", Self.pro), ("2026-11-03T09:00:00Z", "active", Self.pro)]) == [Self.pro: 28])
        // upgraded on the 21st: 20 days free, 10 days pro
        #expect(Self.days([("2026-10-01T00:00:00Z", "active", Self.free), ("2026-11-21T15:00:00Z", "active", Self.pro)]) == [Self.free: 20, Self.pro: 10])
        // suspended from the 10th to the 15th (resumed on the 15th): 25 days
        #expect(
            Self.days([("2026-10-01T00:00:00Z", "active", Self.pro), ("2026-11-10T12:00:00Z", "suspended", Self.pro), ("2026-11-15T12:00:00Z", "active", Self.pro)])
                == [Self.pro: 25])
        // cancelled on the 11th: paid through the 10th
        #expect(Self.days([("2026-10-01T00:00:00Z", "active", Self.pro), ("2026-11-11T00:00:00Z", "cancelled", Self.pro)]) == [Self.pro: 10])
        // started and cancelled the same day: nothing
        #expect(Self.days([("2026-11-05T08:00:00Z", "active", Self.pro), ("2026-11-05T17:00:00Z", "cancelled", Self.pro)]).isEmpty)
        // a change exactly at midnight belongs to the new day
        #expect(Self.days([("2026-11-30T00:00:00Z", "active", Self.pro)]) == [Self.pro: 1])
        #expect(Self.days([("2026-12-01T00:00:00Z", "active", Self.pro)]).isEmpty)
    }

    static func subscription(team: UUID, teamName: String, app: String, changes: [SubscriptionChange]) -> BillableSubscription {
        BillableSubscription(id: UUID(), teamID: team, teamName: teamName, appID: UUID(), appName: app, apiID: UUID(), apiName: "Echo v1", changes: changes)
    }

    @Test func subscriptionsBecomeOneInvoicePerTeamWithEveryBillableCallOnALine() throws {
        let plans = [
            Self.free: PlanVersion(id: Self.free, name: "Free", terms: PricingTerms(monthlyFeeMinor: 0, includedRequests: 1000, tierMode: .flat, tiers: [.init(upTo: nil, unitPriceMicros: 0)])),
            Self.pro: PlanVersion(id: Self.pro, name: "Pro", terms: PricingTerms(monthlyFeeMinor: 3000, includedRequests: 3000, tierMode: .flat, tiers: [.init(upTo: nil, unitPriceMicros: 1_000_000)])),
        ]
        let devs = UUID(), others = UUID()
        let upgraded = Self.subscription(
            team: devs, teamName: "Demo Devs", app: "b-app",
            changes: [SubscriptionChange(at: Self.date("2026-10-01T00:00:00Z"), state: "active", planID: Self.free), SubscriptionChange(at: Self.date("2026-11-21T15:00:00Z"), state: "active", planID: Self.pro)])
        let idle = Self.subscription(team: others, teamName: "Idle", app: "x", changes: [SubscriptionChange(at: Self.date("2026-10-01T00:00:00Z"), state: "active", planID: Self.free)])
        let cancelled = Self.subscription(
            team: devs, teamName: "Demo Devs", app: "a-app", changes: [SubscriptionChange(at: Self.date("2026-09-01T00:00:00Z"), state: "cancelled", planID: Self.pro)])
        let calls: [UUID: [UUID: Int64]] = [upgraded.id: [Self.free: 700, Self.pro: 1_500], cancelled.id: [Self.pro: 4]]
        // act
        let invoices = try InvoiceAssembly.assemble(
            subscriptions: [upgraded, idle, cancelled], plans: plans, billableCalls: calls, periodStart: Self.november.start, periodEnd: Self.november.end)
        // assert: the idle team has nothing to bill; Demo Devs get one invoice
        #expect(invoices.map(\.teamName) == ["Demo Devs"])
        let lines = invoices[0].lines
        // a-app (no days, 4 calls → all beyond the included), then b-app: free days, then pro
        #expect(lines.map(\.appName) == ["a-app", "b-app", "b-app", "b-app", "b-app", "b-app"])
        #expect(lines.map(\.item.kind) == [.usage, .included, .usage, .fee, .included, .usage])
        // free: 20 days → 666 included of 700, 34 beyond at 0; pro: 10 days → 1000 fee, 1000 included, 500 × 1 cent
        #expect(lines.map(\.item.quantity) == [4, 666, 34, 10, 1000, 500])
        #expect(lines.map(\.item.amountMinor) == [4, 0, 0, 1000, 0, 500])
        #expect(invoices[0].totalMinor == 1504)
        let units = lines.filter { $0.item.kind != .fee }.map(\.item.quantity).reduce(0, +)
        #expect(units == 700 + 1_500 + 4)
    }

    @Test func reconciliationNamesEachDisagreement() {
        var row = ReconciliationRow(
            subscriptionID: UUID(), label: "s", answered: 10, answeredBillable: 9, events: 10, eventsBillable: 9, rollupCalls: 10, rollupBillable: 9, invoiced: 9)
        #expect(row.differences.isEmpty)
        row.invoiced = nil
        #expect(row.differences == ["9 billable calls in the rollups, but the subscription is on no invoice"])
        row.invoiced = 9
        row.events = 8
        #expect(row.differences == ["gateway answered 10 calls, 8 events stored", "8 events stored, 10 calls in the hourly rollups"])
        let anonymous = ReconciliationRow(
            subscriptionID: nil, label: "none", answered: 3, answeredBillable: 0, events: 3, eventsBillable: 0, rollupCalls: 3, rollupBillable: 0, invoiced: nil)
        #expect(anonymous.differences.isEmpty)
        #expect(ReconciliationReport(tenant: "demo", period: "2026-11", rows: [anonymous]).text.hasPrefix("balanced"))
    }

    @Test func theTallyKeepsRunningTotalsPerHourAndHandsOutOnlyChangedOnes() {
        var tally = AnsweredTally()
        let tenant = UUID(), subscription = UUID()
        let at = Self.date("2026-11-05T10:15:00Z")
        func event(_ offset: Double, status: Int = 200) -> UsageEvent {
            UsageEvent(
                at: at.addingTimeInterval(offset), tenantID: tenant, apiID: nil, appID: nil, subscriptionID: subscription, planID: nil, method: "GET", status: status,
                latencyMicroseconds: 1, bytesIn: 0, bytesOut: 0, rejection: nil, forwarded: true)
        }
        tally.count(event(0))
        tally.count(event(1, status: 502))
        tally.count(event(3600))
        let first = tally.takeChanged(meterID: "m")
        #expect(first.map(\.answered) == [2, 1])
        #expect(first.map(\.billable) == [1, 1])
        #expect(first.first?.hour == Self.date("2026-11-05T10:00:00Z"))
        #expect(tally.takeChanged(meterID: "m").isEmpty)
        tally.count(event(2))
        #expect(tally.takeChanged(meterID: "m").map(\.answered) == [3])  // a total, not a delta
        #expect(AnsweredCount.latest(first + [first[0]]).count == 2)
        tally.forget(before: Self.date("2026-11-05T11:00:00Z"))
        #expect(tally.totals.count == 1)
    }

    @Test func moneyDecimalsAreExact() {
        #expect(ISO4217.decimal(minor: 4900, currency: "USD") == "49.00")
        #expect(ISO4217.decimal(minor: -5, currency: "EUR") == "-0.05")
        #expect(ISO4217.decimal(minor: 120, currency: "JPY") == "120")
        #expect(ISO4217.unitPriceDecimal(micros: 200_000, currency: "USD") == "0.002")
        #expect(ISO4217.unitPriceDecimal(micros: 0, currency: "USD") == "0")
    }
}
