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
    /// Unit price in micros of a minor unit (fee lines: the full monthly fee × 10^6).
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

/// Rating of subscriptions, pure and exact.
///
/// **Rounding rule** (the only one): every line is computed exactly in micros of a minor unit
/// (integers, no floating point) and rounded once, to whole minor units, half away from zero.
/// Invoice totals are sums of rounded lines.
///
/// **Proration by day**: a calendar month (UTC) has D days; a plan in effect on d of them is charged
/// fee × d / D. A day belongs to the plan in effect at its end: a subscription that starts or changes
/// plan on day N pays the new plan from day N, one cancelled on day N pays through day N − 1. So
/// every day is charged to exactly one plan, and a same-day start and cancel costs nothing. The
/// included requests are prorated the same way (rounded down); usage beyond them is priced by the
/// plan's tiers (tier bounds count calls beyond the included ones).
public enum Rating {
    public static func rate(_ segment: RatedSegment) -> [LineItem] {
        let days = Int64(max(0, segment.periodDays))
        let active = Int64(min(max(0, segment.activeDays), segment.periodDays))
        var lines: [LineItem] = []
        let terms = segment.terms
        if terms.monthlyFeeMinor > 0 && active > 0 {
            let micros = terms.monthlyFeeMinor * 1_000_000 * active / max(1, days)
            let description = active == days ? "\(segment.planName): monthly fee" : "\(segment.planName): monthly fee, \(active) of \(days) days"
            lines.append(LineItem(kind: .fee, description: description, quantity: active, unitPriceMicros: terms.monthlyFeeMinor * 1_000_000, amountMinor: round(micros)))
        }
        let included = days > 0 ? terms.includedRequests * active / days : 0
        let calls = max(0, segment.billableCalls)
        if min(calls, included) > 0 {
            lines.append(
                LineItem(
                    kind: .included, description: "\(segment.planName): included requests (\(included) in the plan)", quantity: min(calls, included),
                    unitPriceMicros: 0, amountMinor: 0))
        }
        let overage = calls - min(calls, included)
        guard overage > 0 else { return lines }
        for (units, price, label) in price(overage: overage, terms) where units > 0 {
            lines.append(
                LineItem(
                    kind: .usage, description: "\(segment.planName): \(label)", quantity: units, unitPriceMicros: price,
                    amountMinor: round(units * price)))
        }
        return lines
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
                let upper = tier.upTo ?? Int64.max
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
