import Billing
import Crypto
import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOSSL
import Testing

@testable import Gateway

/// Upstream connections are pooled per target *and* TLS identity: two APIs — here API A with a
/// client certificate for upstream mTLS and API B without one — that name the same
/// `https://host:port` never share a connection. The upstream is a real TLS server on loopback
/// that asks for (but does not require) a client certificate and records, per request, the
/// connection it came on and the certificate that connection's handshake presented.
@Suite struct UpstreamConnectionIdentityTests {
    static let key = ("X-API-Key", TestWorld.apiKey)

    /// The upstream's context: client certificates from `ca` accepted but optional.
    static func serverContext(_ ca: DevelopmentCA, alpn: [String]) throws -> NIOSSLContext {
        try TestUpstream.serverContext(ca, alpn: alpn, optionalClientCertificates: true)
    }

    /// One tenant, one app subscribed to API A (`/a/v1`, with client certificate `identity`) and
    /// API B (`/b/v1`, the same CA bundle and no client certificate), both routed to `target`.
    static func snapshot(_ world: TestWorld, target: UpstreamTargetConfig, ca: DevelopmentCA, identity: UpstreamTLS.ClientIdentity?) throws
        -> GatewaySnapshot
    {
        let http2 = target.speaksHTTP2
        let apiA = UUID(), apiB = UUID()
        let routes = [
            Route(
                apiID: apiA, slug: "a", version: "v1", basePath: "/a/v1", state: .published, targets: [target], cors: nil, ipRules: IPAccessRules(),
                methods: [], maxRequestBytes: nil, sunset: nil, upstreamTLS: try UpstreamTLS.context(caBundlePEM: ca.certificatePEM, http2: http2, client: identity)),
            Route(
                apiID: apiB, slug: "b", version: "v1", basePath: "/b/v1", state: .published, targets: [target], cors: nil, ipRules: IPAccessRules(),
                methods: [], maxRequestBytes: nil, sunset: nil, upstreamTLS: try UpstreamTLS.context(caBundlePEM: ca.certificatePEM, http2: http2)),
        ]
        let grants = [apiA, apiB].map { api in
            (api, SubscriptionGrant(subscriptionID: UUID(), planID: world.planID, ratePerSecond: 1000, burst: 1000, monthlyQuota: nil))
        }
        let app = AppGrant(id: world.appID, teamID: world.teamID, clientID: "tgc_demo", subscriptions: Dictionary(uniqueKeysWithValues: grants))
        let tenant = TenantConfig(
            id: world.tenantID, slug: "demo", customHost: nil, issuer: TestWorld.issuer, routes: routes,
            appsByKeyHash: [Data(SHA256.hash(data: Data(TestWorld.apiKey.utf8))): APIKeyGrant(appID: world.appID, expiresAt: nil)],
            apps: [world.appID: app], signingKeys: [:], revokedTokenIDs: [])
        return GatewaySnapshot(version: 1, loadedAt: Date(), tenants: [tenant], baseDomain: "localhost")
    }

    /// Runs interleaved calls to A and B (`call` makes one, given its path) through a one-loop
    /// gateway — one pool, so A's idle connection is there when B's call is made — and checks
    /// what the upstream saw: A's calls only on connections that presented A's certificate, B's
    /// only on connections that presented none, never a connection carrying both.
    static func check(
        target: (Int) -> UpstreamTargetConfig, alpn: [String], http2Upstream: Bool,
        call: @escaping @Sendable (GatewayHarness, String) async throws -> Int
    ) async throws {
        // setup
        let ca = try DevelopmentCA.create(commonName: "pool identity CA")
        let client = try ca.issue(dnsNames: ["gateway-a.example.com"], client: true)
        let identity = UpstreamTLS.ClientIdentity(certificatePEM: client.certificatePEM, privateKeyPEM: Array(client.privateKeyPEM.utf8))
        let clientDER = try NIOSSLCertificate.fromPEMBytes(Array(client.certificatePEM.utf8)).first?.toDERBytes()
        let upstream = try await TestUpstream.start(tls: try serverContext(ca, alpn: alpn), http2: http2Upstream)
        let snapshot = try Self.snapshot(TestWorld(), target: target(upstream.port), ca: ca, identity: identity)
        // the two routes' targets are the same address under different pool keys
        let targets = try #require(snapshot.tenantsBySlug["demo"]?.routes.map { $0.targets[0] })
        #expect(targets.count == 2 && targets[0].address == targets[1].address && targets[0].key != targets[1].key)
        try await GatewayHarness.run(snapshot: snapshot, configure: { $0.eventLoopThreads = 1 }) { gateway in
            // act
            var statuses: [Int] = []
            for index in 0..<6 { statuses.append(try await call(gateway, index.isMultiple(of: 2) ? "/t/demo/a/v1/call\(index)" : "/t/demo/b/v1/call\(index)")) }
            // assert
            #expect(statuses == [200, 200, 200, 200, 200, 200])
        }
        await upstream.stop()
        let seen = upstream.seen
        #expect(seen.count == 6)
        let byA = seen.filter { $0.uri.hasPrefix("/call") && Int($0.uri.dropFirst(5)).map { $0.isMultiple(of: 2) } == true }
        let byB = seen.filter { $0.uri.hasPrefix("/call") && Int($0.uri.dropFirst(5)).map { !$0.isMultiple(of: 2) } == true }
        #expect(byA.count == 3 && byB.count == 3)
        #expect(clientDER != nil && byA.allSatisfy { $0.clientCertificate == clientDER }, "A's calls went out with A's certificate")
        #expect(byB.allSatisfy { $0.clientCertificate == nil }, "B's calls must never ride A's authenticated connection")
        #expect(Set(byA.map(\.connection)).isDisjoint(with: byB.map(\.connection)))
        // and each identity still reuses its own connection (sequential calls, one loop)
        #expect(Set(byA.map(\.connection)).count == 1 && Set(byB.map(\.connection)).count == 1)
        #expect(upstream.connections == 2)
    }

