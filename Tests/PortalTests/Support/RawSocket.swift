import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A raw loopback TCP connection for tests that send bytes in steps; `received` completes with
/// everything the server sent once it closes (or after 10 s, so a test never hangs).
struct RawSocket {
    let channel: any Channel
    let received: EventLoopFuture<String>

    static func connect(port: Int) async throws -> RawSocket {
        let group = MultiThreadedEventLoopGroup.singleton
        let promise = group.next().makePromise(of: String.self)
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Collector(promise: promise)) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        channel.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
        return RawSocket(channel: channel, received: promise.futureResult)
    }

    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let promise: EventLoopPromise<String>
        private let text = NIOLockedValueBox("")

        init(promise: EventLoopPromise<String>) { self.promise = promise }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let chunk = String(buffer: unwrapInboundIn(data))
            text.withLockedValue { $0 += chunk }
        }

        func channelInactive(context: ChannelHandlerContext) { promise.succeed(text.withLockedValue { $0 }) }

        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }
}
