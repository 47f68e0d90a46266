import Foundation

/// One recorded transition of a subscription: from `at` on it is in `state` on plan `planID`.
public struct SubscriptionChange: Sendable, Equatable {
    public var at: Date
    public var state: String
    public var planID: UUID

    public init(at: Date, state: String, planID: UUID) {
        self.at = at
        self.state = state
        self.planID = planID
    }
}

/// Which days of a period are charged to which plan version. Pure.
public enum SubscriptionTimeline {
    /// A day is charged to the plan the subscription is **active** on at the day's end (UTC), so
    /// each day goes to at most one plan; days spent pending, suspended, rejected or cancelled at
    /// their end are not charged. Days after the last change keep its state (a draft for the
    /// running month assumes the subscription stays as it is).
    public static func chargedDays(_ changes: [SubscriptionChange], periodStart: Date, periodEnd: Date) -> [UUID: Int] {
        let ordered = changes.sorted { $0.at < $1.at }
        var days: [UUID: Int] = [:]
        var next = 0
        var current: SubscriptionChange?
        var dayEnd = periodStart.addingTimeInterval(86_400)
        while dayEnd <= periodEnd {
            while next < ordered.count && ordered[next].at < dayEnd {
                current = ordered[next]
                next += 1
            }
            if let current, current.state == "active" { days[current.planID, default: 0] += 1 }
            dayEnd.addTimeInterval(86_400)
        }
        return days
    }
}

/// A plan version as rating needs it.
public struct PlanVersion: Sendable, Equatable {
    public var id: UUID
    public var name: String
    public var terms: PricingTerms

    public init(id: UUID, name: String, terms: PricingTerms) {
        self.id = id
        self.name = name
        self.terms = terms
    }
}

/// A subscription with what invoicing needs to know about it.
public struct BillableSubscription: Sendable, Equatable {
    public var id: UUID
    public var teamID: UUID
    public var teamName: String
    public var appID: UUID
    public var appName: String
    public var apiID: UUID
    public var apiName: String
    public var changes: [SubscriptionChange]

    public init(
        id: UUID, teamID: UUID, teamName: String, appID: UUID, appName: String, apiID: UUID, apiName: String, changes: [SubscriptionChange]
    ) {
        self.id = id
        self.teamID = teamID
        self.teamName = teamName
        self.appID = appID
        self.appName = appName
        self.apiID = apiID
        self.apiName = apiName
        self.changes = changes
    }
}

/// An invoice line with the subscription it belongs to.
public struct InvoiceLine: Sendable, Equatable {
    public var subscriptionID: UUID
    public var appID: UUID
    public var apiID: UUID
    public var planID: UUID
    public var appName: String
    public var apiName: String
    public var planName: String
    public var item: LineItem
}

/// A team's invoice for one period, before it is stored.
public struct AssembledInvoice: Sendable, Equatable {
    public var teamID: UUID
    public var teamName: String
    public var lines: [InvoiceLine]
    /// The sum of the lines, checked when assembled.
    public var totalMinor: Int64 = 0
}

/// Turns subscriptions, their plans and their billable calls into one invoice per consumer team.
/// Pure.
public enum InvoiceAssembly {
    /// `billableCalls[subscription][plan]` are the billable calls of the period the gateway admitted
    /// under each plan version. Each plan version a subscription was charged days on or used gets
    /// one rated segment; teams without any line get no invoice.
    public static func assemble(
        subscriptions: [BillableSubscription], plans: [UUID: PlanVersion], billableCalls: [UUID: [UUID: Int64]], periodStart: Date, periodEnd: Date
    ) throws(RatingOverflow) -> [AssembledInvoice] {
        let periodDays = Rating.dayCount(from: periodStart, to: periodEnd)
        var byTeam: [UUID: AssembledInvoice] = [:]
        let ordered = subscriptions.sorted { a, b in
            let app = a.appName.compare(b.appName, options: [.caseInsensitive, .numeric])
            if app != .orderedSame { return app == .orderedAscending }
            let api = a.apiName.compare(b.apiName, options: [.caseInsensitive, .numeric])
            if api != .orderedSame { return api == .orderedAscending }
            return a.id.uuidString < b.id.uuidString
        }
        for subscription in ordered {
            let days = SubscriptionTimeline.chargedDays(subscription.changes, periodStart: periodStart, periodEnd: periodEnd)
            let calls = billableCalls[subscription.id] ?? [:]
            // plan versions in the order the subscription moved through them
            var planOrder: [UUID] = []
            for change in subscription.changes.sorted(by: { $0.at < $1.at }) where !planOrder.contains(change.planID) { planOrder.append(change.planID) }
            for plan in calls.keys.sorted(by: { $0.uuidString < $1.uuidString }) where !planOrder.contains(plan) { planOrder.append(plan) }
            var lines: [InvoiceLine] = []
            for planID in planOrder {
                let plan = plans[planID] ?? PlanVersion(id: planID, name: "Unknown plan", terms: .free)
                let segment = RatedSegment(
                    terms: plan.terms, planName: plan.name, activeDays: days[planID] ?? 0, periodDays: periodDays, billableCalls: calls[planID] ?? 0)
                let items: [LineItem]
                do { items = try Rating.rate(segment) } catch {
                    throw RatingOverflow("\(subscription.teamName), \(subscription.appName) → \(subscription.apiName): \(error.what)")
                }
                for item in items {
                    lines.append(
                        InvoiceLine(
                            subscriptionID: subscription.id, appID: subscription.appID, apiID: subscription.apiID, planID: planID,
                            appName: subscription.appName, apiName: subscription.apiName, planName: plan.name, item: item))
                }
            }
            guard !lines.isEmpty else { continue }
            byTeam[subscription.teamID, default: AssembledInvoice(teamID: subscription.teamID, teamName: subscription.teamName, lines: [])].lines
                .append(contentsOf: lines)
        }
        var invoices = Array(byTeam.values)
        for index in invoices.indices {
            invoices[index].totalMinor = try Checked.sum(invoices[index].lines.map(\.item.amountMinor), "\(invoices[index].teamName): invoice total")
        }
        return invoices.sorted { ($0.teamName, $0.teamID.uuidString) < ($1.teamName, $1.teamID.uuidString) }
    }
}

extension PricingTerms {
    /// No fee, nothing included, every call at zero: how calls under an unknown plan are still counted.
    public static let free = PricingTerms(monthlyFeeMinor: 0, includedRequests: 0, tierMode: .flat, tiers: [.init(upTo: nil, unitPriceMicros: 0)])
}
