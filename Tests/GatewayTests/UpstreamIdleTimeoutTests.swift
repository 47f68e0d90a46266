import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOSSL
import Testing

@testable import Gateway

/// Pooled upstream connections are closed after the upstream idle timeout, never while a call
/// uses them, and a pool forgets the keys (idle lists, breakers, balancers) with nothing left.
@Suite struct UpstreamIdleTimeoutTests {
    static let key = ("X-API-Key", TestWorld.apiKey)
    static let second: UInt64 = 1_000_000_000

    /// What the gateway's pools hold, summed over its event loops.
    struct PoolCounts: Sendable, Equatable {
        var idleLists = 0
        var idleConnections = 0
        var breakers = 0
        var balancers = 0
        var http2Connections = 0
    }

    static func counts(_ gateway: GatewayHarness) async -> PoolCounts {
        let total = NIOLockedValueBox(PoolCounts())
        await gateway.loops.forEachLoop { state in
            total.withLockedValue {
                $0.idleLists += state.pool.idleTargetCount
                $0.idleConnections += state.pool.idleConnectionCount
                $0.breakers += state.pool.breakerCount
                $0.balancers += state.pool.balancerCount
                $0.http2Connections += state.http2Upstreams.connectionCount
            }
        }
        return total.withLockedValue { $0 }
    }

