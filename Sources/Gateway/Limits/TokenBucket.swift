/// A token bucket: `capacity` (the burst) tokens, refilled at `ratePerSecond`. Pure value; time
/// comes in as monotonic nanoseconds so tests drive it.
public struct TokenBucket: Sendable, Equatable {
    public let capacity: Double
    public let ratePerSecond: Double
    public private(set) var tokens: Double
    public private(set) var updatedAt: UInt64

    public init(ratePerSecond: Int, burst: Int, now: UInt64) {
        capacity = Double(max(1, burst))
        self.ratePerSecond = Double(max(1, ratePerSecond))
        tokens = capacity
        updatedAt = now
    }

    /// A bucket refilled at a fractional rate (`requests` per `seconds`, e.g. 100 per minute).
    public init(rate: Double, burst: Int, now: UInt64) {
        capacity = Double(max(1, burst))
        ratePerSecond = rate > 0 && rate.isFinite ? rate : 1
        tokens = capacity
        updatedAt = now
    }

    public enum Decision: Equatable, Sendable {
        /// Allowed; `remaining` whole tokens are left.
        case allowed(remaining: Int)
        /// Refused; a token will be available after `retryAfterSeconds` (rounded up, at least 1).
        case refused(retryAfterSeconds: Int)
    }

    public mutating func take(now: UInt64) -> Decision {
        refill(now: now)
        if tokens >= 1 {
            tokens -= 1
            return .allowed(remaining: Int(tokens))
        }
        let wait = (1 - tokens) / ratePerSecond
        return .refused(retryAfterSeconds: max(1, Self.wholeSeconds(wait)))
    }

    /// Seconds until the bucket is full again (the `t` of the `RateLimit` header).
    public func secondsUntilFull() -> Int {
        Self.wholeSeconds((capacity - tokens) / ratePerSecond)
    }

    /// Seconds rounded up, forgiving the last bits of a division (1 / (1/60) is 60.000000000000007,
    /// which must say 60, not 61), and bounded (a day-long window at a tiny rate stays an Int).
    static func wholeSeconds(_ seconds: Double) -> Int {
        guard seconds.isFinite, seconds > 0 else { return 0 }
        return Int(min((seconds - 1e-6).rounded(.up), 1e9))
    }

    private mutating func refill(now: UInt64) {
        guard now > updatedAt else { return }
        let elapsed = Double(now - updatedAt) / 1_000_000_000
        tokens = min(capacity, tokens + elapsed * ratePerSecond)
        updatedAt = now
    }
}
