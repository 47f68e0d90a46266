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

    private(set) var totals: [Key: (answered: Int64, billable: Int64)] = [:]
    private var changed: Set<Key> = []

    mutating func count(_ event: UsageEvent) {
        let key = Key(tenant: event.tenantID, subscription: event.subscriptionID, hour: Int64(event.at.timeIntervalSince1970.rounded(.down)) / 3600 * 3600)
        var total = totals[key] ?? (0, 0)
        total.answered += 1
        if event.isBillable { total.billable += 1 }
        totals[key] = total
        changed.insert(key)
    }

    /// The totals that changed since the last call.
    mutating func takeChanged(meterID: String) -> [AnsweredCount] {
        defer { changed.removeAll(keepingCapacity: true) }
        return changed.compactMap { key in
            totals[key].map {
                AnsweredCount(
                    meterID: meterID, tenantID: key.tenant, subscriptionID: key.subscription, hour: Date(timeIntervalSince1970: Double(key.hour)),
                    answered: $0.answered, billable: $0.billable)
            }
        }
        .sorted { $0.hour < $1.hour }
    }

    /// Drops totals of hours before `date` that are already taken (bounds memory; calls for such
    /// hours no longer arrive).
    mutating func forget(before date: Date) {
        let limit = Int64(date.timeIntervalSince1970)
        totals = totals.filter { $0.key.hour >= limit || changed.contains($0.key) }
    }
}
