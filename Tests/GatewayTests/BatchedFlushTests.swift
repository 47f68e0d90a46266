import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOPosix
import Testing

@testable import Gateway

/// HTTP/2 connections flush once per round of their event loop (`LoopFlushBatch`): on real
/// loopback sockets, and end to end with many streams of one client connection answered together.
@Suite struct BatchedFlushTests {
    /// A loopback server that keeps what it reads, until the peer closes.
    final class Sink: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let received: EventLoopPromise<String>
        var text = ""
        init(received: EventLoopPromise<String>) { self.received = received }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { text += String(buffer: unwrapInboundIn(data)) }
        func channelInactive(context: ChannelHandlerContext) { received.succeed(text) }
    }

    /// A connection whose pipeline holds a `BatchedFlushHandler`, to a `Sink` server.
    static func connect() async throws -> (client: any Channel, received: EventLoopFuture<String>, server: any Channel) {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let received = loop.makePromise(of: String.self)
        let server = try await ServerBootstrap(group: loop).childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Sink(received: received)) }
        }.bind(host: "127.0.0.1", port: 0).get()
        let client = try await ClientBootstrap(group: loop).channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(BatchedFlushHandler(batch: LoopFlushBatch(eventLoop: channel.eventLoop)))
            }
        }.connect(host: "127.0.0.1", port: server.localAddress!.port!).get()
        return (client, received.futureResult, server)
    }

    @Test func aFlushIsHeldUntilTheRoundEndsAndTheRoundsWritesLeaveTogether() async throws {
        // setup
        let (client, received, server) = try await Self.connect()
        defer { server.close(promise: nil) }
        // act: two answers written and flushed in one task of the loop
        let (first, second, writtenDuringTheTask) = try await client.eventLoop.submit {
            let first = client.eventLoop.makePromise(of: Void.self)
            let second = client.eventLoop.makePromise(of: Void.self)
            let done = NIOLoopBoundBox(0, eventLoop: client.eventLoop)
            first.futureResult.whenSuccess { done.value += 1 }
            second.futureResult.whenSuccess { done.value += 1 }
            client.write(ByteBuffer(string: "one,"), promise: first)
            client.flush()
            client.write(ByteBuffer(string: "two"), promise: second)
            client.flush()
            // a flush that reached the socket would have completed the (tiny) writes by now
            return (first.futureResult, second.futureResult, done.value)
        }.get()
        try await first.get()
        try await second.get()
        try await client.close()
        // assert
        #expect(writtenDuringTheTask == 0)
        #expect(try await received.get() == "one,two")
    }

    /// Counts the flushes the batch hands it.
    final class CountingFlush: HeldFlush {
        var flushes = 0
        func flushHeld() { flushes += 1 }
    }

    @Test func heldConnectionsAreFlushedOnceTheRoundsTaskRuns() throws {
        // HTTP/1.1 clients and upstream connections join the batch as `HeldFlush`es of their own
        let loop = EmbeddedEventLoop()
        let batch = LoopFlushBatch(eventLoop: loop)
        let client = CountingFlush(), upstream = CountingFlush()
        batch.hold(upstream)
        batch.hold(client)
        batch.hold(upstream)
        // nothing is flushed while the round's I/O goes on
        #expect(client.flushes == 0 && upstream.flushes == 0)
        loop.run()
        #expect(client.flushes == 1 && upstream.flushes == 2)
        // a later round schedules its own task
        batch.hold(client)
        loop.run()
        #expect(client.flushes == 2)
    }

    @Test func aCloseSendsWhatWasWrittenAndFlushedBeforeIt() async throws {
        // setup
        let (client, received, server) = try await Self.connect()
        defer { server.close(promise: nil) }
        // act: as a GOAWAY before the connection closes (HTTP2ConnectionGuard's drain)
        let written = try await client.eventLoop.submit {
            let written = client.eventLoop.makePromise(of: Void.self)
            client.writeAndFlush(ByteBuffer(string: "goodbye"), promise: written)
            client.close(promise: nil)
            return written.futureResult
        }.get()
        // assert
        await #expect(throws: Never.self) { try await written.get() }
        #expect(try await received.get() == "goodbye")
    }

    @Test func manyStreamsOfOneConnectionAnsweredTogetherEachGetTheirOwnAnswer() async throws {
        // setup
        let upstream = try await TestUpstream.start()
        defer { Task { await upstream.stop() } }
        let world = TestWorld()
        let paths = (0..<64).map { "/t/demo/echo/v1/stream/\($0)" }
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [.loopback(upstream.port)]), configure: { $0.eventLoopThreads = 1 }) { gateway in
            // act: 64 streams at once, so that several upstream answers come in the same round
            let responses = try await HTTP2TestClient.concurrentRequests(port: gateway.port, paths: paths, headers: [("x-api-key", TestWorld.apiKey)])
            let again = try await HTTP2TestClient.concurrentRequests(port: gateway.port, paths: Array(paths.prefix(8)), headers: [("x-api-key", TestWorld.apiKey)])
            // assert
            for (index, response) in responses.enumerated() {
                #expect(response.status == 200 && response.body.contains(#""uri":"/stream/\#(index)""#), "\(index): \(response.body)")
            }
            #expect(Set(responses.compactMap { $0.header("x-request-id") }).count == paths.count)
            #expect(again.allSatisfy { $0.status == 200 })
            try await HTTP2UpstreamTests.waitForUsage(gateway, count: paths.count + 8)
            #expect(gateway.usage.recent.filter { $0.isBillable && $0.status == 200 }.count == paths.count + 8)
        }
    }
}