    /// Polls `condition` every 50 ms for at most 10 s (a bound for a loaded machine, not a speed check).
    static func eventually(_ condition: () async -> Bool) async throws -> Bool {
        for _ in 0..<200 {
            if await condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return await condition()
    }

    static func route(_ targets: [UpstreamTargetConfig]) -> Route {
        Route(
            apiID: UUID(), slug: "r", version: "v1", basePath: "/r", state: .published, targets: targets, cors: nil, ipRules: IPAccessRules(),
            methods: [], maxRequestBytes: nil, sunset: nil)
    }

    // MARK: The sweep alone (an embedded loop, the time given)

    @Test func theSweepClosesWhatWaitedPastTheTimeoutAndForgetsKeysWithNothingLeft() throws {
        // setup: keys 1 (abandoned: its API's target changed) and 2 (in use); an idle timeout of 10 s
        let loop = EmbeddedEventLoop()
        let pool = UpstreamPool(eventLoop: loop, connectTimeout: .seconds(1), idleTimeout: .seconds(10))
        func connection(_ port: Int) throws -> (UpstreamConnection, EmbeddedChannel) {
            let channel = EmbeddedChannel(loop: loop)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: port)).wait()
            return (UpstreamConnection(channel: channel, key: UpstreamTargetConfig.loopback(port).key, handler: UpstreamResponseHandler()), channel)
        }
        let abandoned = Self.route([.loopback(1)]), inUse = Self.route([.loopback(2)])
        #expect(pool.pick(abandoned, now: 0) != nil && pool.pick(inUse, now: 0) != nil)
        pool.recordSuccess(.loopback(1))
        pool.recordSuccess(.loopback(2))
        let (stale, staleChannel) = try connection(1)
        let (fresh, freshChannel) = try connection(2)
        let (_, busyChannel) = try connection(2)  // taken by a call: never in the idle list
        pool.release(stale, now: 100 * Self.second)
        pool.release(fresh, now: 105 * Self.second)
        // act: 10 s after the first release
        pool.sweepIdle(now: 110 * Self.second)
        // assert: the stale one is closed and its key forgotten; the fresher and the busy one stay open
        #expect(!staleChannel.isActive)
        #expect(freshChannel.isActive && busyChannel.isActive)
        #expect(pool.idleTargetCount == 1 && pool.idleConnectionCount == 1)
        #expect(pool.breakerCount == 1 && pool.balancerCount == 1)
        #expect(pool.takeIdle(.loopback(1)) == nil)
        // act: the fresh one back, then long quiet
        #expect(pool.takeIdle(.loopback(2)) === fresh)
        pool.release(fresh, now: 120 * Self.second)
        pool.sweepIdle(now: 129 * Self.second)
        #expect(freshChannel.isActive && pool.idleConnectionCount == 1)
        pool.sweepIdle(now: 130 * Self.second)
        // assert: nothing is left of either key
        #expect(!freshChannel.isActive)
        #expect(pool.idleTargetCount == 0 && pool.breakerCount == 0 && pool.balancerCount == 0)
    }

    @Test func aKeyWhoseBreakerHoldsFailuresIsKept() {
        // setup: two failures (below the threshold of 5) on key 1, an ejection on key 2
        let pool = UpstreamPool(eventLoop: EmbeddedEventLoop(), connectTimeout: .seconds(1), idleTimeout: .seconds(10))
        let failing = Self.route([.loopback(1)]), ejected = Self.route([.loopback(2)])
        #expect(pool.pick(failing, now: 0) != nil && pool.pick(ejected, now: 0) != nil)
        for _ in 0..<2 { pool.recordFailure(.loopback(1), now: 0) }
        for _ in 0..<5 { pool.recordFailure(.loopback(2), now: 0) }
        // act: the ejection (10 s) ended 5 s ago
        pool.sweepIdle(now: 15 * Self.second)
        // assert: both kept, with their routes' balancers
        #expect(pool.breakerCount == 2 && pool.balancerCount == 2)
        #expect(pool.pick(ejected, now: 15 * Self.second) != nil)  // the trial call
        pool.recordFailure(.loopback(2), now: 15 * Self.second)  // open again until 25 s
        // act: a whole timeout after the ejection ended, nobody tried again
        pool.sweepIdle(now: 35 * Self.second)
        // assert: the ejected key is forgotten, the failing one kept
        #expect(pool.breakerCount == 1 && pool.balancerCount == 1)
    }

    @Test func aCallThatOutlivesItsForgottenKeyLeavesNothingBehind() {
        // setup: a call picks key 1; the sweep forgets the key while the call is under way
        let pool = UpstreamPool(eventLoop: EmbeddedEventLoop(), connectTimeout: .seconds(1), idleTimeout: .seconds(10))
        #expect(pool.pick(Self.route([.loopback(1)]), now: 0) != nil)
        pool.sweepIdle(now: 20 * Self.second)
        #expect(pool.breakerCount == 0 && pool.balancerCount == 0)
        // act: the call ends well
        pool.recordSuccess(.loopback(1))
        // assert: no breaker is made for it (the sweep has stopped and would never forget it)
        #expect(pool.breakerCount == 0)
    }

    @Test(arguments: [
        (CircuitBreaker.State.closed(consecutiveFailures: 0), UInt64(0), true),
        (.closed(consecutiveFailures: 1), 1_000, false),
        (.open(until: 100), 109, false), (.open(until: 100), 110, true), (.open(until: 100), 50, false),
        (.halfOpen(trialInFlight: true), 1_000, false),
    ])
    func aBreakerIsForgettableOnlyWhenItHoldsNothing(state: CircuitBreaker.State, now: UInt64, forgettable: Bool) {
        var breaker = CircuitBreaker(failureThreshold: 2, openNanoseconds: 100)
        switch state {
        case .closed(let failures): for _ in 0..<failures { breaker.recordFailure(now: 0) }
        case .open: for _ in 0..<2 { breaker.recordFailure(now: 0) }
        case .halfOpen:
            for _ in 0..<2 { breaker.recordFailure(now: 0) }
            _ = breaker.allow(now: 100)
        }
        #expect(breaker.state == state)
        #expect(breaker.isForgettable(now: now, after: 10) == forgettable)
    }

    @Test func anHTTP2ConnectionIsIdleOnlyWithoutStreamsForTheTimeout() {
        let streams = UpstreamHTTP2Streams(now: 0)
        #expect(!streams.isIdle(now: 9, timeout: 10) && streams.isIdle(now: 10, timeout: 10))
        // a stream under way, however long
        streams.opened()
        #expect(!streams.isIdle(now: 1_000, timeout: 10))
        streams.opened()
        streams.closed(now: 1_001)
        #expect(!streams.isIdle(now: 2_000, timeout: 10))
        streams.closed(now: 2_000)
        #expect(!streams.isIdle(now: 2_009, timeout: 10) && streams.isIdle(now: 2_010, timeout: 10))
        // handed out for a stream not yet opened: the clock restarts at that sweep
        streams.handedOut = true
        #expect(!streams.isIdle(now: 3_000, timeout: 10))
        #expect(!streams.isIdle(now: 3_009, timeout: 10) && streams.isIdle(now: 3_010, timeout: 10))
        // a close without an open (a stream NIOHTTP2 reports twice) never goes below zero
        streams.closed(now: 4_000)
        #expect(streams.open == 0)
    }

    // MARK: A real gateway and real upstreams that count their connections

    enum Kind: String, CaseIterable, Sendable {
        case http1, https, h2c, h2TLS
    }

    @Test(arguments: Kind.allCases)
    func anIdleConnectionIsClosedByTheGatewayAndItsKeyForgotten(kind: Kind) async throws {
        // setup: an upstream of the kind, a gateway whose upstream idle timeout is 300 ms
        let ca = try DevelopmentCA.create(commonName: "idle CA")
        let upstream: TestUpstream
        let target: UpstreamTargetConfig
        var tls: UpstreamTLS.Context?
        switch kind {
        case .http1:
            upstream = try await TestUpstream.start()
            target = .loopback(upstream.port)
        case .https:
            upstream = try await TestUpstream.start(tls: try TestUpstream.serverContext(ca, alpn: ["http/1.1"]))
            target = try #require(UpstreamTargetConfig(url: "https://127.0.0.1:\(upstream.port)", weight: 1))
            tls = try UpstreamTLS.context(caBundlePEM: ca.certificatePEM)
        case .h2c:
            upstream = try await TestUpstream.start(http2: true)
            target = HTTP2UpstreamTests.h2Target(upstream.port)
        case .h2TLS:
            upstream = try await TestUpstream.start(tls: try TestUpstream.serverContext(ca, alpn: ["h2"]), http2: true)
            target = HTTP2UpstreamTests.h2Target(upstream.port, tls: true)
            tls = try UpstreamTLS.context(caBundlePEM: ca.certificatePEM, http2: true)
        }
        defer { Task { await upstream.stop() } }
        let world = TestWorld()
        try await GatewayHarness.run(
            snapshot: world.snapshot(targets: [target], upstreamTLS: tls), configure: { $0.upstreamIdleTimeout = .milliseconds(300) }
        ) { gateway in
            // act
            let first = try await gateway.request("GET", "/t/demo/echo/v1/one", headers: [Self.key])
            // assert: the gateway closes the connection it kept, and its pools keep nothing of the key
            #expect(first.status == 200, "\(first.body)")
            #expect(try await Self.eventually { upstream.openConnections == 0 }, "\(kind): \(upstream.openConnections) still open")
            let drained = try await Self.eventually { await Self.counts(gateway) == PoolCounts() }
            let left = await Self.counts(gateway)
            #expect(drained, "\(kind): \(left)")
            // and a later call gets a new connection rather than the closed one
            let second = try await gateway.request("GET", "/t/demo/echo/v1/two", headers: [Self.key])
            #expect(second.status == 200, "\(second.body)")
            #expect(upstream.connections == 2)
        }
    }

    @Test(arguments: [Kind.http1, .h2c])
    func aConnectionWithACallUnderWayIsNotClosed(kind: Kind) async throws {
        // setup: an upstream that answers /slow after 3 s, ten times the upstream idle timeout
        let upstream = try await TestUpstream.start(http2: kind == .h2c)
        defer { Task { await upstream.stop() } }
        let target = kind == .h2c ? HTTP2UpstreamTests.h2Target(upstream.port) : .loopback(upstream.port)
        try await GatewayHarness.run(
            snapshot: TestWorld().snapshot(targets: [target]), configure: { $0.upstreamIdleTimeout = .milliseconds(300) }
        ) { gateway in
            // act
            let slow = try await gateway.request("GET", "/t/demo/echo/v1/slow", headers: [Self.key])
            // assert: answered over the one connection it started on (a close would have been a 502)
            #expect(slow.status == 200, "\(slow.body)")
            #expect(slow.body.contains(#""uri":"/slow""#))
            #expect(upstream.connections == 1)
        }
    }

    @Test func aTargetNoSnapshotNamesAnyMoreLeavesNothingBehind() async throws {
        // setup: the API's target moves from upstream A to upstream B
        let a = try await TestUpstream.start(), b = try await TestUpstream.start()
        defer { Task { await a.stop(); await b.stop() } }
        let world = TestWorld()
        try await GatewayHarness.run(
            snapshot: world.snapshot(targets: [.loopback(a.port)]), configure: { $0.upstreamIdleTimeout = .milliseconds(500) }
        ) { gateway in
            // act
            let before = try await gateway.request("GET", "/t/demo/echo/v1/a", headers: [Self.key])
            gateway.store.install(world.snapshot(targets: [.loopback(b.port)], version: 2))
            let after = try await gateway.request("GET", "/t/demo/echo/v1/b", headers: [Self.key])
            #expect(before.status == 200 && after.status == 200)
            #expect(a.seen.count == 1 && b.seen.count == 1)
            // assert: A's connection is closed by the gateway, and nothing of either key stays once idle
            #expect(try await Self.eventually { a.openConnections == 0 && b.openConnections == 0 })
            let drained = try await Self.eventually { await Self.counts(gateway) == PoolCounts() }
            let left = await Self.counts(gateway)
            #expect(drained, "\(left)")
        }
    }
}
