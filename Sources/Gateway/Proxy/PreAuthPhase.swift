import NIOHTTP1

/// What the pre-authentication phase decided.
enum PreAuthOutcome {
    /// The `RateLimit-Policy` and `RateLimit` items of the client limits that let the call pass,
    /// joined in chain order; nil when none applied.
    struct Limits {
        var policy: String
        var state: String
    }

    case pass(Limits?)
    case refuse(LocalResponse)
}

extension RequestGate {
    /// Runs a route's pre-authentication policies in order; the first refusal ends the call.
    static func runPreAuth(_ policies: [PreAuthPolicy], head: HTTPRequestHead, clientAddress: [UInt8]?, monotonicNanos: UInt64) -> PreAuthOutcome {
        var limits: PreAuthOutcome.Limits?
        for policy in policies {
            switch policy {
            case .clientRateLimit(let limit):
                let outcome = limit.limiter.take(limit.key(head: head, clientAddress: clientAddress), now: monotonicNanos)
                switch outcome.decision {
                case .allowed(let remaining):
                    let state = "\"client\";r=\(remaining);t=\(outcome.resetSeconds)"
                    if var known = limits {
                        known.policy += ", " + limit.policyItem
                        known.state += ", " + state
                        limits = known
                    } else {
                        limits = .init(policy: limit.policyItem, state: state)
                    }
                case .refused(let retry):
                    let config = limit.config
                    return .refuse(
                        .problem(
                            .tooManyRequests, "Too many requests from this client",
                            "This API accepts \(config.requests) requests per \(config.perSeconds) s from one client (burst \(config.burst)); retry after \(retry) s.",
                            rejection: .clientRateLimited,
                            headers: [("Retry-After", String(retry)), ("RateLimit-Policy", limit.policyItem), ("RateLimit", "\"client\";r=0;t=\(retry)")]))
                }
            }
        }
        return .pass(limits)
    }
}
