import Foundation
import Testing

@testable import Billing

/// Rating is pure: table tests over proration, included requests, tiers and rounding.
@Suite struct RatingTests {
    static func date(_ text: String) -> Date { ISO8601DateFormatter().date(from: text)! }
    static let november = Rating.month("2026-11")!
    static let pro = PricingTerms(monthlyFeeMinor: 4900, includedRequests: 50_000, tierMode: .flat, tiers: [.init(upTo: nil, unitPriceMicros: 200_000)])

    static func rate(_ terms: PricingTerms, from: String = "2026-11-01T00:00:00Z", to: String = "2026-12-01T00:00:00Z", calls: Int64) -> [LineItem] {
        // these terms never overflow; the overflow tests call Rating.rate themselves
        try! Rating.rate(
            RatedSegment(terms: terms, planName: "Pro", from: date(from), to: date(to), periodStart: november.start, periodEnd: november.end, billableCalls: calls))
    }

    @Test(arguments: [
        // from, to, fee charged (30-day month)
        ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", Int64(4900)),
        ("2026-11-16T09:30:00Z", "2026-12-01T00:00:00Z", 2450),  // 15 of 30 days: the start day counts
        ("2026-11-01T00:00:00Z", "2026-11-11T23:59:00Z", 1633),  // cancelled on the 11th: 10 days, 1633.33 → 1633
        ("2026-11-05T08:00:00Z", "2026-11-05T17:00:00Z", 0),  // same-day start and cancel
        ("2026-10-20T00:00:00Z", "2026-11-02T00:00:00Z", 163),  // started last month: only November's day counts
    ])
    func theFeeIsProratedByDay(from: String, to: String, fee: Int64) {
        let lines = Self.rate(Self.pro, from: from, to: to, calls: 0)
        #expect(lines.filter { $0.kind == .fee }.map(\.amountMinor).reduce(0, +) == fee)
    }

    @Test func aPlanChangeChargesEachDayOnce() {
        let change = "2026-11-21T15:00:00Z"
        let free = PricingTerms(monthlyFeeMinor: 0, includedRequests: 1000, tierMode: .flat, tiers: [.init(upTo: nil, unitPriceMicros: 0)])
        let before = Self.rate(free, to: change, calls: 900)
        let after = Self.rate(Self.pro, from: change, calls: 0)
        // 20 days of Free: 666 included, the other 234 beyond at a price of 0
        #expect(before.map(\.kind) == [.included, .usage])
        #expect(before.map(\.quantity) == [666, 234])
        #expect(before.map(\.amountMinor) == [0, 0])
        #expect(after.map(\.amountMinor) == [1633])  // days 21–30: 10/30 of 49.00
        #expect(after.first?.quantity == 10)
    }

    @Test(arguments: [
        (Int64(50_000), [Int64]()),  // all included
        (Int64(50_001), [Int64(0)]),  // 0.002 → 0.2 cents rounds to 0
        (Int64(50_003), [Int64(1)]),  // 0.6 cents → 1 (half away from zero at .5 and above)
        (Int64(60_000), [Int64(2000)]),  // 10,000 × 0.2 cents = 20.00
    ] as [(Int64, [Int64])])
    func usageBeyondTheIncludedIsPricedAndRoundedOnce(calls: Int64, usage: [Int64]) {
        let lines = Self.rate(Self.pro, calls: calls).filter { $0.kind == .usage }
        #expect(lines.map(\.amountMinor) == usage)
    }

    @Test func graduatedTiersSplitUnitsAndVolumeTiersPriceThemAll() {
        let tiers: [PricingTerms.Tier] = [.init(upTo: 100, unitPriceMicros: 1_000_000), .init(upTo: 1000, unitPriceMicros: 500_000), .init(upTo: nil, unitPriceMicros: 100_000)]
        let graduated = PricingTerms(monthlyFeeMinor: 0, includedRequests: 0, tierMode: .graduated, tiers: tiers)
        let lines = Self.rate(graduated, calls: 1500)
        #expect(lines.map(\.quantity) == [100, 900, 500])
        #expect(lines.map(\.amountMinor) == [100, 450, 50])
        // exactly on a tier edge: nothing spills into the next tier
        #expect(Self.rate(graduated, calls: 100).map(\.quantity) == [100])
        let volume = PricingTerms(monthlyFeeMinor: 0, includedRequests: 0, tierMode: .volume, tiers: tiers)
        #expect(Self.rate(volume, calls: 1000).map(\.amountMinor) == [500])
        #expect(Self.rate(volume, calls: 1001).map(\.amountMinor) == [100])
    }

