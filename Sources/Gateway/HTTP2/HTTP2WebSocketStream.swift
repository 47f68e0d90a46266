import Foundation
import NIOCore
import NIOHTTP1
import NIOHTTP2

/// One HTTP/2 stream carrying a WebSocket (RFC 8441), once the gate admitted its extended CONNECT:
/// the handshake goes to the route's HTTP/1.1 upstream through a `ProxyExchange` as an
/// `Upgrade: websocket` request with the gateway's key, whose `Sec-WebSocket-Accept` the exchange
/// checks. The upstream's `101` is answered `:status 200`, and from then on the stream's DATA frames
/// and the upstream socket carry the WebSocket frames unparsed both ways, under the API's tunnel
/// limits, with back-pressure both ways (the stream's flow-control window shows as its writability,
/// which pauses reading the upstream; a slow upstream pauses reading the stream, so its window is
/// not reopened), metered once when it closes. An upstream that refuses is relayed as it answered.
final class HTTP2WebSocketStream {
    typealias OutboundOut = HTTP2Frame.FramePayload

    /// Bytes a client may send before the upstream switched (RFC 8441 says it waits for the 200);
    /// beyond them the stream is read no further until the tunnel opens.
    static let maximumEarlyBytes = 64 * 1024
    /// How often an open tunnel looks at the gateway's drain at the latest (it closes at shutdown).
    static let drainCheckNanoseconds: UInt64 = 1_000_000_000

    private let context: ChannelHandlerContext
    private let shared: GatewayContext
    private let loop: LoopState
    private let strictTransportSecurity: String?
    private var exchange: ProxyExchange?
    private var limits: TunnelLimits
    private var early: [ByteBuffer] = []
    private var earlyBytes = 0
    private var pausedEarly = false
    /// A small body of a relayed refusal that came with its head, sent with the stream's end.
    private var heldBody: ByteBuffer?
    private var check: Scheduled<Void>?
    /// The client ended its side of the stream (END_STREAM).
    private var clientEnded = false
    /// Our side of the stream is ended (or reset): nothing more is written.
    private(set) var ended = false

    init(context: ChannelHandlerContext, shared: GatewayContext, loop: LoopState, strictTransportSecurity: String?) {
        self.context = context
        self.shared = shared
        self.loop = loop
        self.strictTransportSecurity = strictTransportSecurity
        self.limits = shared.tunnelLimits
    }

    /// Sends the handshake upstream (`head` is the `GET` the stream stands for).
    func start(plan: ForwardPlan, head: HTTPRequestHead, requestID: String, started: UInt64, target: UpstreamTargetConfig, meter: CallMeter, client: HTTP2ClientInfo) {
        let key = WebSocketOverHTTP2.newKey()
        let exchange = ProxyExchange(
            plan: plan, head: WebSocketOverHTTP2.upstreamHead(head, key: key), requestID: requestID, started: started, target: target,
            bodyLimit: plan.route.maxRequestBytes ?? shared.settings.maxRequestBytes, client: self, loop: loop, meter: meter,
            responseTimeout: shared.settings.responseTimeout, connection: .init(clientIP: client.clientIP, secure: client.secure))
        exchange.upgrade = "websocket"
        exchange.expectedWebSocketAccept = WebSocketOverHTTP2.accept(forKey: key)
        self.exchange = exchange
        exchange.start()
        // the handshake has no body: its response deadline runs from here
        if self.exchange === exchange { exchange.requestBodyEnded() }
        exchange.flushUpstream()
    }

    // MARK: From the client's stream

    func clientData(_ buffer: ByteBuffer, endStream: Bool) {
        if endStream { clientEnded = true }
        guard let exchange else { return }
        if exchange.isTunnel {
            if buffer.readableBytes > 0 { exchange.writeIntoTunnel(buffer, now: DispatchTime.now().uptimeNanoseconds) }
            if endStream {
                // the client's END_STREAM is its TCP close: the upstream hears what came before, then the end
                exchange.flushUpstream()
                closeTunnel(reason: "client")
            }
            return
        }
        if endStream {
            // ended before the upstream answered: there is no tunnel to use
            self.exchange = nil
            exchange.abort(status: 499, forwarded: exchange.upstream != nil, rejection: nil)
            return reset(.cancel)
        }
        guard buffer.readableBytes > 0 else { return }
        early.append(buffer)
        earlyBytes += buffer.readableBytes
        if earlyBytes > Self.maximumEarlyBytes && !pausedEarly {
            pausedEarly = true
            context.channel.setOption(.autoRead, value: false).whenComplete { _ in }
        }
    }

    func flushUpstream() { exchange?.flushUpstream() }

    func clientWritabilityChanged(_ writable: Bool) { exchange?.clientWritabilityChanged(writable) }

    /// The stream is gone (the client reset it, or the connection closed): metered, upstream closed.
    func clientGone() {
        check?.cancel()
        ended = true
        guard let exchange else { return }
        self.exchange = nil
        if exchange.isTunnel { loop.metrics.tunnelClosed("client") }
        exchange.abort(status: exchange.responseStarted ? exchange.status : 499, forwarded: exchange.upstream != nil, rejection: nil)
    }

    // MARK: Limits

