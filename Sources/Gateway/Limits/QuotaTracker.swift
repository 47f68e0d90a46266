import Billing
import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import ServiceLifecycle

/// Monthly quotas across gateway processes, handed out in leases.
///
/// A gateway reserves blocks of a subscription's month in Postgres (`quota_leases`, one row per
/// lease, granted under a lock on the month's `quota_usage` row, so two gateways never both get
/// the last units) and admits calls against its lease in memory: `admit` is a locked dictionary
/// lookup and never waits for I/O. `QuotaSyncService` asks for the next block before the lease
/// runs out, reports billable calls, renews the lease and gives unused units back (idle, dry
/// month, shutdown, new month). Rejections and upstream failures never consume quota: a unit is
/// reserved per admitted call and given back when the call turns out not billable
/// (`UsageEvent.isBillable`).
///
/// When the lease is used up before the next block arrives, at most `advance` calls per lease are
/// admitted on credit; past that the call is refused with 429 and `Retry-After: 1` (`.pending`).
/// "Quota exhausted" is said only when the database answered that nothing is left and no other
/// lease holds unused units. Bound: admitted ≤ quota + P × advance for P gateway processes, plus
/// — only if a gateway dies or loses Postgres — the calls it admitted since its last report
/// (docs/ARCHITECTURE.md, "Quotas across gateways").
public final class QuotaTracker: Sendable {
    /// Tunables of leased quotas; the defaults are the documented ones.
    public struct Configuration: Sendable {
        /// A lease lives this long after its last renewal; a crashed gateway's unused units come
        /// back after it. A gateway stops using its lease 10 % earlier (its own clock).
        public var leaseDuration: Duration = .seconds(30)
        /// Calls admitted on credit when the lease is used up and the next block has not arrived.
        public var advance: Int64 = 2
        public var sizing = LeaseSizing()
        /// A lease with no admitted call for this long gives its units back.
        public var idleReturn: Duration = .seconds(5)
        /// A lease holding unused units talks to the database at least this often (reports,
        /// learns whether the month ran dry, gives back what it does not need then).
        public var refreshInterval: Duration = .seconds(1)
        /// An exchange still running after this is abandoned and asked again.
        public var exchangeTimeout: Duration = .seconds(5)
        public var maximumExchangesInFlight = 8

        public init() {}
    }

    public enum Mode: Sendable {
        /// Blocks leased from Postgres (needs `QuotaSyncService`): what `tollgate` runs.
        case leased(Configuration)
        /// This process is the only gateway and keeps exact counts in memory (tests, no database).
        case local
    }

    struct Book {
        var current: [UUID: QuotaLease] = [:]
        /// Leases of a past month or idle ones, being closed (by subscription).
        var retiring: [UUID: [QuotaLease]] = [:]
        var sequence: UInt64 = 0
        /// Exchange tasks not finished yet, abandoned ones included.
        var running = 0
    }

