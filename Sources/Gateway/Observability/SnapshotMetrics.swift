import CoreMetrics

/// How the snapshot is kept current, for `/metrics`: how long each reload took (a histogram by
/// kind), how many ran by kind and result, and how much the snapshot holds. Recorded by the
/// reloader, off the hot path.
public struct SnapshotMetrics: Sendable {
    /// What a reload covered.
    public enum Kind: String, Sendable {
        /// Every tenant: the first load, the periodic safety net, an unscoped notification.
        case full
        /// One tenant's part, after a notification named it.
        case tenant
        /// A revoked token applied in place (nothing read).
        case revocation
    }

    let factory: any MetricsFactory

    public init(factory: (any MetricsFactory)? = nil) {
        self.factory = factory ?? MetricsSystem.factory
    }

    /// `tollgate_gateway_snapshot_reloads_total{kind,result}` and, for loads,
    /// `tollgate_gateway_snapshot_reload_duration_seconds{kind}` (failed loads included).
    public func reloaded(_ kind: Kind, nanoseconds: UInt64?, succeeded: Bool) {
        Counter(label: "tollgate_gateway_snapshot_reloads_total", dimensions: [("kind", kind.rawValue), ("result", succeeded ? "ok" : "failed")], factory: factory)
            .increment()
        if let nanoseconds {
            CoreMetrics.Timer(
                label: "tollgate_gateway_snapshot_reload_duration_seconds", dimensions: [("kind", kind.rawValue)], preferredDisplayUnit: .seconds,
                factory: factory
            ).recordNanoseconds(Int64(clamping: nanoseconds))
        }
    }

    /// `tollgate_gateway_snapshot_{tenants,apis,apps,api_keys,subscriptions}`.
    public func size(_ size: GatewaySnapshot.Size) {
        Gauge(label: "tollgate_gateway_snapshot_tenants", factory: factory).record(size.tenants)
        Gauge(label: "tollgate_gateway_snapshot_apis", factory: factory).record(size.apis)
        Gauge(label: "tollgate_gateway_snapshot_apps", factory: factory).record(size.apps)
        Gauge(label: "tollgate_gateway_snapshot_api_keys", factory: factory).record(size.apiKeys)
        Gauge(label: "tollgate_gateway_snapshot_subscriptions", factory: factory).record(size.subscriptions)
    }
}
