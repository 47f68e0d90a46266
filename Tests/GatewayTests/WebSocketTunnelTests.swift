import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

@testable import Gateway

/// A loopback client connection read in steps: the test writes, then waits for text to arrive.
private final class SteppedClient: Sendable {
    private struct Seen {
        var text = ""
        var closed = false
    }

    private let channel: any Channel
    private let seen: NIOLockedValueBox<Seen>
    var received: String { seen.withLockedValue { $0.text } }
    var closedByPeer: Bool { seen.withLockedValue { $0.closed } }

    private init(channel: any Channel, seen: NIOLockedValueBox<Seen>) {
        self.channel = channel
        self.seen = seen
    }

    static func connect(port: Int) async throws -> SteppedClient {
        let seen = NIOLockedValueBox(Seen())
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Collector(seen: seen)) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return SteppedClient(channel: channel, seen: seen)
    }

    func write(_ text: String) async throws { try await channel.writeAndFlush(ByteBuffer(string: text)).get() }

    /// Waits until `text` has arrived (true), or the peer closed or 5 s passed without it (false).
    func read(until text: String) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            let (arrived, closed) = seen.withLockedValue { ($0.text.contains(text), $0.closed) }
            if arrived { return true }
            if closed { return false }
            try await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    /// Waits until the gateway closes the connection (true), at most `seconds`.
    func waitForClose(seconds: Int64) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while !closedByPeer && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        return closedByPeer
    }

    func close() async { try? await channel.close().get() }

    private final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let seen: NIOLockedValueBox<Seen>

        init(seen: NIOLockedValueBox<Seen>) { self.seen = seen }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let chunk = String(buffer: unwrapInboundIn(data))
            seen.withLockedValue { $0.text += chunk }
        }

        func channelInactive(context: ChannelHandlerContext) { seen.withLockedValue { $0.closed = true } }

        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }
}

@Suite struct WebSocketTunnelTests {
    static let switching =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    static let handshake =
        "GET /t/demo/echo/v1/chat HTTP/1.1\r\nHost: gateway.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"

    // MARK: Pure parts

    @Test(arguments: [
        ("GET", "HTTP/1.1", "Upgrade", "websocket", true),
        ("GET", "HTTP/1.1", "keep-alive, Upgrade", "WebSocket", true),
        ("GET", "HTTP/1.1", "close", "websocket", false),
        ("GET", "HTTP/1.1", "Upgrade", "h2c", false),
        ("POST", "HTTP/1.1", "Upgrade", "websocket", false),
        ("GET", "HTTP/1.0", "Upgrade", "websocket", false),
    ])
    func aHandshakeIsRecognisedOnlyWhenItAsksForWebSocket(method: String, version: String, connection: String, upgrade: String, expected: Bool) {
        var head = HTTPRequestHead(
            version: version == "HTTP/1.0" ? .http1_0 : .http1_1, method: HTTPMethod(rawValue: method), uri: "/chat")
        head.headers.add(name: "Connection", value: connection)
        head.headers.add(name: "Upgrade", value: upgrade)
        #expect((WebSocketHandshake.requestedUpgrade(head) != nil) == expected)
    }

    @Test func aTunnelClosesWhenIdleOrTooOldAndNotBefore() {
        let limits = TunnelLimits(idle: 100, maxDuration: 1_000)
        #expect(limits.verdict(now: 150, opened: 100, lastActivity: 120) == .open)
        #expect(limits.verdict(now: 220, opened: 100, lastActivity: 120) == .idle)
        #expect(limits.verdict(now: 1_100, opened: 100, lastActivity: 1_090) == .tooLong)
        #expect(TunnelLimits(idle: 100, maxDuration: nil).verdict(now: 10_000, opened: 0, lastActivity: 9_950) == .open)
    }

    // MARK: Through the gateway

