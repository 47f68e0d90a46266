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
        return .refused(retryAfterSeconds: max(1, Int(wait.rounded(.up))))
    }

    /// Seconds until the bucket is full again (the `t` of the `RateLimit` header).
    public func secondsUntilFull() -> Int {
        Int(((capacity - tokens) / ratePerSecond).rounded(.up))
    }

    private mutating func refill(now: UInt64) {
        guard now > updatedAt else { return }
        let elapsed = Double(now - updatedAt) / 1_000_000_000
        tokens = min(capacity, tokens + elapsed * ratePerSecond)
        updatedAt = now
    }
}
