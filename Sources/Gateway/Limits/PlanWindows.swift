import Foundation
import NIOConcurrencyHelpers

/// A plan's limit over a calendar window of UTC time: a minute, an hour or a day (a window starts
/// at a whole minute, hour or midnight UTC, so every gateway and the plan's page agree on it).
public struct PlanWindow: Sendable, Hashable {
    public enum Span: Int, Sendable, CaseIterable {
        case minute = 60
        case hour = 3600
        case day = 86_400

        /// The window holding `seconds` (UTC), named by its start: `2026-12-04` (a day),
        /// `2026-12-04T23` (an hour), `2026-12-04T23:48` (a minute). Leases across gateways are kept
        /// per window under this name, beside the monthly quota's `2026-12`.
        public func period(containing seconds: Int64) -> String {
            let bounded = WindowCounts.bounded(seconds)
            let (year, month, day) = CivilDate.from(daysSince1970: bounded / 86_400)
            func two(_ n: Int64) -> String { n < 10 ? "0\(n)" : "\(n)" }
            var text = "\(year)-\(two(month))-\(two(day))"
            if self != .day { text += "T" + two(bounded % 86_400 / 3_600) }
            if self == .minute { text += ":" + two(bounded % 3_600 / 60) }
            return text
        }

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

/// The plans' windows for this process. Two ways to count:
/// - `local` (no trackers): `WindowCounts` per subscription in striped locks; each gateway process
///   counts alone (tests, one gateway).
/// - leased (a `QuotaTracker` per span, each with its `QuotaSyncService`): every window is held
///   across gateways exactly like the monthly quota — blocks leased from Postgres, keyed by the
///   window's name (`PlanWindow.Span.period`), so admitted ≤ limit + 2 × gateways per window.
/// Either way a call is admitted only when every window has room; the gate then `confirm`s it (it
/// counts) or `release`s it (the monthly quota refused it: it counts in no window).
public final class WindowLimiter: Sendable {
    private let stripes: [NIOLockedValueBox<[UUID: WindowCounts]>]
    private let trackers: [PlanWindow.Span: QuotaTracker]

    public init(stripes: Int = 64, trackers: [PlanWindow.Span: QuotaTracker] = [:]) {
        self.stripes = (0..<max(1, stripes)).map { _ in NIOLockedValueBox([:]) }
        self.trackers = trackers
    }

    private func stripe(_ subscription: UUID) -> NIOLockedValueBox<[UUID: WindowCounts]> {
        stripes[Int(UInt(bitPattern: subscription.hashValue) % UInt(stripes.count))]
    }

    public enum Admission: Equatable, Sendable {
        /// Admitted: the `RateLimit` items of every window, joined (`, "minute";r=…;t=…`).
        case allowed(items: String)
        /// The window is used up; the next one starts in `retryAfter` seconds.
        case refused(window: PlanWindow, retryAfter: Int)
        /// Leased windows only: this gateway waits for its next block of the window (not used up).
        case pending(window: PlanWindow, retryAfter: Int)
    }

    /// Admits one call of the subscription against every window.
    public func admit(subscription: UUID, tenant: UUID, windows: [PlanWindow], nowSeconds: Int64) -> Admission {
        if trackers.isEmpty {
            switch take(subscription: subscription, windows: windows, nowSeconds: nowSeconds) {
            case .allowed(let items): return .allowed(items: items)
            case .refused(let window, let retry): return .refused(window: window, retryAfter: retry)
            }
        }
        let now = WindowCounts.bounded(nowSeconds)
        var items = ""
        for (index, window) in windows.enumerated() {
            let span = Int64(window.span.rawValue)
            let untilNext = Int((now / span + 1) * span - now)
            guard let tracker = trackers[window.span] else { continue }
            let refusal: Admission
            switch tracker.admit(subscription: subscription, tenant: tenant, quota: window.limit, period: window.span.period(containing: now)) {
            case .allowed(let remaining):
                // a window's lease that has not heard from the database yet says nothing of it
                if let remaining { items += ", \"\(window.span.name)\";r=\(max(0, remaining));t=\(untilNext)" }
                continue
            case .exhausted: refusal = .refused(window: window, retryAfter: max(1, untilNext))
            case .pending(let retry): refusal = .pending(window: window, retryAfter: retry)
            }
            // the windows before this one reserved a unit: give them back
            for earlier in windows[..<index] { trackers[earlier.span]?.settle(subscription: subscription, billable: false) }
            return refusal
        }
        return .allowed(items: items)
    }

    /// The admitted call goes ahead: it counts in every window.
    public func confirm(subscription: UUID, windows: [PlanWindow]) {
        for window in windows { trackers[window.span]?.settle(subscription: subscription, billable: true) }
    }

    /// The admitted call was refused after all (by the monthly quota): it counts in no window.
    public func release(subscription: UUID, windows: [PlanWindow], nowSeconds: Int64) {
        if trackers.isEmpty {
            stripe(subscription).withLockedValue { table in table[subscription]?.giveBack(nowSeconds: nowSeconds) }
            return
        }
        for window in windows { trackers[window.span]?.settle(subscription: subscription, billable: false) }
    }

    /// The local count (no trackers): takes a place in every window or none.
    public func take(subscription: UUID, windows: [PlanWindow], nowSeconds: Int64) -> WindowCounts.Decision {
        stripe(subscription).withLockedValue { table in
            var counts = table[subscription].flatMap { $0.windows == windows ? $0 : nil } ?? WindowCounts(windows: windows)
            let decision = counts.take(nowSeconds: nowSeconds)
            table[subscription] = counts
            return decision
        }
    }
}

/// Proleptic Gregorian dates from days since 1970-01-01, by arithmetic (H. Hinnant's
/// `civil_from_days`): no calendar or formatter per call.
enum CivilDate {
    static func from(daysSince1970 days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}
