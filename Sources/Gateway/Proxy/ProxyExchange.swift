import Billing
import Foundation
import NIOCore
import NIOHTTP1

/// The client side of one proxied call, whichever protocol carries it (an HTTP/1 connection, an
/// HTTP/2 stream). The exchange calls it on the event loop both share.
protocol ExchangeClient: AnyObject {
    var allocator: ByteBufferAllocator { get }
    /// An interim (1xx) response head, bytes as the upstream sent them.
    func exchange(_ exchange: ProxyExchange, receivedInterim head: ByteBuffer)
    /// Whether the client takes the body as bare payload (chunk framing removed) rather than the
    /// upstream's bytes as they came; asked once, when the final response head has arrived.
    func exchangeWantsPayloadOnly(_ exchange: ProxyExchange, response: ParsedResponse) -> Bool
    /// The final response head; `body` is the whole body when it was small and came with the head.
    func exchange(_ exchange: ProxyExchange, receivedHead response: ParsedResponse, bytes: UnsafeRawBufferPointer, body: ByteBuffer?)
    /// Response body bytes (or, in a tunnel, whatever the upstream sent).
    func exchange(_ exchange: ProxyExchange, receivedBody bytes: ByteBuffer)
    /// The upstream answered `101` to a WebSocket handshake; `rest` is what followed the head.
    func exchange(_ exchange: ProxyExchange, switchedProtocols response: ParsedResponse, bytes: UnsafeRawBufferPointer, rest: ByteBuffer)
    /// The response is complete (metered already).
    func exchangeCompleted(_ exchange: ProxyExchange)
    /// The exchange ended before a response started, metered already: the client gets `answer`.
    func exchange(_ exchange: ProxyExchange, failedWith answer: LocalResponse)
    /// The upstream broke the exchange after the response started (or closed a tunnel), metered
    /// already: the client can only be told by ending its stream.
    func exchangeBroken(_ exchange: ProxyExchange)
    func exchangeFlush(_ exchange: ProxyExchange)
    /// Back-pressure: stop (false) or resume reading the request body from the client.
    func exchange(_ exchange: ProxyExchange, clientReading: Bool)
}

/// One proxied call, from admission to its metering, independent of the client's protocol: picks
/// up an upstream connection (pooled, or new with one retry elsewhere), writes the request head and
/// body, parses the response head, relays the body through `BodyFramer`, returns the connection to
/// the pool when it is in step, feeds the circuit breaker and records the call once.
final class ProxyExchange {
    let plan: ForwardPlan
    let head: HTTPRequestHead
    let requestID: String
    let started: UInt64
    let keepAlive: Bool
    let bodyLimit: Int
    var target: UpstreamTargetConfig
    var upstream: UpstreamConnection?
    /// The protocol a WebSocket handshake asks to switch to (`websocket`); nil for plain requests.
    var upgrade: String?
    /// The `Sec-WebSocket-Accept` the upstream must answer, when the gateway made the handshake's
    /// key (a WebSocket over HTTP/2); nil when the client made it and checks the answer itself.
    var expectedWebSocketAccept: String?
    /// The gateway frames the request body as chunked for the upstream (an HTTP/2 body of unknown
    /// length); HTTP/1 bodies go with the client's own framing.
    var chunksRequestBody = false
    /// An HTTP/1.1 client sent `Expect: 100-continue` with a body: the gateway invites the body
    /// itself once the call is admitted and forwarded (`100 Continue`), and the upstream does not
    /// hear the expectation — as nginx and Envoy do. Left to the upstream, a server that ignores
    /// it (many do) held curl's upload for its one-second wait.
    var answersContinue = false
    /// When the upstream switched protocols and the exchange became a byte tunnel (uptime
    /// nanoseconds; 0: not a tunnel), and when a byte last crossed it either way.
    var tunnelOpenedAt: UInt64 = 0
    var tunnelActivity: UInt64 = 0
    var isTunnel: Bool { tunnelOpenedAt != 0 }
    /// Body bytes read before the upstream connection was ready.
    private var pending: [ByteBuffer] = []
    private var pendingBytes = 0
    private(set) var requestEnded = false
    /// The final response head was handed to the client.
    private(set) var responseStarted = false
    /// A response head still arriving.
    private var responseInbound: ByteBuffer?
    private var responseBody = BodyFramer(.none)
    private var payloadOnly = false
    /// The client connection closes after this response (decided by the HTTP/1 client side).
    var closeClient = false
    private var upstreamKeepAlive = true
    private(set) var status: UInt = 0
    var bytesIn: Int64 = 0
    var bytesOut: Int64 = 0
    private var retried = false
    /// The response cache's part in this call; nil for APIs without a `response_cache` policy.
    private var cache: CacheCall?
    /// Set while the body is buffered for `request_validation` (the operation has a JSON body
    /// schema): nothing goes upstream until the whole body is read and matches. Nil otherwise.
    private var bodyCheck: BodyCheck?
    /// Identifies the exchange to the loop's response deadlines; 0 until its deadline is armed.
    private(set) var serial: UInt64 = 0
    /// Whether reading from the client (or the upstream) was paused for back-pressure.
    var pausedClient = false
    var pausedUpstream = false
    private var finished = false
    /// The answer came from the response cache (metered as a hit).
    private var answeredFromCache = false
    /// An HTTP/2 upstream's trailers (name, value), relayed to clients that can take them as fields
    /// (HTTP/2); HTTP/1.1 clients get them inside the chunked body the exchange relays.
    private(set) var trailers: [(String, String)] = []
    /// For the access log, set only when the call is logged: when the request head went to the
    /// upstream (uptime nanoseconds, 0: not logged or not sent) and the wait for its response head.
    private var upstreamSentAt: UInt64 = 0
    private var upstreamMicroseconds: Int64?

