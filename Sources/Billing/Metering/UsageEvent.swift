import Foundation
import NIOConcurrencyHelpers

/// One call seen by the gateway, as the meter records it. The id is a UUIDv7 made at the gateway,
/// so events sort by time and storing them is idempotent on the id.
public struct UsageEvent: Sendable, Equatable {
    public enum Rejection: String, Sendable, CaseIterable {
        case unauthenticated, forbidden, rateLimited = "rate_limited", quotaExceeded = "quota_exceeded", ipDenied = "ip_denied"
        case methodNotAllowed = "method_not_allowed", tooLarge = "too_large", retired, upstreamUnavailable = "upstream_unavailable"
        /// Refused by a provider's limit per client before authentication (no app known yet). Last in
        /// the list: the spool stores a reason by its position.
        case clientRateLimited = "client_rate_limited"
        /// Refused by the API's `request_validation` policy: the call does not match the API's
        /// OpenAPI document (404, 405, 415 or 400 before the upstream saw anything). After
        /// `clientRateLimited`: positions are stored.
        case invalidRequest = "invalid_request"
    }

    public var id: UUID
    public var at: Date
    public var tenantID: UUID
    public var apiID: UUID?
    public var appID: UUID?
    public var subscriptionID: UUID?
    public var planID: UUID?
    public var method: String
    public var status: Int
    public var latencyMicroseconds: Int64
    public var bytesIn: Int64
    public var bytesOut: Int64
    public var rejection: Rejection?
    /// Whether the call reached the upstream (rejections and failures before it did not).
    public var forwarded: Bool
    /// Set when the gateway answered from its response cache instead of the upstream.
    public var cache: CacheUse? = nil
    /// The event's number in its meter's count for its tenant and UTC month (1, 2, 3, …), given by
    /// `UsageMeter.record`; reconciliation finds lost events as gaps. 0: not numbered.
    public var sequence: Int64 = 0

    public init(
        id: UUID = UUIDv7.make(), at: Date = Date(), tenantID: UUID, apiID: UUID?, appID: UUID?, subscriptionID: UUID?, planID: UUID?, method: String,
        status: Int, latencyMicroseconds: Int64, bytesIn: Int64, bytesOut: Int64, rejection: Rejection?, forwarded: Bool
    ) {
        self.id = id
        self.at = at
        self.tenantID = tenantID
        self.apiID = apiID
        self.appID = appID
        self.subscriptionID = subscriptionID
        self.planID = planID
        self.method = method
        self.status = status
        self.latencyMicroseconds = latencyMicroseconds
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.rejection = rejection
        self.forwarded = forwarded
    }

    /// How the gateway's response cache answered a call. A hit passed auth, subscription and
    /// limits like any call and counts as answered (`forwarded`); whether it is billable is its
    /// plan's choice, decided when the call ends and kept with the event (as `billable` is), so a
    /// later change of the plan does not rewrite past usage.
    public enum CacheUse: String, Sendable, CaseIterable {
        /// Answered from the cache; the plan bills hits (the default).
        case hit
        /// Answered from the cache; the plan does not bill hits.
        case unbilledHit = "unbilled_hit"
    }

    /// The one definition of a billable call, used by quotas, rollups and invoices alike: the
    /// gateway forwarded it to the upstream (or answered it from its cache) and the answer was not
    /// a server error (status < 500), unless it was a cache hit its plan does not bill. Rejections
    /// by the gateway and upstream failures are never billed.
    public static func isBillable(forwarded: Bool, status: Int, cache: CacheUse? = nil) -> Bool {
        forwarded && status < 500 && cache != .unbilledHit
    }

    public var isBillable: Bool { Self.isBillable(forwarded: forwarded, status: status, cache: cache) }
}

/// Where the gateway hands usage events. `record` is called on event loops and must not block.
public protocol UsageSink: Sendable {
    func record(_ event: UsageEvent)
    /// A JSON object describing the sink's state for `/readyz`, or nil.
    var readinessJSON: String? { get }
}

extension UsageSink {
    public var readinessJSON: String? { nil }
}

/// Keeps counts in memory (until the durable meter of the metering work replaces it) and the last
/// events, in a ring, for inspection in tests.
public final class InMemoryUsageSink: UsageSink {
    private struct State {
        var count = 0
        var billable = 0
        var ring: [UsageEvent] = []
        var next = 0
    }

    private let state = NIOLockedValueBox(State())
    private let keep: Int

    public init(keep: Int = 1000) { self.keep = max(1, keep) }

    public func record(_ event: UsageEvent) {
        state.withLockedValue { state in
            state.count += 1
            if event.isBillable { state.billable += 1 }
            if state.ring.count < keep {
                state.ring.append(event)
            } else {
                state.ring[state.next] = event
            }
            state.next = (state.next + 1) % keep
        }
    }

    public var count: Int { state.withLockedValue { $0.count } }
    public var billableCount: Int { state.withLockedValue { $0.billable } }

    /// The kept events, oldest first.
    public var recent: [UsageEvent] {
        state.withLockedValue { state in
            state.ring.count < keep ? state.ring : Array(state.ring[state.next...] + state.ring[..<state.next])
        }
    }
}

/// RFC 9562 version 7 UUIDs: 48-bit Unix milliseconds, 12 bits of sub-millisecond time (the RFC's
/// "increased clock precision" option, so ids from one process sort by time), 62 random bits.
public enum UUIDv7 {
    public static func make(milliseconds: UInt64? = nil) -> UUID {
        var generator = SystemRandomNumberGenerator()
        return make(milliseconds: milliseconds, using: &generator)
    }

    /// With the random bits from `generator` (the gateway passes a buffered one: a `getrandom`
    /// call per id showed in its profile).
    public static func make<Generator: RandomNumberGenerator>(milliseconds: UInt64? = nil, using generator: inout Generator) -> UUID {
        let now = Date().timeIntervalSince1970 * 1000
        let fraction = milliseconds == nil ? UInt64((now - now.rounded(.down)) * 4096) & 0x0fff : 0
        let milliseconds = milliseconds ?? UInt64(now)
        let random = generator.next() as UInt64
        let high = (milliseconds << 16) | 0x7000 | fraction
        let low = (random & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000  // variant 10, 62 random bits
        return UUID(
            uuid: (
                UInt8(truncatingIfNeeded: high >> 56), UInt8(truncatingIfNeeded: high >> 48), UInt8(truncatingIfNeeded: high >> 40),
                UInt8(truncatingIfNeeded: high >> 32), UInt8(truncatingIfNeeded: high >> 24), UInt8(truncatingIfNeeded: high >> 16),
                UInt8(truncatingIfNeeded: high >> 8), UInt8(truncatingIfNeeded: high), UInt8(truncatingIfNeeded: low >> 56),
                UInt8(truncatingIfNeeded: low >> 48), UInt8(truncatingIfNeeded: low >> 40), UInt8(truncatingIfNeeded: low >> 32),
                UInt8(truncatingIfNeeded: low >> 24), UInt8(truncatingIfNeeded: low >> 16), UInt8(truncatingIfNeeded: low >> 8), UInt8(truncatingIfNeeded: low)
            ))
    }
}
