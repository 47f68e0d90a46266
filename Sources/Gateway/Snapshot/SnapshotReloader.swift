import Billing
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

/// Keeps the snapshot current: a full load at start (retried until it succeeds), then a reload
/// shortly after every `NOTIFY tollgate_config` and a periodic full load that catches anything a
/// lost notification missed. Revocations apply incrementally from the notification itself.
/// If Postgres is unreachable the last snapshot stays in service and the status says so.
public struct SnapshotReloader: Service {
    let client: PostgresClient
    let loader: SnapshotLoader
    let store: SnapshotStore
    let logger: Logger
    let debounce: Duration
    let fullReloadInterval: Duration
    let retryInterval: Duration

    public init(
        client: PostgresClient, store: SnapshotStore, baseDomain: String, publicURL: PublicBaseURL, logger: Logger,
        debounce: Duration = .milliseconds(100),
        fullReloadInterval: Duration = .seconds(30), retryInterval: Duration = .seconds(1), responseCache: ResponseCacheStore? = nil,
        clientKeyOpener: SnapshotLoader.ClientKeyOpener? = nil, accessLogs: AccessLogs? = nil
    ) {
        self.client = client
        self.loader = SnapshotLoader(
            client: client, baseDomain: baseDomain, publicURL: publicURL, logger: logger,
            clientLimiters: ClientLimiterRegistry(responseCache: responseCache, accessLogs: accessLogs),
            clientKeyOpener: clientKeyOpener)
        self.store = store
        self.logger = logger
        self.debounce = debounce
        self.fullReloadInterval = fullReloadInterval
        self.retryInterval = retryInterval
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
    public func reloadNow() async -> Bool {
        do {
            let snapshot = try await loader.load(version: store.version + 1)
            store.install(snapshot)
            GatewayGauges.snapshot(version: snapshot.version, ageSeconds: 0, databaseReachable: true)
            loader.clientLimiters.recordGauges()
            loader.clientLimiters.responseCache.recordGauges()
            return true
        } catch {
            store.markUnreachable(DatabaseErrorText.describe(error).prefix(300).description)
            let snapshot = store.snapshot
            GatewayGauges.snapshot(version: snapshot.version, ageSeconds: Date().timeIntervalSince(snapshot.loadedAt), databaseReachable: false)
            logger.warning("gateway snapshot reload failed; serving the last one", metadata: ["error": "\(DatabaseErrorText.describe(error))"])
            return false
        }
    }

    private func reloadLoop(_ signal: ReloadSignal) async {
        while !Task.isCancelled {
            if !(await reloadNow()) {
                try? await Task.sleep(for: retryInterval)
                continue
            }
            guard await signal.wait() else { return }
            try? await Task.sleep(for: debounce)  // coalesce a burst of changes into one load
        }
    }

    /// A token signed by an unknown key of a known tenant (a gateway that missed a notification)
    /// makes the next load start within 50 ms instead of waiting for the periodic one.
    private func pollKeyRefreshes(_ signal: ReloadSignal) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(50))
            if store.takeKeyRefreshRequest() { await signal.fire() }
        }
    }

    private func tick(_ signal: ReloadSignal) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: fullReloadInterval)
            await signal.fire()
        }
        await signal.finish()
    }

    private func listen(_ signal: ReloadSignal) async {
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: "tollgate_config") { notifications in
                        await signal.fire()  // we may have missed changes while not listening
                        for try await notification in notifications {
                            if let api = Self.cachePurge(notification.payload) {
                                // a provider emptied the API's cache: nothing else changed
                                loader.clientLimiters.responseCache.purge(api: api)
                            } else if let revoked = Self.revocation(notification.payload) {
                                store.update { snapshot in
                                    if let tenant = snapshot.tenantsBySlug.values.first(where: { $0.id == revoked.tenant }) {
                                        snapshot.tenantsBySlug[tenant.slug] = tenant.revoking([revoked.jti])
                                    }
                                }
                            } else {
                                await signal.fire()
                            }
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

    /// `{"table": "cache_purge", "api_id": ...}`, sent by `DELETE /apis/{id}/cache`.
    static func cachePurge(_ payload: String) -> UUID? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any], object["table"] as? String == "cache_purge"
        else { return nil }
        return (object["api_id"] as? String).flatMap(UUID.init(uuidString:))
    }

    static func revocation(_ payload: String) -> (tenant: UUID, jti: String)? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any], object["table"] as? String == "revoked_tokens",
            let tenant = (object["tenant_id"] as? String).flatMap(UUID.init(uuidString:)), let jti = object["jti"] as? String
        else { return nil }
        return (tenant, jti)
    }
}

/// "Something changed": fired by notifications and the periodic tick, awaited by the reload loop.
actor ReloadSignal {
    private var pending = false
    private var finished = false
    private var waiter: CheckedContinuation<Bool, Never>?

    func fire() {
        if let waiter {
            self.waiter = nil
            waiter.resume(returning: true)
        } else {
            pending = true
        }
    }

    func finish() {
        finished = true
        waiter?.resume(returning: false)
        waiter = nil
    }

    /// True when a change is pending; false once finished.
    func wait() async -> Bool {
        if pending {
            pending = false
            return true
        }
        if finished { return false }
        return await withCheckedContinuation { waiter = $0 }
    }
}