    private unowned let client: any ExchangeClient
    private let loop: LoopState
    private let meter: CallMeter
    private let responseTimeout: UInt64
    private let connection: UpstreamRequestHead.Connection

    init(
        plan: ForwardPlan, head: HTTPRequestHead, requestID: String, started: UInt64, target: UpstreamTargetConfig, bodyLimit: Int,
        client: any ExchangeClient, loop: LoopState, meter: CallMeter, responseTimeout: TimeAmount, connection: UpstreamRequestHead.Connection
    ) {
        self.plan = plan
        self.head = head
        self.requestID = requestID
        self.started = started
        self.keepAlive = head.isKeepAlive
        self.target = target
        self.bodyLimit = bodyLimit
        self.client = client
        self.loop = loop
        self.meter = meter
        self.responseTimeout = UInt64(max(0, responseTimeout.nanoseconds))
        self.connection = connection
    }

    // MARK: Request

    /// Runs the phase before forwarding (validation, then the cache), then connects (or takes an
    /// idle pooled connection) and sends what the client sent so far.
    func start() {
        if let validation = plan.route.requestValidation, !admit(validation) { return }
        if answersContinue { inviteBody() }
        startForwarding()
    }

    private func inviteBody() {
        client.exchange(self, receivedInterim: ByteBuffer(string: "HTTP/1.1 100 Continue\r\n\r\n"))
        client.exchangeFlush(self)
    }

    /// The `request_validation` policy's check of the head: true to go on; false when the call
    /// was refused, or when its body is buffered first (forwarding then starts when it ended).
    private func admit(_ policy: RequestValidationPolicy) -> Bool {
        guard case .ready(let validator) = policy else {
            refuse(RequestValidationPolicy.unavailable)
            return false
        }
        let chunked = chunksRequestBody || (head.version.major == 1 && head.headers.contains(name: "transfer-encoding"))
        let declared = head.headers.first(name: "content-length").flatMap { Int($0) } ?? 0
        switch validator.checkHead(method: head.method, uri: plan.upstreamURI, headers: head.headers, hasBody: chunked || declared > 0) {
        case .pass:
            return true
        case .refuse(let refusal):
            refuse(refusal.response)
            return false
        case .checkBody(let schema, let required):
            bodyCheck = BodyCheck(validator: validator, schema: schema, required: required, chunked: chunked)
            // the body is checked before anything goes upstream: the gateway asks for it
            if answersContinue { inviteBody() }
            return false
        }
    }

