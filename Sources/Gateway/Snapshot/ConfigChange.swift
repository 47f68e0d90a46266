import Foundation

/// What one `NOTIFY tollgate_config` says changed, read from its JSON payload
/// (`{"table": ..., "tenant_id": ...}`, see migrations/0008_gateway_policies.sql).
///
/// Every table the snapshot reads is tenant-scoped, so a tenant id is enough to know which part of
/// the snapshot to rebuild. A payload this gateway cannot read (another version's, or hand-sent)
/// asks for a full load: reloading too much is slow, reloading too little is wrong.
public enum ConfigChange: Sendable, Equatable {
    /// A token was revoked: applied to the snapshot in place, nothing is read.
    case revocation(tenant: UUID, jti: String)
    /// A provider emptied an API's response cache; the configuration did not change.
    case cachePurge(api: UUID)
    /// Something of this tenant changed (its row, APIs, targets, policies, plans, apps,
    /// credentials, subscriptions, keys): rebuild its part of the snapshot.
    case tenant(UUID)
    /// Unreadable or unscoped: load everything.
    case everything

    /// The longest payload read; Postgres caps them at 8000 bytes, ours are ~100.
    static let maximumPayloadBytes = 8000

    public init(payload: String) {
        guard payload.utf8.count <= Self.maximumPayloadBytes,
            let object = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any],
            let table = object["table"] as? String
        else {
            self = .everything
            return
        }
        let tenant = (object["tenant_id"] as? String).flatMap(UUID.init(uuidString:))
        switch table {
        case "cache_purge":
            guard let api = (object["api_id"] as? String).flatMap(UUID.init(uuidString:)) else {
                self = tenant.map(ConfigChange.tenant) ?? .everything
                return
            }
            self = .cachePurge(api: api)
        case "revoked_tokens":
            // revocations are only ever added (expired rows are pruned, which changes nothing a
            // request can see): applied in place, as before
            if let tenant, let jti = object["jti"] as? String, !jti.isEmpty {
                self = .revocation(tenant: tenant, jti: jti)
            } else {
                self = tenant.map(ConfigChange.tenant) ?? .everything
            }
        default:
            self = tenant.map(ConfigChange.tenant) ?? .everything
        }
    }
}

/// The reloads asked for and not yet done. A burst of notifications becomes one load per tenant
/// named, however many rows changed. A full load asked for does not hold the tenants back: the
/// reloader runs it beside them (see `ReloadLedger`), so a change reaches the gateway in the time
/// its tenant takes to load, not the installation. More tenants than `maximumTenants` at once
/// become one full load (reading them one by one would cost more than reading everything).
public struct PendingReloads: Sendable, Equatable {
    /// More tenants than this in one burst: one full load instead.
    public static let defaultMaximumTenants = 64

    public private(set) var full = false
    public private(set) var tenants: Set<UUID> = []
    let maximumTenants: Int

    public init(maximumTenants: Int = PendingReloads.defaultMaximumTenants) {
        self.maximumTenants = max(1, maximumTenants)
    }

    public var isEmpty: Bool { !full && tenants.isEmpty }

    /// Adds a change that needs a load (revocations and cache purges do not).
    public mutating func add(_ change: ConfigChange) {
        switch change {
        case .revocation, .cachePurge: return
        case .everything: full = true
        case .tenant(let id):
            tenants.insert(id)
            if tenants.count > maximumTenants {
                full = true
                tenants = []
            }
        }
    }

    /// Whether a full load was asked for, taken.
    public mutating func takeFull() -> Bool {
        defer { full = false }
        return full
    }

    /// The tenants to load, taken.
    public mutating func takeTenants() -> Set<UUID> {
        defer { tenants = [] }
        return tenants
    }
}
