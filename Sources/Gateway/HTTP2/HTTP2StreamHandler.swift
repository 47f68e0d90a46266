import Billing
import Foundation
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// What an HTTP/2 connection's streams share: the client, as the connection knows it.
struct HTTP2ClientInfo: Sendable {
    var clientIP: String
    var clientAddress: [UInt8]?
    var secure: Bool
}

/// One HTTP/2 stream: its request is decided by the same `RequestGate` as an HTTP/1.1 request and
/// either answered here or proxied through a `ProxyExchange` to the route's (HTTP/1.1) upstream,
/// with the same headers, limits and metering. DATA frames carry the body both ways; a body of
/// unknown length reaches the upstream chunked.
final class HTTP2StreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let shared: GatewayContext
    private let loop: LoopState
    private let meter: CallMeter
    private let client: HTTP2ClientInfo
    /// The connection's gate, made once for all its streams (as an HTTP/1 connection's is).
    private let gate: RequestGate
    private var context: ChannelHandlerContext?
    private var exchange: ProxyExchange?
    /// The stream relayed to an HTTP/2 (gRPC) upstream, instead of an exchange.
    private var call: HTTP2UpstreamCall?
    /// A JSON request to a gRPC API with a descriptor set, translated (instead of relayed).
    private var translated: GRPCTranscodedCall?
    /// The stream is an RFC 8441 WebSocket (extended CONNECT), and once admitted, its tunnel.
    private var opensWebSocket = false
    private var webSocket: HTTP2WebSocketStream?
    private var head: HTTPRequestHead?
    /// The request's header block as it came (relayed calls forward its fields).
    private var block = HPACKHeaders()
    /// The request is a gRPC call: the gateway's own answers are gRPC statuses.
    private var grpc = false
    private var requestID = ""
    private var started: UInt64 = 0
    private var requestEnded = false
    /// The stream's answer is complete (or being written): nothing more is sent.
    private var answered = false
    /// A small body that came with the response head, sent with the stream's end.
    private var heldBody: ByteBuffer?
    private var bodyBytes: Int64 = 0
    /// The request body must end `requestBodyTimeout` after the headers, as on HTTP/1.1: a stream
    /// that never ends its body would otherwise hold its exchange (and a stream slot) for good.
    private var bodyDeadline: Scheduled<Void>?

    init(shared: GatewayContext, loop: LoopState, client: HTTP2ClientInfo, gate: RequestGate) {
        self.shared = shared
        self.loop = loop
        self.client = client
        self.gate = gate
        self.meter = CallMeter(shared: shared, loop: loop)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .headers(let headers):
            if head == nil {
                received(headers.headers, endStream: headers.endStream, context: context)
            } else if let webSocket {
                if headers.endStream { webSocket.clientData(context.channel.allocator.buffer(capacity: 0), endStream: true) }
            } else if headers.endStream {
                // trailers: the body ends; an upstream of a body the gateway chunks gets the fields
                // that may pass in its last chunk (a body sent with its content-length has no place for them)
                if let call { call.send(context.channel.allocator.buffer(capacity: 0), endStream: true) }
                if let exchange, exchange.chunksRequestBody {
                    let fields = headers.headers.map { (name: $0.name, value: $0.value) }
                    exchange.requestTrailers = TrailerSection.section(fields, allocator: context.channel.allocator)
                }
                bodyEnded()
            }
        case .data(let data):
            guard case .byteBuffer(let buffer) = data.data else { return }
            if let webSocket { return webSocket.clientData(buffer, endStream: data.endStream) }
            readBody(buffer, endStream: data.endStream, context: context)
            if data.endStream { bodyEnded() }
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        exchange?.flushUpstream()
        webSocket?.flushUpstream()
        call?.flush()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        bodyDeadline?.cancel()
        if let exchange {
            // The client reset the stream or the connection went away.
            self.exchange = nil
            exchange.abort(status: exchange.responseStarted ? exchange.status : 499, forwarded: exchange.upstream != nil, rejection: nil)
        }
        call?.cancel()
        webSocket?.clientGone()
        webSocket = nil
        if let translated {
            self.translated = nil
            translated.cancel()
        }
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        exchange?.clientWritabilityChanged(context.channel.isWritable)
        webSocket?.clientWritabilityChanged(context.channel.isWritable)
        call?.clientWritabilityChanged(context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: Request

    private func received(_ block: HPACKHeaders, endStream: Bool, context: ChannelHandlerContext) {
        started = DispatchTime.now().uptimeNanoseconds
        requestEnded = endStream
        self.block = block
        let parsed = HTTP2Messages.request(block)
        if case .success(let request) = parsed { opensWebSocket = request.webSocket }
        // a WebSocket stream has no body to end: its DATA frames are the tunnel's
        if !endStream && !opensWebSocket {
            bodyDeadline = context.eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: shared.settings.requestBodyTimeout) { [self] in
                bodyTimedOut()
            }
        }
        grpc = GRPCStatus.isGRPC(block.first(name: "content-type"))
        let head: HTTPRequestHead
        switch parsed {
        case .success(let request):
            head = request.head
        case .failure(.connectNotSupported):
            self.head = HTTPRequestHead(version: HTTP2Messages.version, method: .CONNECT, uri: "/")
            requestID = loop.newID().lowercasedText
            return answer(
                .problem(.methodNotAllowed, "Method not allowed", "The gateway does not relay CONNECT.", rejection: nil), context: context)
        case .failure(.malformed(let reason)):
            self.head = HTTPRequestHead(version: HTTP2Messages.version, method: .GET, uri: "/")
            requestID = loop.newID().lowercasedText
            return answer(.problem(.badRequest, "Malformed request", reason, rejection: nil), context: context)
        }
        self.head = head
        requestID = head.headers.first(name: "x-request-id").flatMap { $0.utf8.count <= 200 ? $0 : nil } ?? loop.newID().lowercasedText
        let uri = head.uri
        let path = uri.utf8.firstIndex(of: UInt8(ascii: "?")).map { uri[..<$0] } ?? Substring(uri)
        if let infrastructure = shared.infrastructureResponse(path: path) { return answer(infrastructure, context: context) }
        decide(head, mayWait: true, context: context)
    }

    /// Decides the request. A refusal that may not stand once a reload lands (a token signed by a
    /// key the snapshot lacks) waits for the reload, within the store's refresh window, once.
    private func decide(_ head: HTTPRequestHead, mayWait: Bool, context: ChannelHandlerContext) {
        let snapshot = shared.store.snapshot
        switch gate.decide(head: head, clientAddress: client.clientAddress, snapshot: snapshot, now: Date(), monotonicNanos: started) {
        case .respond(let response):
            if mayWait && response.decideAgainAfterReload {
                return awaitReload(head, refusal: response, version: snapshot.version, until: shared.store.keyRefreshWindowEnd())
            }
            answer(response, context: context)
        case .forward(let plan):
            forward(plan, head: head, context: context)
        }
    }

    private func awaitReload(_ head: HTTPRequestHead, refusal: LocalResponse, version: Int, until: UInt64) {
        context?.eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: .milliseconds(20)) { [self] in
            guard let context, !answered else { return }
            if shared.store.version != version { return decide(head, mayWait: false, context: context) }
            if DispatchTime.now().uptimeNanoseconds >= until { return answer(refusal, context: context) }
            awaitReload(head, refusal: refusal, version: version, until: until)
        }
    }

    private func forward(_ plan: ForwardPlan, head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard let target = loop.pool.pick(plan.route, now: started) else {
            loop.metrics.upstreamError("circuit_open")
            return answer(plan.noHealthyTarget(quotas: shared.quotas), context: context)
        }
        if opensWebSocket {
            guard !target.http2 else {
                return answer(plan.refusal(LocalResponse.problem(
                    .notImplemented, "Not a WebSocket API", "\(plan.route.slug) is a gRPC API: it takes no WebSockets.", rejection: nil), quotas: shared.quotas), context: context)
            }
            // the stream's answer and its DATA frames are the tunnel's from here
            answered = true
            let webSocket = HTTP2WebSocketStream(context: context, shared: shared, loop: loop, strictTransportSecurity: strictTransportSecurity)
            self.webSocket = webSocket
            return webSocket.start(plan: plan, head: head, requestID: requestID, started: started, target: target, meter: meter, client: client)
        }
        if target.http2 {
            // a JSON request to an API with a descriptor set is translated; gRPC requests pass through
            switch plan.gRPCForwarding(httpMethod: head.method.rawValue, clientSpeaksGRPC: grpc, quotas: shared.quotas) {
            case .answer(let response):
                return answer(response, context: context)
            case .relay:
                return relay(plan, head: head, target: target)
            case .translate(let resolved, let transcoding):
                let translated = GRPCTranscodedCall(
                    plan: plan, call: resolved, transcoding: transcoding, head: head, requestID: requestID, started: started, target: target, loop: loop,
                    meter: meter, quotas: shared.quotas, bodyLimit: plan.route.maxRequestBytes ?? shared.settings.maxRequestBytes,
                    responseTimeout: shared.settings.responseTimeout, clientIP: client.clientIP, secure: client.secure, writer: self)
                self.translated = translated
                translated.begin()
                if requestEnded { translated.endRequest() }
                return
            }
        }
        let exchange = ProxyExchange(
            plan: plan, head: head, requestID: requestID, started: started, target: target,
            bodyLimit: plan.route.maxRequestBytes ?? shared.settings.maxRequestBytes, client: self, loop: loop, meter: meter,
            responseTimeout: shared.settings.responseTimeout, connection: .init(clientIP: client.clientIP, secure: client.secure))
        // A body of unknown length (no content-length) is sent to the HTTP/1.1 upstream in chunks.
        exchange.chunksRequestBody = !requestEnded && !head.headers.contains(name: "content-length")
        self.exchange = exchange
        exchange.start()
        if requestEnded { exchange.requestBodyEnded() }
        exchange.flushUpstream()
    }

    /// Relays the stream to a stream of the HTTP/2 upstream.
    private func relay(_ plan: ForwardPlan, head: HTTPRequestHead, target: UpstreamTargetConfig) {
        let headers = HTTP2Messages.upstreamRequestHeaders(
            block, method: head.method.rawValue, target: target, path: plan.upstreamURI, requestID: requestID, clientIP: client.clientIP,
            secure: client.secure, identityLines: [plan.tenant.identityHeaderLine, plan.app.identityHeaderLines, plan.grant.identityHeaderLines])
        let call = HTTP2UpstreamCall(
            plan: plan, method: head.method, requestID: requestID, started: started, target: target, client: self, loop: loop, meter: meter)
        self.call = call
        call.start(
            headers: headers, endStream: requestEnded, grpcTimeout: block.first(name: "grpc-timeout").flatMap(GRPCStatus.timeout),
            responseTimeout: shared.settings.responseTimeout)
    }

    private func readBody(_ buffer: ByteBuffer, endStream: Bool, context: ChannelHandlerContext) {
        if let translated {
            // over the body limit the call answers 413 itself
            _ = buffer.withUnsafeReadableBytes { translated.receive($0) }
            return
        }
        if let call {
            bodyBytes += Int64(buffer.readableBytes)
            let limit = call.plan.route.maxRequestBytes ?? shared.settings.maxRequestBytes
            guard bodyBytes <= Int64(limit) else {
                call.cancel()
                self.call = nil
                return writeLocal(
                    .problem(.payloadTooLarge, "Request too large", "The body is larger than \(limit) bytes.", rejection: .tooLarge), context: context)
            }
            return call.send(buffer, endStream: endStream)
        }
        guard let exchange else { return }  // answered already: the rest of the body is dropped
        bodyBytes += Int64(buffer.readableBytes)
        exchange.bytesIn = bodyBytes
        if bodyBytes > Int64(exchange.bodyLimit) {
            self.exchange = nil
            loop.pool.recordSuccess(exchange.target)
            exchange.abort(status: HTTPResponseStatus.payloadTooLarge.code, forwarded: false, rejection: .tooLarge)
            return writeLocal(
                .problem(.payloadTooLarge, "Request too large", "The body is larger than \(exchange.bodyLimit) bytes.", rejection: .tooLarge), context: context)
        }
        exchange.writeBody(buffer)
    }

    private func bodyEnded() {
        guard !requestEnded else { return }
        requestEnded = true
        bodyDeadline?.cancel()
        exchange?.requestBodyEnded()
        translated?.endRequest()
    }

    /// The body did not end in time: the call ends as a 408 (DEADLINE_EXCEEDED for gRPC), metered,
    /// and the stream is reset.
    private func bodyTimedOut() {
        guard !requestEnded, let context else { return }
        if let exchange {
            self.exchange = nil
            let started = exchange.responseStarted
            exchange.abort(status: started ? exchange.status : HTTPResponseStatus.requestTimeout.code, forwarded: started, rejection: nil)
            if started {
                // the response is under way: the stream can only be reset
                answered = true
                context.writeAndFlush(wrapOutboundOut(.rstStream(.cancel)), promise: nil)
                return
            }
        }
        if let call {
            self.call = nil
            call.cancel()
        }
        if let translated {
            self.translated = nil
            translated.cancel(status: HTTPResponseStatus.requestTimeout.code)
            if translated.answerStarted {
                // a bidirectional call's answer is under way: the stream can only be reset
                answered = true
                context.writeAndFlush(wrapOutboundOut(.rstStream(.cancel)), promise: nil)
                return
            }
        }
        writeLocal(.problem(.requestTimeout, "Request timeout", "The request body was not completed in time.", rejection: nil), context: context)
    }

    // MARK: Answers

    /// The stream's caller as the access log names it.
    var logCaller: CallMeter.Caller {
        CallMeter.Caller(requestID: requestID, clientIP: client.clientIP, target: head?.uri ?? "/", protocolName: grpc ? .grpc : .http2)
    }

    private var strictTransportSecurity: String? { client.secure ? shared.settings.tls?.strictTransportSecurity : nil }

    /// A local answer, metered and written at once (HTTP/2 may answer before the body ends).
    private func answer(_ response: LocalResponse, context: ChannelHandlerContext) {
        meter.recordLocal(response, method: head?.method ?? .GET, started: started, caller: logCaller)
        writeLocal(response, context: context)
    }

    private func writeLocal(_ response: LocalResponse, context: ChannelHandlerContext) {
        guard !answered else { return }
        answered = true
        if grpc {
            let headers = GRPCStatus.trailersOnly(
                response, detail: Self.detail(of: response), requestID: requestID, strictTransportSecurity: strictTransportSecurity)
            context.write(wrapOutboundOut(.headers(.init(headers: headers, endStream: true))), promise: nil)
            return finishStream(context: context)
        }
        let headers = HTTP2Messages.localHeaders(response, requestID: requestID, strictTransportSecurity: strictTransportSecurity)
        let body = head?.method == .HEAD ? "" : response.body
        if body.isEmpty {
            context.write(wrapOutboundOut(.headers(.init(headers: headers, endStream: true))), promise: nil)
        } else {
            context.write(wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
            let data = context.channel.allocator.buffer(string: body)
            let written = context.eventLoop.makePromise(of: Void.self)
            context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(data), endStream: true))), promise: written)
            return finishStream(context: context, after: written.futureResult)
        }
        finishStream(context: context)
    }

    /// The answer is written: flushed, and a stream whose request is still arriving is reset
    /// (RFC 9113 §8.1 allows a complete response before the request's end).
    /// `lastData`: the answer's last DATA frame being written. NIOHTTP2 holds a stream's DATA
    /// while the connection's read is under way (an answer given from `channelRead`), but a reset
    /// goes out at once and drops them, so the reset waits until that frame is out.
    private func finishStream(context: ChannelHandlerContext, after lastData: EventLoopFuture<Void>? = nil) {
        context.flush()
        guard !requestEnded else { return }
        guard let lastData else { return context.writeAndFlush(wrapOutboundOut(.rstStream(.noError)), promise: nil) }
        lastData.assumeIsolatedUnsafeUnchecked().whenComplete { [self] _ in
            context.writeAndFlush(wrapOutboundOut(.rstStream(.noError)), promise: nil)
        }
    }
}

