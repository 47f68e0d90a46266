import Foundation

/// What one flush writes: events and the tally totals that changed since the last flush.
public struct UsageBatch: Sendable, Equatable {
    /// The meter (gateway process run) that recorded the events.
    public var meterID: String
    public var events: [UsageEvent]
    public var answered: [AnsweredCount]

    public init(meterID: String, events: [UsageEvent] = [], answered: [AnsweredCount] = []) {
        self.meterID = meterID
        self.events = events
        self.answered = answered
    }

    public var isEmpty: Bool { events.isEmpty && answered.isEmpty }
}

/// A running total of calls a meter was handed for one tenant, subscription and hour.
public struct AnsweredCount: Sendable, Equatable {
    public var meterID: String
    public var tenantID: UUID
    public var subscriptionID: UUID?
    public var hour: Date
    public var answered: Int64
    public var billable: Int64

    public init(meterID: String, tenantID: UUID, subscriptionID: UUID?, hour: Date, answered: Int64, billable: Int64) {
        self.meterID = meterID
        self.tenantID = tenantID
        self.subscriptionID = subscriptionID
        self.hour = hour
        self.answered = answered
        self.billable = billable
    }

    /// The highest total of each key (totals only grow, so that is the latest).
    static func latest(_ counts: [AnsweredCount]) -> [AnsweredCount] {
        struct Key: Hashable {
            let meter: String
            let tenant: UUID
            let subscription: UUID?
            let hour: Date
        }
        var latest: [Key: AnsweredCount] = [:]
        for count in counts {
            let key = Key(meter: count.meterID, tenant: count.tenantID, subscription: count.subscriptionID, hour: count.hour)
            if let known = latest[key], known.answered >= count.answered { continue }
            latest[key] = count
        }
        return latest.values.sorted { ($0.hour, $0.meterID) < ($1.hour, $1.meterID) }
    }
}

/// The gateway-side count of answered calls: running totals per (tenant, subscription, hour) since
/// the meter started, counted when the gateway hands over an event — before batching, spooling or
/// storage can lose it. Totals are written as totals (the store keeps the greatest), so writing one
/// twice or out of order never inflates it. Pure value; the meter guards it with its lock.
struct AnsweredTally {
    struct Key: Hashable {
        let tenant: UUID
        let subscription: UUID?
        let hour: Int64
    }

    struct Total {
        var answered: Int64 = 0
        var billable: Int64 = 0
        /// Changed since the last `takeChanged` (a flag beside the total: one hash per call counted).
        var changed = false

        mutating func add(billable: Bool) {
            answered += 1
            if billable { self.billable += 1 }
            changed = true
        }
    }

    private(set) var totals: [Key: Total] = [:]

    mutating func count(_ event: UsageEvent) {
        let key = Key(tenant: event.tenantID, subscription: event.subscriptionID, hour: Int64(event.at.timeIntervalSince1970.rounded(.down)) / 3600 * 3600)
        totals[key, default: Total()].add(billable: event.isBillable)
    }

    /// The totals that changed since the last call.
    mutating func takeChanged(meterID: String) -> [AnsweredCount] {
        var taken: [AnsweredCount] = []
        for (key, total) in totals where total.changed {
            taken.append(
                AnsweredCount(
                    meterID: meterID, tenantID: key.tenant, subscriptionID: key.subscription, hour: Date(timeIntervalSince1970: Double(key.hour)),
                    answered: total.answered, billable: total.billable))
        }
        if !taken.isEmpty { totals = totals.mapValues { Total(answered: $0.answered, billable: $0.billable) } }
        return taken.sorted { $0.hour < $1.hour }
    }

    /// Drops totals of hours before `date` that are already taken (bounds memory; calls for such
    /// hours no longer arrive).
    mutating func forget(before date: Date) {
        let limit = Int64(date.timeIntervalSince1970)
        totals = totals.filter { $0.key.hour >= limit || $0.value.changed }
    }
}
