import Billing
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// One client connection: parses each request head itself, decides it against the snapshot, then
/// either answers it or forwards it to an upstream, moving the body bytes between the two sockets
/// as they arrive (framing included) with back-pressure both ways. The upstream's response head is
/// copied line by line with the gateway's few changes; its body passes through untouched. No
/// per-part HTTP handlers sit in either pipeline: each request crosses two channel handlers on the
/// client side and one on the upstream side (docs/ARCHITECTURE.md, "Data plane").
final class ProxyHandler: ChannelInboundHandler, RemovableChannelHandler, ClientConnection {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Largest upstream response head accepted (502 beyond it).
    static let maxResponseHeadBytes = 64 * 1024

    private let shared: GatewayContext
    private let loop: LoopState
    private let meter: CallMeter
    private var snapshot: GatewaySnapshot
    private var gate: RequestGate
    private var context: ChannelHandlerContext?

    /// A local answer waiting for the end of the request body.
    private struct PendingAnswer {
        var response: LocalResponse
        var head: HTTPRequestHead
        var started: UInt64
        var requestID: String
        /// Counted and metered already (a forwarded call that failed before its response).
        var metered = false
    }

    private var exchange: ProxyExchange?
    /// An HTTP/JSON call translated to gRPC (an API with a descriptor set), instead of an exchange.
    private var translated: GRPCTranscodedCall?
    /// How the translated call's answer is framed: chunked (a server stream), and whether the
    /// connection closes after it.
    private var translatedChunked = false
    private var translatedClose = false
    private var localAnswer: PendingAnswer?
    /// Client bytes not handled yet: a partial head, or requests pipelined behind the one being answered.
    private var inbound: ByteBuffer?
    /// The current request's body framing while its bytes are still arriving; with no exchange
    /// (answered locally or already answered) they are read and dropped.
    private var requestBody: BodyFramer?
    /// A chunked request's trailer section so far: held back until it ends, then forwarded with
    /// only the fields that may pass (`TrailerSection`). Nil for bodies without trailers.
    private var trailerSection: ByteBuffer?
    private var processingInput = false
    /// When the client last sent something or got a complete response (uptime nanoseconds).
    private var lastActivity: UInt64 = 0
    /// How many bytes of a partial head were already searched for its end.
    private var headScanned = 0
    /// When the head being read began arriving, and when the body being read began (uptime
    /// nanoseconds; 0: none): slow-drip heads and bodies end at their own deadlines.
    private var headStartedAt: UInt64 = 0
    private var bodyStartedAt: UInt64 = 0
    private var pausedForPipelining = false
    /// No request has been read on this connection yet: its first bytes may be the HTTP/2 preface.
    private var firstRequest = true
    /// The connection is being closed: nothing more is read or answered.
    private var closing = false
    /// The gateway is shutting down: the exchange under way is finished and answered with
    /// `Connection: close`; nothing after it is read.
    private var draining = false
    private var clientAddress: [UInt8]?
    private var clientIP = ""
    /// The connection came in on the TLS listener: upstreams hear `X-Forwarded-Proto: https`,
    /// clients get `Strict-Transport-Security` when it is configured.
    private let secure: Bool
    /// The open tunnel's limits: the installation's, or its API's `websocket` policy's (set when
    /// the upstream switches protocols).
    private var tunnelLimits: TunnelLimits

    init(shared: GatewayContext, loop: LoopState, secure: Bool = false) {
        self.shared = shared
        self.loop = loop
        self.secure = secure
        self.meter = CallMeter(shared: shared, loop: loop)
        self.tunnelLimits = shared.tunnelLimits
        self.snapshot = shared.store.snapshot
        self.gate = RequestGate(
            rateLimiter: shared.rateLimiter, quotas: shared.quotas, tokenCache: loop.tokenCache,
            defaultMaxRequestBytes: shared.settings.maxRequestBytes, onUnknownKey: { [store = shared.store] in store.requestKeyRefresh() })
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        lastActivity = DispatchTime.now().uptimeNanoseconds
        shared.openConnections.withLockedValue { $0 += 1 }
        loop.idle.add(self, ())
        if let address = context.channel.remoteAddress?.ipAddress {
            clientIP = address
            clientAddress = IPRange.bytes(of: address)
        }
        if shared.draining.withLockedValue({ $0 }) { beginDrain() }
    }

