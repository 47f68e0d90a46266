import CoreMetrics
import Foundation

/// The gateway's Prometheus metrics through swift-metrics. Metric objects are looked up once per
/// label set and kept per event loop, so a request costs dictionary lookups, not factory calls.
final class GatewayMetrics {
    /// The process's metrics system unless the server was configured with another (tests read theirs).
    private let factory: any MetricsFactory
    /// One API's handles: its duration timer and a request counter per status.
    private final class APIMetrics {
        let duration: CoreMetrics.Timer
        var requests: [UInt: Counter] = [:]

        init(duration: CoreMetrics.Timer) { self.duration = duration }
    }

    private var apis: [String: APIMetrics] = [:]
    private var rejections: [String: Counter] = [:]
    private var upstreamErrors: [String: Counter] = [:]
    private var tunnelsClosed: [String: Counter] = [:]

    init(factory: (any MetricsFactory)? = nil) {
        self.factory = factory ?? MetricsSystem.factory
    }

    func request(api: String, status: UInt, nanoseconds: UInt64) {
        let metrics: APIMetrics
        if let known = apis[api] {
            metrics = known
        } else {
            metrics = APIMetrics(
                duration: CoreMetrics.Timer(
                    label: "tollgate_gateway_request_duration_seconds", dimensions: [("api", api)], preferredDisplayUnit: .seconds, factory: factory))
            apis[api] = metrics
        }
        if let counter = metrics.requests[status] {
            counter.increment()
        } else {
            let counter = Counter(label: "tollgate_gateway_requests_total", dimensions: [("api", api), ("status", String(status))], factory: factory)
            metrics.requests[status] = counter
            counter.increment()
        }
        metrics.duration.recordNanoseconds(Int64(nanoseconds))
    }

    func rejected(_ reason: String) {
        if rejections[reason] == nil { rejections[reason] = Counter(label: "tollgate_gateway_rejections_total", dimensions: [("reason", reason)], factory: factory) }
        rejections[reason]?.increment()
    }

    func upstreamError(_ kind: String) {
        if upstreamErrors[kind] == nil {
            upstreamErrors[kind] = Counter(label: "tollgate_gateway_upstream_errors_total", dimensions: [("kind", kind)], factory: factory)
        }
        upstreamErrors[kind]?.increment()
    }

    /// A WebSocket tunnel ended: `client`/`upstream` closed it, or the gateway did (`idle`, `max_duration`, `shutdown`).
    func tunnelClosed(_ reason: String) {
        if tunnelsClosed[reason] == nil {
            tunnelsClosed[reason] = Counter(label: "tollgate_gateway_websocket_tunnels_closed_total", dimensions: [("reason", reason)], factory: factory)
        }
        tunnelsClosed[reason]?.increment()
    }
}

/// Process-wide gauges refreshed off the hot path (snapshot version and age, circuit states).
public enum GatewayGauges {
    public static func snapshot(version: Int, ageSeconds: Double, databaseReachable: Bool) {
        Gauge(label: "tollgate_gateway_snapshot_version").record(version)
        Gauge(label: "tollgate_gateway_snapshot_age_seconds").record(ageSeconds)
        Gauge(label: "tollgate_gateway_database_reachable").record(databaseReachable ? 1 : 0)
    }

    static func circuit(target: String, state: Int) {
        Gauge(label: "tollgate_gateway_circuit_state", dimensions: [("target", target)]).record(state)
    }
}
