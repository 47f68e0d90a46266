import Foundation

/// The commercial terms rating needs (a plan version's pricing), independent of the portal.
public struct PricingTerms: Sendable, Equatable {
    public enum TierMode: String, Sendable { case flat, graduated, volume }

    public struct Tier: Sendable, Equatable {
        /// Inclusive upper bound of overage units in this tier; nil for the open last tier.
        public var upTo: Int64?
        /// Price per unit in millionths of a minor unit.
        public var unitPriceMicros: Int64

        public init(upTo: Int64?, unitPriceMicros: Int64) {
            self.upTo = upTo
            self.unitPriceMicros = unitPriceMicros
        }
    }

    public var monthlyFeeMinor: Int64
    public var includedRequests: Int64
    public var tierMode: TierMode
    public var tiers: [Tier]

    public init(monthlyFeeMinor: Int64, includedRequests: Int64, tierMode: TierMode, tiers: [Tier]) {
        self.monthlyFeeMinor = monthlyFeeMinor
        self.includedRequests = includedRequests
        self.tierMode = tierMode
        self.tiers = tiers
    }
}

/// The part of a billing period a subscription spent on one plan version: the days charged to it
/// and the billable calls the gateway admitted under it.
public struct RatedSegment: Sendable, Equatable {
    public var terms: PricingTerms
    public var planName: String
    /// Days of the period charged to this plan (see `Rating` for which day belongs to which plan).
    public var activeDays: Int
    /// Days in the whole period.
    public var periodDays: Int
    /// Billable calls in the segment (`UsageEvent.isBillable`).
    public var billableCalls: Int64

    public init(terms: PricingTerms, planName: String, activeDays: Int, periodDays: Int, billableCalls: Int64) {
        self.terms = terms
        self.planName = planName
        self.activeDays = activeDays
        self.periodDays = periodDays
        self.billableCalls = billableCalls
    }

    /// A segment running from `from` to `to` (exclusive) within the period [periodStart, periodEnd).
    public init(terms: PricingTerms, planName: String, from: Date, to: Date, periodStart: Date, periodEnd: Date, billableCalls: Int64) {
        self.init(
            terms: terms, planName: planName, activeDays: Rating.dayCount(from: max(from, periodStart), to: min(to, periodEnd)),
            periodDays: Rating.dayCount(from: periodStart, to: periodEnd), billableCalls: billableCalls)
    }
}

/// An invoice line: what, how many, at what unit price, for how much.
public struct LineItem: Sendable, Equatable {
    /// `included`: billable calls covered by the plan (amount 0); `usage`: calls beyond them, by tier.
    /// Included and usage quantities of a subscription add up to its billable calls, so an invoice
    /// accounts for every billable call (the reconciliation relies on it).
    public enum Kind: String, Sendable, CaseIterable { case fee, included, usage }

    public var kind: Kind
    public var description: String
    public var quantity: Int64
    /// Unit price in micros of a minor unit (fee lines: the daily price, see `Rating`).
    public var unitPriceMicros: Int64
    public var amountMinor: Int64

    public init(kind: Kind, description: String, quantity: Int64, unitPriceMicros: Int64, amountMinor: Int64) {
        self.kind = kind
        self.description = description
        self.quantity = quantity
        self.unitPriceMicros = unitPriceMicros
        self.amountMinor = amountMinor
    }
}

/// An amount or count that does not fit the 64-bit integers rating works in: the invoice it
/// belongs to cannot be computed (plan terms are bounded so that only absurd usage gets here).
public struct RatingOverflow: Error, Equatable, CustomStringConvertible, Sendable {
    /// What was being computed, in words ("Pro: usage beyond the included").
    public var what: String

    public init(_ what: String) { self.what = what }

    public var description: String { "\(what) does not fit in a 64-bit amount" }
}

/// Checked 64-bit arithmetic for money and units: an overflow throws `RatingOverflow` instead of
/// trapping the process. Every multiplication and sum on plan terms or usage goes through it.
public enum Checked {
    public static func multiply(_ a: Int64, _ b: Int64, _ what: @autoclosure () -> String) throws(RatingOverflow) -> Int64 {
        let (value, overflow) = a.multipliedReportingOverflow(by: b)
        guard !overflow else { throw RatingOverflow(what()) }
        return value
    }

    public static func add(_ a: Int64, _ b: Int64, _ what: @autoclosure () -> String) throws(RatingOverflow) -> Int64 {
        let (value, overflow) = a.addingReportingOverflow(b)
        guard !overflow else { throw RatingOverflow(what()) }
        return value
    }

    public static func sum(_ values: some Sequence<Int64>, _ what: @autoclosure () -> String) throws(RatingOverflow) -> Int64 {
        var total: Int64 = 0
        for value in values {
            let (next, overflow) = total.addingReportingOverflow(value)
            guard !overflow else { throw RatingOverflow(what()) }
            total = next
        }
        return total
    }
}