    /// A PROXY protocol header named the client (the load balancer's own address is the peer's).
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let proxied = event as? ProxiedClientAddress, let bytes = IPRange.bytes(of: proxied.address) {
            clientIP = proxied.address
            clientAddress = bytes
        }
        context.fireUserInboundEventTriggered(event)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        shared.openConnections.withLockedValue { $0 -= 1 }
    }

    /// Graceful shutdown: a connection between requests closes now; one with a request under way
    /// finishes it and closes after its response (which says `Connection: close`). Requests
    /// pipelined behind it are not answered: the client sees the close and retries them elsewhere.
    func beginDrain() {
        guard !closing, !draining, let context else { return }
        draining = true
        // An open WebSocket has no end the gateway could wait for: it closes at once, metered.
        if let exchange, exchange.isTunnel { return closeTunnel(exchange, reason: "shutdown", context: context) }
        let between = exchange == nil && translated == nil && localAnswer == nil && requestBody == nil && headStartedAt == 0 && waiting == nil
        if between {
            closing = true
            context.close(promise: nil)
        }
    }

    /// The drain timed out: close whatever is still open.
    func forceClose() {
        guard let context, !closing else { return }
        if let exchange, exchange.isTunnel { return closeTunnel(exchange, reason: "shutdown", context: context) }
        abortExchange(status: .serviceUnavailable, rejection: nil)
        abortTranslated(status: .serviceUnavailable)
        closing = true
        context.close(promise: nil)
    }

    // MARK: Client side

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        lastActivity = DispatchTime.now().uptimeNanoseconds
        var buffer = unwrapInboundIn(data)
        if inbound == nil {
            inbound = buffer
        } else {
            inbound!.writeBuffer(&buffer)
        }
        processInput(context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // nothing to flush upstream here: `processInput` flushes what it wrote on every read
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing = true
        if let exchange {
            self.exchange = nil
            if exchange.isTunnel { loop.metrics.tunnelClosed("client") }
            // The client went away mid-exchange: the upstream connection is out of step now.
            exchange.abort(status: exchange.responseStarted ? exchange.status : 499, forwarded: exchange.upstream != nil, rejection: nil)
        }
        abortTranslated(status: HTTPResponseStatus(statusCode: 499))
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        exchange?.clientWritabilityChanged(context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    /// Called by the loop's idle sweep; true once the connection is closed or closing (the sweep
    /// then forgets it). Waiting for the upstream is not the client's fault; anything else idle
    /// for `timeout` is closed, with a 408 when a request was under way.
    func closeIfIdle(now: UInt64, timeout: UInt64) -> Bool {
        if closing { return true }
        guard let context else { return true }
        if let exchange, exchange.isTunnel {
            let verdict = tunnelLimits.verdict(now: now, opened: exchange.tunnelOpenedAt, lastActivity: exchange.tunnelActivity)
            guard verdict != .open else { return false }
            closeTunnel(exchange, reason: verdict == .idle ? "idle" : "max_duration", context: context)
            return true
        }
        let headLate = headStartedAt != 0 && now &- headStartedAt >= UInt64(max(1, shared.settings.requestHeadTimeout.nanoseconds))
        let bodyLate = requestBody != nil && bodyStartedAt != 0 && now &- bodyStartedAt >= UInt64(max(1, shared.settings.requestBodyTimeout.nanoseconds))
        if bodyLate && exchange == nil && translated == nil && localAnswer == nil {
            // Answered already; the rest of the body was being read and dropped.
            closing = true
            context.close(promise: nil)
            return true
        }
        if headLate || bodyLate {
            abortExchange(status: .requestTimeout, rejection: nil)
            if let translated, translated.answerStarted {
                // a bidirectional call answers while it reads: its answer is under way, so it is cut
                abortTranslated(status: .requestTimeout)
                closing = true
                context.close(promise: nil)
                return true
            }
            abortTranslated(status: .requestTimeout)
            writeLocal(
                .problem(.requestTimeout, "Request timeout", headLate ? "The request head was not completed in time." : "The request body was not completed in time.",
                    rejection: nil), head: nil, context: context, close: true)
            return true
        }
        guard now &- lastActivity >= timeout else { return false }
        if let exchange, exchange.requestEnded { return false }
        if let translated, translated.requestEnded { return false }
        let midRequest = exchange != nil || translated != nil || localAnswer != nil || requestBody != nil || (inbound?.readableBytes ?? 0) > 0
        if midRequest {
            abortExchange(status: .requestTimeout, rejection: nil)
            abortTranslated(status: .requestTimeout)
            writeLocal(.problem(.requestTimeout, "Request timeout", "The request was not completed in time.", rejection: nil), head: nil, context: context, close: true)
        } else {
            closing = true
            context.close(promise: nil)
        }
        return true
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        closing = true
        context.close(promise: nil)
    }

    /// Handles the client bytes read so far: the current request's body, then the next request's
    /// head once the current response is complete. Re-entered calls (an answer written while a
    /// head is handled) leave the work to the outer loop.
    private func processInput(context: ChannelHandlerContext) {
        guard !processingInput else { return }
        processingInput = true
        defer { processingInput = false }
        while !closing, waiting == nil, var input = inbound, input.readableBytes > 0 {
            inbound = nil
            if let exchange, exchange.isTunnel {
                exchange.writeIntoTunnel(input, now: lastActivity)
                break
            }
            if requestBody != nil {
                readBody(&input, context: context)
                continue
            }
            if exchange != nil || translated != nil || localAnswer != nil {
                // A pipelined request waits for the current response; a client that sends a lot of
                // them ahead is read no further until they are answered.
                inbound = input
                if input.readableBytes > shared.settings.maxHeaderBytes && !pausedForPipelining {
                    pausedForPipelining = true
                    context.channel.setOption(.autoRead, value: false).whenComplete { _ in }
                }
                break
            }
            if firstRequest && shared.settings.http2 {
                switch input.withUnsafeReadableBytes({ HTTP2Server.matchPreface($0) }) {
                case .yes: return switchToHTTP2(input, context: context)
                case .undecided:
                    inbound = input
                    if headStartedAt == 0 { headStartedAt = DispatchTime.now().uptimeNanoseconds }
                    return
                case .no: firstRequest = false
                }
            }
            let scanFrom = headScanned
            let maxBytes = shared.settings.maxHeaderBytes
            if input.readableBytes <= maxBytes, !input.withUnsafeReadableBytes({ HTTPHeadParser.containsHeadEnd($0, from: scanFrom) }) {
                headScanned = input.readableBytes
                if headStartedAt == 0 { headStartedAt = DispatchTime.now().uptimeNanoseconds }
                inbound = input
                break
            }
            headStartedAt = 0
            let parsed = input.withUnsafeReadableBytes { HTTPHeadParser.parseRequest($0, maxBytes: maxBytes) }
            headScanned = 0
            switch parsed {
            case .incomplete:
                headScanned = input.readableBytes
                if headStartedAt == 0 { headStartedAt = DispatchTime.now().uptimeNanoseconds }
                inbound = input
            case .tooLarge:
                writeLocal(
                    .problem(.requestHeaderFieldsTooLarge, "Headers too large", "Request headers exceed \(shared.settings.maxHeaderBytes) bytes.", rejection: nil),
                    head: nil, context: context, close: true)
            case .invalid(let status, let reason):
                writeLocal(.problem(status, status == .badRequest ? "Malformed request" : status.reasonPhrase, reason, rejection: nil), head: nil, context: context, close: true)
            case .complete(let request, let length):
                input.moveReaderIndex(forwardBy: length)
                inbound = input
                received(request, context: context)
            }
            if case .incomplete = parsed { break }
        }
        if inbound?.readableBytes == 0 { inbound = nil }
        exchange?.flushUpstream()
    }

    private func readBody(_ input: inout ByteBuffer, context: ChannelHandlerContext) {
        guard var framer = requestBody else { return }
        var payload = 0
        let step: BodyFramer.Step
        // a translated call reads the payload itself (without chunk framing); others relay the bytes framed
        var translatedPayload: [UInt8] = []
        let collect = translated != nil
        do {
            step = try input.withUnsafeReadableBytes { bytes in
                try framer.consume(bytes) { run in
                    payload += run.count
                    if collect { translatedPayload.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[run])) }
                }
            }
        } catch {
            abortExchange(status: .badRequest, rejection: nil)
            abortTranslated(status: .badRequest)
            writeLocal(.problem(.badRequest, "Malformed request", "The request body's chunked framing is invalid.", rejection: nil), head: nil, context: context, close: true)
            return
        }
        requestBody = step.ended ? nil : framer
        if step.ended { bodyStartedAt = 0 }
        var bodyBytes = input.readSlice(length: step.consumed)!
        inbound = input
        // a body whose trailer section ends here without fields (the common "0\r\n\r\n") passes as it is
        if let from = step.trailersFrom, exchange != nil, trailerSection != nil || !step.ended || framer.hasTrailerFields {
            // the trailer section is forwarded filtered, as a whole, once it ended
            var section = bodyBytes.getSlice(at: bodyBytes.readerIndex + from, length: bodyBytes.readableBytes - from)!
            bodyBytes = bodyBytes.getSlice(at: bodyBytes.readerIndex, length: from)!
            if trailerSection == nil { trailerSection = section } else { trailerSection!.writeBuffer(&section) }
            if step.ended, let held = trailerSection {
                trailerSection = nil
                var filtered = TrailerSection.section(TrailerSection.fields(in: held), allocator: context.channel.allocator)
                bodyBytes.writeBuffer(&filtered)
            }
        }
        if let exchange { forwardBody(bodyBytes, payload: payload, exchange, context: context) }
        if let translated, !translatedPayload.isEmpty {
            // over the body limit the call answers 413 itself (and the connection closes)
            _ = translatedPayload.withUnsafeBytes { translated.receive($0) }
        }
        if step.ended && !closing { requestEnded(context: context) }
    }

    private func received(_ request: ParsedRequest, context: ChannelHandlerContext) {
        let head = request.head
        let started = DispatchTime.now().uptimeNanoseconds
        let requestID = head.headers.first(name: "x-request-id").flatMap { $0.utf8.count <= 200 ? $0 : nil } ?? loop.newID().lowercasedText
        // `Content-Length: 0` is no body: no bytes will come to end it (a translated client stream
        // waited for its end until the body timeout)
        requestBody = request.framing == .none || request.framing == .length(0) ? nil : BodyFramer(request.framing)
        trailerSection = nil
        bodyStartedAt = requestBody == nil ? 0 : started
        let uri = head.uri
        let path = uri.utf8.firstIndex(of: UInt8(ascii: "?")).map { uri[..<$0] } ?? Substring(uri)
        if let infrastructure = shared.infrastructureResponse(path: path) {
            answer(infrastructure, head: head, started: started, requestID: requestID, context: context)
            if requestBody == nil && !closing { requestEnded(context: context) }
        } else {
            decide(head, started: started, requestID: requestID, mayWait: true, context: context)
        }
    }

    private func decide(_ head: HTTPRequestHead, started: UInt64, requestID: String, mayWait: Bool, context: ChannelHandlerContext) {
        if shared.store.version != snapshot.version { snapshot = shared.store.snapshot }
        switch gate.decide(head: head, clientAddress: clientAddress, snapshot: snapshot, now: Date(), monotonicNanos: started) {
        case .respond(let response):
            if mayWait && response.decideAgainAfterReload {
                // Parked until the reload the unknown key triggered lands (at most 3 s); the
                // request's body, if any, stays unread meanwhile.
                waiting = WaitingDecision(head: head, started: started, requestID: requestID, version: snapshot.version, until: shared.store.keyRefreshWindowEnd())
                loop.waitingDecisions.add(self, ())
                return
            }
            answer(response, head: head, started: started, requestID: requestID, context: context)
        case .forward(let plan):
            forward(plan, head: head, started: started, requestID: requestID, context: context)
        }
        if requestBody == nil && !closing { requestEnded(context: context) }
    }

    /// A request parked for a reload, decided again once the snapshot changed or the wait is over.
    private struct WaitingDecision {
        var head: HTTPRequestHead
        var started: UInt64
        var requestID: String
        var version: Int
        var until: UInt64
    }

    private var waiting: WaitingDecision?

    /// Visited by the loop's sweep; true while the request still waits.
    func decideIfReloaded(now: UInt64) -> Bool {
        guard let parked = waiting, let context, !closing else { return false }
        guard shared.store.version == parked.version && now < parked.until else {
            waiting = nil
            decide(parked.head, started: parked.started, requestID: parked.requestID, mayWait: false, context: context)
            processInput(context: context)
            return false
        }
        return true
    }

    private func answer(_ response: LocalResponse, head: HTTPRequestHead, started: UInt64, requestID: String, context: ChannelHandlerContext) {
        if response.close {
            meter.recordLocal(response, method: head.method, started: started, caller: logCaller(head, requestID: requestID))
            writeLocal(response, head: head, requestID: requestID, context: context, close: true)
            return
        }
        // Answer once the body has been read, so the connection stays in step for keep-alive.
        localAnswer = PendingAnswer(response: response, head: head, started: started, requestID: requestID)
    }

    /// A call on this connection as the access log names its caller.
    private func logCaller(_ head: HTTPRequestHead, requestID: String) -> CallMeter.Caller {
        CallMeter.Caller(requestID: requestID, clientIP: clientIP, target: head.uri, protocolName: .http1)
    }

    private func forwardBody(_ bytes: ByteBuffer, payload: Int, _ exchange: ProxyExchange, context: ChannelHandlerContext) {
        exchange.bytesIn += Int64(payload)
        if exchange.bytesIn > Int64(exchange.bodyLimit) {
            // The body outgrew the limit while streaming: stop here.
            loop.pool.recordSuccess(exchange.target)
            abortExchange(status: .payloadTooLarge, rejection: .tooLarge)
            writeLocal(
                .problem(.payloadTooLarge, "Request too large", "The body is larger than \(exchange.bodyLimit) bytes.", rejection: .tooLarge),
                head: exchange.head, requestID: exchange.requestID, context: context, close: true)
            return
        }
        exchange.writeBody(bytes)
    }

    private func requestEnded(context: ChannelHandlerContext) {
        if let pending = localAnswer {
            localAnswer = nil
            if !pending.metered {
                meter.recordLocal(
                    pending.response, method: pending.head.method, started: pending.started, caller: logCaller(pending.head, requestID: pending.requestID))
            }
            writeLocal(pending.response, head: pending.head, requestID: pending.requestID, context: context, close: !pending.head.isKeepAlive)
            return
        }
        // No exchange: its response was complete before the body was.
        exchange?.requestBodyEnded()
        translated?.endRequest()
    }

    /// Ends the translated call under way without its answer (the client connection is about to close).
    private func abortTranslated(status: HTTPResponseStatus) {
        guard let translated else { return }
        self.translated = nil
        translated.cancel(status: status.code)
    }

    /// Ends the current exchange without an upstream response (the client connection is about to
    /// close): its upstream connection is dropped, and the call is metered and its quota unit
    /// settled with the status the client gets.
    private func abortExchange(status: HTTPResponseStatus, rejection: UsageEvent.Rejection?) {
        guard let exchange else { return }
        self.exchange = nil
        exchange.abort(status: status.code, forwarded: false, rejection: rejection)
    }

    // MARK: Proxying

    private func forward(_ plan: ForwardPlan, head: HTTPRequestHead, started: UInt64, requestID: String, context: ChannelHandlerContext) {
        guard let target = loop.pool.pick(plan.route, now: started) else {
            loop.metrics.upstreamError("circuit_open")
            return answer(plan.noHealthyTarget(quotas: shared.quotas), head: head, started: started, requestID: requestID, context: context)
        }
        if target.http2 {
            // an API with a descriptor set is called with JSON too: the call is translated to gRPC
            switch plan.gRPCForwarding(httpMethod: head.method.rawValue, clientSpeaksGRPC: false, quotas: shared.quotas) {
            case .answer(let response):
                return answer(response, head: head, started: started, requestID: requestID, context: context)
            case .relay:
                return answer(plan.http2Required(quotas: shared.quotas), head: head, started: started, requestID: requestID, context: context)
            case .translate(let call, let transcoding):
                translatedChunked = call.method.serverStreaming && head.version.minor >= 1
                translatedClose = !head.isKeepAlive || (call.method.serverStreaming && head.version.minor == 0)
                translated = GRPCTranscodedCall(
                    plan: plan, call: call, transcoding: transcoding, head: head, requestID: requestID, started: started, target: target, loop: loop,
                    meter: meter, quotas: shared.quotas, bodyLimit: plan.route.maxRequestBytes ?? shared.settings.maxRequestBytes,
                    responseTimeout: shared.settings.responseTimeout, clientIP: clientIP, secure: secure, writer: self)
                // the gateway reads the body itself here (no upstream to say it), so it invites it
                if requestBody != nil, head.version.minor >= 1, Self.expectsContinue(head) {
                    context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(staticString: "HTTP/1.1 100 Continue\r\n\r\n")), promise: nil)
                }
                translated?.begin()
                return
            }
        }
        let exchange = ProxyExchange(
            plan: plan, head: head, requestID: requestID, started: started, target: target,
            bodyLimit: plan.route.maxRequestBytes ?? shared.settings.maxRequestBytes, client: self, loop: loop, meter: meter,
            responseTimeout: shared.settings.responseTimeout, connection: .init(clientIP: clientIP, secure: secure))
        exchange.upgrade = WebSocketHandshake.requestedUpgrade(head)
        exchange.answersContinue = requestBody != nil && head.version.minor >= 1 && Self.expectsContinue(head)
        self.exchange = exchange
        exchange.start()
    }

    /// A response the gateway makes itself, as one buffer. Closing answers end the connection once written.
    private func writeLocal(_ response: LocalResponse, head: HTTPRequestHead?, requestID: String? = nil, context: ChannelHandlerContext, close: Bool) {
        let close = close || draining
        let isHTTP10 = head?.version.minor == 0
        let body = head?.method == .HEAD ? "" : response.body
        var out = context.channel.allocator.buffer(capacity: 256 + body.utf8.count)
        out.writeStaticString(isHTTP10 ? "HTTP/1.0 " : "HTTP/1.1 ")
        out.writeString(String(response.status.code))
        out.writeStaticString(" ")
        out.writeString(response.status.reasonPhrase)
        out.writeStaticString("\r\n")
        for (name, value) in response.headers { out.writeHeader(name, value) }
        out.writeHeader("Content-Length", String(response.body.utf8.count))
        out.writeStaticString("Cache-Control: no-store\r\n")
        if let requestID { out.writeHeader("X-Request-Id", requestID) }
        if secure, let line = shared.strictTransportSecurityLine { out.writeString(line) }
        if close {
            out.writeStaticString("Connection: close\r\n")
        } else if isHTTP10 {
            out.writeStaticString("Connection: keep-alive\r\n")
        }
        out.writeStaticString("\r\n")
        out.writeString(body)
        if close {
            closing = true
            context.writeAndFlush(wrapOutboundOut(out)).assumeIsolatedUnsafeUnchecked().whenComplete { _ in context.close(promise: nil) }
        } else {
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
            responseCompleted(context: context)
        }
    }

    /// Closes the client connection once everything written so far has gone out.
    private func closeAfterWrites(context: ChannelHandlerContext) {
        closing = true
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).assumeIsolatedUnsafeUnchecked().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    /// A response is complete on a kept-alive connection: requests pipelined behind it may start.
    private func responseCompleted(context: ChannelHandlerContext) {
        // the idle clock starts again: a slow upstream is no reason to cut the client's next request short
        lastActivity = DispatchTime.now().uptimeNanoseconds
        if pausedForPipelining {
            pausedForPipelining = false
            context.channel.setOption(.autoRead, value: true).whenComplete { _ in }
        }
        if inbound != nil { processInput(context: context) }
    }

    // MARK: HTTP/2

    /// The client spoke the HTTP/2 preface (prior knowledge, or after choosing `h2` in the TLS
    /// handshake): the connection is handed to NIOHTTP2 with the bytes read so far, and this
    /// handler leaves the pipeline.
    private func switchToHTTP2(_ input: ByteBuffer, context: ChannelHandlerContext) {
        closing = true
        inbound = nil
        do {
            try HTTP2Server.install(
                on: context.pipeline.syncOperations, shared: shared, loop: loop,
                client: HTTP2ClientInfo(clientIP: clientIP, clientAddress: clientAddress, secure: secure))
        } catch {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(NIOAny(input))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    // MARK: WebSocket tunnel


    /// A tunnel limit was reached or the gateway shuts down: both sides close, the call is metered once.
    private func closeTunnel(_ exchange: ProxyExchange, reason: String, context: ChannelHandlerContext) {
        loop.metrics.tunnelClosed(reason)
        self.exchange = nil
        exchange.closeTunnel()
        closeAfterWrites(context: context)
    }
}

extension ProxyHandler: ExchangeClient {
    var allocator: ByteBufferAllocator { context?.channel.allocator ?? ByteBufferAllocator() }

    func exchange(_ exchange: ProxyExchange, receivedInterim head: ByteBuffer) {
        // Interim responses (100 Continue, 103 Early Hints) go to HTTP/1.1 clients as they came.
        guard let context, exchange.head.version.minor >= 1 else { return }
        context.write(wrapOutboundOut(head), promise: nil)
    }

    func exchangeWantsPayloadOnly(_ exchange: ProxyExchange, response: ParsedResponse) -> Bool {
        // An HTTP/1.0 client gets a chunked response's payload only, ended by closing.
        let dechunk = exchange.head.version.minor == 0 && response.framing == .chunked
        exchange.closeClient = !exchange.keepAlive || response.framing == .untilClose || dechunk || draining
        return dechunk
    }

    func exchange(_ exchange: ProxyExchange, receivedHead response: ParsedResponse, bytes: UnsafeRawBufferPointer, body: ByteBuffer?) {
        guard let context else { return }
        let http10 = exchange.head.version.minor == 0
        let shape = ClientResponseHead.Shape(
            http10: http10, dechunk: http10 && response.framing == .chunked, close: exchange.closeClient, switching: false,
            strictTransportSecurityLine: secure ? shared.strictTransportSecurityLine : nil)
        var head = ClientResponseHead.write(
            response, bytes: bytes, added: exchange.plan.responseHeaders, requestID: exchange.requestID, shape: shape, allocator: context.channel.allocator)
        if var body { head.writeBuffer(&body) }
        context.write(wrapOutboundOut(head), promise: nil)
    }

    func exchange(_ exchange: ProxyExchange, receivedBody bytes: ByteBuffer) {
        context?.write(wrapOutboundOut(bytes), promise: nil)
    }

    /// The upstream accepted the WebSocket handshake: the client gets its 101 (with the gateway's
    /// headers), and from here on bytes cross unparsed both ways until either side closes.
    func exchange(_ exchange: ProxyExchange, switchedProtocols response: ParsedResponse, bytes: UnsafeRawBufferPointer, rest: ByteBuffer) {
        guard let context else { return }
        tunnelLimits = shared.tunnelLimits.applying(exchange.plan.route.webSocket)
        let shape = ClientResponseHead.Shape(
            http10: false, dechunk: false, close: false, switching: true, strictTransportSecurityLine: secure ? shared.strictTransportSecurityLine : nil)
        let head = ClientResponseHead.write(
            response, bytes: bytes, added: exchange.plan.responseHeaders, requestID: exchange.requestID, shape: shape, allocator: context.channel.allocator)
        context.write(wrapOutboundOut(head), promise: nil)
        if rest.readableBytes > 0 { context.write(wrapOutboundOut(rest), promise: nil) }
        // frames the client sent before the 101 arrived waited as if pipelined
        if let early = inbound, early.readableBytes > 0 {
            inbound = nil
            exchange.writeIntoTunnel(early, now: DispatchTime.now().uptimeNanoseconds)
            exchange.flushUpstream()
        }
        if pausedForPipelining {
            pausedForPipelining = false
            context.channel.setOption(.autoRead, value: true).whenComplete { _ in }
        }
    }

    func exchangeCompleted(_ exchange: ProxyExchange) {
        guard let context, self.exchange === exchange else { return }
        self.exchange = nil
        if exchange.closeClient || draining {
            closeAfterWrites(context: context)
            return
        }
        if exchange.pausedClient { context.channel.setOption(.autoRead, value: true).whenComplete { _ in } }
        // flushed at the end of the loop's round, with the other answers made in it (see
        // `LoopFlushBatch`): not on the upstream's read-complete, which no longer reaches this
        // connection once the upstream is back in the pool
        loop.flushBatch.hold(self)
        responseCompleted(context: context)
    }

    func exchange(_ exchange: ProxyExchange, failedWith answer: LocalResponse) {
        guard let context, self.exchange === exchange else { return }
        self.exchange = nil
        if exchange.requestEnded {
            writeLocal(answer, head: exchange.head, requestID: exchange.requestID, context: context, close: !exchange.keepAlive)
        } else {
            // The rest of the body is still coming; answer once it ends.
            localAnswer = PendingAnswer(response: answer, head: exchange.head, started: exchange.started, requestID: exchange.requestID, metered: true)
            if exchange.pausedClient { context.channel.setOption(.autoRead, value: true).whenComplete { _ in } }
        }
    }

    func exchangeBroken(_ exchange: ProxyExchange) {
        guard let context, self.exchange === exchange else { return }
        self.exchange = nil
        closeAfterWrites(context: context)
    }

    func exchangeFlush(_ exchange: ProxyExchange) {
        context?.flush()
    }

    func exchange(_ exchange: ProxyExchange, clientReading: Bool) {
        context?.channel.setOption(.autoRead, value: clientReading).whenComplete { _ in }
    }
}

extension ProxyHandler: TranscodedResponseWriter {
    func transcodedHead(status: HTTPResponseStatus, headers: [(String, String)], contentLength: Int?, endsWithTrailers: Bool) {
        guard let context, let translated else { return }
        let http10 = translated.head.version.minor == 0
        // a trailer section needs the chunked framing, whatever the body's length
        if endsWithTrailers && !http10 { translatedChunked = true }
        var out = context.channel.allocator.buffer(capacity: 256)
        out.writeString(http10 ? "HTTP/1.0 " : "HTTP/1.1 ")
        out.writeString(String(status.code))
        out.writeStaticString(" ")
        out.writeString(status.reasonPhrase)
        out.writeStaticString("\r\n")
        for (name, value) in headers { out.writeHeader(name, value) }
        if translatedChunked {
            out.writeStaticString("Transfer-Encoding: chunked\r\n")
        } else if let contentLength {
            out.writeHeader("Content-Length", String(contentLength))
        }
        out.writeHeader("X-Request-Id", translated.requestID)
        if secure, let line = shared.strictTransportSecurityLine { out.writeString(line) }
        if translatedClose || draining {
            out.writeStaticString("Connection: close\r\n")
        } else if http10 {
            out.writeStaticString("Connection: keep-alive\r\n")
        }
        out.writeStaticString("\r\n")
        context.write(wrapOutboundOut(out), promise: nil)
    }

    func transcodedBody(_ bytes: ByteBuffer) {
        guard let context, translated != nil, bytes.readableBytes > 0 else { return }
        guard translatedChunked else { return context.write(wrapOutboundOut(bytes), promise: nil) }
        var out = context.channel.allocator.buffer(capacity: bytes.readableBytes + 16)
        out.writeString(String(bytes.readableBytes, radix: 16))
        out.writeStaticString("\r\n")
        var bytes = bytes
        out.writeBuffer(&bytes)
        out.writeStaticString("\r\n")
        context.write(wrapOutboundOut(out), promise: nil)
    }

    func transcodedEnd(trailers: [(String, String)]) {
        guard let context, let translated else { return }
        self.translated = nil
        if translatedChunked {
            let end = trailers.isEmpty ? context.channel.allocator.buffer(staticString: "0\r\n\r\n")
                : context.channel.allocator.buffer(string: TranscodedTrailers.lastChunk(trailers))
            context.write(wrapOutboundOut(end), promise: nil)
        }
        // a client stream answered before its body ended: the rest of it cannot be told from a next request
        if translatedClose || draining || !translated.requestEnded { return closeAfterWrites(context: context) }
        context.flush()
        responseCompleted(context: context)
    }

    func transcodedFailed(_ response: LocalResponse) {
        guard let context, let translated else { return }
        self.translated = nil
        // an answer before the body ended (413) cannot wait for the rest: the connection closes
        writeLocal(response, head: translated.head, requestID: translated.requestID, context: context, close: !translated.requestEnded || translatedClose)
    }

    func transcodedBroken() {
        guard let context, translated != nil else { return }
        translated = nil
        closeAfterWrites(context: context)
    }

    func transcodedFlush() { context?.flush() }

    func transcodedClientReading(_ on: Bool) {
        context?.channel.setOption(.autoRead, value: on).whenComplete { _ in }
    }
}

extension ProxyHandler {
    /// The request asks to be invited before it sends its body (RFC 9110 §10.1.1).
    static func expectsContinue(_ head: HTTPRequestHead) -> Bool {
        head.headers["expect"].contains { $0.lowercased() == "100-continue" }
    }
}

extension ProxyHandler: HeldFlush {
    func flushHeld() { context?.flush() }
}