    @Test func anHTTP1UpstreamNeverSeesOneAPIsCallOnAnotherAPIsClientCertificateConnection() async throws {
        try await Self.check(target: { UpstreamTargetConfig(host: "localhost", port: $0, pathPrefix: "", weight: 1, tls: true) }, alpn: ["http/1.1"], http2Upstream: false) {
            gateway, path in
            try await gateway.request("GET", path, headers: [Self.key]).status
        }
    }

    @Test func anH2UpstreamsMultiplexedConnectionIsNotSharedAcrossTLSIdentities() async throws {
        try await Self.check(
            target: { UpstreamTargetConfig(host: "localhost", port: $0, pathPrefix: "", weight: 1, tls: true, h2: true) }, alpn: ["h2"], http2Upstream: true
        ) { gateway, path in
            try await gateway.request("GET", path, headers: [Self.key]).status
        }
    }

    @Test func aGRPCSUpstreamsConnectionIsNotSharedAcrossTLSIdentities() async throws {
        // relayed HTTP/2 streams (the gRPC path), from an HTTP/2 client
        try await Self.check(
            target: { UpstreamTargetConfig(host: "localhost", port: $0, pathPrefix: "", weight: 1, tls: true, http2: true) }, alpn: ["h2"], http2Upstream: true
        ) { gateway, path in
            try await HTTP2TestClient.request(port: gateway.port, method: .POST, path: path, headers: [("x-api-key", TestWorld.apiKey)], body: ["x"]).status
        }
    }

    @Test func oneAPIsFailedHandshakesOpenItsOwnCircuitNotTheOtherAPIsOnTheSameHost() async throws {
        // setup: A trusts another CA (every handshake fails), B the upstream's; one loop, one pool
        let ca = try DevelopmentCA.create(commonName: "breaker CA")
        let stranger = try DevelopmentCA.create(commonName: "not the upstream's CA")
        let upstream = try await TestUpstream.start(tls: try Self.serverContext(ca, alpn: ["http/1.1"]))
        defer { Task { await upstream.stop() } }
        let world = TestWorld()
        let target = UpstreamTargetConfig(host: "localhost", port: upstream.port, pathPrefix: "", weight: 1, tls: true)
        var snapshot = try Self.snapshot(world, target: target, ca: ca, identity: nil)
        let tenant = try #require(snapshot.tenantsBySlug["demo"])
        let routes = tenant.routes.map { route in
            route.slug != "a" ? route : Route(
                apiID: route.apiID, slug: "a", version: "v1", basePath: "/a/v1", state: .published, targets: [target], cors: nil, ipRules: IPAccessRules(),
                methods: [], maxRequestBytes: nil, sunset: nil, upstreamTLS: try? UpstreamTLS.context(caBundlePEM: stranger.certificatePEM))
        }
        snapshot = GatewaySnapshot(
            version: 1, loadedAt: Date(), tenants: [TenantConfig(
                id: tenant.id, slug: tenant.slug, customHost: nil, issuer: tenant.issuer, routes: routes, appsByKeyHash: tenant.appsByKeyHash,
                apps: tenant.apps, signingKeys: [:], revokedTokenIDs: [])], baseDomain: "localhost")
        try await GatewayHarness.run(snapshot: snapshot, configure: { $0.eventLoopThreads = 1 }) { gateway in
            // act: A fails until its circuit opens; then B calls the same host
            var statusesOfA: [Int] = []
            for _ in 0..<7 { statusesOfA.append(try await gateway.request("GET", "/t/demo/a/v1/x", headers: [Self.key]).status) }
            let b = try await gateway.request("GET", "/t/demo/b/v1/y", headers: [Self.key])
            // assert: five failed handshakes (502) open A's circuit (503; on a machine so starved
            // that its 10 s passed, the half-open trial fails and opens it again), and B is not
            // refused for A's failures
            #expect(statusesOfA.prefix(5).allSatisfy { $0 == 502 } && statusesOfA.suffix(2).contains(503), "\(statusesOfA)")
            #expect(b.status == 200, "\(b.body)")
            #expect(upstream.seen.map(\.uri) == ["/y"])
        }
    }

