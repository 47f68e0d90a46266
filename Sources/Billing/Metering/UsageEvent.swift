import Foundation
import NIOConcurrencyHelpers

/// One call seen by the gateway, as the meter records it. The id is a UUIDv7 made at the gateway,
/// so events sort by time and storing them is idempotent on the id.
public struct UsageEvent: Sendable, Equatable {
    public enum Rejection: String, Sendable, CaseIterable {
        case unauthenticated, forbidden, rateLimited = "rate_limited", quotaExceeded = "quota_exceeded", ipDenied = "ip_denied"
        case methodNotAllowed = "method_not_allowed", tooLarge = "too_large", retired, upstreamUnavailable = "upstream_unavailable"
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

    /// The one definition of a billable call, used by quotas, rollups and invoices alike: the
    /// gateway forwarded it to the upstream and the answer was not a server error (status < 500).
    /// Rejections by the gateway and upstream failures are never billed.
    public static func isBillable(forwarded: Bool, status: Int) -> Bool {
        forwarded && status < 500
    }

    public var isBillable: Bool { Self.isBillable(forwarded: forwarded, status: status) }
}

/// Where the gateway hands usage events. `record` is called on event loops and must not block.
public protocol UsageSink: Sendable {
    func record(_ event: UsageEvent)
}

/// Keeps counts in memory (until the durable meter of the metering work replaces it) and the last
/// events for inspection in tests.
public final class InMemoryUsageSink: UsageSink {
    private struct State {
        var count = 0
        var billable = 0
        var recent: [UsageEvent] = []
    }

    private let state = NIOLockedValueBox(State())
    private let keep: Int

    public init(keep: Int = 1000) { self.keep = keep }

    public func record(_ event: UsageEvent) {
        state.withLockedValue { state in
            state.count += 1
            if event.isBillable { state.billable += 1 }
            if state.recent.count >= keep { state.recent.removeFirst(state.recent.count - keep + 1) }
            state.recent.append(event)
        }
    }

    public var count: Int { state.withLockedValue { $0.count } }
    public var billableCount: Int { state.withLockedValue { $0.billable } }
    public var recent: [UsageEvent] { state.withLockedValue { $0.recent } }
}

/// RFC 9562 version 7 UUIDs: 48-bit Unix milliseconds, then random bits.
public enum UUIDv7 {
    public static func make(milliseconds: UInt64 = UInt64(Date().timeIntervalSince1970 * 1000)) -> UUID {
        var bytes = [UInt8](repeating: 0, count: 16)
        var generator = SystemRandomNumberGenerator()
        let random = generator.next() as UInt64
        let random2 = generator.next() as UInt64
        for i in 0..<6 { bytes[i] = UInt8(truncatingIfNeeded: milliseconds >> (40 - 8 * UInt64(i))) }
        for i in 6..<16 { bytes[i] = UInt8(truncatingIfNeeded: (i < 14 ? random : random2) >> (8 * UInt64(i % 8))) }
        bytes[6] = (bytes[6] & 0x0f) | 0x70
        bytes[8] = (bytes[8] & 0x3f) | 0x80
        return UUID(uuid: (bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7], bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]))
    }
}
