import NIOCore
import NIOHTTP1

/// The gateway's part in a WebSocket handshake (RFC 6455 §4): it decides the handshake request
/// like any other request, forwards `Connection: Upgrade` / `Upgrade: websocket` to the upstream,
/// and once the upstream answers `101 Switching Protocols` the two connections become a byte tunnel
/// the gateway does not parse. Other upgrades (h2c, TLS) are not relayed.
enum WebSocketHandshake {
    /// The `Upgrade` value to forward when `head` asks to open a WebSocket; nil otherwise. Only an
    /// HTTP/1.1 `GET` whose `Connection` lists `upgrade` and whose `Upgrade` names `websocket` does.
    static func requestedUpgrade(_ head: HTTPRequestHead) -> String? {
        guard head.method == .GET, head.version.major == 1, head.version.minor >= 1 else { return nil }
        let upgrades = head.headers["upgrade"]
        guard !upgrades.isEmpty else { return nil }
        let connectionListsUpgrade = head.headers["connection"].contains { value in
            value.split(separator: ",").contains { $0.trimmingASCIIWhitespace().isASCII(caseInsensitively: "upgrade") }
        }
        guard connectionListsUpgrade else { return nil }
        let asksForWebSocket = upgrades.contains { value in
            value.split(separator: ",").contains { token in
                // "websocket" possibly with a version ("websocket/13" is not registered, but harmless)
                let name = token.trimmingASCIIWhitespace().split(separator: "/", maxSplits: 1).first ?? ""
                return name.isASCII(caseInsensitively: "websocket")
            }
        }
        return asksForWebSocket ? "websocket" : nil
    }

    /// Whether the upstream's `101` switches to what was asked: its `Upgrade` names `websocket`.
    static func upstreamSwitched(upgradeValues: [Substring]) -> Bool {
        upgradeValues.contains { $0.trimmingASCIIWhitespace().isASCII(caseInsensitively: "websocket") }
    }
}

/// When an open tunnel is closed by the gateway: after `idle` with no byte either way, or once it
/// has been open for `maxDuration` (when set). Durations in nanoseconds of the uptime clock. The
/// installation's limits come from the gateway's settings; an API's `websocket` policy replaces
/// them for its tunnels (`WebSocketConfig.limits(over:)`), resolved once when a tunnel opens.
public struct TunnelLimits: Equatable, Sendable {
    public var idle: UInt64
    public var maxDuration: UInt64?

    public init(idle: UInt64, maxDuration: UInt64?) {
        self.idle = idle
        self.maxDuration = maxDuration
    }

    /// The installation's limits from its settings (at least a nanosecond each).
    init(idleTimeout: TimeAmount, maxDuration: TimeAmount?) {
        self.init(idle: UInt64(max(1, idleTimeout.nanoseconds)), maxDuration: maxDuration.map { UInt64(max(1, $0.nanoseconds)) })
    }

    /// The limits of `route`'s tunnels: its `websocket` policy over these.
    func applying(_ policy: WebSocketConfig?) -> TunnelLimits {
        policy?.limits(over: self) ?? self
    }

    enum Verdict: Equatable {
        case open
        case idle
        case tooLong
    }

    /// How long from `now` until a limit could first be reached (at least 1 ns): when a tunnel
    /// with its own timer (an HTTP/2 stream) looks again. Never traps, whatever the clock values.
    func untilNextCheck(now: UInt64, opened: UInt64, lastActivity: UInt64) -> UInt64 {
        func until(_ start: UInt64, _ span: UInt64) -> UInt64 {
            let (deadline, overflow) = start.addingReportingOverflow(span)
            if overflow { return .max }
            return deadline > now ? deadline - now : 0
        }
        var wait = until(lastActivity, idle)
        if let maxDuration { wait = min(wait, until(opened, maxDuration)) }
        return max(1, wait)
    }

    func verdict(now: UInt64, opened: UInt64, lastActivity: UInt64) -> Verdict {
        if let maxDuration, now &- opened >= maxDuration { return .tooLong }
        if now &- lastActivity >= idle { return .idle }
        return .open
    }
}
