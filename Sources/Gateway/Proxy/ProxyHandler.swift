import Billing
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// Shared, immutable pieces every client connection uses.
final class GatewayContext: Sendable {
    let store: SnapshotStore
    let rateLimiter: RateLimiter
    let quotas: QuotaTracker
    let usage: any UsageSink
    let loops: LoopStates
    let settings: GatewayServer.Configuration
    let metricsText: @Sendable () -> String
    /// The `Strict-Transport-Security` header line for responses on the TLS listener, made once.
    let strictTransportSecurityLine: String?
    /// Client connections open now (counted at set-up and tear-down, not per request): the drain
    /// at shutdown waits for it to reach zero.
    let openConnections = NIOLockedValueBox(0)
    /// Set when the drain begins: a connection accepted just before the listener closed (set up
    /// after the drain visited the loops) closes at once instead of being served.
    let draining = NIOLockedValueBox(false)

    init(
        store: SnapshotStore, rateLimiter: RateLimiter, quotas: QuotaTracker, usage: any UsageSink, loops: LoopStates,
        settings: GatewayServer.Configuration, metricsText: @escaping @Sendable () -> String
    ) {
        self.store = store
        self.rateLimiter = rateLimiter
        self.quotas = quotas
        self.usage = usage
        self.loops = loops
        self.settings = settings
        self.metricsText = metricsText
        self.strictTransportSecurityLine = settings.tls?.strictTransportSecurity.map { "Strict-Transport-Security: \($0)\r\n" }
    }
}

