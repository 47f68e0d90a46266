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
/// named is read once (`PendingReloads`). Revocations apply in place from the notification itself.
/// If Postgres is unreachable the last snapshot stays in service and the status says so.
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
    let revocations = RevocationLog()

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
                group.addTask { await self.reloadLoop(signal) }
                await group.waitForAll()
            }
        }
    }

    /// One full load; returns whether it succeeded.
    @discardableResult
    public func reloadNow() async -> Bool { await reload(.full) }

    /// Does one piece of work; returns whether all of it succeeded.
    func reload(_ work: PendingReloads.Work) async -> Bool {
        switch work {
        case .full:
            return await timed(.full, tenant: nil) {
                let snapshot = try await loader.load(version: store.version + 1)
                store.install(revocations.applied(to: snapshot))
            }
        case .tenants(let ids):
            var succeeded = true
            for id in ids.sorted(by: { $0.uuidString < $1.uuidString }) {
                let loaded = await timed(.tenant, tenant: id) {
                    let tenant = try await loader.loadTenant(id, previous: store.snapshot.tenant(id: id))
                    let revoked = revocations.pending(tenant: id)
                    store.update { snapshot in
                        snapshot = snapshot.replacingTenant(id, with: revoked.isEmpty ? tenant : tenant?.revoking(Array(revoked)))
                    }
                }
                if !loaded {
                    succeeded = false
                    break  // the database is likely gone: the loop retries with a full load
                }
            }
            return succeeded
        }
    }

    /// Runs a load (which installs what it read), then records its duration and the gauges.
    private func timed(_ kind: SnapshotMetrics.Kind, tenant: UUID?, _ load: () async throws -> Void) async -> Bool {
        let started = DispatchTime.now().uptimeNanoseconds
        // revocations heard from now on may be missing from what this load reads: it re-applies them
        revocations.begin()
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

    private func reloadLoop(_ signal: ReloadSignal) async {
        var work = PendingReloads.Work.full
        while !Task.isCancelled {
            if !(await reload(work)) {
                // what failed is not worth tracking: the next attempt reads everything
                work = .full
                try? await Task.sleep(for: retryInterval)
                continue
            }
            guard await signal.wait() else { return }
            try? await Task.sleep(for: debounce)  // let a burst of changes gather into one piece of work
            guard let next = await signal.take() else { continue }
            work = next
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
            revocations.record(tenant: tenant, jti: jti)  // before the update: see `RevocationLog`
            store.update { snapshot in
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

/// The revocations heard while a load runs. A load's transaction may have started before a
/// revocation committed (its notification comes after the commit), so what it read can miss one
/// that was already applied in place; installing it would bring the token back. The load re-applies
/// what this log heard since it began. One load runs at a time, so `begin` may forget the rest:
/// anything heard before a load began had committed before its transaction started.
final class RevocationLog: Sendable {
    private let heard = NIOLockedValueBox<[UUID: Set<String>]>([:])

    func begin() { heard.withLockedValue { $0.removeAll() } }

    func record(tenant: UUID, jti: String) { heard.withLockedValue { _ = $0[tenant, default: []].insert(jti) } }

    func pending(tenant: UUID) -> Set<String> { heard.withLockedValue { $0[tenant] ?? [] } }

    /// `snapshot` with every revocation heard since `begin`.
    func applied(to snapshot: GatewaySnapshot) -> GatewaySnapshot {
        var result = snapshot
        for (tenant, jtis) in heard.withLockedValue({ $0 }) {
            if let config = result.tenant(id: tenant) { result.tenantsBySlug[config.slug] = config.revoking(Array(jtis)) }
        }
        return result
    }
}

/// The reloads asked for and not yet done: filled by notifications and the periodic tick, emptied
/// by the reload loop.
actor ReloadSignal {
    private var pending = PendingReloads()
    private var finished = false
    private var waiter: CheckedContinuation<Bool, Never>?

    func add(_ change: ConfigChange) {
        pending.add(change)
        guard !pending.isEmpty, let waiter else { return }
        self.waiter = nil
        waiter.resume(returning: true)
    }

    func finish() {
        finished = true
        waiter?.resume(returning: false)
        waiter = nil
    }

    /// True once something is pending; false once finished.
    func wait() async -> Bool {
        if !pending.isEmpty { return true }
        if finished { return false }
        return await withCheckedContinuation { waiter = $0 }
    }

    /// The pending work, taken.
    func take() -> PendingReloads.Work? { pending.take() }
}