    /// A refusal by a policy before anything went upstream: metered as not forwarded (not billable).
    private func refuse(_ answer: LocalResponse) {
        pending = []
        pendingBytes = 0
        finish(status: answer.status.code, forwarded: false, rejection: answer.rejection)
        var response = answer
        response.headers += plan.responseHeaders
        client.exchange(self, failedWith: response)
    }

    private func startForwarding() {
        // a WebSocket handshake is never answered from the cache (nor stored: a 101 is not kept)
        if cache == nil, upgrade == nil, let policy = plan.route.responseCache {
            // after the gate admitted the call (auth, subscription, limits), before any upstream
            var call = CacheCall(policy: policy)
            switch policy.lookup(head, plan: plan, now: DispatchTime.now().uptimeNanoseconds) {
            case .hit(let found):
                // served once the request is complete, as an upstream would answer
                call.hit = found
                cache = call
                return
            case .miss(let key): call.key = key
            case .bypass(let key):
                call.key = key
                call.forward = "request"
            case .notApplicable: call.forward = "method"
            }
            cache = call
        }
        connect()
    }

    private func connect() {
        let connecting: EventLoopFuture<UpstreamConnection>
        if self.target.h2 {
            // the API's upstream speaks HTTP/2: a new stream of the target's multiplexed connection —
            // but a WebSocket handshake gets an HTTP/1.1 connection of its own to the same target, as
            // nginx does (an HTTP/2 stream cannot switch protocols); it is never pooled
            connecting =
                upgrade == nil
                ? loop.http2Upstreams.openExchangeStream(to: self.target, tls: plan.route.upstreamTLS)
                : loop.pool.connect(self.target, tls: plan.route.upgradeTLS)
        } else {
            // (the pooled case first, before the target is copied: it is the hot path)
            if let idle = loop.pool.takeIdle(self.target) { return attach(idle) }
            connecting = loop.pool.connect(self.target, tls: plan.route.upstreamTLS)
        }
        let target = self.target
        connecting.assumeIsolatedUnsafeUnchecked().whenComplete { result in
            guard !self.finished else {
                // The client left meanwhile.
                if case .success(let connection) = result { connection.channel.close(promise: nil) }
                return
            }
            switch result {
            case .success(let connection):
                self.attach(connection)
                connection.channel.flush()
            case .failure(let error):
                let now = DispatchTime.now().uptimeNanoseconds
                self.loop.pool.recordFailure(target, now: now)
                self.loop.metrics.upstreamError(UpstreamTLS.isTLSFailure(error) ? "tls" : "connect")
                // One retry, elsewhere, for idempotent requests whose body was not streamed yet.
                if !self.retried, self.head.method.isIdempotent, self.bytesIn == 0,
                    let next = self.loop.pool.pick(self.plan.route, now: now, excluding: target.key)
                {
                    self.retried = true
                    self.target = next
                    return self.connect()
                }
                let timedOut = (error as? ChannelError).map { if case .connectTimeout = $0 { true } else { false } } ?? false
                self.failBeforeResponse(
                    status: timedOut ? .gatewayTimeout : .badGateway,
                    detail: timedOut
                        ? "The upstream did not accept the connection in time."
                        : (UpstreamTLS.isTLSFailure(error)
                            ? UpstreamTLS.describe(error)
                            : error is HTTP2PrefaceWaiter.NoPreface
                                ? "The upstream did not answer HTTP/2 (h2c, prior knowledge): set the API's upstream protocol to http1, or enable HTTP/2 on the upstream."
                                : "The upstream could not be reached."))
            }
        }
    }

    /// Writes the request head and any body read so far; the caller flushes.
    private func attach(_ connection: UpstreamConnection) {
        upstream = connection
        connection.handler.delegate = self
        let requestHead = UpstreamRequestHead.write(
            head, plan: plan, target: target, requestID: requestID, connection: self.connection, upgrade: upgrade, chunked: chunksRequestBody,
            dropExpect: answersContinue, allocator: connection.channel.allocator)
        connection.channel.write(requestHead, promise: nil)
        if meter.logs(plan.route) { upstreamSentAt = DispatchTime.now().uptimeNanoseconds }
        for part in pending { connection.channel.write(part, promise: nil) }
        pending = []
        pendingBytes = 0
        if requestEnded && chunksRequestBody { connection.channel.write(finalChunk(), promise: nil) }
        if !connection.channel.isWritable || pausedClient { setClientReading(connection.channel.isWritable) }
        if requestEnded { armTimeout() }
    }

