import Billing
import NIOConcurrencyHelpers

/// Shared, immutable pieces every client connection uses.
final class GatewayContext: Sendable {
    let store: SnapshotStore
    let rateLimiter: RateLimiter
    let quotas: QuotaTracker
    let usage: any UsageSink
    let loops: LoopStates
    let settings: GatewayServer.Configuration
    let metricsText: @Sendable () -> String
    /// The installation's access-log sinks when every call is logged; nil otherwise, so a call
    /// of an API without its own sink builds no record.
    let accessLog: AccessLogs?
    /// The `Strict-Transport-Security` header line for responses on the TLS listener, made once.
    let strictTransportSecurityLine: String?
    /// The installation's WebSocket tunnel limits (an API's `websocket` policy replaces them).
    let tunnelLimits: TunnelLimits
    /// Client connections open now (counted at set-up and tear-down, not per request): the drain
    /// at shutdown waits for it to reach zero.
    let openConnections = NIOLockedValueBox(0)
    /// Set when the drain begins: a connection accepted just before the listener closed (set up
    /// after the drain visited the loops) closes at once instead of being served.
    let draining = NIOLockedValueBox(false)

    init(
        store: SnapshotStore, rateLimiter: RateLimiter, quotas: QuotaTracker, usage: any UsageSink, loops: LoopStates,
        settings: GatewayServer.Configuration, metricsText: @escaping @Sendable () -> String, accessLog: AccessLogs? = nil
    ) {
        self.accessLog = accessLog
        self.store = store
        self.rateLimiter = rateLimiter
        self.quotas = quotas
        self.usage = usage
        self.loops = loops
        self.settings = settings
        self.metricsText = metricsText
        self.tunnelLimits = TunnelLimits(idleTimeout: settings.webSocketIdleTimeout, maxDuration: settings.webSocketMaxDuration)
        self.strictTransportSecurityLine = settings.tls?.strictTransportSecurity.map { "Strict-Transport-Security: \($0)\r\n" }
    }
}

extension GatewayContext {
    /// The gateway's own endpoints (health, readiness, metrics), answered before any tenant routing.
    func infrastructureResponse(path: Substring) -> LocalResponse? {
        guard path.utf8.count == 7 || path.utf8.count == 8 else { return nil }
        switch path {
        case "/healthz":
            return LocalResponse(status: .ok, headers: [("Content-Type", "application/json")], body: "{\"status\":\"ok\"}", rejection: nil)
        case "/readyz":
            var (ready, body) = store.readinessJSON()
            if let meter = usage.readinessJSON { body = String(body.dropLast()) + ",\"meter\":" + meter + "}" }
            return LocalResponse(status: ready ? .ok : .serviceUnavailable, headers: [("Content-Type", "application/json")], body: body, rejection: nil)
        case "/metrics":
            return LocalResponse(status: .ok, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")], body: metricsText(), rejection: nil)
        default:
            return nil
        }
    }
}
