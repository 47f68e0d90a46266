import CoreMetrics
import NIOConcurrencyHelpers

/// One API's client buckets (`ClientBucketTable`) for this process, shared by every event loop,
/// split into stripes each behind its own lock, like `RateLimiter`. The cap is split evenly over
/// the stripes, so the whole limiter never remembers more than `config.maxClients` clients.
public final class ClientRateLimiter: Sendable {
    public let config: ClientRateLimitConfig
    private let stripes: [NIOLockedValueBox<ClientBucketTable>]
    private let evictions: Counter

    public init(config: ClientRateLimitConfig, stripes: Int = 8, evictions: Counter? = nil) {
        self.config = config
        let count = max(1, min(stripes, config.maxClients))
        let perStripe = max(1, config.maxClients / count)
        self.stripes = (0..<count).map { _ in
            NIOLockedValueBox(ClientBucketTable(capacity: perStripe, rate: config.ratePerSecond, burst: config.burst))
        }
        self.evictions = evictions ?? Counter(label: "tollgate_gateway_client_limit_evictions_total")
    }

    public func take(_ key: ClientKey, now: UInt64) -> ClientBucketTable.Outcome {
        let stripe = stripes[Int(UInt(bitPattern: key.hashValue) % UInt(stripes.count))]
        let outcome = stripe.withLockedValue { $0.take(key, now: now) }
        if outcome.evicted { evictions.increment() }
        return outcome
    }

    /// Clients remembered now (locks each stripe in turn; for metrics, off the hot path).
    public var count: Int { stripes.reduce(0) { total, stripe in total + stripe.withLockedValue { $0.count } } }

    /// The most clients it will remember.
    public var capacity: Int { stripes.reduce(0) { total, stripe in total + stripe.withLockedValue { $0.capacity } } }
}