/// Rating of subscriptions, pure and exact.
///
/// **Rounding rule** (the only one): every line is computed exactly in micros of a minor unit
/// (integers, no floating point) as quantity × unit price, and rounded once, to whole minor units,
/// half away from zero. Invoice totals are sums of rounded lines.
///
/// **Proration by day**: a calendar month (UTC) has D days; a plan in effect on d of them is charged
/// d days at the daily price, the monthly fee ÷ D (in micros, rounded half away from zero to a
/// whole micro), so that a fee line reads quantity (days) × unit price (per day) = amount. A day belongs to the plan in effect at its end: a subscription that starts or changes
/// plan on day N pays the new plan from day N, one cancelled on day N pays through day N − 1. So
/// every day is charged to exactly one plan, and a same-day start and cancel costs nothing. The
/// included requests are prorated the same way (rounded down); usage beyond them is priced by the
/// plan's tiers (tier bounds count calls beyond the included ones).
///
/// **Overflow**: all arithmetic is checked (`Checked`); a line that does not fit throws
/// `RatingOverflow` for its invoice instead of trapping.
public enum Rating {
    /// The unit of a line's quantity: fee lines count days, the others requests.
    public static func unit(of kind: LineItem.Kind) -> String { kind == .fee ? "day" : "request" }

    public static func rate(_ segment: RatedSegment) throws(RatingOverflow) -> [LineItem] {
        let days = Int64(max(0, segment.periodDays))
        let active = Int64(min(max(0, segment.activeDays), segment.periodDays))
        var lines: [LineItem] = []
        let terms = segment.terms
        let plan = segment.planName
        if terms.monthlyFeeMinor > 0 && active > 0 {
            let monthly = try Checked.multiply(terms.monthlyFeeMinor, 1_000_000, "\(plan): monthly fee")
            let daily = divideRounded(monthly, max(1, days))
            let micros = try Checked.multiply(daily, active, "\(plan): monthly fee")
            let description = active == days ? "\(plan): monthly fee" : "\(plan): monthly fee, \(active) of \(days) days"
            lines.append(LineItem(kind: .fee, description: description, quantity: active, unitPriceMicros: daily, amountMinor: round(micros)))
        }
        let included = days > 0 ? try Checked.multiply(max(0, terms.includedRequests), active, "\(plan): included requests") / days : 0
        let calls = max(0, segment.billableCalls)
        if min(calls, included) > 0 {
            lines.append(
                LineItem(
                    kind: .included, description: "\(plan): included requests (\(included) in the plan)", quantity: min(calls, included),
                    unitPriceMicros: 0, amountMinor: 0))
        }
        let overage = calls - min(calls, included)
        guard overage > 0 else { return lines }
        for (units, price, label) in price(overage: overage, terms) where units > 0 {
            let micros = try Checked.multiply(units, price, "\(plan): \(label)")
            lines.append(LineItem(kind: .usage, description: "\(plan): \(label)", quantity: units, unitPriceMicros: price, amountMinor: round(micros)))
        }
        return lines
    }

    /// a ÷ b rounded half away from zero (b > 0).
    static func divideRounded(_ a: Int64, _ b: Int64) -> Int64 {
        let (quotient, remainder) = a.quotientAndRemainder(dividingBy: b)
        // 2·|r| ≥ b without computing 2·|r| (which could overflow)
        if remainder.magnitude >= b.magnitude - remainder.magnitude { return quotient + (a < 0 ? -1 : 1) }
        return quotient
    }

    /// Overage units by tier: (units, unit price in micros, label).
    static func price(overage: Int64, _ terms: PricingTerms) -> [(Int64, Int64, String)] {
        let tiers = terms.tiers.isEmpty ? [PricingTerms.Tier(upTo: nil, unitPriceMicros: 0)] : terms.tiers
        switch terms.tierMode {
        case .flat:
            return [(overage, tiers[0].unitPriceMicros, "requests beyond the included")]
        case .volume:
            let tier = tiers.first { $0.upTo.map { overage <= $0 } ?? true } ?? tiers[tiers.count - 1]
            return [(overage, tier.unitPriceMicros, "requests beyond the included (volume tier up to \(tier.upTo.map(String.init) ?? "∞"))")]
        case .graduated:
            var result: [(Int64, Int64, String)] = []
            var lower: Int64 = 0
            for tier in tiers {
                let upper = max(lower, tier.upTo ?? Int64.max)
                let units = max(0, min(overage, upper) - lower)
                if units > 0 { result.append((units, tier.unitPriceMicros, "requests \(lower + 1)–\(tier.upTo.map(String.init) ?? "∞") beyond the included")) }
                if overage <= upper { break }
                lower = upper
            }
            return result
        }
    }

    /// Micros → minor units, half away from zero.
    public static func round(_ micros: Int64) -> Int64 {
        let (quotient, remainder) = micros.quotientAndRemainder(dividingBy: 1_000_000)
        if remainder.magnitude >= 500_000 { return quotient + (micros < 0 ? -1 : 1) }
        return quotient
    }

    static var utc: Calendar {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar
    }

    /// Calendar days (UTC) from `from`'s day up to, not including, `to`'s day.
    public static func dayCount(from: Date, to: Date) -> Int {
        guard to > from else { return 0 }
        return utc.dateComponents([.day], from: utc.startOfDay(for: from), to: utc.startOfDay(for: to)).day ?? 0
    }

    /// The calendar month (UTC) of `period` (`YYYY-MM`) as [start, end).
    public static func month(_ period: String) -> (start: Date, end: Date)? {
        let parts = period.split(separator: "-")
        guard parts.count == 2, let year = Int(parts[0]), let month = Int(parts[1]), (1...12).contains(month), (1970...9999).contains(year),
            let start = utc.date(from: DateComponents(year: year, month: month, day: 1)), let end = utc.date(byAdding: .month, value: 1, to: start)
        else { return nil }
        return (start, end)
    }
}
