import NIOCore
import Testing

@testable import Gateway

/// An HTTP/2 client connection's idleness and drain follow its streams (`HTTP2ConnectionGuard`, told
/// by NIOHTTP2's stream delegate): real HTTP/2 client, real upstream on loopback. `/slow` answers
/// after 3 s.
@Suite struct HTTP2ConnectionGuardTests {
    static let key = ("x-api-key", TestWorld.apiKey)

    @Test func aConnectionWithAStreamUnderWayOutlivesTheIdleTimeout() async throws {
        // setup: an idle timeout shorter than the answer takes
        let upstream = try await TestUpstream.start()
        defer { Task { await upstream.stop() } }
        let world = TestWorld()
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [.loopback(upstream.port)]), configure: { $0.idleTimeout = .seconds(1) }) { gateway in
            // act
            let slow = try await HTTP2TestClient.request(port: gateway.port, path: "/t/demo/echo/v1/slow", headers: [Self.key])
            // assert: the stream kept the connection open (before, the sweep closed it after 1 s)
            #expect(slow.status == 200 && slow.body.contains(#""uri":"/slow""#), "\(slow)")
        }
    }

    @Test func aDrainAnswersTheStreamsUnderWayBeforeItCloses() async throws {
        // setup
        let upstream = try await TestUpstream.start()
        defer { Task { await upstream.stop() } }
        let world = TestWorld()
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [.loopback(upstream.port)])) { gateway in
            async let slow = HTTP2TestClient.request(port: gateway.port, path: "/t/demo/echo/v1/slow", headers: [Self.key])
            try await GatewayIntegrationWait.until { upstream.seen.count == 1 }
            // act: graceful shutdown while the stream waits for its answer
            await gateway.beginShutdown()
            // assert: GOAWAY, then the answer, then the close (before, the connection closed at once)
            let response = try await slow
            #expect(response.status == 200 && response.body.contains(#""uri":"/slow""#), "\(response)")
        }
    }
}