    private func scheduleCheck() {
        guard let exchange, exchange.isTunnel else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        let wait = min(limits.untilNextCheck(now: now, opened: exchange.tunnelOpenedAt, lastActivity: exchange.tunnelActivity), Self.drainCheckNanoseconds)
        check = context.eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: .nanoseconds(Int64(wait))) { [self] in checkLimits() }
    }

    private func checkLimits() {
        guard let exchange, exchange.isTunnel, !ended else { return }
        if shared.draining.withLockedValue({ $0 }) { return closeTunnel(reason: "shutdown") }
        switch limits.verdict(now: DispatchTime.now().uptimeNanoseconds, opened: exchange.tunnelOpenedAt, lastActivity: exchange.tunnelActivity) {
        case .open: scheduleCheck()
        case .idle: closeTunnel(reason: "idle")
        case .tooLong: closeTunnel(reason: "max_duration")
        }
    }

    /// The gateway or the client ends an open tunnel: metered once, the upstream closed, the stream ended.
    private func closeTunnel(reason: String) {
        guard let exchange else { return }
        self.exchange = nil
        check?.cancel()
        loop.metrics.tunnelClosed(reason)
        exchange.closeTunnel()
        endStream(last: nil)
    }

    // MARK: Writing

    private func write(_ payload: OutboundOut) {
        context.write(NIOAny(payload), promise: nil)
    }

    /// Ends our side with a DATA frame; a client still sending is then told, by RST_STREAM
    /// (NO_ERROR), that nothing more is read (RFC 9113 §8.1).
    private func endStream(last: ByteBuffer?) {
        guard !ended else { return }
        ended = true
        let written = context.eventLoop.makePromise(of: Void.self)
        context.write(NIOAny(OutboundOut.data(.init(data: .byteBuffer(last ?? context.channel.allocator.buffer(capacity: 0)), endStream: true))), promise: written)
        context.flush()
        guard !clientEnded else { return }
        // after the last DATA is out: NIOHTTP2 holds DATA while the connection's read is under
        // way, and a reset sent meanwhile would drop it
        written.futureResult.assumeIsolatedUnsafeUnchecked().whenComplete { [context] _ in
            context.writeAndFlush(NIOAny(OutboundOut.rstStream(.noError)), promise: nil)
        }
    }

    private func reset(_ code: HTTP2ErrorCode) {
        guard !ended else { return }
        ended = true
        check?.cancel()
        context.writeAndFlush(NIOAny(OutboundOut.rstStream(code)), promise: nil)
    }
}

extension HTTP2WebSocketStream: ExchangeClient {
    var allocator: ByteBufferAllocator { context.channel.allocator }

    func exchange(_ exchange: ProxyExchange, receivedInterim head: ByteBuffer) {}

    func exchangeWantsPayloadOnly(_ exchange: ProxyExchange, response: ParsedResponse) -> Bool { true }

    /// The upstream refused the upgrade: its answer goes to the client as it came.
    func exchange(_ exchange: ProxyExchange, receivedHead response: ParsedResponse, bytes: UnsafeRawBufferPointer, body: ByteBuffer?) {
        guard !ended else { return }
        let headers = HTTP2Messages.responseHeaders(
            response, bytes: bytes, added: exchange.plan.responseHeaders, requestID: exchange.requestID, strictTransportSecurity: strictTransportSecurity)
        write(.headers(.init(headers: headers)))
        heldBody = body
    }

    func exchange(_ exchange: ProxyExchange, receivedBody bytes: ByteBuffer) {
        guard !ended else { return }
        if let held = heldBody {
            heldBody = nil
            write(.data(.init(data: .byteBuffer(held))))
        }
        write(.data(.init(data: .byteBuffer(bytes))))
    }

    /// The upstream switched (its accept checked): the stream is answered 200 and becomes the tunnel.
    func exchange(_ exchange: ProxyExchange, switchedProtocols response: ParsedResponse, bytes: UnsafeRawBufferPointer, rest: ByteBuffer) {
        guard !ended else { return }
        limits = shared.tunnelLimits.applying(exchange.plan.route.webSocket)
        write(
            .headers(
                .init(
                    headers: WebSocketOverHTTP2.acceptedHeaders(
                        response, bytes: bytes, added: exchange.plan.responseHeaders, requestID: exchange.requestID,
                        strictTransportSecurity: strictTransportSecurity))))
        if rest.readableBytes > 0 { write(.data(.init(data: .byteBuffer(rest)))) }
        context.flush()
        if !early.isEmpty {
            let now = DispatchTime.now().uptimeNanoseconds
            for part in early { exchange.writeIntoTunnel(part, now: now) }
            early = []
            earlyBytes = 0
            exchange.flushUpstream()
        }
        if pausedEarly {
            pausedEarly = false
            context.channel.setOption(.autoRead, value: true).whenComplete { _ in }
        }
        if clientEnded {
            // the client's side ended while the handshake was under way
            return closeTunnel(reason: "client")
        }
        scheduleCheck()
    }

    /// A relayed refusal is complete.
    func exchangeCompleted(_ exchange: ProxyExchange) {
        guard self.exchange === exchange else { return }
        self.exchange = nil
        let last = heldBody
        heldBody = nil
        endStream(last: last)
    }

    func exchange(_ exchange: ProxyExchange, failedWith answer: LocalResponse) {
        guard self.exchange === exchange, !ended else { return }
        self.exchange = nil
        let headers = HTTP2Messages.localHeaders(answer, requestID: exchange.requestID, strictTransportSecurity: strictTransportSecurity)
        write(.headers(.init(headers: headers)))
        endStream(last: context.channel.allocator.buffer(string: answer.body))
    }

    /// The upstream closed the tunnel (metered already): the stream ends as a TCP close would.
    /// Broken before that, the stream is reset.
    func exchangeBroken(_ exchange: ProxyExchange) {
        guard self.exchange === exchange else { return }
        self.exchange = nil
        check?.cancel()
        if exchange.isTunnel {
            endStream(last: nil)
        } else {
            reset(.internalError)
        }
    }

    func exchangeFlush(_ exchange: ProxyExchange) { context.flush() }

    func exchange(_ exchange: ProxyExchange, clientReading: Bool) {
        context.channel.setOption(.autoRead, value: clientReading).whenComplete { _ in }
    }
}
