import Billing
import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import ServiceLifecycle

/// Keeps the snapshot current: a full load at start (retried until it succeeds), then, shortly
/// after each `NOTIFY tollgate_config`, a reload of the part the notification names (see
/// `ConfigChange`: one tenant's part, rebuilt and swapped in alone), and a periodic full load that
/// catches anything a lost notification missed. A burst of notifications is coalesced: each tenant
/// named is read once (`PendingReloads`). Full loads run beside tenant loads, not before them
/// (`ReloadLedger` keeps the newer parts when a full load ends). Revocations apply in place from the
/// notification itself. If Postgres is unreachable the last snapshot stays in service and the
/// status says so.
public struct SnapshotReloader: Service {
    let client: PostgresClient
    let loader: SnapshotLoader
    let store: SnapshotStore
    let logger: Logger
    let debounce: Duration
    let fullReloadInterval: Duration
    let retryInterval: Duration
    let metrics: SnapshotMetrics
    let onReload: (@Sendable (Reload) -> Void)?
    let ledger = NIOLockedValueBox(ReloadLedger())

    /// One reload done (or failed), for observers such as tests.
    public struct Reload: Sendable, Equatable {
        public var kind: SnapshotMetrics.Kind
        /// The tenant reloaded (`.tenant` and `.revocation`).
        public var tenant: UUID?
        public var succeeded: Bool

        public init(kind: SnapshotMetrics.Kind, tenant: UUID?, succeeded: Bool) {
            self.kind = kind
            self.tenant = tenant
            self.succeeded = succeeded
        }
    }

    public init(
        client: PostgresClient, store: SnapshotStore, baseDomain: String, publicURL: PublicBaseURL, logger: Logger,
        debounce: Duration = .milliseconds(100),
        fullReloadInterval: Duration = .seconds(30), retryInterval: Duration = .seconds(1), responseCache: ResponseCacheStore? = nil,
        clientKeyOpener: SnapshotLoader.ClientKeyOpener? = nil, metrics: SnapshotMetrics = SnapshotMetrics(), onReload: (@Sendable (Reload) -> Void)? = nil
    ) {
        self.client = client
        self.loader = SnapshotLoader(
            client: client, baseDomain: baseDomain, publicURL: publicURL, logger: logger, clientLimiters: ClientLimiterRegistry(responseCache: responseCache),
            clientKeyOpener: clientKeyOpener)
        self.store = store
        self.logger = logger
        self.debounce = debounce
        self.fullReloadInterval = fullReloadInterval
        self.retryInterval = retryInterval
        self.metrics = metrics
        self.onReload = onReload
    }