    @Test(arguments: [Int64(0), 1, 999, 1000, 1001, 123_456])
    func includedAndUsageQuantitiesAccountForEveryBillableCall(calls: Int64) {
        let free = PricingTerms(monthlyFeeMinor: 0, includedRequests: 1000, tierMode: .flat, tiers: [.init(upTo: nil, unitPriceMicros: 0)])
        for terms in [free, Self.pro] {
            let units = Self.rate(terms, from: "2026-11-11T00:00:00Z", calls: calls).filter { $0.kind != .fee }.map(\.quantity).reduce(0, +)
            #expect(units == calls)
        }
    }

    @Test func includedRequestsAreProratedWithTheFee() {
        // 15 of 30 days: 25,000 included
        let lines = Self.rate(Self.pro, from: "2026-11-16T00:00:00Z", calls: 26_000)
        #expect(lines.first { $0.kind == .usage }?.quantity == 1000)
    }

    @Test(arguments: [(Int64(1_499_999), Int64(1)), (1_500_000, 2), (-1_500_000, -2), (0, 0), (999_999_999_999, 1_000_000)])
    func roundingIsHalfAwayFromZero(micros: Int64, minor: Int64) {
        #expect(Rating.round(micros) == minor)
    }

    @Test func monthsAreUTCCalendarMonthsIncludingLeapFebruary() throws {
        let february = Rating.month("2028-02")!
        #expect(Rating.dayCount(from: february.start, to: february.end) == 29)
        #expect(Rating.month("2026-13") == nil)
        #expect(Rating.month("garbage") == nil)
        let leap = try Rating.rate(
            RatedSegment(
                terms: Self.pro, planName: "Pro", from: february.start, to: Self.date("2028-02-15T00:00:00Z"), periodStart: february.start,
                periodEnd: february.end, billableCalls: 0))
        #expect(leap.first?.amountMinor == 2366)  // 14/29 of 49.00 = 23.655… → 23.66
    }

    @Test func aFeeLineReadsDaysTimesTheDailyPrice() {
        // 15 of 30 days of 49.00: 15 × 1.63333333 = 24.49999995 → 24.50
        let fee = Self.rate(Self.pro, from: "2026-11-16T00:00:00Z", calls: 0)[0]
        #expect(fee.kind == .fee && fee.quantity == 15 && fee.unitPriceMicros == 163_333_333 && fee.amountMinor == 2450)
        #expect(Rating.round(fee.quantity * fee.unitPriceMicros) == fee.amountMinor)
        #expect(Rating.unit(of: .fee) == "day" && Rating.unit(of: .usage) == "request")
        // 1 minor unit a month, 14 of 28 days: exactly half a minor unit from the daily price, so quantity × price still matches
        let february = Rating.month("2027-02")!
        let tiny = PricingTerms(monthlyFeeMinor: 1, includedRequests: 0, tierMode: .flat, tiers: [.init(upTo: nil, unitPriceMicros: 0)])
        for days in 1...28 {
            let segment = RatedSegment(terms: tiny, planName: "T", activeDays: days, periodDays: 28, billableCalls: 0)
            let line = try! Rating.rate(segment)[0]
            #expect(Rating.round(line.quantity * line.unitPriceMicros) == line.amountMinor)
            #expect(line.quantity == Int64(days))
        }
        _ = february
    }

