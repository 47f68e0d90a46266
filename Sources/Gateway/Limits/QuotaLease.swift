import Foundation

/// Saturating arithmetic for quota counters: quotas reach 10^12 and counters only grow, but a
/// counter must never trap the gateway (a wrong number is a bug; a crash is an outage).
enum QuotaMath {
    static func add(_ a: Int64, _ b: Int64) -> Int64 {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? (b > 0 ? .max : .min) : sum
    }

    static func subtract(_ a: Int64, _ b: Int64) -> Int64 {
        let (difference, overflow) = a.subtractingReportingOverflow(b)
        return overflow ? (b > 0 ? .min : .max) : difference
    }

    static func multiply(_ a: Int64, _ b: Int64) -> Int64 {
        let (product, overflow) = a.multipliedReportingOverflow(by: b)
        return overflow ? ((a < 0) == (b < 0) ? .max : .min) : product
    }
}

/// How big a block of quota one lease request gets.
///
/// `block = max(need, max(1, min(cap, pool / (k × holders))))`, never more than the pool: while
/// the pool is large a gateway gets big blocks (few round trips), as it shrinks the blocks shrink
/// with it, so at the end of a month every gateway holds at most a few units another one could
/// have used. `need` lets a gateway that admitted its bounded advance get at least that back.
public struct LeaseSizing: Sendable, Equatable {
    /// The share of the pool one request may take is 1 / (divisor × holders).
    public var divisor: Int64
    /// The largest block, whatever the pool.
    public var maximumBlock: Int64

    public init(divisor: Int64 = 4, maximumBlock: Int64 = 50_000) {
        self.divisor = max(1, divisor)
        self.maximumBlock = max(1, maximumBlock)
    }

    /// The block for a pool of unleased units shared by `holders` live leases (this one included).
    public func block(pool: Int64, holders: Int, need: Int64 = 1) -> Int64 {
        guard pool > 0 else { return 0 }
        let share = pool / max(1, QuotaMath.multiply(divisor, Int64(max(1, holders))))
        return min(pool, max(need, max(1, min(maximumBlock, share))))
    }
}

/// What the database said about a subscription's month the last time this gateway asked.
public enum QuotaStanding: String, Sendable, Equatable {
    /// Not asked yet.
    case unknown
    /// Units were left unleased after this gateway's request.
    case open
    /// Nothing is left to lease, but other live leases hold unused units (they may come back).
    case heldElsewhere
    /// Nothing is left to lease and no other lease holds any: the month's quota is used up.
    case exhausted
}

/// A lease row as the database holds it.
public struct LeaseRow: Sendable, Equatable {
    public var id: UUID
    public var granted: Int64
    public var used: Int64
    /// `expires_at > now()` in the database's clock.
    public var live: Bool

    public init(id: UUID, granted: Int64, used: Int64, live: Bool) {
        self.id = id
        self.granted = granted
        self.used = used
        self.live = live
    }

    /// Units granted and not reported used (a debt from advances counts as nothing).
    public var outstanding: Int64 { live ? max(0, QuotaMath.subtract(granted, used)) : 0 }
}

/// One gateway's message about one lease: what it used, whether it wants more, what it gives back.
/// All counts are absolute (not deltas), so a request repeated after a lost answer changes nothing twice.
public struct LeaseRequest: Sendable, Equatable {
    public var leaseID: UUID
    public var tenantID: UUID
    public var subscriptionID: UUID
    public var period: String
    public var holder: String
    public var quota: Int64
    /// Billable calls settled on this lease so far.
    public var used: Int64
    /// What this gateway last knew the row's `used` to be (the fallback if the row is gone).
    public var reported: Int64
    /// Ask for a block.
    public var want: Bool
    /// The least block that covers the advance already admitted plus one.
    public var need: Int64
    /// Give back units above this (applied only if `knownGranted` still matches the row).
    public var keepAtMost: Int64?
    public var knownGranted: Int64
    /// The lease ends: the row is deleted after its use is counted, its unused units return.
    public var close: Bool
    /// Seconds the lease lives from the database's `now()`.
    public var leaseSeconds: Double
}

/// The database's answer to a `LeaseRequest`.
public struct LeaseAnswer: Sendable, Equatable {
    /// Units this lease holds in total (used or not), in the database after the request.
    public var granted: Int64
    /// Units added by this request.
    public var grant: Int64
    /// Billable calls of the subscription's month reported by all gateways.
    public var used: Int64
    /// Unused units of other live leases.
    public var heldElsewhere: Int64
    /// Units nobody holds after this request.
    public var pool: Int64
    public var standing: QuotaStanding
}

/// The decision the database transaction applies, computed without I/O from the rows it locked.
public struct LeaseOutcome: Sendable, Equatable {
    /// To add to `quota_usage.used`.
    public var usageDelta: Int64
    /// The lease row to write (`nil`: delete it).
    public var row: LeaseRow?
    public var answer: LeaseAnswer
}

