import Foundation

/// The commercial and technical terms of a plan. Money is in integer minor units of the tenant's
/// currency; per-request prices in millionths of a minor unit ("micros"), so that prices below one
/// cent per request stay exact integers.
struct PlanTerms: Sendable, Equatable, Codable {
    enum TierMode: String, Sendable, Codable, CaseIterable {
        /// One price per request beyond the included ones.
        case flat
        /// Each request is priced by the tier it falls in.
        case graduated
        /// All requests are priced by the tier the total falls in.
        case volume
    }

    enum Approval: String, Sendable, Codable, CaseIterable { case automatic, manual }
    enum Visibility: String, Sendable, Codable, CaseIterable { case `public`, hidden }

    struct Tier: Sendable, Equatable, Codable {
        /// Inclusive upper bound of billable requests in this tier; nil for the last, open tier.
        var upTo: Int64?
        var unitPriceMicros: Int64
    }

    var name: String
    var ratePerSecond: Int
    var burst: Int
    /// Requests per calendar month; nil means unlimited.
    var monthlyQuota: Int64?
    var monthlyFeeMinor: Int64
    var includedRequests: Int64
    var tierMode: TierMode
    var tiers: [Tier]
    var approval: Approval
    var visibility: Visibility
    /// Requests per UTC minute, hour and day; nil: no such window.
    var perMinute: Int64? = nil
    var perHour: Int64? = nil
    var perDay: Int64? = nil
    /// Whether calls answered from the gateway's response cache count as billable; absent from a
    /// request body: yes (stored and shown as a value).
    var cacheHitsBillable: Bool? = nil

    /// Cache hits bill like any answered call unless the plan says otherwise.
    var billsCacheHits: Bool { cacheHitsBillable ?? true }

    static let maximumTiers = 10
    /// Bounds that keep rating's 64-bit arithmetic far from overflow for any plausible month
    /// (rating still checks every operation and fails the one invoice, never the process):
    /// requests per month (quota, included, tier bounds) up to 10^12, a fee up to 10^11 minor
    /// units (× 10^6 micros × 31 days < 2^63), a price per request up to 10^9 micros (1,000 minor
    /// units: 9.2 × 10^9 calls of one subscription in a month before a line overflows).
    static let maximumRequests: Int64 = 1_000_000_000_000
    static let maximumFeeMinor: Int64 = 100_000_000_000
    static let maximumUnitPriceMicros: Int64 = 1_000_000_000

    /// Field → message for every rule the terms break (empty when valid).
    func problems() -> [String: String] {
        var errors: [String: String] = [:]
        let trimmed = name.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.isEmpty || trimmed.count > 100 || TextInput.hasControlCharacters(trimmed) { errors["name"] = "Enter a name of 1 to 100 characters." }
        if !(1...1_000_000).contains(ratePerSecond) { errors["rate_per_second"] = "Allow 1 to 1,000,000 requests per second." }
        if !(1...10_000_000).contains(burst) || burst < ratePerSecond { errors["burst"] = "Burst is at least the rate per second (and at most 10,000,000)." }
        if let quota = monthlyQuota, !(1...Self.maximumRequests).contains(quota) {
            errors["monthly_quota"] = "A quota is 1 to 1,000,000,000,000 requests; leave it empty for unlimited."
        }
        if !(0...Self.maximumFeeMinor).contains(monthlyFeeMinor) { errors["monthly_fee_minor"] = "Enter a fee from 0 up to 100,000,000,000 minor units (1,000,000,000.00)." }
        if !(0...Self.maximumRequests).contains(includedRequests) { errors["included_requests"] = "Include 0 to 1,000,000,000,000 requests." }
        if let quota = monthlyQuota, includedRequests > quota { errors["included_requests"] = "Cannot include more requests than the quota allows." }
        if let problem = Self.tierProblem(tierMode, tiers) { errors["tiers"] = problem }
        for (field, problem) in windowProblems() { errors[field] = problem }
        return errors
    }

    /// Each window is 1 to 10^12 requests, and a longer window allows at least as many as a shorter
    /// one (otherwise the shorter one could never be reached), and no more than the monthly quota.
    func windowProblems() -> [String: String] {
        var errors: [String: String] = [:]
        let windows: [(String, String, Int64?)] = [("per_minute", "minute", perMinute), ("per_hour", "hour", perHour), ("per_day", "day", perDay)]
        for (field, _, value) in windows {
            if let value, !(1...Self.maximumRequests).contains(value) {
                errors[field] = "Allow 1 to 1,000,000,000,000 requests, or leave it empty for no limit."
            }
        }
        var shorter: (name: String, limit: Int64)?
        for (field, name, value) in windows {
            guard let value, errors[field] == nil else { continue }
            if let shorter, value < shorter.limit {
                errors[field] = "A \(name) allows at least the \(shorter.limit) requests of a \(shorter.name)."
            } else if let quota = monthlyQuota, value > quota {
                errors[field] = "A \(name) cannot allow more than the monthly quota (\(quota))."
            }
            shorter = (name, value)
        }
        return errors
    }

    /// "500/min, 10000/day" for people; "" without windows.
    var windowsSummary: String {
        [(perMinute, "min"), (perHour, "hour"), (perDay, "day")].compactMap { limit, unit in limit.map { "\($0)/\(unit)" } }.joined(separator: ", ")
    }

    static func tierProblem(_ mode: TierMode, _ tiers: [Tier]) -> String? {
        guard !tiers.isEmpty, tiers.count <= maximumTiers else { return "Give 1 to \(maximumTiers) price tiers." }
        if mode == .flat && tiers.count != 1 { return "A flat price has exactly one tier." }
        guard tiers.allSatisfy({ (0...maximumUnitPriceMicros).contains($0.unitPriceMicros) }) else {
            return "A price per request is 0 to 1,000,000,000 micros (1,000 minor units, e.g. 10.00 USD)."
        }
        guard tiers.last?.upTo == nil else { return "The last tier must be open-ended (no up_to)." }
        let bounds = tiers.dropLast().map(\.upTo)
        guard bounds.allSatisfy({ $0 != nil }) else { return "Only the last tier may be open-ended." }
        let values = bounds.compactMap { $0 }
        guard values.allSatisfy({ (1...maximumRequests).contains($0) }), zip(values, values.dropFirst()).allSatisfy({ $0 < $1 }) else {
            return "Tier bounds must be 1 to 1,000,000,000,000 and strictly increasing."
        }
        return nil
    }

    /// Throws a 422 with every problem.
    func validated() throws -> PlanTerms {
        let errors = problems()
        guard errors.isEmpty else { throw AppError.validation(errors) }
        var copy = self
        copy.name = name.trimmingCharacters(in: .whitespacesAndNewlines)
        return copy
    }
}

/// A stored plan version.
struct Plan: Sendable, Equatable {
    let id: UUID
    let apiID: UUID
    let familyID: UUID
    let version: Int
    var terms: PlanTerms
    var createdAt: Date
    var supersededAt: Date?

    var isCurrent: Bool { supersededAt == nil }
}