    let mode: Mode
    let configuration: Configuration
    let holder: String
    private let book = NIOLockedValueBox(Book())
    private let wakeup = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))

    /// - Parameter holder: names this process in `quota_leases.holder` (diagnostics only).
    public init(mode: Mode = .leased(Configuration()), holder: String = "\(ProcessInfo.processInfo.hostName) pid \(ProcessInfo.processInfo.processIdentifier)") {
        self.mode = mode
        if case .leased(let configuration) = mode { self.configuration = configuration } else { self.configuration = Configuration() }
        self.holder = String(holder.prefix(300))
    }

    /// The calendar month (UTC) a call counts in, as `YYYY-MM`.
    public static func period(of date: Date) -> String { UTCMonth(containing: date).text }

    public enum Decision: Equatable, Sendable {
        /// `remaining`: the month's calls left as far as this gateway knows; nil before the
        /// database first answered its lease (the `RateLimit` header then leaves the quota out).
        case allowed(remaining: Int64?)
        /// The database said the month's quota is used up.
        case exhausted
        /// This gateway holds no unit right now, but the month is not known to be used up (the
        /// next block is on its way, or other gateways hold the rest): retry after this.
        case pending(retryAfterSeconds: Int)
    }

    /// Reserves one call against `quota` for the current period (no I/O).
    public func admit(subscription: UUID, tenant: UUID, quota: Int64, period: String, now: UInt64 = DispatchTime.now().uptimeNanoseconds) -> Decision {
        let local: Bool
        if case .local = mode { local = true } else { local = false }
        let advance = configuration.advance
        let (admission, signal) = book.withLockedValue { book -> (QuotaLease.Admission, Bool) in
            var lease = book.current[subscription] ?? QuotaLease(tenantID: tenant, subscriptionID: subscription, period: period, quota: quota, now: now)
            if lease.period != period {
                // A new month: the old lease closes in the background (its calls in flight still settle on it).
                book.retiring[subscription, default: []].append(lease)
                lease = QuotaLease(tenantID: tenant, subscriptionID: subscription, period: period, quota: quota, now: now)
            }
            if lease.quota != quota {
                // The plan changed: what the database said about the old quota no longer holds.
                lease.quota = quota
                if lease.standing != .open { lease.standing = .unknown }
            }
            if local {
                lease.granted = quota
                lease.validUntil = .max
                lease.standing = .exhausted
            }
            let result = lease.admit(now: now, advance: advance)
            book.current[subscription] = lease
            return result
        }
        if signal && !local { wakeup.continuation.yield() }
        switch admission {
        case .allowed(let remaining): return .allowed(remaining: remaining)
        case .refused(.exhausted): return .exhausted
        case .refused: return .pending(retryAfterSeconds: 1)
        }
    }

    /// Settles a reservation once the call's outcome is known.
    public func settle(subscription: UUID, billable: Bool) {
        book.withLockedValue { book in
            // A call admitted before the month turned settles on the old lease (the oldest first).
            if var old = book.retiring[subscription], let index = old.firstIndex(where: { $0.reserved > 0 }) {
                old[index].settle(billable: billable)
                book.retiring[subscription] = old
                return
            }
            book.current[subscription]?.settle(billable: billable)
        }
    }

    /// The lease this process holds for a subscription (tests and diagnostics).
    public func lease(subscription: UUID) -> QuotaLease? { book.withLockedValue { $0.current[subscription] } }

    // MARK: Background exchanges (QuotaSyncService)

    struct Due: Sendable {
        var request: LeaseRequest
        var sequence: UInt64
        var sentAt: UInt64
    }

    var wakeups: AsyncStream<Void> { wakeup.stream }
    func wake() { wakeup.continuation.yield() }

    private static func nanos(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0 else { return 0 }
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? .max : whole &+ UInt64(max(0, attoseconds) / 1_000_000_000)
    }

    private var leaseSeconds: Double {
        let (seconds, attoseconds) = configuration.leaseDuration.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    /// The exchanges due now (each marked in flight). `tick` is the service's interval: reports
    /// and rechecks of a dry month run at most once per tick; asking for more runs at once.
    func dueExchanges(now: UInt64, tick: Duration, shuttingDown: Bool = false) -> [Due] {
        let tickNanos = Self.nanos(tick)
        let refresh = Self.nanos(configuration.refreshInterval)
        let timeout = Self.nanos(configuration.exchangeTimeout)
        let idle = Self.nanos(configuration.idleReturn)
        let renewAhead = Self.nanos(configuration.leaseDuration) / 3
        let seconds = leaseSeconds
        let advance = configuration.advance
        let limit = configuration.maximumExchangesInFlight
        return book.withLockedValue { book -> [Due] in
            var due: [Due] = []
            var inFlight = 0
            func since(_ time: UInt64) -> UInt64 { now >= time ? now - time : 0 }
            func expireStuck(_ lease: inout QuotaLease) {
                if let flight = lease.inFlight, since(flight.since) >= timeout { lease.failed(sequence: flight.sequence, now: now) }
            }
            func backingOff(_ lease: QuotaLease) -> Bool {
                guard lease.failures > 0 else { return false }
                let shift = UInt64(min(lease.failures, 5))
                return since(lease.lastExchange) < min(tickNanos << shift, 5_000_000_000)
            }
            // Count what is in flight first, so the cap holds across both tables.
            for (key, var lease) in book.current {
                expireStuck(&lease)
                book.current[key] = lease
                if lease.inFlight != nil { inFlight += 1 }
            }
            for (key, var leases) in book.retiring {
                for index in leases.indices {
                    expireStuck(&leases[index])
                    if leases[index].inFlight != nil { inFlight += 1 }
                }
                book.retiring[key] = leases
            }
            if shuttingDown {
                for (key, lease) in book.current { book.retiring[key, default: []].append(lease) }
                book.current = [:]
            }
            for (key, lease) in book.current where lease.inFlight == nil && !backingOff(lease) {
                guard inFlight < limit, book.running < limit * 8 else { break }
                let sinceExchange = since(lease.lastExchange)
                if since(lease.lastAdmit) >= idle && lease.reserved == 0 {
                    // Idle: close it and give its units back; the next call starts a new lease.
                    book.current[key] = nil
                    book.retiring[key, default: []].append(lease)
                    continue
                }
                let dry = lease.standing == .exhausted || lease.standing == .heldElsewhere
                let isDue =
                    (lease.wanted && (!dry || sinceExchange >= tickNanos))
                    || (lease.billed > lease.reported && sinceExchange >= tickNanos)
                    || (lease.available > 0 && sinceExchange >= refresh)
                    || (lease.validUntil > 0 && (lease.reserved > 0 || lease.available > 0) && now &+ renewAhead >= lease.validUntil)
                guard isDue else { continue }
                var next = lease
                book.sequence &+= 1
                let request = next.request(sequence: book.sequence, now: now, holder: holder, leaseSeconds: seconds, advance: advance)
                book.current[key] = next
                due.append(Due(request: request, sequence: book.sequence, sentAt: now))
                inFlight += 1
                book.running += 1
            }
            for (key, var leases) in book.retiring {
                for index in leases.indices where leases[index].inFlight == nil && !backingOff(leases[index]) {
                    guard inFlight < limit, book.running < limit * 8 else { break }
                    let closing = leases[index].reserved == 0
                    guard closing || leases[index].billed > leases[index].reported || leases[index].available > 0 else { continue }
                    book.sequence &+= 1
                    leases[index].wanted = false
                    var request = leases[index].request(
                        sequence: book.sequence, now: now, holder: holder, leaseSeconds: seconds, advance: advance, close: closing)
                    if !closing {
                        // Still has calls in flight: report and give back everything not reserved.
                        request.want = false
                        request.keepAtMost = leases[index].consumed
                        leases[index].granted = min(leases[index].granted, leases[index].consumed)
                    }
                    due.append(Due(request: request, sequence: book.sequence, sentAt: now))
                    inFlight += 1
                    book.running += 1
                }
                // A lease that keeps failing to close is dropped: its units come back when it expires.
                leases.removeAll { $0.failures >= 5 && $0.inFlight == nil }
                book.retiring[key] = leases.isEmpty ? nil : leases
            }
            return due
        }
    }

    /// Records the result of an exchange (answer or error).
    func complete(_ due: Due, with result: Result<LeaseAnswer, any Error>, now: UInt64) {
        let validFor = Self.nanos(configuration.leaseDuration) / 10 * 9
        book.withLockedValue { book in
            book.running = max(0, book.running - 1)
            let subscription = due.request.subscriptionID
            if var lease = book.current[subscription], lease.id == due.request.leaseID {
                switch result {
                case .success(let answer): lease.apply(answer, to: due.request, sequence: due.sequence, sentAt: due.sentAt, now: now, validFor: validFor)
                case .failure: lease.failed(sequence: due.sequence, now: now)
                }
                book.current[subscription] = lease
            } else if var leases = book.retiring[subscription], let index = leases.firstIndex(where: { $0.id == due.request.leaseID }) {
                switch result {
                case .success(let answer):
                    guard leases[index].inFlight?.sequence == due.sequence else { return }
                    if due.request.close {
                        leases.remove(at: index)
                    } else {
                        leases[index].apply(answer, to: due.request, sequence: due.sequence, sentAt: due.sentAt, now: now, validFor: validFor)
                    }
                case .failure: leases[index].failed(sequence: due.sequence, now: now)
                }
                book.retiring[subscription] = leases.isEmpty ? nil : leases
            }
        }
    }

    /// Whether leases of a past month, idle ones or all (at shutdown) are still being closed.
    var hasRetiring: Bool { book.withLockedValue { !$0.retiring.isEmpty } }
    var hasExchangesInFlight: Bool {
        book.withLockedValue { book in
            book.current.values.contains { $0.inFlight != nil } || book.retiring.values.contains { $0.contains { $0.inFlight != nil } }
        }
    }
}