    @Test func anAcceptedHandshakeBecomesATunnelMeteredOnceWhenItCloses() async throws {
        let raw = try await RawUpstream.start(answer: Self.switching, closeAfter: false, echoAfterAnswer: true)
        try await GatewayProxyTests.withWorld({ world, _ in world.snapshot(targets: [.loopback(raw.port)]) }) { _, _, gateway in
            let client = try await SteppedClient.connect(port: gateway.port)
            try await client.write(Self.handshake + "X-API-Key: \(TestWorld.apiKey)\r\n\r\n")
            #expect(try await client.read(until: "\r\n\r\n"))
            let head = client.received.lowercased()
            #expect(head.hasPrefix("http/1.1 101"))
            #expect(head.contains("upgrade: websocket\r\n"))
            #expect(head.contains("connection: upgrade\r\n"))
            #expect(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"))
            #expect(head.contains("x-request-id: "))
            #expect(head.contains("ratelimit-policy: "))
            // the upstream heard the upgrade, not the credential
            let upstreamHead = try #require(raw.receivedHeads.first).lowercased()
            #expect(upstreamHead.contains("upgrade: websocket\r\n"))
            #expect(upstreamHead.contains("connection: upgrade\r\n"))
            #expect(upstreamHead.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq==\r\n"))
            #expect(!upstreamHead.contains("x-api-key"))
            // frames cross unparsed both ways, several times on one connection
            for message in ["first-frame", "second-frame"] {
                try await client.write(message)
                #expect(try await client.read(until: message))
            }
            // nothing is metered while the tunnel is open
            #expect(gateway.usage.count == 0)
            await client.close()
            try await GatewayIntegrationWait.until { gateway.usage.count == 1 }
            let event = try #require(gateway.usage.recent.last)
            #expect(event.status == 101)
            #expect(event.forwarded)
            #expect(event.isBillable)
            #expect(event.bytesIn == Int64("first-frame".utf8.count + "second-frame".utf8.count))
            #expect(event.bytesOut == event.bytesIn)
            let closed = gateway.metrics.counters(label: "tollgate_gateway_websocket_tunnels_closed_total", dimensions: [("reason", "client")])
            #expect(closed.map(\.totalValue).reduce(0, +) == 1)
        }
        await raw.stop()
    }

    @Test func aHandshakeToAnH2APIGoesToItsTargetOverHTTP1AndBecomesATunnel() async throws {
        // setup: an API whose upstream protocol is h2 (its calls are streams of an h2c connection)
        let raw = try await RawUpstream.start(answer: Self.switching, closeAfter: false, echoAfterAnswer: true)
        let h2 = UpstreamTargetConfig(host: "127.0.0.1", port: raw.port, pathPrefix: "", weight: 1, tls: false, h2: true)
        try await GatewayProxyTests.withWorld({ world, _ in world.snapshot(targets: [h2]) }) { _, _, gateway in
            // act
            let client = try await SteppedClient.connect(port: gateway.port)
            try await client.write(Self.handshake + "X-API-Key: \(TestWorld.apiKey)\r\n\r\n")
            // assert
            #expect(try await client.read(until: "\r\n\r\n"))
            #expect(client.received.lowercased().hasPrefix("http/1.1 101"), "\(client.received)")
            // the upstream heard an HTTP/1.1 handshake on a connection of its own, not the HTTP/2 preface
            let upstreamHead = try #require(raw.receivedHeads.first).lowercased()
            #expect(upstreamHead.hasPrefix("get /chat http/1.1\r\n"), "\(upstreamHead)")
            #expect(upstreamHead.contains("upgrade: websocket\r\n") && upstreamHead.contains("sec-websocket-key: "))
            try await client.write("over-http1")
            #expect(try await client.read(until: "over-http1"))
            await client.close()
            try await GatewayIntegrationWait.until { gateway.usage.count == 1 }
            #expect(gateway.usage.recent.last?.status == 101)
        }
        await raw.stop()
    }

