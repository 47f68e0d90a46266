import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A log collector on 127.0.0.1 for the HTTP sink tests: it keeps every POST's body and headers
/// and answers with the status set in `status` (200 unless a test makes it fail).
final class TestCollector: Sendable {
    struct Received: Sendable {
        let headers: [(String, String)]
        let body: String
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }

    private let channel: any Channel
    private let state = NIOLockedValueBox<(received: [Received], status: Int)>(([], 200))
    var port: Int { channel.localAddress?.port ?? 0 }
    var url: URL { URL(string: "http://127.0.0.1:\(port)/ingest")! }
    var received: [Received] { state.withLockedValue { $0.received } }
    /// Every record received, one JSON line each.
    var lines: [String] { received.flatMap { $0.body.split(separator: "\n").map(String.init) } }

    func answer(_ status: Int) { state.withLockedValue { $0.status = status } }

    private init(channel: any Channel) { self.channel = channel }

    static func start() async throws -> TestCollector {
        let box = NIOLockedValueBox<TestCollector?>(nil)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(
                        Handler { received in
                            box.withLockedValue { $0 }?.state.withLockedValue { state in
                                state.received.append(received)
                                return state.status
                            } ?? 500
                        })
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let collector = TestCollector(channel: channel)
        box.withLockedValue { $0 = collector }
        return collector
    }

    func stop() async { try? await channel.close() }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let record: @Sendable (Received) -> Int
        var head: HTTPRequestHead?
        var body = ByteBuffer()

        init(record: @escaping @Sendable (Received) -> Int) { self.record = record }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body.clear()
            case .body(var part):
                body.writeBuffer(&part)
            case .end:
                guard let head else { return }
                let status = record(Received(headers: head.headers.map { ($0.name, $0.value) }, body: String(buffer: body)))
                var headers = HTTPHeaders([("Content-Length", "0")])
                if !head.isKeepAlive { headers.add(name: "Connection", value: "close") }
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: headers))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}
