import Foundation

/// When a failed delivery is tried again: exponential backoff from `base`, capped at `cap`, with
/// up to ±`jitter` spread so endpoints that failed together do not retry together; after
/// `maximumAttempts` the delivery is marked failed (a person can still redeliver it).
struct WebhookRetryPolicy: Sendable, Equatable {
    var base: Double = 15
    var cap: Double = 3600
    var maximumAttempts = 10
    var jitter: Double = 0.2

    enum Decision: Equatable {
        case retry(afterSeconds: Double)
        case giveUp
    }

    /// `attempts` counts the attempts made so far, including the one that just failed;
    /// `random` is in 0...1 (injected so the rule is testable).
    func decide(afterFailedAttempts attempts: Int, random: Double) -> Decision {
        guard attempts < maximumAttempts else { return .giveUp }
        let exponent = Double(max(0, attempts - 1))
        let delay = min(cap, base * pow(2, exponent))
        let spread = delay * jitter * (min(max(random, 0), 1) * 2 - 1)
        return .retry(afterSeconds: max(1, delay + spread))
    }
}