    public func run() async throws {
        let signal = ReloadSignal()
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.listen(signal) }
                group.addTask { await self.tick(signal) }
                group.addTask { await self.pollKeyRefreshes(signal) }
                group.addTask { await self.fullLoop(signal) }
                group.addTask { await self.tenantLoop(signal) }
                await group.waitForAll()
            }
        }
    }

    /// One full load; returns whether it succeeded.
    @discardableResult
    public func reloadNow() async -> Bool {
        let start = ledger.withLockedValue { $0.begin() }
        defer { ledger.withLockedValue { $0.end(start) } }
        return await timed(.full, tenant: nil) {
            let read = try await loader.load(version: store.version + 1)
            store.install { current in
                ledger.withLockedValue { ledger in
                    read.merging(current: current, keep: ledger.tenantsLoaded(after: start), revocations: ledger.revocations(since: start))
                }
            }
        }
    }

    /// Reloads one tenant's part; returns whether it succeeded.
    @discardableResult
    func reloadTenant(_ id: UUID) async -> Bool {
        let start = ledger.withLockedValue { $0.begin() }
        defer { ledger.withLockedValue { $0.end(start) } }
        return await timed(.tenant, tenant: id) {
            let tenant = try await loader.loadTenant(id, previous: store.snapshot.tenant(id: id))
            store.update { snapshot in
                ledger.withLockedValue { ledger in
                    let revoked = ledger.revocations(since: start)[id] ?? []
                    snapshot = snapshot.replacingTenant(id, with: revoked.isEmpty ? tenant : tenant?.revoking(Array(revoked)))
                    // in the same critical section: a full load ending now must see that this part is newer
                    ledger.tenantInstalled(id, start: start)
                }
            }
        }
    }

    /// Runs a load (which installs what it read), then records its duration and the gauges.
    private func timed(_ kind: SnapshotMetrics.Kind, tenant: UUID?, _ load: () async throws -> Void) async -> Bool {
        let started = DispatchTime.now().uptimeNanoseconds
        do {
            try await load()
            let snapshot = store.snapshot
            metrics.reloaded(kind, nanoseconds: DispatchTime.now().uptimeNanoseconds &- started, succeeded: true)
            metrics.size(snapshot.size)
            GatewayGauges.snapshot(version: snapshot.version, ageSeconds: Date().timeIntervalSince(snapshot.loadedAt), databaseReachable: true)
            loader.clientLimiters.recordGauges()
            loader.clientLimiters.responseCache.recordGauges()
            onReload?(Reload(kind: kind, tenant: tenant, succeeded: true))
            return true
        } catch {
            metrics.reloaded(kind, nanoseconds: DispatchTime.now().uptimeNanoseconds &- started, succeeded: false)
            store.markUnreachable(DatabaseErrorText.describe(error).prefix(300).description)
            let snapshot = store.snapshot
            GatewayGauges.snapshot(version: snapshot.version, ageSeconds: Date().timeIntervalSince(snapshot.loadedAt), databaseReachable: false)
            logger.warning(
                "gateway snapshot reload failed; serving the last one", metadata: ["kind": "\(kind.rawValue)", "error": "\(DatabaseErrorText.describe(error))"])
            onReload?(Reload(kind: kind, tenant: tenant, succeeded: false))
            return false
        }
    }

    /// Full loads: at start (retried until one succeeds), then whenever one is asked for.
    private func fullLoop(_ signal: ReloadSignal) async {
        while !Task.isCancelled {
            if !(await reloadNow()) {
                try? await Task.sleep(for: retryInterval)
                continue
            }
            guard await signal.waitForFull() else { return }
            try? await Task.sleep(for: debounce)
            _ = await signal.takeFull()
        }
    }

    /// Tenant loads, each tenant of a burst once; a failed one asks for a full load (which the
    /// full loop retries until the database answers) instead of being tracked.
    private func tenantLoop(_ signal: ReloadSignal) async {
        while !Task.isCancelled {
            guard await signal.waitForTenants() else { return }
            try? await Task.sleep(for: debounce)  // let a burst of changes gather
            for id in await signal.takeTenants().sorted(by: { $0.uuidString < $1.uuidString }) {
                guard await reloadTenant(id) else {
                    await signal.add(.everything)
                    break
                }
            }
        }
    }

    /// A token signed by an unknown key of a known tenant (a gateway that missed a notification)
    /// makes the next load start within 50 ms instead of waiting for the periodic one.
    private func pollKeyRefreshes(_ signal: ReloadSignal) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(50))
            if store.takeKeyRefreshRequest() { await signal.add(.everything) }
        }
    }

    private func tick(_ signal: ReloadSignal) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: fullReloadInterval)
            await signal.add(.everything)
        }
        await signal.finish()
    }

    private func listen(_ signal: ReloadSignal) async {
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: "tollgate_config") { notifications in
                        await signal.add(.everything)  // we may have missed changes while not listening
                        for try await notification in notifications {
                            await apply(ConfigChange(payload: notification.payload), signal)
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                store.markUnreachable(DatabaseErrorText.describe(error).prefix(300).description)
                try? await Task.sleep(for: retryInterval)
            }
        }
    }

    private func apply(_ change: ConfigChange, _ signal: ReloadSignal) async {
        switch change {
        case .cachePurge(let api):
            // a provider emptied the API's cache: nothing else changed
            loader.clientLimiters.responseCache.purge(api: api)
        case .revocation(let tenant, let jti):
            store.update { snapshot in
                // recorded with the update: a load that ends later re-applies it (see `ReloadLedger`)
                ledger.withLockedValue { $0.heard(tenant: tenant, jti: jti) }
                if let config = snapshot.tenant(id: tenant) { snapshot.tenantsBySlug[config.slug] = config.revoking([jti]) }
            }
            metrics.reloaded(.revocation, nanoseconds: nil, succeeded: true)
            onReload?(Reload(kind: .revocation, tenant: tenant, succeeded: true))
        case .tenant, .everything:
            await signal.add(change)
        }
    }

    /// `{"table": "cache_purge", "api_id": ...}`, sent by `DELETE /apis/{id}/cache`.
    static func cachePurge(_ payload: String) -> UUID? {
        if case .cachePurge(let api) = ConfigChange(payload: payload) { return api }
        return nil
    }

    static func revocation(_ payload: String) -> (tenant: UUID, jti: String)? {
        if case .revocation(let tenant, let jti) = ConfigChange(payload: payload) { return (tenant, jti) }
        return nil
    }
}

/// The reloads asked for and not yet done: filled by notifications and the periodic tick, emptied
/// by the full loop and the tenant loop, each waiting for its own kind.
actor ReloadSignal {
    private var pending = PendingReloads()
    private var finished = false
    private var fullWaiter: CheckedContinuation<Bool, Never>?
    private var tenantsWaiter: CheckedContinuation<Bool, Never>?

    func add(_ change: ConfigChange) {
        pending.add(change)
        if pending.full, let waiter = fullWaiter {
            fullWaiter = nil
            waiter.resume(returning: true)
        }
        if !pending.tenants.isEmpty, let waiter = tenantsWaiter {
            tenantsWaiter = nil
            waiter.resume(returning: true)
        }
    }

    func finish() {
        finished = true
        fullWaiter?.resume(returning: false)
        tenantsWaiter?.resume(returning: false)
        fullWaiter = nil
        tenantsWaiter = nil
    }

    /// True once a full load is pending; false once finished.
    func waitForFull() async -> Bool {
        if pending.full { return true }
        if finished { return false }
        return await withCheckedContinuation { fullWaiter = $0 }
    }

    /// True once a tenant is pending; false once finished.
    func waitForTenants() async -> Bool {
        if !pending.tenants.isEmpty { return true }
        if finished { return false }
        return await withCheckedContinuation { tenantsWaiter = $0 }
    }

    func takeFull() -> Bool { pending.takeFull() }

    func takeTenants() -> Set<UUID> { pending.takeTenants() }
}