/// Lease accounting as the database sees it: applied inside one transaction that holds the
/// subscription's `quota_usage` row locked, so two gateways never both take the last units.
public enum LeaseLedger {
    /// - Parameters:
    ///   - usageUsed: `quota_usage.used` before the request.
    ///   - rows: every lease row of the subscription's month (the requester's, if it exists, among them).
    public static func decide(quota: Int64, usageUsed: Int64, rows: [LeaseRow], request: LeaseRequest, sizing: LeaseSizing) -> LeaseOutcome {
        let mine = rows.first { $0.id == request.leaseID }
        let others = rows.filter { $0.id != request.leaseID && $0.live }
        // Use only grows; a report older than the row (a late, abandoned request) adds nothing.
        let rowUsed = mine?.used ?? request.reported
        let used = max(rowUsed, request.used)
        let delta = max(0, QuotaMath.subtract(request.used, rowUsed))
        let total = QuotaMath.add(max(0, usageUsed), delta)
        var granted: Int64
        switch mine {
        // Calls admitted on credit that turned billable are in `total` now, so the pool below has
        // already paid for them: the lease holds at least what it used (granting on top of a lower
        // `granted` would lose those units for good — seen as a quota ending one call short).
        case .some(let row) where row.live: granted = max(row.granted, used)
        // An expired lease's unused units were already free for others: it keeps only what it used.
        case .some, .none: granted = used
        }
        if let keep = request.keepAtMost, mine?.live == true, request.knownGranted == granted {
            granted = min(granted, max(keep, used))
        }
        let held = others.reduce(Int64(0)) { QuotaMath.add($0, $1.outstanding) }
        let mineOutstanding = request.close ? 0 : max(0, QuotaMath.subtract(granted, used))
        let pool = max(0, QuotaMath.subtract(QuotaMath.subtract(QuotaMath.subtract(quota, total), held), mineOutstanding))
        let grant = request.want && !request.close ? sizing.block(pool: pool, holders: others.count + 1, need: max(1, request.need)) : 0
        granted = QuotaMath.add(granted, grant)
        let poolAfter = pool - grant
        let standing: QuotaStanding = poolAfter > 0 ? .open : held > 0 ? .heldElsewhere : .exhausted
        let row = request.close ? nil : LeaseRow(id: request.leaseID, granted: granted, used: used, live: true)
        return LeaseOutcome(
            usageDelta: delta, row: row,
            answer: LeaseAnswer(
                granted: request.close ? used : granted, grant: grant, used: total, heldElsewhere: held, pool: poolAfter, standing: standing))
    }
}

/// One gateway's lease on one subscription's month, as the gateway keeps it: a plain value the
/// `QuotaTracker` mutates under its lock (no I/O, no clock of its own — `now` is monotonic
/// nanoseconds handed in).
///
/// A call is admitted while `billed + reserved < granted`. When the lease is used up and the
/// database has not said the month is used up, up to `advance` more calls are admitted on credit
/// (covered by the next block, or — if none comes — the documented overshoot); `consumed <
/// granted + advance` always holds, so one lease can never overshoot by more than `advance`.
public struct QuotaLease: Sendable, Equatable {
    public let id: UUID
    public let tenantID: UUID
    public let subscriptionID: UUID
    public let period: String
    public var quota: Int64
    /// Units the database granted this lease (absolute; adopted from every answer).
    public internal(set) var granted: Int64 = 0
    /// Admitted calls whose outcome is not known yet.
    public internal(set) var reserved: Int64 = 0
    /// Settled billable calls.
    public internal(set) var billed: Int64 = 0
    /// `billed` as last written to the lease row.
    public internal(set) var reported: Int64 = 0
    /// Monotonic time until which `granted` may be used: the request's send time plus the lease
    /// duration minus a margin, so this gateway stops before the database could hand the units on.
    public internal(set) var validUntil: UInt64 = 0
    public internal(set) var standing: QuotaStanding = .unknown
    /// Other gateways' reported use at the last answer (for the `RateLimit` header only).
    var usedElsewhere: Int64 = 0
    var lastBlock: Int64 = 0
    var admittedSinceExchange: Int64 = 0
    var lastAdmit: UInt64
    var lastExchange: UInt64 = 0
    /// An exchange is due as soon as possible (the lease runs low, or a call was refused).
    var wanted = false
    /// The sequence number and start of the exchange in flight, if any.
    var inFlight: (sequence: UInt64, since: UInt64)?
    var failures = 0

    public init(id: UUID = UUID(), tenantID: UUID, subscriptionID: UUID, period: String, quota: Int64, now: UInt64) {
        self.id = id
        self.tenantID = tenantID
        self.subscriptionID = subscriptionID
        self.period = period
        self.quota = quota
        self.lastAdmit = now
    }

    public static func == (lhs: QuotaLease, rhs: QuotaLease) -> Bool {
        lhs.id == rhs.id && lhs.granted == rhs.granted && lhs.reserved == rhs.reserved && lhs.billed == rhs.billed && lhs.reported == rhs.reported
            && lhs.standing == rhs.standing && lhs.validUntil == rhs.validUntil
    }

    /// Calls admitted on this lease and not given back.
    public var consumed: Int64 { QuotaMath.add(billed, reserved) }
    /// Units left to admit against (negative: calls admitted on credit).
    public var available: Int64 { QuotaMath.subtract(granted, consumed) }
    /// Below this many units left, the next block is asked for.
    var lowWater: Int64 { max(1, lastBlock / 2) }