    @Test func aHandshakeToAnH2APIWhoseUpstreamSpeaksOnlyH2cIsA502SayingWhy() async throws {
        // setup: NIO's HTTP/2 server, prior knowledge only
        let upstream = try await TestUpstream.start(http2: true)
        let h2 = UpstreamTargetConfig(host: "127.0.0.1", port: upstream.port, pathPrefix: "", weight: 1, tls: false, h2: true)
        try await GatewayProxyTests.withWorld({ world, _ in world.snapshot(targets: [h2]) }) { _, _, gateway in
            // act
            let response = try #require(try await gateway.send(Self.handshake + "X-API-Key: \(TestWorld.apiKey)\r\nConnection: close\r\n\r\n").first)
            let plain = try await gateway.request("GET", "/t/demo/echo/v1/hello", headers: [("X-API-Key", TestWorld.apiKey)])
            // assert
            #expect(response.status == 502)
            #expect(response.body.contains("reach its target over HTTP/1.1"), "\(response.body)")
            // the API's other calls still go over h2
            #expect(plain.status == 200 && plain.body.contains(#""uri":"/hello""#), "\(plain.body)")
            try await GatewayIntegrationWait.until { gateway.usage.count == 2 }
            #expect(gateway.usage.recent.first?.status == 502 && gateway.usage.recent.first?.isBillable == false)
        }
        await upstream.stop()
    }

    @Test func aHandshakeWithoutACredentialIsRefusedBeforeTheUpstreamHearsOfIt() async throws {
        let raw = try await RawUpstream.start(answer: Self.switching, closeAfter: false, echoAfterAnswer: true)
        try await GatewayProxyTests.withWorld({ world, _ in world.snapshot(targets: [.loopback(raw.port)]) }) { _, _, gateway in
            let response = try #require(try await gateway.send(Self.handshake + "Connection: close\r\n\r\n").first)
            #expect(response.status == 401)
            #expect(raw.receivedHeads.isEmpty)
        }
        await raw.stop()
    }

    @Test func anUpstreamThatRefusesTheUpgradeIsAnsweredAsItAnswered() async throws {
        let refusal = "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 7\r\nContent-Type: text/plain\r\n\r\nupgrade"
        let raw = try await RawUpstream.start(answer: refusal, closeAfter: false)
        try await GatewayProxyTests.withWorld({ world, _ in world.snapshot(targets: [.loopback(raw.port)]) }) { _, _, gateway in
            let response = try #require(try await gateway.send(Self.handshake + "X-API-Key: \(TestWorld.apiKey)\r\nConnection: close\r\n\r\n").first)
            #expect(response.status == 426)
            #expect(response.body == "upgrade")
            try await GatewayIntegrationWait.until { gateway.usage.count == 1 }
            #expect(gateway.usage.recent.last?.status == 426)
        }
        await raw.stop()
    }

    @Test func anIdleTunnelIsClosedByTheGatewayAndMetered() async throws {
        let raw = try await RawUpstream.start(answer: Self.switching, closeAfter: false, echoAfterAnswer: true)
        try await GatewayProxyTests.withWorld(
            { world, _ in world.snapshot(targets: [.loopback(raw.port)]) },
            configure: {
                $0.webSocketIdleTimeout = .seconds(1)
                $0.idleTimeout = .seconds(2)  // the sweep runs every 500 ms; a loaded machine still sends the handshake in time
            }
        ) { _, _, gateway in
            let client = try await SteppedClient.connect(port: gateway.port)
            try await client.write(Self.handshake + "X-API-Key: \(TestWorld.apiKey)\r\n\r\n")
            #expect(try await client.read(until: "\r\n\r\n"))
            try await client.write("ping")
            #expect(try await client.read(until: "ping"))
            #expect(try await client.waitForClose(seconds: 20))  // a correctness bound: the parallel suite can hold an event loop for seconds
            try await GatewayIntegrationWait.until { gateway.usage.count == 1 }
            #expect(gateway.usage.recent.last?.status == 101)
            #expect(gateway.usage.recent.last?.bytesIn == 4)
            let idle = gateway.metrics.counters(label: "tollgate_gateway_websocket_tunnels_closed_total", dimensions: [("reason", "idle")])
            #expect(idle.map(\.totalValue).reduce(0, +) == 1)
        }
        await raw.stop()
    }