    private static let lastChunk = ByteBuffer(string: "0\r\n\r\n")

    /// An HTTP/2 client's request trailers (fields that may pass, as a trailer section), carried by
    /// the last chunk of a body the gateway chunks; nil for most calls.
    var requestTrailers: ByteBuffer?

    private func finalChunk() -> ByteBuffer {
        guard var trailers = requestTrailers else { return Self.lastChunk }
        var out = client.allocator.buffer(capacity: trailers.readableBytes + 3)
        out.writeStaticString("0\r\n")
        out.writeBuffer(&trailers)
        return out
    }

    /// Request body bytes, framed as the upstream will read them (the client's framing, or
    /// chunks the gateway makes); written once connected, buffered (then paused) before.
    func writeBody(_ bytes: ByteBuffer) {
        guard bytes.readableBytes > 0 else { return }
        var framed = bytes
        if chunksRequestBody {
            framed = client.allocator.buffer(capacity: bytes.readableBytes + 16)
            framed.writeString(String(bytes.readableBytes, radix: 16))
            framed.writeStaticString("\r\n")
            var payload = bytes
            framed.writeBuffer(&payload)
            framed.writeStaticString("\r\n")
        }
        if let upstream {
            upstream.channel.write(framed, promise: nil)
        } else {
            pending.append(framed)
            pendingBytes += framed.readableBytes
            // a body being validated is read whole (the API's body limit bounds it)
            if pendingBytes > 256 * 1024 && !pausedClient && bodyCheck == nil { setClientReading(false) }
        }
    }

    /// At the end of the loop's round (see `LoopFlushBatch`).
    func flushUpstream() {
        if let upstream { loop.flushBatch.hold(upstream) }
    }

    /// The client's request is complete: the response deadline starts once it is all sent.
    func requestBodyEnded() {
        requestEnded = true
        if let check = bodyCheck {
            bodyCheck = nil
            guard !finished else { return }
            let violations = check.violations(in: pending)
            if !violations.isEmpty { return refuse(ValidationRefusal(violations: violations).response) }
            // the buffered body goes upstream as it came (the same framing, the same bytes)
            startForwarding()
            if cache?.hit != nil { serveFromCache() }
            return
        }
        if cache?.hit != nil { return serveFromCache() }
        if let upstream, chunksRequestBody { upstream.channel.write(finalChunk(), promise: nil) }
        if upstream != nil { armTimeout() }
    }

    private func setClientReading(_ on: Bool) {
        pausedClient = !on
        client.exchange(self, clientReading: on)
    }

    // MARK: Deadline

    private func armTimeout() {
        guard serial == 0 else { return }
        serial = loop.nextExchangeSerial()
        loop.deadlines.add(self, ResponseDeadline(exchange: serial, deadline: DispatchTime.now().uptimeNanoseconds + responseTimeout))
    }

    /// Whether the exchange is still waiting for its response head (for the loop's deadline sweep).
    func isAwaitingResponse(serial: UInt64) -> Bool { !finished && self.serial == serial && !responseStarted }

    func responseDeadlinePassed() {
        guard !finished, !responseStarted else { return }
        loop.pool.recordFailure(target, now: DispatchTime.now().uptimeNanoseconds)
        loop.metrics.upstreamError("timeout")
        dropUpstream()
        failBeforeResponse(status: .gatewayTimeout, detail: "The upstream did not answer in time.")
    }

    // MARK: Ending

    /// Records the call once, with the status the client gets; the upstream connection is the
    /// caller's to dispose of.
    func finish(status: UInt, forwarded: Bool, rejection: UsageEvent.Rejection?) {
        guard !finished else { return }
        finished = true
        meter.recordCall(
            plan, method: head.method, started: started, status: status, forwarded: forwarded, bytesIn: bytesIn, bytesOut: bytesOut, rejection: rejection,
            cacheHit: answeredFromCache,
            caller: CallMeter.Caller(
                requestID: requestID, clientIP: connection.clientIP, target: head.uri, protocolName: head.version.major == 2 ? .http2 : .http1),
            upstreamMicroseconds: upstreamMicroseconds, cacheStatus: self.answeredFromCache ? "hit" : self.cache?.forward)
    }