/// Runs the lease exchanges of a `QuotaTracker`: asks for blocks when a lease runs low (at once),
/// reports and renews every `interval`, and at shutdown gives every lease back (bounded: 5 s).
/// Does nothing for a `.local` tracker.
public struct QuotaSyncService: Service {
    let tracker: QuotaTracker
    let client: PostgresClient
    let interval: Duration
    let logger: Logger

    public init(tracker: QuotaTracker, client: PostgresClient, interval: Duration = .milliseconds(250), logger: Logger) {
        self.tracker = tracker
        self.client = client
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        guard case .leased(let configuration) = tracker.mode else {
            try? await gracefulShutdown()
            return
        }
        let store = QuotaLeaseStore(client: client, sizing: configuration.sizing, logger: logger)
        let interval = self.interval
        let tracker = self.tracker
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                tracker.wake()
            }
        }
        await cancelWhenGracefulShutdown {
            for await _ in tracker.wakeups {
                if Task.isCancelled { break }
                spawn(tracker.dueExchanges(now: DispatchTime.now().uptimeNanoseconds, tick: interval), store: store)
            }
        }
        // Shutdown (the listener has drained before this service stops, see Launcher's order):
        // let running exchanges land, then close every lease so its unused units return now
        // rather than at expiry. Bounded, so a dead database cannot hold the exit.
        let deadline = ContinuousClock.now + .seconds(5)
        while tracker.hasExchangesInFlight && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        var first = true
        while (first || tracker.hasRetiring) && ContinuousClock.now < deadline {
            spawn(tracker.dueExchanges(now: DispatchTime.now().uptimeNanoseconds, tick: interval, shuttingDown: first), store: store)
            first = false
            try? await Task.sleep(for: .milliseconds(10))
        }
        ticker.cancel()
        if tracker.hasRetiring { logger.warning("quota leases not all returned at shutdown; they come back when they expire") }
    }

    /// Each exchange in a task of its own, so a stuck one never holds the others (the tracker
    /// abandons it after `exchangeTimeout` and asks again; absolute counts make that safe).
    private func spawn(_ due: [QuotaTracker.Due], store: QuotaLeaseStore) {
        for item in due {
            Task {
                let result: Result<LeaseAnswer, any Error>
                do { result = .success(try await store.exchange(item.request)) } catch {
                    logger.warning("quota lease exchange failed; retried", metadata: ["error": "\(String(reflecting: error))"])
                    result = .failure(error)
                }
                tracker.complete(item, with: result, now: DispatchTime.now().uptimeNanoseconds)
                tracker.wake()
            }
        }
    }
}
