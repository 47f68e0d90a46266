import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// An upstream on 127.0.0.1 that answers each request head with fixed bytes — for the responses a
/// well-behaved HTTP library will not produce (bodies delimited by closing, broken status lines).
final class RawUpstream: Sendable {
    private let channel: any Channel
    var port: Int { channel.localAddress?.port ?? 0 }

    private init(channel: any Channel) { self.channel = channel }

    /// `closeAfter`: close the connection once the answer is written.
    static func start(answer: String, closeAfter: Bool) async throws -> RawUpstream {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Handler(answer: answer, closeAfter: closeAfter))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return RawUpstream(channel: channel)
    }

    func stop() async { try? await channel.close() }

    private final class Handler: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let answer: String
        let closeAfter: Bool
        private let received = NIOLockedValueBox("")

        init(answer: String, closeAfter: Bool) {
            self.answer = answer
            self.closeAfter = closeAfter
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let text = String(buffer: unwrapInboundIn(data))
            let complete = received.withLockedValue { seen in
                seen += text
                guard seen.contains("\r\n\r\n") else { return false }
                seen = ""
                return true
            }
            guard complete else { return }
            let write = context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: answer)))
            if closeAfter { write.whenComplete { _ in context.close(promise: nil) } }
        }
    }
}