extension HTTP2StreamHandler: GRPCRelayClient {
    /// The problem's `detail` (or `title`) for a gRPC message.
    static func detail(of response: LocalResponse) -> String {
        guard let object = try? JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any] else { return response.status.reasonPhrase }
        return (object["detail"] as? String) ?? (object["title"] as? String) ?? response.status.reasonPhrase
    }

    // MARK: Relay (called by HTTP2UpstreamCall)

    func relay(headers: HPACKHeaders, endStream: Bool) {
        guard let context else { return }
        var headers = headers
        // HSTS on the response head (not on trailers)
        if let hsts = strictTransportSecurity, headers.first(name: ":status") != nil { headers.add(name: "strict-transport-security", value: hsts) }
        context.write(wrapOutboundOut(.headers(.init(headers: headers, endStream: endStream))), promise: nil)
        if endStream {
            answered = true
            finishStream(context: context)
        }
    }

    func relay(data: ByteBuffer, endStream: Bool) {
        guard let context else { return }
        context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(data), endStream: endStream))), promise: nil)
        if endStream {
            answered = true
            finishStream(context: context)
        }
    }

    func relayFlush() { context?.flush() }

    func relayClientReading(_ on: Bool) {
        context?.channel.setOption(.autoRead, value: on).whenComplete { _ in }
        if on { context?.read() }
    }

    /// The relayed call failed before its response: a gRPC status (or, for a non-gRPC request, a problem).
    func relayFailed(grpcStatus: Int, message: String, httpStatus: HTTPResponseStatus, headers: [(String, String)]) {
        guard let context else { return }
        var response = LocalResponse.problem(httpStatus, httpStatus == .gatewayTimeout ? "Upstream timeout" : "Bad gateway", message, rejection: .upstreamUnavailable)
        response.headers += headers
        writeLocal(response, context: context)
    }

    func relayEnded(_ call: HTTP2UpstreamCall) {
        if self.call === call { self.call = nil }
    }
}

