import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// An upstream on 127.0.0.1 that answers each request head with fixed bytes — for the responses a
/// well-behaved HTTP library will not produce (bodies delimited by closing, broken status lines).
final class RawUpstream: Sendable {
    private let channel: any Channel
    private let heads: NIOLockedValueBox<[String]>
    var port: Int { channel.localAddress?.port ?? 0 }
    /// The request heads received, in order.
    var receivedHeads: [String] { heads.withLockedValue { $0 } }

    private init(channel: any Channel, heads: NIOLockedValueBox<[String]>) {
        self.channel = channel
        self.heads = heads
    }

    /// `closeAfter`: close the connection once the answer is written. `echoAfterAnswer`: after the
    /// first answer, every byte received is sent back (a switched protocol the test does not parse).
    static func start(answer: String, closeAfter: Bool, echoAfterAnswer: Bool = false) async throws -> RawUpstream {
        let heads = NIOLockedValueBox<[String]>([])
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        Handler(answer: answer, closeAfter: closeAfter, echoAfterAnswer: echoAfterAnswer, heads: heads))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return RawUpstream(channel: channel, heads: heads)
    }

    func stop() async { try? await channel.close() }

    private final class Handler: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let answer: String
        let closeAfter: Bool
        let echoAfterAnswer: Bool
        let heads: NIOLockedValueBox<[String]>
        private let received = NIOLockedValueBox("")
        private let switched = NIOLockedValueBox(false)

        init(answer: String, closeAfter: Bool, echoAfterAnswer: Bool, heads: NIOLockedValueBox<[String]>) {
            self.answer = answer
            self.closeAfter = closeAfter
            self.echoAfterAnswer = echoAfterAnswer
            self.heads = heads
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            if switched.withLockedValue({ $0 }) {
                context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
                return
            }
            let text = String(buffer: buffer)
            let head: String? = received.withLockedValue { seen in
                seen += text
                guard let end = seen.range(of: "\r\n\r\n") else { return nil }
                let head = String(seen[..<end.upperBound])
                seen = ""
                return head
            }
            guard let head else { return }
            heads.withLockedValue { $0.append(head) }
            if echoAfterAnswer { switched.withLockedValue { $0 = true } }
            let write = context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: answer)))
            if closeAfter { write.whenComplete { _ in context.close(promise: nil) } }
        }
    }
}