    /// Ends the exchange from the client side (it left, timed out or sent too much): the upstream
    /// connection is dropped and the call metered with `status`.
    func abort(status: UInt, forwarded: Bool, rejection: UsageEvent.Rejection?) {
        dropUpstream()
        finish(status: status, forwarded: forwarded, rejection: rejection)
    }

    private func dropUpstream() {
        upstream?.handler.delegate = nil
        upstream?.channel.close(promise: nil)
        upstream = nil
    }

    private func failBeforeResponse(status: HTTPResponseStatus, detail: String) {
        finish(status: status.code, forwarded: false, rejection: .upstreamUnavailable)
        var response = LocalResponse.problem(status, status == .gatewayTimeout ? "Upstream timeout" : "Bad gateway", detail, rejection: .upstreamUnavailable)
        response.headers += plan.responseHeaders
        client.exchange(self, failedWith: response)
    }

    /// Said in a 502 when a WebSocket handshake to an h2 API failed: it went over HTTP/1.1, which
    /// an upstream that speaks only h2c does not answer.
    private var webSocketToH2Note: String {
        upgrade != nil && target.h2
            ? " WebSocket handshakes to an API whose upstream protocol is h2 reach its target over HTTP/1.1, which it must speak too." : ""
    }

    /// The upstream broke the exchange: 502 before the response started, a broken stream after.
    private func upstreamBroke(detail: String) {
        dropUpstream()
        loop.pool.recordFailure(target, now: DispatchTime.now().uptimeNanoseconds)
        loop.metrics.upstreamError("invalid_response")
        if responseStarted {
            finish(status: 502, forwarded: true, rejection: nil)
            client.exchangeBroken(self)
        } else {
            failBeforeResponse(status: .badGateway, detail: detail)
        }
    }

    /// The response is complete: the upstream connection goes back to the pool when it is in step
    /// (whole request sent, nothing read beyond the response).
    private func complete(upstreamInStep: Bool) {
        if status >= 502 && status <= 504 {
            loop.pool.recordFailure(target, now: DispatchTime.now().uptimeNanoseconds)
        } else {
            loop.pool.recordSuccess(target)
        }
        if let upstream {
            if pausedUpstream { upstream.channel.setOption(.autoRead, value: true).whenComplete { _ in } }
            // (an h2 target's connections — its streams, a refused WebSocket handshake's own — are not kept)
            if upstreamKeepAlive && upstreamInStep && requestEnded && !target.h2 {
                loop.pool.release(upstream)
            } else {
                upstream.handler.delegate = nil
                upstream.channel.close(promise: nil)
            }
            self.upstream = nil
        }
        if let call = cache, let key = call.key, let pending = call.pending, pending.body.readableBytes == call.expectedBody {
            call.policy.store.store(key, pending)
        }
        finish(status: status, forwarded: true, rejection: nil)
        client.exchangeCompleted(self)
    }

    // MARK: Response cache and transformation

    /// Applies the route's response transformation: the touched upstream fields leave the head and
    /// come back, transformed, among the headers the gateway adds.
    private func transformResponse(_ response: inout ParsedResponse, bytes: UnsafeRawBufferPointer) {
        guard let transform = plan.route.responseTransform else { return }
        let transformed = transform.apply(&response, bytes: bytes, context: TransformContext(plan: plan, requestID: requestID, clientIP: connection.clientIP))
        for field in transformed { plan.responseHeaders.append((field.name, field.value)) }
    }