extension HTTP2StreamHandler: ExchangeClient {
    var allocator: ByteBufferAllocator { context?.channel.allocator ?? ByteBufferAllocator() }

    func exchange(_ exchange: ProxyExchange, receivedInterim head: ByteBuffer) {
        // an interim answer (103 Early Hints, 100 Continue) is a HEADERS frame before the final one
        guard let context, !answered, let block = HTTP2Messages.interimHeaders(head) else { return }
        context.write(wrapOutboundOut(.headers(.init(headers: block))), promise: nil)
    }

    func exchangeWantsPayloadOnly(_ exchange: ProxyExchange, response: ParsedResponse) -> Bool { true }

    func exchange(_ exchange: ProxyExchange, receivedHead response: ParsedResponse, bytes: UnsafeRawBufferPointer, body: ByteBuffer?) {
        guard let context else { return }
        let headers = HTTP2Messages.responseHeaders(
            response, bytes: bytes, added: exchange.plan.responseHeaders, requestID: exchange.requestID, strictTransportSecurity: strictTransportSecurity)
        context.write(wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
        heldBody = body
    }

    func exchange(_ exchange: ProxyExchange, receivedBody bytes: ByteBuffer) {
        guard let context else { return }
        if let held = heldBody {
            heldBody = nil
            context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(held)))), promise: nil)
        }
        context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(bytes)))), promise: nil)
    }

    func exchange(_ exchange: ProxyExchange, switchedProtocols response: ParsedResponse, bytes: UnsafeRawBufferPointer, rest: ByteBuffer) {
        // never asked for over HTTP/2 (`upgrade` stays nil): the exchange refuses a 101 before this
    }

    func exchangeCompleted(_ exchange: ProxyExchange) {
        guard let context, self.exchange === exchange else { return }
        self.exchange = nil
        answered = true
        if !exchange.trailers.isEmpty {
            // an HTTP/2 upstream's trailers end the stream, after the body
            if let held = heldBody { context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(held)))), promise: nil) }
            heldBody = nil
            var block = HPACKHeaders()
            for (name, value) in exchange.trailers { block.add(name: name, value: value) }
            context.write(wrapOutboundOut(.headers(.init(headers: block, endStream: true))), promise: nil)
            return finishStream(context: context)
        }
        let last = heldBody ?? context.channel.allocator.buffer(capacity: 0)
        heldBody = nil
        context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(last), endStream: true))), promise: nil)
        finishStream(context: context)
    }

    func exchange(_ exchange: ProxyExchange, failedWith answer: LocalResponse) {
        guard let context, self.exchange === exchange else { return }
        self.exchange = nil
        writeLocal(answer, context: context)
    }

    func exchangeBroken(_ exchange: ProxyExchange) {
        guard let context, self.exchange === exchange else { return }
        self.exchange = nil
        answered = true
        context.writeAndFlush(wrapOutboundOut(.rstStream(.internalError)), promise: nil)
    }

    func exchangeFlush(_ exchange: ProxyExchange) {
        context?.flush()
    }

    func exchange(_ exchange: ProxyExchange, clientReading: Bool) {
        context?.channel.setOption(.autoRead, value: clientReading).whenComplete { _ in }
        // a stream channel does not read again by itself when autoRead comes back on
        if clientReading { context?.read() }
    }
}

