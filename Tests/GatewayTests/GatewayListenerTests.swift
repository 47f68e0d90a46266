import Foundation
import Gateway
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import Testing

/// The gateway listener over a real loopback socket.
@Suite struct GatewayListenerTests {
    /// Sends raw HTTP/1.1 bytes and returns everything the server sent until it closed the connection.
    static func exchange(port: Int, _ request: String) async throws -> String {
        let (channel, received) = try await connect(port: port)
        try await channel.writeAndFlush(ByteBuffer(string: request))
        return try await received.get()
    }

    /// A raw connection for tests that send in several steps, and everything the server will have
    /// sent once it closes. Bounded: a server that never closes fails the test after 10 s instead
    /// of hanging it.
    static func connect(port: Int) async throws -> (any Channel, EventLoopFuture<String>) {
        let group = MultiThreadedEventLoopGroup.singleton
        let promise = group.next().makePromise(of: String.self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise)) }
                }
                .connect(host: "127.0.0.1", port: port).get()
        } catch {
            // refused: the collector never saw a connection, so its promise is ours to end
            promise.fail(error)
            throw error
        }
        channel.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
        return (channel, promise.futureResult)
    }

    /// Collects inbound bytes; completes when the connection closes.
    final class ResponseCollector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let promise: EventLoopPromise<String>
        private let text = NIOLockedValueBox("")

        init(promise: EventLoopPromise<String>) { self.promise = promise }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let chunk = String(buffer: unwrapInboundIn(data))
            text.withLockedValue { $0 += chunk }
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.succeed(text.withLockedValue { $0 })
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    @Test func answersHealthReadinessMetricsAnd404() async throws {
        try await GatewayHarness.run(snapshot: nil) { gateway in
            let port = gateway.port
            let health = try await Self.exchange(port: port, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(health.hasPrefix("HTTP/1.1 200"))
            // not ready until the first snapshot is loaded
            let notReady = try await Self.exchange(port: port, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(notReady.hasPrefix("HTTP/1.1 503"))
            gateway.store.install(TestWorld().snapshot(targets: []))
            let ready = try await Self.exchange(port: port, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(ready.hasPrefix("HTTP/1.1 200"))
            #expect(ready.contains("\"status\":\"ready\""))
            let metrics = try await Self.exchange(port: port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(metrics.contains("test_metric 1"))
            let missing = try await Self.exchange(port: port, "GET /echo/v1/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(missing.hasPrefix("HTTP/1.1 404"))
            #expect(missing.contains("application/problem+json"))
        }
    }

    @Test func keepAliveServesSeveralRequestsOnOneConnection() async throws {
        try await GatewayHarness.run(snapshot: nil) { gateway in
            let port = gateway.port
            let pipelined = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            let text = try await Self.exchange(port: port, pipelined)
            #expect(text.components(separatedBy: "HTTP/1.1 200 OK").count - 1 == 2)
        }
    }

    @Test func malformedRequestsGetA400NotACrash() async throws {
        try await GatewayHarness.run(snapshot: nil) { gateway in
            let port = gateway.port
            let garbage = try await Self.exchange(port: port, "THIS IS NOT HTTP\r\n\r\n")
            #expect(garbage.hasPrefix("HTTP/1.1 400"))
            // the listener still serves afterwards
            let health = try await Self.exchange(port: port, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(health.hasPrefix("HTTP/1.1 200"))
        }
    }
}