/// One client connection: parses each request head itself, decides it against the snapshot, then
/// either answers it or forwards it to an upstream, moving the body bytes between the two sockets
/// as they arrive (framing included) with back-pressure both ways. The upstream's response head is
/// copied line by line with the gateway's few changes; its body passes through untouched. No
/// per-part HTTP handlers sit in either pipeline: each request crosses two channel handlers on the
/// client side and one on the upstream side (docs/ARCHITECTURE.md, "Data plane").
final class ProxyHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Largest upstream response head accepted (502 beyond it).
    static let maxResponseHeadBytes = 64 * 1024

    private let shared: GatewayContext
    private let loop: LoopState
    private var snapshot: GatewaySnapshot
    private var gate: RequestGate
    private var context: ChannelHandlerContext?

    /// The request being proxied.
    private final class Exchange {
        let plan: ForwardPlan
        let head: HTTPRequestHead
        let requestID: String
        let started: UInt64
        let keepAlive: Bool
        let bodyLimit: Int
        var target: UpstreamTargetConfig
        var upstream: UpstreamConnection?
        /// Body bytes read before the upstream connection was ready.
        var pending: [ByteBuffer] = []
        var pendingBytes = 0
        var requestEnded = false
        /// The final response head was written to the client.
        var responseStarted = false
        /// A response head still arriving.
        var responseInbound: ByteBuffer?
        var responseBody = BodyFramer(.none)
        /// An HTTP/1.0 client gets a chunked response's payload only, ended by closing.
        var dechunk = false
        var closeClient = false
        var upstreamKeepAlive = true
        var status: UInt = 0
        var bytesIn: Int64 = 0
        var bytesOut: Int64 = 0
        var retried = false
        /// Identifies the exchange to the loop's response deadlines; 0 until its deadline is armed.
        var serial: UInt64 = 0
        /// Whether reading from the client (or the upstream) was paused for back-pressure.
        var pausedClient = false
        var pausedUpstream = false

        init(plan: ForwardPlan, head: HTTPRequestHead, requestID: String, started: UInt64, target: UpstreamTargetConfig, bodyLimit: Int) {
            self.plan = plan
            self.head = head
            self.requestID = requestID
            self.started = started
            self.keepAlive = head.isKeepAlive
            self.target = target
            self.bodyLimit = bodyLimit
        }
    }

    /// A local answer waiting for the end of the request body.
    private struct PendingAnswer {
        var response: LocalResponse
        var head: HTTPRequestHead
        var started: UInt64
        var requestID: String
        /// Counted and metered already (a forwarded call that failed before its response).
        var metered = false
    }

    private var exchange: Exchange?
    private var localAnswer: PendingAnswer?
    /// Client bytes not handled yet: a partial head, or requests pipelined behind the one being answered.
    private var inbound: ByteBuffer?
    /// The current request's body framing while its bytes are still arriving; with no exchange
    /// (answered locally or already answered) they are read and dropped.
    private var requestBody: BodyFramer?
    private var processingInput = false
    /// When the client last sent something or got a complete response (uptime nanoseconds).
    private var lastActivity: UInt64 = 0
    /// How many bytes of a partial head were already searched for its end.
    private var headScanned = 0
    /// When the head being read began arriving, and when the body being read began (uptime
    /// nanoseconds; 0: none): slow-drip heads and bodies end at their own deadlines.
    private var headStartedAt: UInt64 = 0
    private var bodyStartedAt: UInt64 = 0
    private var exchangeSerial: UInt64 = 0
    private var pausedForPipelining = false
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

    init(shared: GatewayContext, loop: LoopState, secure: Bool = false) {
        self.shared = shared
        self.loop = loop
        self.secure = secure
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
        let between = exchange == nil && localAnswer == nil && requestBody == nil && headStartedAt == 0 && waiting == nil
        if between {
            closing = true
            context.close(promise: nil)
        }
    }

    /// The drain timed out: close whatever is still open.
    func forceClose() {
        guard let context, !closing else { return }
        abortExchange(status: .serviceUnavailable, rejection: nil)
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
            // The client went away mid-exchange: the upstream connection is out of step now.
            exchange.upstream?.handler.delegate = nil
            exchange.upstream?.channel.close(promise: nil)
            finish(exchange, status: exchange.responseStarted ? exchange.status : 499, forwarded: exchange.upstream != nil, rejection: nil)
            self.exchange = nil
        }
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if let exchange, let upstream = exchange.upstream {
            exchange.pausedUpstream = !context.channel.isWritable
            upstream.channel.setOption(.autoRead, value: context.channel.isWritable).whenComplete { _ in }
        }
        context.fireChannelWritabilityChanged()
    }

    private func setClientReading(_ on: Bool, context: ChannelHandlerContext, _ exchange: Exchange) {
        exchange.pausedClient = !on
        context.channel.setOption(.autoRead, value: on).whenComplete { _ in }
    }

    /// Called by the loop's idle sweep; true once the connection is closed or closing (the sweep
    /// then forgets it). Waiting for the upstream is not the client's fault; anything else idle
    /// for `timeout` is closed, with a 408 when a request was under way.
    func closeIfIdle(now: UInt64, timeout: UInt64) -> Bool {
        if closing { return true }
        guard let context else { return true }
        let headLate = headStartedAt != 0 && now &- headStartedAt >= UInt64(max(1, shared.settings.requestHeadTimeout.nanoseconds))
        let bodyLate = requestBody != nil && bodyStartedAt != 0 && now &- bodyStartedAt >= UInt64(max(1, shared.settings.requestBodyTimeout.nanoseconds))
        if bodyLate && exchange == nil && localAnswer == nil {
            // Answered already; the rest of the body was being read and dropped.
            closing = true
            context.close(promise: nil)
            return true
        }
        if headLate || bodyLate {
            abortExchange(status: .requestTimeout, rejection: nil)
            writeLocal(
                .problem(.requestTimeout, "Request timeout", headLate ? "The request head was not completed in time." : "The request body was not completed in time.",
                    rejection: nil), head: nil, context: context, close: true)
            return true
        }
        guard now &- lastActivity >= timeout else { return false }
        if let exchange, exchange.requestEnded { return false }
        let midRequest = exchange != nil || localAnswer != nil || requestBody != nil || (inbound?.readableBytes ?? 0) > 0
        if midRequest {
            abortExchange(status: .requestTimeout, rejection: nil)
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
            if requestBody != nil {
                readBody(&input, context: context)
                continue
            }
            if exchange != nil || localAnswer != nil {
                // A pipelined request waits for the current response; a client that sends a lot of
                // them ahead is read no further until they are answered.
                inbound = input
                if input.readableBytes > shared.settings.maxHeaderBytes && !pausedForPipelining {
                    pausedForPipelining = true
                    context.channel.setOption(.autoRead, value: false).whenComplete { _ in }
                }
                break
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
        exchange?.upstream?.channel.flush()
    }

    private func readBody(_ input: inout ByteBuffer, context: ChannelHandlerContext) {
        guard var framer = requestBody else { return }
        var payload = 0
        let step: BodyFramer.Step
        do {
            step = try input.withUnsafeReadableBytes { bytes in try framer.consume(bytes) { payload += $0.count } }
        } catch {
            abortExchange(status: .badRequest, rejection: nil)
            writeLocal(.problem(.badRequest, "Malformed request", "The request body's chunked framing is invalid.", rejection: nil), head: nil, context: context, close: true)
            return
        }
        requestBody = step.ended ? nil : framer
        if step.ended { bodyStartedAt = 0 }
        let bodyBytes = input.readSlice(length: step.consumed)!
        inbound = input
        if let exchange { forwardBody(bodyBytes, payload: payload, exchange, context: context) }
        if step.ended && !closing { requestEnded(context: context) }
    }

    private func received(_ request: ParsedRequest, context: ChannelHandlerContext) {
        let head = request.head
        let started = DispatchTime.now().uptimeNanoseconds
        let requestID = head.headers.first(name: "x-request-id").flatMap { $0.utf8.count <= 200 ? $0 : nil } ?? loop.newID().lowercasedText
        requestBody = request.framing == .none ? nil : BodyFramer(request.framing)
        bodyStartedAt = requestBody == nil ? 0 : started
        if let infrastructure = infrastructureResponse(head) {
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
            meterLocal(response, head: head, started: started)
            writeLocal(response, head: head, requestID: requestID, context: context, close: true)
            return
        }
        // Answer once the body has been read, so the connection stays in step for keep-alive.
        localAnswer = PendingAnswer(response: response, head: head, started: started, requestID: requestID)
    }

    private func forwardBody(_ bytes: ByteBuffer, payload: Int, _ exchange: Exchange, context: ChannelHandlerContext) {
        exchange.bytesIn += Int64(payload)
        if exchange.bytesIn > Int64(exchange.bodyLimit) {
            // The body outgrew the limit while streaming: stop here.
            loop.pool.recordSuccess(exchange.target.key)
            abortExchange(status: .payloadTooLarge, rejection: .tooLarge)
            writeLocal(
                .problem(.payloadTooLarge, "Request too large", "The body is larger than \(exchange.bodyLimit) bytes.", rejection: .tooLarge),
                head: exchange.head, requestID: exchange.requestID, context: context, close: true)
            return
        }
        guard bytes.readableBytes > 0 else { return }
        if let upstream = exchange.upstream {
            upstream.channel.write(bytes, promise: nil)
        } else {
            exchange.pending.append(bytes)
            exchange.pendingBytes += bytes.readableBytes
            if exchange.pendingBytes > 256 * 1024 && !exchange.pausedClient { setClientReading(false, context: context, exchange) }
        }
    }

    private func requestEnded(context: ChannelHandlerContext) {
        if let pending = localAnswer {
            localAnswer = nil
            if !pending.metered { meterLocal(pending.response, head: pending.head, started: pending.started) }
            writeLocal(pending.response, head: pending.head, requestID: pending.requestID, context: context, close: !pending.head.isKeepAlive)
            return
        }
        // No exchange: its response was complete before the body was.
        guard let exchange else { return }
        exchange.requestEnded = true
        if exchange.upstream != nil { armTimeout(exchange) }
    }

    /// Ends the current exchange without an upstream response (the client connection is about to
    /// close): its upstream connection is dropped, and the call is metered and its quota unit
    /// settled with the status the client gets.
    private func abortExchange(status: HTTPResponseStatus, rejection: UsageEvent.Rejection?) {
        guard let exchange else { return }
        self.exchange = nil
        exchange.upstream?.handler.delegate = nil
        exchange.upstream?.channel.close(promise: nil)
        finish(exchange, status: status.code, forwarded: false, rejection: rejection)
    }

    // MARK: Proxying

    private func forward(_ plan: ForwardPlan, head: HTTPRequestHead, started: UInt64, requestID: String, context: ChannelHandlerContext) {
        guard let target = loop.pool.pick(plan.route, now: started) else {
            let response = LocalResponse.problem(
                .serviceUnavailable, "Upstream unavailable", "No healthy upstream target for \(plan.route.slug) right now.", rejection: .upstreamUnavailable)
            if plan.quotaReserved { shared.quotas.settle(subscription: plan.grant.subscriptionID, billable: false) }
            loop.metrics.upstreamError("circuit_open")
            var withIdentity = response
            withIdentity.tenant = plan.tenant
            withIdentity.route = plan.route
            withIdentity.app = plan.app
            withIdentity.grant = plan.grant
            return answer(withIdentity, head: head, started: started, requestID: requestID, context: context)
        }
        let exchange = Exchange(
            plan: plan, head: head, requestID: requestID, started: started, target: target,
            bodyLimit: plan.route.maxRequestBytes ?? shared.settings.maxRequestBytes)
        self.exchange = exchange
        connect(exchange, context: context)
    }

    private func connect(_ exchange: Exchange, context: ChannelHandlerContext) {
        let target = exchange.target
        if let idle = loop.pool.takeIdle(target) { return attach(idle, to: exchange, context: context) }
        loop.pool.connect(target, tls: exchange.plan.route.upstreamTLS).assumeIsolatedUnsafeUnchecked().whenComplete { result in
            guard self.exchange === exchange else {
                // The client left meanwhile.
                if case .success(let connection) = result { connection.channel.close(promise: nil) }
                return
            }
            switch result {
            case .success(let connection):
                self.attach(connection, to: exchange, context: context)
                connection.channel.flush()
            case .failure(let error):
                let now = DispatchTime.now().uptimeNanoseconds
                self.loop.pool.recordFailure(target.key, now: now)
                self.loop.metrics.upstreamError(UpstreamTLS.isTLSFailure(error) ? "tls" : "connect")
                // One retry, elsewhere, for idempotent requests whose body was not streamed yet.
                if !exchange.retried, exchange.head.method.isIdempotent, exchange.bytesIn == 0,
                    let next = self.loop.pool.pick(exchange.plan.route, now: now, excluding: target.key)
                {
                    exchange.retried = true
                    exchange.target = next
                    return self.connect(exchange, context: context)
                }
                let timedOut = (error as? ChannelError).map { if case .connectTimeout = $0 { true } else { false } } ?? false
                let tlsFailed = UpstreamTLS.isTLSFailure(error)
                self.failBeforeResponse(
                    exchange, status: timedOut ? .gatewayTimeout : .badGateway,
                    detail: timedOut
                        ? "The upstream did not accept the connection in time."
                        : (tlsFailed ? UpstreamTLS.describe(error) : "The upstream could not be reached."), context: context)
            }
        }
    }

    /// Writes the request head and any body read so far; the caller flushes.
    private func attach(_ connection: UpstreamConnection, to exchange: Exchange, context: ChannelHandlerContext) {
        exchange.upstream = connection
        connection.handler.delegate = self
        connection.channel.write(upstreamRequestHead(exchange, allocator: connection.channel.allocator), promise: nil)
        for part in exchange.pending { connection.channel.write(part, promise: nil) }
        exchange.pending = []
        exchange.pendingBytes = 0
        if !connection.channel.isWritable || exchange.pausedClient { setClientReading(connection.channel.isWritable, context: context, exchange) }
        if exchange.requestEnded { armTimeout(exchange) }
    }

    private func armTimeout(_ exchange: Exchange) {
        guard exchange.serial == 0 else { return }
        exchangeSerial += 1
        exchange.serial = exchangeSerial
        let timeout = UInt64(max(0, shared.settings.responseTimeout.nanoseconds))
        loop.deadlines.add(self, ResponseDeadline(exchange: exchange.serial, deadline: DispatchTime.now().uptimeNanoseconds + timeout))
    }

    /// Whether the exchange is still waiting for its response head (for the loop's deadline sweep).
    func isAwaitingResponse(exchange serial: UInt64) -> Bool {
        guard let exchange else { return false }
        return exchange.serial == serial && !exchange.responseStarted
    }

    func responseDeadlinePassed(exchange serial: UInt64) {
        guard let exchange, exchange.serial == serial, !exchange.responseStarted, let context else { return }
        loop.pool.recordFailure(exchange.target.key, now: DispatchTime.now().uptimeNanoseconds)
        loop.metrics.upstreamError("timeout")
        exchange.upstream?.handler.delegate = nil
        exchange.upstream?.channel.close(promise: nil)
        failBeforeResponse(exchange, status: .gatewayTimeout, detail: "The upstream did not answer in time.", context: context)
    }

    private func failBeforeResponse(_ exchange: Exchange, status: HTTPResponseStatus, detail: String, context: ChannelHandlerContext) {
        self.exchange = nil
        finish(exchange, status: status.code, forwarded: false, rejection: .upstreamUnavailable)
        var response = LocalResponse.problem(status, status == .gatewayTimeout ? "Upstream timeout" : "Bad gateway", detail, rejection: .upstreamUnavailable)
        response.headers += exchange.plan.responseHeaders
        if exchange.requestEnded {
            writeLocal(response, head: exchange.head, requestID: exchange.requestID, context: context, close: !exchange.keepAlive)
        } else {
            // The rest of the body is still coming; answer once it ends.
            localAnswer = PendingAnswer(response: response, head: exchange.head, started: exchange.started, requestID: exchange.requestID, metered: true)
            if exchange.pausedClient { context.channel.setOption(.autoRead, value: true).whenComplete { _ in } }
        }
    }

    // MARK: Upstream side (called by UpstreamResponseHandler on this loop)

    func upstreamRead(_ buffer: ByteBuffer) {
        guard let exchange, let context else { return }
        var input = buffer
        if var partial = exchange.responseInbound {
            exchange.responseInbound = nil
            partial.writeBuffer(&input)
            input = partial
        }
        while input.readableBytes > 0 {
            if exchange.responseStarted {
                guard relayResponseBody(&input, exchange, context: context) else { return }
                continue
            }
            let parsed = input.withUnsafeReadableBytes {
                HTTPHeadParser.parseResponse($0, maxBytes: Self.maxResponseHeadBytes, requestMethod: exchange.head.method)
            }
            switch parsed {
            case .incomplete:
                exchange.responseInbound = input
                return
            case .tooLarge, .invalid:
                return upstreamBroke(exchange, detail: "The upstream sent a response that is not valid HTTP/1.1.", context: context)
            case .complete(let response, let length):
                if response.status == 101 {
                    return upstreamBroke(exchange, detail: "The upstream switched protocols, which the gateway does not relay.", context: context)
                }
                if response.status < 200 {
                    // Interim responses (100 Continue, 103 Early Hints) go to HTTP/1.1 clients as they came.
                    let interim = input.readSlice(length: length)!
                    if exchange.head.version.minor >= 1 { context.write(wrapOutboundOut(interim), promise: nil) }
                    continue
                }
                exchange.responseStarted = true
                exchange.status = UInt(response.status)
                exchange.upstreamKeepAlive = response.keepAlive
                exchange.responseBody = BodyFramer(response.framing)
                let clientIsHTTP10 = exchange.head.version.minor == 0
                exchange.dechunk = clientIsHTTP10 && response.framing == .chunked
                exchange.closeClient = !exchange.keepAlive || response.framing == .untilClose || exchange.dechunk || draining
                var head = input.withUnsafeReadableBytes { responseHead(response, bytes: $0, exchange, allocator: context.channel.allocator) }
                input.moveReaderIndex(forwardBy: length)
                // A small body that came with its head goes out in the same buffer: one write down
                // the pipeline instead of two.
                if !exchange.dechunk, case .length(let size) = response.framing, size <= 16 * 1024, input.readableBytes >= size {
                    var body = input.readSlice(length: size)!
                    head.writeBuffer(&body)
                    exchange.bytesOut += Int64(size)
                    exchange.responseBody = BodyFramer(.none)
                }
                context.write(wrapOutboundOut(head), promise: nil)
                if exchange.responseBody.isDone { return completeExchange(exchange, upstreamInStep: input.readableBytes == 0, context: context) }
            }
        }
    }

    /// Passes response body bytes to the client; false once the exchange is over.
    private func relayResponseBody(_ input: inout ByteBuffer, _ exchange: Exchange, context: ChannelHandlerContext) -> Bool {
        var payload: [Range<Int>] = []
        var payloadBytes = 0
        let dechunk = exchange.dechunk
        let step: BodyFramer.Step
        do {
            step = try input.withUnsafeReadableBytes { bytes in
                try exchange.responseBody.consume(bytes) { range in
                    payloadBytes += range.count
                    if dechunk { payload.append(range) }
                }
            }
        } catch {
            // Half a response was sent: the client cannot be told otherwise than by closing.
            upstreamBroke(exchange, detail: "", context: context)
            return false
        }
        exchange.bytesOut += Int64(payloadBytes)
        if dechunk {
            for range in payload { context.write(wrapOutboundOut(input.getSlice(at: input.readerIndex + range.lowerBound, length: range.count)!), promise: nil) }
            input.moveReaderIndex(forwardBy: step.consumed)
        } else if step.consumed > 0 {
            context.write(wrapOutboundOut(input.readSlice(length: step.consumed)!), promise: nil)
        }
        if step.ended {
            completeExchange(exchange, upstreamInStep: input.readableBytes == 0, context: context)
            return false
        }
        return true
    }

    /// The response is complete: the upstream connection goes back to the pool when it is in step
    /// (whole request sent, nothing read beyond the response), and the next pipelined request may start.
    private func completeExchange(_ exchange: Exchange, upstreamInStep: Bool, context: ChannelHandlerContext) {
        self.exchange = nil
        if exchange.status >= 502 && exchange.status <= 504 {
            loop.pool.recordFailure(exchange.target.key, now: DispatchTime.now().uptimeNanoseconds)
        } else {
            loop.pool.recordSuccess(exchange.target.key)
        }
        if let upstream = exchange.upstream {
            if exchange.pausedUpstream { upstream.channel.setOption(.autoRead, value: true).whenComplete { _ in } }
            if exchange.upstreamKeepAlive && upstreamInStep && exchange.requestEnded {
                loop.pool.release(upstream)
            } else {
                upstream.handler.delegate = nil
                upstream.channel.close(promise: nil)
            }
        }
        finish(exchange, status: exchange.status, forwarded: true, rejection: nil)
        if exchange.closeClient || draining {
            closeAfterWrites(context: context)
            return
        }
        if exchange.pausedClient { context.channel.setOption(.autoRead, value: true).whenComplete { _ in } }
        // flushed here: the upstream's read-complete no longer reaches this handler once the
        // connection is back in the pool
        context.flush()
        responseCompleted(context: context)
    }

    /// The upstream broke the exchange: 502 before the response started, a closed connection after.
    private func upstreamBroke(_ exchange: Exchange, detail: String, context: ChannelHandlerContext) {
        exchange.upstream?.handler.delegate = nil
        exchange.upstream?.channel.close(promise: nil)
        exchange.upstream = nil
        loop.pool.recordFailure(exchange.target.key, now: DispatchTime.now().uptimeNanoseconds)
        loop.metrics.upstreamError("invalid_response")
        if exchange.responseStarted {
            self.exchange = nil
            finish(exchange, status: 502, forwarded: true, rejection: nil)
            closeAfterWrites(context: context)
        } else {
            failBeforeResponse(exchange, status: .badGateway, detail: detail, context: context)
        }
    }

    func upstreamReadComplete() {
        context?.flush()
    }

    func upstreamClosed() {
        guard let exchange, let context else { return }
        exchange.upstream = nil
        if exchange.responseStarted && exchange.responseBody.endsAtClose {
            // A body delimited by the connection's end: this is how it ends.
            return completeExchange(exchange, upstreamInStep: false, context: context)
        }
        loop.pool.recordFailure(exchange.target.key, now: DispatchTime.now().uptimeNanoseconds)
        loop.metrics.upstreamError("closed")
        if exchange.responseStarted {
            // Half a response was sent: the client cannot be told otherwise than by closing.
            self.exchange = nil
            finish(exchange, status: 502, forwarded: true, rejection: nil)
            closeAfterWrites(context: context)
        } else {
            failBeforeResponse(exchange, status: .badGateway, detail: "The upstream closed the connection without answering.", context: context)
        }
    }

    func upstreamWritabilityChanged(_ writable: Bool) {
        guard let context, let exchange else { return }
        setClientReading(writable, context: context, exchange)
    }

    // MARK: Writing heads

    /// The request line and headers for the upstream, written straight into a buffer. The body
    /// follows with the client's own framing, so `Content-Length`/`Transfer-Encoding` stay.
    private func upstreamRequestHead(_ exchange: Exchange, allocator: ByteBufferAllocator) -> ByteBuffer {
        let head = exchange.head
        let plan = exchange.plan
        let target = exchange.target
        var out = allocator.buffer(capacity: 1024)
        out.writeString(head.method.rawValue)
        out.writeStaticString(" ")
        out.writeString(target.pathPrefix)
        out.writeString(plan.upstreamURI)
        out.writeStaticString(" HTTP/1.1\r\nHost: ")
        out.writeString(target.hostHeader)
        out.writeStaticString("\r\n")
        let hop = HopByHop(head.headers)
        var forwardedFor: String?
        var host = ""
        for (name, value) in head.headers {
            if name.isASCII(caseInsensitively: "host") { host = value; continue }
            if name.isASCII(caseInsensitively: "x-forwarded-for") { forwardedFor = value; continue }
            // credentials stay at the gateway; ids and identity headers are the gateway's to set
            if hop.contains(name) || name.isASCII(caseInsensitively: "authorization") || name.isASCII(caseInsensitively: "x-api-key")
                || name.isASCII(caseInsensitively: "x-request-id") || name.hasASCIIPrefix(caseInsensitively: "x-tollgate-")
                || name.isASCII(caseInsensitively: "x-forwarded-proto") || name.isASCII(caseInsensitively: "x-forwarded-host")
            {
                continue
            }
            out.writeHeader(name, value)
        }
        out.writeStaticString("X-Forwarded-For: ")
        if let forwardedFor {
            out.writeString(forwardedFor)
            out.writeStaticString(", ")
        }
        out.writeString(clientIP)
        if secure {
            out.writeStaticString("\r\nX-Forwarded-Proto: https\r\n")
        } else {
            out.writeStaticString("\r\nX-Forwarded-Proto: http\r\n")
        }
        if !host.isEmpty { out.writeHeader("X-Forwarded-Host", host) }
        out.writeHeader("X-Request-Id", exchange.requestID)
        // identity lines (tenant, app, client, team, plan, subscription) come preformatted with the snapshot
        out.writeString(plan.tenant.identityHeaderLine)
        out.writeString(plan.app.identityHeaderLines)
        out.writeString(plan.grant.identityHeaderLines)
        out.writeStaticString("\r\n")
        return out
    }

    /// The upstream's status line and header lines as they came, less hop-by-hop ones and those the
    /// gateway sets (rate limits, deprecation, CORS, request id), which follow.
    private func responseHead(_ response: ParsedResponse, bytes: UnsafeRawBufferPointer, _ exchange: Exchange, allocator: ByteBufferAllocator) -> ByteBuffer {
        let added = exchange.plan.responseHeaders
        var out = allocator.buffer(capacity: bytes.count + 512)
        out.writeStaticString(exchange.head.version.minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ")
        out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[response.statusText]))
        out.writeStaticString("\r\n")
        for field in response.fields {
            let name = field.name
            if HopByHop.isStandard(bytes, name) || HTTPHeadParser.equals(bytes, name, "x-request-id") { continue }
            if !response.connectionListed.isEmpty && response.connectionListed.contains(where: { HTTPHeadParser.equals(bytes, name, $0) }) { continue }
            if exchange.dechunk && HTTPHeadParser.equals(bytes, name, "transfer-encoding") { continue }
            if added.contains(where: { HTTPHeadParser.equals(bytes, name, caseFolded: $0.0) }) { continue }
            out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[field.line]))
            out.writeStaticString("\r\n")
        }
        for (name, value) in added { out.writeHeader(name, value) }
        out.writeHeader("X-Request-Id", exchange.requestID)
        if secure, let line = shared.strictTransportSecurityLine { out.writeString(line) }
        if exchange.closeClient {
            out.writeStaticString("Connection: close\r\n")
        } else if exchange.head.version.minor == 0 {
            out.writeStaticString("Connection: keep-alive\r\n")
        }
        out.writeStaticString("\r\n")
        return out
    }

    private func infrastructureResponse(_ head: HTTPRequestHead) -> LocalResponse? {
        let uri = head.uri
        let path = uri.utf8.firstIndex(of: UInt8(ascii: "?")).map { uri[..<$0] } ?? Substring(uri)
        guard path.utf8.count == 7 || path.utf8.count == 8 else { return nil }
        switch path {
        case "/healthz":
            return LocalResponse(status: .ok, headers: [("Content-Type", "application/json")], body: "{\"status\":\"ok\"}", rejection: nil)
        case "/readyz":
            var (ready, body) = shared.store.readinessJSON()
            if let meter = shared.usage.readinessJSON { body = String(body.dropLast()) + ",\"meter\":" + meter + "}" }
            return LocalResponse(status: ready ? .ok : .serviceUnavailable, headers: [("Content-Type", "application/json")], body: body, rejection: nil)
        case "/metrics":
            return LocalResponse(status: .ok, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")], body: shared.metricsText(), rejection: nil)
        default:
            return nil
        }
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

    private func meterLocal(_ response: LocalResponse, head: HTTPRequestHead, started: UInt64) {
        let elapsed = DispatchTime.now().uptimeNanoseconds - started
        if let reason = response.rejection { loop.metrics.rejected(reason.rawValue) }
        guard let tenant = response.tenant else { return }
        loop.metrics.request(api: response.route?.slug ?? "-", status: response.status.code, nanoseconds: elapsed)
        shared.usage.record(
            UsageEvent(
                id: loop.newID(), tenantID: tenant.id, apiID: response.route?.apiID, appID: response.app?.id, subscriptionID: response.grant?.subscriptionID,
                planID: response.grant?.planID, method: head.method.rawValue, status: Int(response.status.code), latencyMicroseconds: Int64(elapsed / 1000),
                bytesIn: 0, bytesOut: Int64(response.body.utf8.count), rejection: response.rejection, forwarded: false))
    }

    private func finish(_ exchange: Exchange, status: UInt, forwarded: Bool, rejection: UsageEvent.Rejection?) {
        let elapsed = DispatchTime.now().uptimeNanoseconds - exchange.started
        let plan = exchange.plan
        let billable = UsageEvent.isBillable(forwarded: forwarded, status: Int(status))
        if plan.quotaReserved { shared.quotas.settle(subscription: plan.grant.subscriptionID, billable: billable) }
        loop.metrics.request(api: plan.route.slug, status: status, nanoseconds: elapsed)
        if let rejection { loop.metrics.rejected(rejection.rawValue) }
        shared.usage.record(
            UsageEvent(
                id: loop.newID(), tenantID: plan.tenant.id, apiID: plan.route.apiID, appID: plan.app.id, subscriptionID: plan.grant.subscriptionID, planID: plan.grant.planID,
                method: exchange.head.method.rawValue, status: Int(status), latencyMicroseconds: Int64(elapsed / 1000), bytesIn: exchange.bytesIn,
                bytesOut: exchange.bytesOut, rejection: rejection, forwarded: forwarded))
    }
}

extension ByteBuffer {
    fileprivate mutating func writeHeader(_ name: String, _ value: String) {
        writeString(name)
        writeStaticString(": ")
        writeString(value)
        writeStaticString("\r\n")
    }
}

/// Connection-scoped header names (RFC 9110 §7.6.1) of one message: the standard ones plus any its
/// `Connection` header lists. `Transfer-Encoding` is kept: the body is forwarded with the framing it
/// came with. Compares bytes without allocating: building a `Set` of lowercased names per
/// message showed in the gateway's profile.
struct HopByHop {
    /// Lowercased names the `Connection` header lists (nginx sends `keep-alive` on every response).
    private var listed: [String] = []

    init(_ headers: HTTPHeaders) {
        for value in headers["connection"] {
            for token in value.split(separator: ",") {
                let name = token.trimmingASCIIWhitespace().lowercased()
                if !name.isEmpty && name != "transfer-encoding" { listed.append(name) }
            }
        }
    }

    func contains(_ name: String) -> Bool {
        if Self.isStandard(name) { return true }
        return listed.contains { name.isASCII(caseInsensitively: $0) }
    }

    static func isStandard(_ name: String) -> Bool {
        isStandard(length: name.utf8.count) { name.isASCII(caseInsensitively: $0) }
    }

    /// The same for a name inside a raw head.
    static func isStandard(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Bool {
        isStandard(length: range.count) { HTTPHeadParser.equals(bytes, range, $0) }
    }

    private static func isStandard(length: Int, matches: (String) -> Bool) -> Bool {
        switch length {
        case 2: matches("te")
        case 7: matches("trailer") || matches("upgrade")
        case 10: matches("connection") || matches("keep-alive")
        case 16: matches("proxy-connection")
        case 18: matches("proxy-authenticate")
        case 19: matches("proxy-authorization")
        default: false
        }
    }
}

extension StringProtocol {
    /// Equal to `lowercase` (ASCII, already lowercased) when ASCII letters are folded to lower case.
    func isASCII(caseInsensitively lowercase: String) -> Bool {
        utf8.count == lowercase.utf8.count && hasASCIIPrefix(caseInsensitively: lowercase)
    }

    func hasASCIIPrefix(caseInsensitively lowercase: String) -> Bool {
        var mine = utf8.makeIterator()
        for expected in lowercase.utf8 {
            guard let byte = mine.next() else { return false }
            let folded = byte >= 0x41 && byte <= 0x5a ? byte | 0x20 : byte
            if folded != expected { return false }
        }
        return true
    }

    fileprivate func trimmingASCIIWhitespace() -> Substring {
        let text = Substring(self)
        let isSpace = { (c: Character) in c == " " || c == "\t" }
        guard let first = text.firstIndex(where: { !isSpace($0) }), let last = text.lastIndex(where: { !isSpace($0) }) else { return "" }
        return text[first...last]
    }
}

extension HTTPMethod {
    /// RFC 9110 §9.2.2.
    var isIdempotent: Bool {
        switch self {
        case .GET, .HEAD, .OPTIONS, .PUT, .DELETE, .TRACE: true
        default: false
        }
    }
}
