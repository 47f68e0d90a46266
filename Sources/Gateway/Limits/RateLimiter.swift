import NIOConcurrencyHelpers
import Foundation

/// One token bucket per subscription for this process, shared by every event loop. The table is
/// split into stripes, each behind its own lock, so two loops rarely wait for each other and each
/// critical section is a dictionary lookup and a few arithmetic operations.
public final class RateLimiter: Sendable {
    private struct Entry {
        var bucket: TokenBucket
        var rate: Int
        var burst: Int
    }

    private let stripes: [NIOLockedValueBox<[UUID: Entry]>]
    /// The plans' minute, hour and day windows, per subscription.
    public let windows: WindowLimiter

    /// - Parameter windowTrackers: a leased `QuotaTracker` per window span to hold the plans'
    ///   windows across gateways (each needs its `QuotaSyncService`); none: each process counts alone.
    public init(stripes: Int = 64, windowTrackers: [PlanWindow.Span: QuotaTracker] = [:]) {
        self.stripes = (0..<max(1, stripes)).map { _ in NIOLockedValueBox([:]) }
        windows = WindowLimiter(trackers: windowTrackers)
    }

    /// Takes a token for the subscription; a plan change (new rate or burst) starts a fresh bucket.
    public func take(subscription: UUID, ratePerSecond: Int, burst: Int, now: UInt64) -> (TokenBucket.Decision, resetSeconds: Int) {
        let stripe = stripes[Int(UInt(bitPattern: subscription.hashValue) % UInt(stripes.count))]
        return stripe.withLockedValue { table in
            var entry = table[subscription] ?? Entry(bucket: TokenBucket(ratePerSecond: ratePerSecond, burst: burst, now: now), rate: ratePerSecond, burst: burst)
            if entry.rate != ratePerSecond || entry.burst != burst {
                entry = Entry(bucket: TokenBucket(ratePerSecond: ratePerSecond, burst: burst, now: now), rate: ratePerSecond, burst: burst)
            }
            let decision = entry.bucket.take(now: now)
            table[subscription] = entry
            return (decision, entry.bucket.secondsUntilFull())
        }
    }
}