    public enum Admission: Equatable, Sendable {
        /// `remaining`: nil while the month's use is not known (see `remaining`).
        case allowed(remaining: Int64?)
        /// The lease is used up and the database said nothing is left (`exhausted`) or that the
        /// rest is held by other gateways (`heldElsewhere`), or the advance is used up.
        case refused(QuotaStanding)
    }

    /// Admits one call or says why not; `signal` says the background exchange should run now.
    public mutating func admit(now: UInt64, advance: Int64) -> (admission: Admission, signal: Bool) {
        lastAdmit = now
        if now >= validUntil && granted > consumed {
            // The lease may have expired in the database: its unused units are no longer ours.
            granted = consumed
        }
        let wasWanted = wanted
        if consumed < granted {
            reserved = QuotaMath.add(reserved, 1)
            admittedSinceExchange = QuotaMath.add(admittedSinceExchange, 1)
            if available <= lowWater && (standing == .open || standing == .unknown || now >= validUntil) { wanted = true }
            return (.allowed(remaining: remaining), wanted && !wasWanted && inFlight == nil)
        }
        switch standing {
        case .exhausted, .heldElsewhere:
            // Rechecked by the background service at its own pace, not on every refused call.
            wanted = true
            return (.refused(standing), false)
        case .open, .unknown:
            wanted = true
            guard consumed < QuotaMath.add(granted, max(0, advance)) else { return (.refused(.unknown), !wasWanted && inFlight == nil) }
            reserved = QuotaMath.add(reserved, 1)
            admittedSinceExchange = QuotaMath.add(admittedSinceExchange, 1)
            return (.allowed(remaining: remaining), !wasWanted && inFlight == nil)
        }
    }

    /// The month's remaining calls as far as this gateway knows (for the `RateLimit` header); nil
    /// before the database first answered this lease. A lease is new after an idle one was given
    /// back and knows nothing of the month's use then: it would say the whole quota is left.
    var remaining: Int64? {
        guard standing != .unknown else { return nil }
        return max(0, QuotaMath.subtract(QuotaMath.subtract(quota, usedElsewhere), consumed))
    }

    /// Settles one admitted call; a call that was not billable gives its unit back.
    public mutating func settle(billable: Bool) {
        guard reserved > 0 else { return }
        reserved -= 1
        if billable { billed = QuotaMath.add(billed, 1) }
    }

    /// The request to send now and marks it in flight. A request that gives units back gives them
    /// up locally at once: if its answer is lost, the database may have applied it.
    public mutating func request(sequence: UInt64, now: UInt64, holder: String, leaseSeconds: Double, advance: Int64, close: Bool = false) -> LeaseRequest {
        var keep: Int64?
        if !close && (standing == .heldElsewhere || standing == .exhausted) {
            // The pool is dry: keep what this gateway used since it last asked (and its advance),
            // give the rest back so a busier gateway can have it.
            let demand = QuotaMath.add(admittedSinceExchange, max(1, advance))
            if QuotaMath.subtract(available, demand) > 0 { keep = QuotaMath.add(consumed, demand) }
        }
        let knownGranted = granted
        if let keep {
            granted = min(granted, keep)
            // Units are on their way back to the pool: until the answer says otherwise, a call
            // this lease cannot take is "pending", never "exhausted".
            standing = .heldElsewhere
        }
        let want = !close && (wanted || available <= lowWater || now >= validUntil)
        wanted = false
        admittedSinceExchange = 0
        inFlight = (sequence, now)
        return LeaseRequest(
            leaseID: id, tenantID: tenantID, subscriptionID: subscriptionID, period: period, holder: holder, quota: quota, used: billed,
            reported: reported, want: want, need: QuotaMath.add(max(0, QuotaMath.subtract(consumed, granted)), 1), keepAtMost: keep,
            knownGranted: knownGranted, close: close, leaseSeconds: leaseSeconds)
    }

    /// Applies the answer to the request sent with `sequence` at `sentAt` (a stale answer is ignored).
    public mutating func apply(_ answer: LeaseAnswer, to request: LeaseRequest, sequence: UInt64, sentAt: UInt64, now: UInt64, validFor: UInt64) {
        guard inFlight?.sequence == sequence else { return }
        inFlight = nil
        failures = 0
        granted = answer.granted
        reported = max(reported, request.used)
        let (until, overflow) = sentAt.addingReportingOverflow(validFor)
        validUntil = overflow ? .max : until
        standing = answer.standing
        usedElsewhere = max(0, QuotaMath.subtract(answer.used, request.used))
        if answer.grant > 0 { lastBlock = answer.grant }
        lastExchange = now
        if available <= lowWater && standing == .open { wanted = true }
    }

    /// The request sent with `sequence` failed or was abandoned: try again later.
    public mutating func failed(sequence: UInt64, now: UInt64) {
        guard inFlight?.sequence == sequence else { return }
        inFlight = nil
        failures += 1
        lastExchange = now
        wanted = true
    }
}
