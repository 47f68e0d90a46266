import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore
import NIOHTTPTypes

/// Slow-drip clients (slowloris) on the portal listener: the idle timer restarts on every byte,
/// so a request head trickled a byte a second would hold a connection for ever. This handler
/// gives the head a deadline from the moment the connection may send one (its opening, or the end
/// of the previous response) and the body a deadline from its head. Either one, missed before a
/// response has started, is answered with 408 and `Connection: close`; after that the responder's
/// own writes are dropped (the connection is closing). Missed once a response has started, the
/// connection is closed.
final class RequestDeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let headTimeout: TimeAmount
    let bodyTimeout: TimeAmount
    private var timer: Scheduled<Void>?
    private var answering = false
    /// A 408 went out: whatever the responder still writes is for a connection that is closing.
    private var timedOut = false

    init(headTimeout: TimeAmount, bodyTimeout: TimeAmount) {
        self.headTimeout = headTimeout
        self.bodyTimeout = bodyTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { armHead(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        armHead(context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { cancel() }

    func channelInactive(context: ChannelHandlerContext) {
        cancel()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            cancel()
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            timer = context.eventLoop.scheduleTask(in: bodyTimeout) {
                let (handler, context) = loopBound.value
                handler.bodyTimedOut(context)
            }
        case .end:
            cancel()
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !timedOut else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        switch unwrapOutboundIn(data) {
        case .head: answering = true
        case .end:
            answering = false
            armHead(context)
        case .body: break
        }
        context.write(data, promise: promise)
    }

    private func armHead(_ context: ChannelHandlerContext) {
        cancel()
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: headTimeout) {
            let (handler, context) = loopBound.value
            handler.headTimedOut(context)
        }
    }

    private func headTimedOut(_ context: ChannelHandlerContext) {
        timer = nil
        guard !answering else { return }
        answer408(context, "The request head was not completed in time.\n")
    }

    private func bodyTimedOut(_ context: ChannelHandlerContext) {
        timer = nil
        guard !answering else {
            context.close(promise: nil)
            return
        }
        answer408(context, "The request body was not completed in time.\n")
    }

    private func answer408(_ context: ChannelHandlerContext, _ message: String) {
        timedOut = true
        let body = ByteBuffer(string: message)
        var head = HTTPResponse(status: .requestTimeout)
        head.headerFields[.contentType] = "text/plain; charset=utf-8"
        head.headerFields[.contentLength] = String(body.readableBytes)
        head.headerFields[.connection] = "close"
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
    }

    private func cancel() {
        timer?.cancel()
        timer = nil
    }
}
