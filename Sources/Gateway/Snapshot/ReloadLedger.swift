import Foundation

/// Orders loads that overlap. A full load (seconds on a big installation) runs beside the tenant
/// loads, so a change is not held up behind it; when it ends, what it read is older than any tenant
/// part installed by a load that began after it, and older than any revocation heard since it
/// began. The ledger numbers load starts and revocations in one sequence, so the full load keeps
/// those newer parts and re-applies those revocations instead of bringing old state back.
///
/// Why "began after" is enough: a change committed after a load's transaction took its snapshot is
/// announced after the commit, so it is heard — and its tenant reloaded — after that load began.
/// Pure state; `SnapshotReloader` keeps it under a lock taken inside the store's.
struct ReloadLedger: Sendable {
    private var next: UInt64 = 1
    private var inFlight: [UInt64: Int] = [:]
    private var revocations: [(sequence: UInt64, tenant: UUID, jti: String)] = []
    /// The start of the load that installed each tenant's current part (tenant loads only).
    private var tenantLoadStarts: [UUID: UInt64] = [:]

    /// A load begins: its place in the sequence, to hand back to the other calls.
    mutating func begin() -> UInt64 {
        let start = next
        next += 1
        inFlight[start, default: 0] += 1
        return start
    }

    /// A load ended (installed or failed): what only it needed is forgotten.
    mutating func end(_ start: UInt64) {
        if let count = inFlight[start], count > 1 { inFlight[start] = count - 1 } else { inFlight[start] = nil }
        guard let oldest = inFlight.keys.min() else {
            revocations.removeAll()
            tenantLoadStarts.removeAll()
            return
        }
        revocations.removeAll { $0.sequence < oldest }
        tenantLoadStarts = tenantLoadStarts.filter { $0.value > oldest }
    }

    /// A revocation was heard (and applied in place).
    mutating func heard(tenant: UUID, jti: String) {
        revocations.append((next, tenant, jti))
        next += 1
    }

    /// Revocations heard since the load that began at `start`, by tenant.
    func revocations(since start: UInt64) -> [UUID: Set<String>] {
        var byTenant: [UUID: Set<String>] = [:]
        for entry in revocations where entry.sequence > start { byTenant[entry.tenant, default: []].insert(entry.jti) }
        return byTenant
    }

    /// A tenant load that began at `start` installed its part.
    mutating func tenantInstalled(_ id: UUID, start: UInt64) {
        tenantLoadStarts[id] = max(tenantLoadStarts[id] ?? 0, start)
    }

    /// Tenants whose installed part came from a load that began after `start`: newer than what a
    /// load begun at `start` read.
    func tenantsLoaded(after start: UInt64) -> Set<UUID> {
        Set(tenantLoadStarts.filter { $0.value > start }.keys)
    }
}

extension GatewaySnapshot {
    /// What a full load read (`self`), with the parts of `keep` taken from `current` instead (a
    /// kept tenant absent from `current` was deleted: it stays out) and `revocations` applied.
    func merging(current: GatewaySnapshot, keep: Set<UUID>, revocations: [UUID: Set<String>]) -> GatewaySnapshot {
        let kept = current.tenantsBySlug.values.filter { keep.contains($0.id) }
        var tenants = kept + tenantsBySlug.values.filter { !keep.contains($0.id) }
        if !revocations.isEmpty {
            tenants = tenants.map { tenant in revocations[tenant.id].map { tenant.revoking(Array($0)) } ?? tenant }
        }
        return GatewaySnapshot(version: version, loadedAt: loadedAt, tenants: tenants, baseDomain: baseDomain)
    }
}
