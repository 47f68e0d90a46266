import NIOCore
import NIOHTTP2

/// An HTTP/2 upstream's trailers, passed up a stream's pipeline to the exchange just before the
/// bytes that end the response body.
struct UpstreamTrailers {
    let fields: [(String, String)]
}

/// Sits in an `h2` target's stream pipeline, in front of the `UpstreamResponseHandler` an
/// HTTP/1.1 connection has: executes `UpstreamStreamTranslator` — the exchange's request bytes
/// out as frames, the upstream's frames in as response bytes. A reset stream, or frames that make
/// no response, close the stream: the exchange sees a closed upstream (502, or a broken response).
final class UpstreamStreamCodec: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = HTTP2Frame.FramePayload

    private var translator: UpstreamStreamTranslator

    init(tls: Bool) { translator = UpstreamStreamTranslator(tls: tls) }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        do {
            try translator.request(unwrapOutboundIn(data)) { frame in context.write(wrapOutboundOut(frame), promise: nil) }
            promise?.succeed()
        } catch {
            promise?.fail(error)
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if case .rstStream = frame {
            // the stream ends without its response: the exchange sees the upstream close
            return context.close(promise: nil)
        }
        do {
            try translator.response(
                frame, allocator: context.channel.allocator,
                trailers: { fields in context.fireUserInboundEventTriggered(UpstreamTrailers(fields: fields)) },
                emit: { bytes in context.fireChannelRead(wrapInboundOut(bytes)) })
        } catch {
            context.close(promise: nil)
        }
    }
}