    @Test func aTunnelIsClosedAtItsMaximumDurationEvenWhileBusy() async throws {
        let raw = try await RawUpstream.start(answer: Self.switching, closeAfter: false, echoAfterAnswer: true)
        try await GatewayProxyTests.withWorld(
            { world, _ in world.snapshot(targets: [.loopback(raw.port)]) },
            configure: {
                $0.webSocketMaxDuration = .seconds(1)
                $0.idleTimeout = .seconds(2)
            }
        ) { _, _, gateway in
            let client = try await SteppedClient.connect(port: gateway.port)
            // the tunnel opens after this write, so it cannot have lasted its maximum before `started` + 1 s
            let started = ContinuousClock.now
            try await client.write(Self.handshake + "X-API-Key: \(TestWorld.apiKey)\r\n\r\n")
            #expect(try await client.read(until: "\r\n\r\n"))
            // busy: a byte every 50 ms each way, so the idle limit never applies
            var sent = 0
            while ContinuousClock.now - started < .seconds(20) {
                try? await client.write("x")
                sent += 1
                // a slow echo on a loaded machine is not the end: only the gateway's close is
                if !(try await client.read(until: String(repeating: "x", count: sent))), client.closedByPeer { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(client.closedByPeer)
            let lasted = ContinuousClock.now - started
            #expect(lasted >= .milliseconds(900) && lasted < .seconds(20))
            try await GatewayIntegrationWait.until { gateway.usage.count == 1 }
            let closed = gateway.metrics.counters(label: "tollgate_gateway_websocket_tunnels_closed_total", dimensions: [("reason", "max_duration")])
            #expect(closed.map(\.totalValue).reduce(0, +) == 1)
        }
        await raw.stop()
    }

    // MARK: An API's own limits (`websocket` policy)

    @Test func anAPIsOwnIdleLimitClosesItsTunnelWhereTheInstallationsWouldNot() async throws {
        let raw = try await RawUpstream.start(answer: Self.switching, closeAfter: false, echoAfterAnswer: true)
        try await GatewayProxyTests.withWorld(
            { world, _ in world.snapshot(targets: [.loopback(raw.port)], webSocket: WebSocketConfig(idleSeconds: 1)) },
            configure: {
                $0.webSocketIdleTimeout = .seconds(3600)  // the installation's: far beyond the test
                $0.idleTimeout = .seconds(2)
            }
        ) { _, _, gateway in
            let client = try await SteppedClient.connect(port: gateway.port)
            try await client.write(Self.handshake + "X-API-Key: \(TestWorld.apiKey)\r\n\r\n")
            #expect(try await client.read(until: "\r\n\r\n"))
            try await client.write("ping")
            #expect(try await client.read(until: "ping"))
            #expect(try await client.waitForClose(seconds: 20))  // a correctness bound, not a speed one
            try await GatewayIntegrationWait.until { gateway.usage.count == 1 }
            #expect(gateway.usage.recent.last?.status == 101)
            #expect(gateway.usage.recent.last?.bytesIn == 4)
            let idle = gateway.metrics.counters(label: "tollgate_gateway_websocket_tunnels_closed_total", dimensions: [("reason", "idle")])
            #expect(idle.map(\.totalValue).reduce(0, +) == 1)
        }
        await raw.stop()
    }

    @Test func anAPIsLongerIdleLimitKeepsAQuietTunnelOpenPastTheInstallations() async throws {
        let raw = try await RawUpstream.start(answer: Self.switching, closeAfter: false, echoAfterAnswer: true)
        try await GatewayProxyTests.withWorld(
            { world, _ in world.snapshot(targets: [.loopback(raw.port)], webSocket: WebSocketConfig(idleSeconds: 3600)) },
            configure: {
                $0.webSocketIdleTimeout = .seconds(1)
                $0.idleTimeout = .seconds(2)
            }
        ) { _, _, gateway in
            let client = try await SteppedClient.connect(port: gateway.port)
            try await client.write(Self.handshake + "X-API-Key: \(TestWorld.apiKey)\r\n\r\n")
            #expect(try await client.read(until: "\r\n\r\n"))
            // quiet for three installation idle timeouts (and more than one sweep): still open, still echoing
            try await Task.sleep(for: .seconds(3))
            #expect(!client.closedByPeer)
            try await client.write("still-here")
            #expect(try await client.read(until: "still-here"))
            await client.close()
            try await GatewayIntegrationWait.until { gateway.usage.count == 1 }
            let idle = gateway.metrics.counters(label: "tollgate_gateway_websocket_tunnels_closed_total", dimensions: [("reason", "idle")])
            #expect(idle.map(\.totalValue).reduce(0, +) == 0)
        }
        await raw.stop()
    }

    @Test func anAPIsOwnMaximumDurationClosesABusyTunnel() async throws {
        let raw = try await RawUpstream.start(answer: Self.switching, closeAfter: false, echoAfterAnswer: true)
        try await GatewayProxyTests.withWorld(
            { world, _ in world.snapshot(targets: [.loopback(raw.port)], webSocket: WebSocketConfig(idleSeconds: 60, maxSeconds: 1)) },
            configure: {
                $0.webSocketMaxDuration = nil  // the installation has no maximum
                $0.idleTimeout = .seconds(2)
            }
        ) { _, _, gateway in
            let client = try await SteppedClient.connect(port: gateway.port)
            let started = ContinuousClock.now
            try await client.write(Self.handshake + "X-API-Key: \(TestWorld.apiKey)\r\n\r\n")
            #expect(try await client.read(until: "\r\n\r\n"))
            var sent = 0
            while ContinuousClock.now - started < .seconds(20) {
                try? await client.write("x")
                sent += 1
                if !(try await client.read(until: String(repeating: "x", count: sent))), client.closedByPeer { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(client.closedByPeer)
            #expect(ContinuousClock.now - started >= .milliseconds(900))
            try await GatewayIntegrationWait.until { gateway.usage.count == 1 }
            #expect(gateway.usage.recent.last?.status == 101)
            let closed = gateway.metrics.counters(label: "tollgate_gateway_websocket_tunnels_closed_total", dimensions: [("reason", "max_duration")])
            #expect(closed.map(\.totalValue).reduce(0, +) == 1)
        }
        await raw.stop()
    }

    @Test func theUpstreamClosingTheTunnelClosesTheClient() async throws {
        let raw = try await RawUpstream.start(answer: Self.switching, closeAfter: true)
        try await GatewayProxyTests.withWorld({ world, _ in world.snapshot(targets: [.loopback(raw.port)]) }) { _, _, gateway in
            let client = try await SteppedClient.connect(port: gateway.port)
            try await client.write(Self.handshake + "X-API-Key: \(TestWorld.apiKey)\r\n\r\n")
            #expect(try await client.read(until: "\r\n\r\n"))
            #expect(try await client.waitForClose(seconds: 20))  // a correctness bound: the parallel suite can hold an event loop for seconds
            try await GatewayIntegrationWait.until { gateway.usage.count == 1 }
            #expect(gateway.usage.recent.last?.status == 101)
            let closed = gateway.metrics.counters(label: "tollgate_gateway_websocket_tunnels_closed_total", dimensions: [("reason", "upstream")])
            #expect(closed.map(\.totalValue).reduce(0, +) == 1)
        }
        await raw.stop()
    }
}