extension HTTP2StreamHandler: TranscodedResponseWriter {
    func transcodedHead(status: HTTPResponseStatus, headers: [(String, String)], contentLength: Int?, endsWithTrailers: Bool) {
        guard let context, let translated else { return }
        var block = HPACKHeaders()
        block.add(name: ":status", value: String(status.code))
        for (name, value) in headers { block.add(name: name.lowercased(), value: value) }
        if let contentLength { block.add(name: "content-length", value: String(contentLength)) }
        block.add(name: "x-request-id", value: translated.requestID)
        if let hsts = strictTransportSecurity { block.add(name: "strict-transport-security", value: hsts) }
        context.write(wrapOutboundOut(.headers(.init(headers: block))), promise: nil)
    }

    func transcodedBody(_ bytes: ByteBuffer) {
        guard let context, translated != nil else { return }
        context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(bytes)))), promise: nil)
    }

    func transcodedEnd(trailers: [(String, String)]) {
        guard let context, translated != nil else { return }
        translated = nil
        answered = true
        if trailers.isEmpty {
            context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(context.channel.allocator.buffer(capacity: 0)), endStream: true))), promise: nil)
        } else {
            // the trailer section: a HEADERS frame that ends the stream
            var block = HPACKHeaders()
            for (name, value) in trailers { block.add(name: name.lowercased(), value: value) }
            context.write(wrapOutboundOut(.headers(.init(headers: block, endStream: true))), promise: nil)
        }
        finishStream(context: context)
    }

    func transcodedFailed(_ response: LocalResponse) {
        guard let context, translated != nil else { return }
        translated = nil
        writeLocal(response, context: context)
    }

    func transcodedBroken() {
        guard let context, translated != nil else { return }
        translated = nil
        answered = true
        context.writeAndFlush(wrapOutboundOut(.rstStream(.internalError)), promise: nil)
    }

    func transcodedFlush() { context?.flush() }

    func transcodedClientReading(_ on: Bool) {
        context?.channel.setOption(.autoRead, value: on).whenComplete { _ in }
        // a stream channel does not read again by itself when autoRead comes back on
        if on { context?.read() }
    }
}
