import Foundation
import NIOConcurrencyHelpers

/// A plan's limit over a calendar window of UTC time: a minute, an hour or a day (a window starts
/// at a whole minute, hour or midnight UTC, so every gateway and the plan's page agree on it).
public struct PlanWindow: Sendable, Hashable {
    public enum Span: Int, Sendable, CaseIterable {
        case minute = 60
        case hour = 3600
        case day = 86_400

        /// The item's name in `RateLimit-Policy` and `RateLimit`.
        public var name: String {
            switch self {
            case .minute: "minute"
            case .hour: "hour"
            case .day: "day"
            }
        }
    }

    public let span: Span
    public let limit: Int64

    public init(span: Span, limit: Int64) {
        self.span = span
        self.limit = max(1, limit)
    }

    /// The plan's windows in span order, from its optional limits.
    public static func list(perMinute: Int64?, perHour: Int64?, perDay: Int64?) -> [PlanWindow] {
        [(Span.minute, perMinute), (.hour, perHour), (.day, perDay)].compactMap { span, limit in limit.map { PlanWindow(span: span, limit: $0) } }
    }
}

/// Calls admitted in each of a subscription's current windows. Pure value; time comes in as
/// whole UTC seconds. A call is admitted only when every window has room, and then counts in all
/// of them; `giveBack` undoes it (a call refused later by the quota).
public struct WindowCounts: Sendable, Equatable {
    public let windows: [PlanWindow]
    /// The window each count belongs to (seconds since 1970 / span), per window.
    public private(set) var periods: [Int64]
    public private(set) var counts: [Int64]

    public init(windows: [PlanWindow]) {
        self.windows = windows
        periods = Array(repeating: Int64.min, count: windows.count)
        counts = Array(repeating: 0, count: windows.count)
    }

    public enum Decision: Equatable, Sendable {
        /// Admitted: the `RateLimit` items of every window (`, "minute";r=…;t=…`), joined.
        case allowed(items: String)
        /// Refused by `window`; its next window starts in `retryAfter` seconds.
        case refused(window: PlanWindow, retryAfter: Int)
    }

    public mutating func take(nowSeconds: Int64) -> Decision {
        let now = Self.bounded(nowSeconds)
        for index in windows.indices {
            let span = Int64(windows[index].span.rawValue)
            let period = now / span
            if periods[index] != period {
                periods[index] = period
                counts[index] = 0
            }
            if counts[index] >= windows[index].limit {
                return .refused(window: windows[index], retryAfter: Int(max(1, (period + 1) * span - now)))
            }
        }
        var items = ""
        for index in windows.indices {
            counts[index] += 1
            let span = Int64(windows[index].span.rawValue)
            items += ", \"\(windows[index].span.name)\";r=\(windows[index].limit - counts[index]);t=\((periods[index] + 1) * span - now)"
        }
        return .allowed(items: items)
    }

    /// Seconds within 1970 … year ~36,800, so that window arithmetic never overflows.
    static func bounded(_ seconds: Int64) -> Int64 { min(max(0, seconds), 1 << 40) }

    /// Undoes one admitted call, if its windows are still the current ones.
    public mutating func giveBack(nowSeconds: Int64) {
        let now = Self.bounded(nowSeconds)
        for index in windows.indices where periods[index] == now / Int64(windows[index].span.rawValue) && counts[index] > 0 {
            counts[index] -= 1
        }
    }
}

/// `WindowCounts` per subscription for this process, shared by every event loop, in stripes
/// like `RateLimiter`. A plan change (other windows) starts the counts afresh. Counts are per
/// gateway process: N gateways admit up to N × a window's limit (see docs/ARCHITECTURE.md).
public final class WindowLimiter: Sendable {
    private let stripes: [NIOLockedValueBox<[UUID: WindowCounts]>]

    public init(stripes: Int = 64) {
        self.stripes = (0..<max(1, stripes)).map { _ in NIOLockedValueBox([:]) }
    }

    private func stripe(_ subscription: UUID) -> NIOLockedValueBox<[UUID: WindowCounts]> {
        stripes[Int(UInt(bitPattern: subscription.hashValue) % UInt(stripes.count))]
    }

    public func take(subscription: UUID, windows: [PlanWindow], nowSeconds: Int64) -> WindowCounts.Decision {
        stripe(subscription).withLockedValue { table in
            var counts = table[subscription].flatMap { $0.windows == windows ? $0 : nil } ?? WindowCounts(windows: windows)
            let decision = counts.take(nowSeconds: nowSeconds)
            table[subscription] = counts
            return decision
        }
    }

    public func giveBack(subscription: UUID, nowSeconds: Int64) {
        stripe(subscription).withLockedValue { table in table[subscription]?.giveBack(nowSeconds: nowSeconds) }
    }
}