    /// Terms a provider could once save: none of them may trap; what does not fit is an error.
    @Test(arguments: [
        // included 10^18: included × days overflowed
        PricingTerms(monthlyFeeMinor: 0, includedRequests: 1_000_000_000_000_000_000, tierMode: .flat, tiers: [.init(upTo: nil, unitPriceMicros: 1)]),
        // 10^12 micros a call × 10 million calls
        PricingTerms(monthlyFeeMinor: 0, includedRequests: 0, tierMode: .flat, tiers: [.init(upTo: nil, unitPriceMicros: 1_000_000_000_000)]),
        // a fee of Int64.max minor units
        PricingTerms(monthlyFeeMinor: Int64.max, includedRequests: 0, tierMode: .flat, tiers: [.init(upTo: nil, unitPriceMicros: 0)]),
        // graduated and volume tiers at the top price
        PricingTerms(
            monthlyFeeMinor: 0, includedRequests: 0, tierMode: .graduated,
            tiers: [.init(upTo: 10, unitPriceMicros: 1), .init(upTo: nil, unitPriceMicros: 1_000_000_000_000)]),
        PricingTerms(
            monthlyFeeMinor: 0, includedRequests: 0, tierMode: .volume, tiers: [.init(upTo: 10, unitPriceMicros: 1), .init(upTo: nil, unitPriceMicros: Int64.max)]),
    ])
    func hugeTermsAreAnOverflowErrorNotATrap(terms: PricingTerms) {
        let segment = RatedSegment(terms: terms, planName: "Huge", activeDays: 30, periodDays: 30, billableCalls: 10_000_000)
        #expect(throws: RatingOverflow.self) { try Rating.rate(segment) }
    }

    @Test func theLargestAllowedTermsRateWithoutOverflowAtPlausibleVolumes() throws {
        // 10^12 included, fee 10^11 minor, 10^9 micros a call beyond (the plan form's bounds), a billion calls beyond the included
        let terms = PricingTerms(monthlyFeeMinor: 100_000_000_000, includedRequests: 1_000_000_000_000, tierMode: .flat, tiers: [.init(upTo: nil, unitPriceMicros: 1_000_000_000)])
        let segment = RatedSegment(terms: terms, planName: "Max", activeDays: 31, periodDays: 31, billableCalls: 1_001_000_000_000)
        let lines = try Rating.rate(segment)
        #expect(lines.map(\.kind) == [.fee, .included, .usage])
        #expect(lines[0].amountMinor == 100_000_000_000)
        #expect(lines[2].amountMinor == 1_000_000_000_000)
    }

    @Test func checkedArithmeticThrowsInsteadOfTrapping() throws {
        #expect(throws: RatingOverflow.self) { try Checked.sum([Int64.max, 1], "total") }
        #expect(throws: RatingOverflow.self) { try Checked.multiply(Int64.max / 2, 3, "line") }
        #expect(throws: RatingOverflow.self) { try Checked.add(Int64.min, -1, "line") }
        #expect(try Checked.sum([Int64.max - 1, 1], "total") == Int64.max)
    }

    @Test func anOverflowNamesTheTeamAndSubscriptionOfTheInvoice() {
        let huge = PlanVersion(
            id: UUID(), name: "Huge", terms: PricingTerms(monthlyFeeMinor: 0, includedRequests: 0, tierMode: .flat, tiers: [.init(upTo: nil, unitPriceMicros: 1_000_000_000_000)]))
        let subscription = BillableSubscription(id: UUID(), teamID: UUID(), teamName: "Big Co", appID: UUID(), appName: "crawler", apiID: UUID(), apiName: "Maps v1", changes: [])
        #expect {
            try InvoiceAssembly.assemble(
                subscriptions: [subscription], plans: [huge.id: huge], billableCalls: [subscription.id: [huge.id: 10_000_000]], periodStart: Self.november.start,
                periodEnd: Self.november.end)
        } throws: { error in
            (error as? RatingOverflow)?.what.hasPrefix("Big Co, crawler → Maps v1: Huge") == true
        }
    }

    @Test(arguments: [("BHD", 3), ("JPY", 0), ("KWD", 3), ("CLF", 4), ("USD", 2), ("EUR", 2), ("ISK", 0), ("XOF", 0), ("TND", 3)])
    func everyISO4217CurrencyHasItsMinorUnits(code: String, digits: Int) {
        #expect(ISO4217.minorUnits[code] == digits)
        #expect(ISO4217.minorUnits.count >= 150)
    }

    @Test func threeDigitCurrenciesFormatExactly() {
        #expect(ISO4217.decimal(minor: 1_234, currency: "BHD") == "1.234")
        #expect(ISO4217.decimal(minor: 1_234, currency: "JPY") == "1234")
        #expect(ISO4217.unitPriceDecimal(micros: 1_500_000, currency: "BHD") == "0.0015")
    }
}