    @Test func poolKeysNameTheTLSIdentityAndPlaintextKeysStayTheAddress() throws {
        let ca = try DevelopmentCA.create(commonName: "keys CA")
        let plain = try #require(UpstreamTargetConfig(url: "http://127.0.0.1:8080", weight: 1))
        let secure = try #require(UpstreamTargetConfig(url: "https://api.example.com", weight: 1))
        let system = try UpstreamTLS.context(caBundlePEM: nil)
        let bundle = try UpstreamTLS.context(caBundlePEM: ca.certificatePEM)
        // equal settings, equal identity (and the same context); different settings, different keys
        #expect(try UpstreamTLS.context(caBundlePEM: ca.certificatePEM).identity == bundle.identity)
        #expect(try UpstreamTLS.context(caBundlePEM: ca.certificatePEM, http2: true).identity != bundle.identity)
        #expect(system.identity != bundle.identity && bundle.identity.count == 32)
        #expect(plain.trusting(bundle.identity) == plain && plain.key == "127.0.0.1:8080" && plain.address == plain.key)
        let routed = secure.trusting(bundle.identity)
        #expect(routed.key == "https://api.example.com:443#\(bundle.identity)" && routed.address == "https://api.example.com:443")
        #expect(routed.speaking(.h2).key == "h2+https://api.example.com:443#\(bundle.identity)")
        // a route stamps its TLS targets with its settings' identity, or one no connection opens under
        let route = Route(
            apiID: UUID(), slug: "r", version: "v1", basePath: "/r", state: .published, targets: [secure, plain], cors: nil, ipRules: IPAccessRules(), methods: [],
            maxRequestBytes: nil, sunset: nil, upstreamTLS: system)
        #expect(route.targets.map(\.key) == ["https://api.example.com:443#\(system.identity)", "127.0.0.1:8080"])
        let unusable = Route(
            apiID: UUID(), slug: "r", version: "v1", basePath: "/r", state: .published, targets: [secure], cors: nil, ipRules: IPAccessRules(), methods: [],
            maxRequestBytes: nil, sunset: nil, upstreamTLS: nil)
        #expect(unusable.targets[0].key == "https://api.example.com:443#unusable")
    }
}

/// Idle lists of keys no route names any more (a target dropped, TLS settings changed) do not
/// pile up: past the bound, a new key prunes closed connections and empty lists.
@Suite struct UpstreamPoolIdleBoundTests {
    @Test func aNewKeyPastTheBoundPrunesListsWhoseConnectionsClosed() throws {
        // setup: a pool of at most two keys; key 1's connection has since been closed by its upstream
        let loop = EmbeddedEventLoop()
        let pool = UpstreamPool(eventLoop: loop, connectTimeout: .seconds(1), maxIdleTargets: 2)
        func connection(_ port: Int) throws -> (UpstreamConnection, EmbeddedChannel) {
            let channel = EmbeddedChannel(loop: loop)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: port)).wait()
            return (UpstreamConnection(channel: channel, key: UpstreamTargetConfig.loopback(port).key, handler: UpstreamResponseHandler()), channel)
        }
        let (first, firstChannel) = try connection(1)
        let (second, _) = try connection(2)
        pool.release(first)
        pool.release(second)
        try firstChannel.close().wait()
        #expect(pool.idleTargetCount == 2)
        // act: a third key arrives
        let (third, _) = try connection(3)
        pool.release(third)
        // assert: the closed one's list is gone, the open ones are kept and handed out
        #expect(pool.idleTargetCount == 2)
        #expect(pool.takeIdle(.loopback(2)) === second)
        #expect(pool.takeIdle(.loopback(3)) === third)
        #expect(pool.takeIdle(.loopback(1)) == nil)
    }
}
