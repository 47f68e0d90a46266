import Billing
import Foundation
import Gateway
import Hummingbird
import HummingbirdTesting
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import Testing

@testable import Portal

/// Incremental reloads against the real database: a change in one tenant reloads that tenant's
/// part only and reaches the gateway; a change whose notification was lost is repaired by the
/// periodic full load.
@Suite struct SnapshotReloadIntegrationTests {
    /// The reloads a gateway did, in order.
    final class Reloads: Sendable {
        private let seen = NIOLockedValueBox<[SnapshotReloader.Reload]>([])
        func record(_ reload: SnapshotReloader.Reload) { seen.withLockedValue { $0.append(reload) } }
        var all: [SnapshotReloader.Reload] { seen.withLockedValue { $0 } }
        var fullCount: Int { all.filter { $0.kind == .full && $0.succeeded }.count }
    }

    struct Live: Sendable {
        let port: Int
        let store: SnapshotStore
        let reloads: Reloads
    }

    /// One gateway (reloader + listener) on the test database, its reloads observed.
    static func withGateway(_ portal: TestPortal, fullReloadInterval: Duration, _ body: @Sendable (Live) async throws -> Void) async throws {
        let logger = Logger(label: "snapshot-reload-test")
        let bound = AsyncStream<Int>.makeStream()
        let store = SnapshotStore()
        let reloads = Reloads()
        let reloader = SnapshotReloader(
            client: portal.database.client, store: store, baseDomain: "localhost", publicURL: portal.services.config.publicURL, logger: logger,
            debounce: .milliseconds(20), fullReloadInterval: fullReloadInterval, onReload: { reloads.record($0) })
        let server = GatewayServer(
            configuration: .init(host: "127.0.0.1", port: 0), store: store, quotas: QuotaTracker(), usage: InMemoryUsageSink(), logger: logger,
            metricsText: { "" }, onBound: { bound.continuation.yield($0) })
        let group = ServiceGroup(services: [reloader, server], logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var port = 0
            for await bound in bound.stream {
                port = bound
                break
            }
            // the first load, then the one the listener asks for once it listens (it may have
            // missed changes before): after both, every change arrives by notification
            try await GatewayIntegrationTests.eventually(seconds: 20) { reloads.fullCount >= 2 }
            do { try await body(Live(port: port, store: store, reloads: reloads)) } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    static func newKey(_ client: some TestClientProtocol, _ w: SubscriptionTests.Setup) async throws -> (secret: String, id: String) {
        let created = try APITests.json(
            try await APITests.call(client, .post, "/t/acme/api/v1/apps/\(w.appID)/api-keys", token: w.world.developer, body: #"{"name":"reload"}"#))
        return (created["secret"] as? String ?? "", (created["credential"] as? [String: Any])?["id"] as? String ?? "")
    }

    @Test func aChangeInOneTenantReloadsThatTenantOnly() async throws {
        let upstream = try await WebhookReceiver.start()
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup: acme with a subscribed app, and another tenant
                let w = try await GatewayIntegrationTests.world(portal, client, upstream: "http://127.0.0.1:\(upstream.port)")
                let acme = try await Fixtures.tenantID(portal, "acme")
                let beta = try await Fixtures.tenant(portal.database, slug: "beta").id
                try await Self.withGateway(portal, fullReloadInterval: .seconds(3600)) { live in
                    let betaBefore = try #require(live.store.snapshot.tenantsBySlug["beta"])
                    let fullBefore = live.reloads.fullCount
                    // act: a new key for acme's app
                    let key = try await Self.newKey(client, w.setup)
                    #expect(key.secret.hasPrefix("tgk_"))
                    try await GatewayIntegrationTests.eventually {
                        try await GatewayIntegrationTests.call(live.port, "/t/acme/echo/v1/x", headers: [("X-API-Key", key.secret)]).status == 200
                    }
                    // assert: acme's part was reloaded, beta's was not looked at
                    let reloads = live.reloads.all
                    #expect(reloads.contains(SnapshotReloader.Reload(kind: .tenant, tenant: acme, succeeded: true)))
                    #expect(!reloads.contains { $0.tenant == beta })
                    if live.reloads.fullCount == fullBefore {
                        // (a full load, which only a burst from parallel suites could cause, would rebuild it)
                        #expect(live.store.snapshot.tenantsBySlug["beta"] === betaBefore)
                    }
                    // act + assert: revoking the key reaches the gateway the same way
                    let revoked = try await APITests.call(client, .delete, "/t/acme/api/v1/apps/\(w.setup.appID)/credentials/\(key.id)", token: w.setup.world.developer)
                    #expect(revoked.status == .noContent)
                    try await GatewayIntegrationTests.eventually {
                        try await GatewayIntegrationTests.call(live.port, "/t/acme/echo/v1/x", headers: [("X-API-Key", key.secret)]).status == 401
                    }
                    #expect(live.reloads.all.filter { $0.kind == .tenant && $0.tenant == acme }.count >= 2)
                    #expect(!live.reloads.all.contains { $0.tenant == beta })
                }
            }
        }
        await upstream.stop()
    }

    @Test func thePeriodicFullLoadRepairsAMissedNotification() async throws {
        let upstream = try await WebhookReceiver.start()
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup: credential changes no longer notify (this test's schema only), as if the
                // notification had been lost
                let w = try await GatewayIntegrationTests.world(portal, client, upstream: "http://127.0.0.1:\(upstream.port)")
                let acme = try await Fixtures.tenantID(portal, "acme")
                try await portal.database.client.query("ALTER TABLE app_credentials DISABLE TRIGGER notify_config", logger: TestDatabase.logger)
                try await Self.withGateway(portal, fullReloadInterval: .seconds(1)) { live in
                    let tenantReloadsBefore = live.reloads.all.filter { $0.kind == .tenant && $0.tenant == acme }.count
                    let fullBefore = live.reloads.fullCount
                    // act
                    let key = try await Self.newKey(client, w.setup)
                    // assert: refused until a periodic load reads it, then served
                    try await GatewayIntegrationTests.eventually(seconds: 15) {
                        try await GatewayIntegrationTests.call(live.port, "/t/acme/echo/v1/x", headers: [("X-API-Key", key.secret)]).status == 200
                    }
                    #expect(live.reloads.fullCount > fullBefore)
                    #expect(live.reloads.all.filter { $0.kind == .tenant && $0.tenant == acme }.count == tenantReloadsBefore)
                }
            }
        }
        await upstream.stop()
    }
}