    /// Decides whether the upstream's response is kept (RFC 9111 rules, the policy's bounds) and
    /// says so in `Cache-Status` (RFC 9211).
    private func noteResponseForCache(_ response: ParsedResponse, head bytes: UnsafeRawBufferPointer) {
        guard var call = cache else { return }
        var value = "tollgate; fwd=" + call.forward
        if call.key != nil {
            let fields = response.fields.map { field in
                (
                    name: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[field.name]), as: UTF8.self).lowercased(),
                    value: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[field.value]), as: UTF8.self)
                )
            }
            switch call.policy.verdict(status: response.status, headers: fields, now: Date()) {
            case .store(let ttl):
                let size: Int? =
                    switch response.framing {
                    case .none: 0
                    case .length(let length) where length <= call.policy.config.maxBodyBytes: length
                    default: nil
                    }
                if let size {
                    let now = DispatchTime.now().uptimeNanoseconds
                    let lifetime = UInt64(ttl).multipliedReportingOverflow(by: 1_000_000_000)
                    call.pending = CachedResponse(
                        apiID: plan.route.apiID, fingerprint: call.policy.fingerprint, status: response.status, head: ByteBuffer(bytes: bytes),
                        body: ByteBuffer(), storedAt: now, expiresAt: lifetime.overflow ? .max : now &+ lifetime.partialValue)
                    call.pending?.body.reserveCapacity(size)
                    call.expectedBody = size
                    value += "; stored"
                } else {
                    value += "; detail=size"
                }
            case .skip(let reason): value += "; detail=" + reason
            }
        }
        value += "; fwd-status=\(response.status)"
        plan.responseHeaders.append(("Cache-Status", value))
        cache = call
    }

    private func keepForCache(_ part: ByteBuffer) {
        guard var call = cache, var pending = call.pending else { return }
        cache = nil  // the body buffer is uniquely referenced while it grows
        var bytes = part
        if pending.body.readableBytes + bytes.readableBytes <= call.expectedBody {
            pending.body.writeBuffer(&bytes)
            call.pending = pending
        } else {
            call.pending = nil
        }
        cache = call
    }

    /// Answers from the cache: the kept head goes through the same writers (and transformation)
    /// as an upstream's, then the call is metered as answered (`forwarded`) with its cache flag;
    /// the plan says whether a hit bills.
    private func serveFromCache() {
        guard var call = cache, let hit = call.hit else { return }
        call.hit = nil
        cache = call
        let now = DispatchTime.now().uptimeNanoseconds
        let parsed = hit.head.withUnsafeReadableBytes {
            HTTPHeadParser.parseResponse($0, maxBytes: ProxyHandler.maxResponseHeadBytes, requestMethod: head.method)
        }
        guard case .complete(var response, _) = parsed else {
            // it parsed when it was stored; should it not now, the client still gets an answer
            return failBeforeResponse(status: .badGateway, detail: "A kept response could not be read.")
        }
        responseStarted = true
        answeredFromCache = true
        status = UInt(hit.status)
        let left = hit.expiresAt > now ? (hit.expiresAt - now) / 1_000_000_000 : 0
        let age = now > hit.storedAt ? (now - hit.storedAt) / 1_000_000_000 : 0
        plan.responseHeaders.append(("Cache-Status", "tollgate; hit; ttl=\(left)"))
        plan.responseHeaders.append(("Age", String(age)))
        payloadOnly = client.exchangeWantsPayloadOnly(self, response: response)
        let body: ByteBuffer? = head.method == .HEAD || hit.body.readableBytes == 0 ? nil : hit.body
        bytesOut = Int64(body?.readableBytes ?? 0)
        hit.head.withUnsafeReadableBytes { bytes in
            transformResponse(&response, bytes: bytes)
            if let body, body.readableBytes > 16 * 1024 {
                client.exchange(self, receivedHead: response, bytes: bytes, body: nil)
                client.exchange(self, receivedBody: body)
            } else {
                client.exchange(self, receivedHead: response, bytes: bytes, body: body)
            }
        }
        finish(status: status, forwarded: true, rejection: nil)
        client.exchangeCompleted(self)
    }

    /// A tunnel ended (either side, or a limit): the upstream is closed and the call metered once.
    func closeTunnel() {
        dropUpstream()
        finish(status: 101, forwarded: true, rejection: nil)
    }

    // MARK: Upstream side (called by UpstreamResponseHandler on this loop)

    func upstreamRead(_ buffer: ByteBuffer) {
        guard !finished else { return }
        var input = buffer
        if isTunnel {
            bytesOut += Int64(input.readableBytes)
            tunnelActivity = DispatchTime.now().uptimeNanoseconds
            return client.exchange(self, receivedBody: input)
        }
        if var partial = responseInbound {
            responseInbound = nil
            partial.writeBuffer(&input)
            input = partial
        }
        while input.readableBytes > 0 {
            if responseStarted {
                guard relayResponseBody(&input) else { return }
                continue
            }
            let parsed = input.withUnsafeReadableBytes {
                HTTPHeadParser.parseResponse($0, maxBytes: ProxyHandler.maxResponseHeadBytes, requestMethod: head.method)
            }
            switch parsed {
            case .incomplete:
                responseInbound = input
                return
            case .tooLarge, .invalid:
                return upstreamBroke(detail: "The upstream sent a response that is not valid HTTP/1.1." + webSocketToH2Note)
            case .complete(let response, let length):
                if upstreamSentAt != 0 && upstreamMicroseconds == nil {
                    upstreamMicroseconds = Int64((DispatchTime.now().uptimeNanoseconds &- upstreamSentAt) / 1000)
                }
                if response.status == 101 { return switchProtocols(response, headLength: length, input: input) }
                if response.status < 200 {
                    client.exchange(self, receivedInterim: input.readSlice(length: length)!)
                    continue
                }
                responseStarted = true
                status = UInt(response.status)
                upstreamKeepAlive = response.keepAlive
                responseBody = BodyFramer(response.framing)
                payloadOnly = client.exchangeWantsPayloadOnly(self, response: response)
                var response = response
                if cache != nil || plan.route.responseTransform != nil {
                    input.withUnsafeReadableBytes { all in
                        let bytes = UnsafeRawBufferPointer(rebasing: all[0..<length])
                        // the cache judges (and keeps) the upstream's own head, before any transformation
                        if cache != nil { noteResponseForCache(response, head: bytes) }
                        transformResponse(&response, bytes: bytes)
                    }
                }
                let headBytes = input.readSlice(length: length)!
                // A small body that came with its head goes out with it: one write instead of two.
                var body: ByteBuffer?
                if case .length(let size) = response.framing, size <= 16 * 1024, input.readableBytes >= size {
                    body = input.readSlice(length: size)!
                    bytesOut += Int64(size)
                    responseBody = BodyFramer(.none)
                    if var kept = body, cache?.pending != nil { cache?.pending?.body.writeBuffer(&kept) }
                }
                headBytes.withUnsafeReadableBytes { client.exchange(self, receivedHead: response, bytes: $0, body: body) }
                if responseBody.isDone { return complete(upstreamInStep: input.readableBytes == 0) }
            }
        }
    }

    /// Passes response body bytes to the client; false once the exchange is over.
    private func relayResponseBody(_ input: inout ByteBuffer) -> Bool {
        var payload: [Range<Int>] = []
        var payloadBytes = 0
        let payloadOnly = self.payloadOnly
        let step: BodyFramer.Step
        do {
            step = try input.withUnsafeReadableBytes { bytes in
                try responseBody.consume(bytes) { range in
                    payloadBytes += range.count
                    if payloadOnly { payload.append(range) }
                }
            }
        } catch {
            upstreamBroke(detail: "")
            return false
        }
        bytesOut += Int64(payloadBytes)
        if payloadOnly {
            for range in payload { client.exchange(self, receivedBody: input.getSlice(at: input.readerIndex + range.lowerBound, length: range.count)!) }
            input.moveReaderIndex(forwardBy: step.consumed)
        } else if step.consumed > 0 {
            let part = input.readSlice(length: step.consumed)!
            // a kept response has a length, so its bytes as relayed are its payload
            if cache?.pending != nil { keepForCache(part) }
            client.exchange(self, receivedBody: part)
        }
        if step.ended {
            complete(upstreamInStep: input.readableBytes == 0)
            return false
        }
        return true
    }

    private func switchProtocols(_ response: ParsedResponse, headLength: Int, input: ByteBuffer) {
        let upgrades = input.withUnsafeReadableBytes { bytes in
            response.fields.filter { HTTPHeadParser.equals(bytes, $0.name, "upgrade") }.map {
                Substring(decoding: UnsafeRawBufferPointer(rebasing: bytes[$0.value]), as: UTF8.self)
            }
        }
        guard upgrade != nil, WebSocketHandshake.upstreamSwitched(upgradeValues: upgrades) else {
            return upstreamBroke(detail: "The upstream switched protocols without being asked to open a WebSocket.")
        }
        if let expected = expectedWebSocketAccept {
            let accepts = input.withUnsafeReadableBytes { bytes in
                response.fields.filter { HTTPHeadParser.equals(bytes, $0.name, "sec-websocket-accept") }.map {
                    Substring(decoding: UnsafeRawBufferPointer(rebasing: bytes[$0.value]), as: UTF8.self)
                }
            }
            guard WebSocketOverHTTP2.acceptMatches(accepts, expected: expected) else {
                return upstreamBroke(detail: "The upstream's Sec-WebSocket-Accept does not answer the gateway's handshake key.")
            }
        }
        let now = DispatchTime.now().uptimeNanoseconds
        responseStarted = true
        status = 101
        tunnelOpenedAt = now
        tunnelActivity = now
        var rest = input
        let headBytes = rest.readSlice(length: headLength)!
        bytesOut += Int64(rest.readableBytes)
        headBytes.withUnsafeReadableBytes { client.exchange(self, switchedProtocols: response, bytes: $0, rest: rest) }
    }

    /// Client bytes for an open tunnel.
    func writeIntoTunnel(_ bytes: ByteBuffer, now: UInt64) {
        bytesIn += Int64(bytes.readableBytes)
        tunnelActivity = now
        upstream?.channel.write(bytes, promise: nil)
    }

    /// An HTTP/2 upstream's trailers: kept for the client until the response completes.
    func upstreamTrailers(_ fields: [(String, String)]) {
        guard !finished else { return }
        trailers = fields
    }

    func upstreamReadComplete() {
        guard !finished else { return }
        client.exchangeFlush(self)
    }

    func upstreamClosed() {
        guard !finished else { return }
        upstream = nil
        if isTunnel {
            loop.metrics.tunnelClosed("upstream")
            finish(status: 101, forwarded: true, rejection: nil)
            return client.exchangeBroken(self)
        }
        if responseStarted && responseBody.endsAtClose {
            // A body delimited by the connection's end: this is how it ends.
            return complete(upstreamInStep: false)
        }
        loop.pool.recordFailure(target, now: DispatchTime.now().uptimeNanoseconds)
        loop.metrics.upstreamError("closed")
        if responseStarted {
            // Half a response was sent: the client cannot be told otherwise than by closing.
            finish(status: 502, forwarded: true, rejection: nil)
            client.exchangeBroken(self)
        } else {
            failBeforeResponse(status: .badGateway, detail: "The upstream closed the connection without answering." + webSocketToH2Note)
        }
    }

    func upstreamWritabilityChanged(_ writable: Bool) {
        guard !finished else { return }
        setClientReading(writable)
    }

    /// The client's side can take more (true) or not: the upstream is read accordingly.
    func clientWritabilityChanged(_ writable: Bool) {
        guard let upstream else { return }
        pausedUpstream = !writable
        upstream.channel.setOption(.autoRead, value: writable).whenComplete { _ in }
        // an HTTP/2 stream does not read again by itself when autoRead comes back on (a socket does)
        if writable && upstream.isStream { upstream.channel.read() }
    }
}

/// The response cache's state for one call.
struct CacheCall {
    let policy: ResponseCachePolicy
    /// Where a storable response is kept (nil: not stored, e.g. the request said `no-store`).
    var key: String?
    /// `Cache-Status`'s `fwd` for a forwarded call: `miss`, `request` (the client asked for a fresh
    /// answer) or `method` (not GET/HEAD, or with a body).
    var forward = "miss"
    /// Found fresh: served when the request is complete.
    var hit: CachedResponse?
    /// Being kept: the head and the body so far.
    var pending: CachedResponse?
    var expectedBody = 0

    init(policy: ResponseCachePolicy) { self.policy = policy }
}
