import Billing
import Foundation
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
    }
}

/// One client connection: decides each request against the snapshot, then either answers it or
/// streams it to an upstream and the response back, with back-pressure both ways. All state lives
/// in this handler and the loop's pool; nothing is scheduled off the event loop.
final class ProxyHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let shared: GatewayContext
    private let loop: LoopState
    private var snapshot: GatewaySnapshot
    private var gate: RequestGate
    private var context: ChannelHandlerContext?

    /// The request being proxied.
    private final class Exchange {
        let plan: ForwardPlan
        let head: HTTPRequestHead
        let upstreamHead: HTTPRequestHead
        let requestID: String
        let started: UInt64
        let keepAlive: Bool
        let bodyLimit: Int
        var target: UpstreamTargetConfig
        var upstream: UpstreamConnection?
        var pending: [HTTPClientRequestPart] = []
        var pendingBytes = 0
        var requestEnded = false
        var responseStarted = false
        var upstreamKeepAlive = true
        var status: UInt = 0
        var bytesIn: Int64 = 0
        var bytesOut: Int64 = 0
        var retried = false
        var timeout: Scheduled<Void>?
        /// Whether reading from the client (or the upstream) was paused for back-pressure.
        var pausedClient = false
        var pausedUpstream = false

        init(plan: ForwardPlan, head: HTTPRequestHead, upstreamHead: HTTPRequestHead, requestID: String, started: UInt64, target: UpstreamTargetConfig, bodyLimit: Int) {
            self.plan = plan
            self.head = head
            self.upstreamHead = upstreamHead
            self.requestID = requestID
            self.started = started
            self.keepAlive = head.isKeepAlive
            self.target = target
            self.bodyLimit = bodyLimit
        }
    }

    private var exchange: Exchange?
    /// A local answer waiting for the end of the request body.
    private var localAnswer: (LocalResponse, HTTPRequestHead, UInt64, String)?
    private var discardingBody = false
    private var clientAddress: [UInt8]?
    private var clientIP = ""

    init(shared: GatewayContext, loop: LoopState) {
        self.shared = shared
        self.loop = loop
        self.snapshot = shared.store.snapshot
        self.gate = RequestGate(
            rateLimiter: shared.rateLimiter, quotas: shared.quotas, tokenCache: loop.tokenCache,
            defaultMaxRequestBytes: shared.settings.maxRequestBytes)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let address = context.channel.remoteAddress?.ipAddress {
            clientIP = address
            clientAddress = IPRange.bytes(of: address)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: Client side

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            received(head: head, context: context)
        case .body(let buffer):
            receivedBody(buffer, context: context)
        case .end:
            receivedEnd(context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        exchange?.upstream?.channel.flush()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let exchange {
            // The client went away mid-exchange: the upstream connection is out of step now.
            exchange.timeout?.cancel()
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

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            // Waiting for the upstream is not the client's fault; anything else idle is closed.
            if let exchange, exchange.requestEnded { return }
            if exchange == nil && localAnswer == nil {
                context.close(promise: nil)
            } else {
                writeLocal(.problem(.requestTimeout, "Request timeout", "The request was not completed in time.", rejection: nil), head: nil, context: context, close: true)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Malformed HTTP was answered with 400 by NIO's error handler; the connection cannot be trusted.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func received(head: HTTPRequestHead, context: ChannelHandlerContext) {
        let started = DispatchTime.now().uptimeNanoseconds
        let requestID = head.headers.first(name: "x-request-id").flatMap { $0.count <= 200 ? $0 : nil } ?? UUIDv7.make().lowercasedText
        var headerBytes = 0
        for (name, value) in head.headers { headerBytes += name.utf8.count + value.utf8.count + 4 }
        if headerBytes > shared.settings.maxHeaderBytes {
            var response = LocalResponse.problem(
                .requestHeaderFieldsTooLarge, "Headers too large", "Request headers exceed \(shared.settings.maxHeaderBytes) bytes.", rejection: nil)
            response.close = true
            return answer(response, head: head, started: started, requestID: requestID, context: context)
        }
        if let infrastructure = infrastructureResponse(head) {
            return answer(infrastructure, head: head, started: started, requestID: requestID, context: context)
        }
        if shared.store.version != snapshot.version { snapshot = shared.store.snapshot }
        switch gate.decide(head: head, clientAddress: clientAddress, snapshot: snapshot, now: Date(), monotonicNanos: started) {
        case .respond(let response):
            answer(response, head: head, started: started, requestID: requestID, context: context)
        case .forward(let plan):
            forward(plan, head: head, started: started, requestID: requestID, context: context)
        }
    }

    private func answer(_ response: LocalResponse, head: HTTPRequestHead, started: UInt64, requestID: String, context: ChannelHandlerContext) {
        if response.close {
            meterLocal(response, head: head, started: started)
            writeLocal(response, head: head, requestID: requestID, context: context, close: true)
            discardingBody = true
            return
        }
        // Answer once the body has been read, so the connection stays in step for keep-alive.
        localAnswer = (response, head, started, requestID)
        discardingBody = true
    }

    private func receivedBody(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        if discardingBody && exchange == nil { return }
        guard let exchange else { return }
        exchange.bytesIn += Int64(buffer.readableBytes)
        if exchange.bytesIn > Int64(exchange.bodyLimit) {
            // The body outgrew the limit while streaming: stop here.
            exchange.timeout?.cancel()
            exchange.upstream?.handler.delegate = nil
            exchange.upstream?.channel.close(promise: nil)
            self.exchange = nil
            loop.pool.recordSuccess(exchange.target.key)
            finish(exchange, status: 413, forwarded: false, rejection: .tooLarge)
            writeLocal(
                .problem(.payloadTooLarge, "Request too large", "The body is larger than \(exchange.bodyLimit) bytes.", rejection: .tooLarge),
                head: exchange.head, requestID: exchange.requestID, context: context, close: true)
            discardingBody = true
            return
        }
        if let upstream = exchange.upstream {
            upstream.channel.write(HTTPClientRequestPart.body(.byteBuffer(buffer)), promise: nil)
        } else {
            exchange.pending.append(.body(.byteBuffer(buffer)))
            exchange.pendingBytes += buffer.readableBytes
            if exchange.pendingBytes > 256 * 1024 && !exchange.pausedClient { setClientReading(false, context: context, exchange) }
        }
    }

    private func receivedEnd(context: ChannelHandlerContext) {
        discardingBody = false
        if let (response, head, started, requestID) = localAnswer {
            localAnswer = nil
            meterLocal(response, head: head, started: started)
            writeLocal(response, head: head, requestID: requestID, context: context, close: !head.isKeepAlive)
            return
        }
        guard let exchange else { return }
        exchange.requestEnded = true
        if let upstream = exchange.upstream {
            upstream.channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            armTimeout(exchange)
        } else {
            exchange.pending.append(.end(nil))
        }
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
        let upstreamHead = upstreamRequestHead(head, plan: plan, target: target, requestID: requestID)
        let exchange = Exchange(
            plan: plan, head: head, upstreamHead: upstreamHead, requestID: requestID, started: started, target: target,
            bodyLimit: plan.route.maxRequestBytes ?? shared.settings.maxRequestBytes)
        self.exchange = exchange
        connect(exchange, context: context)
    }

    private func connect(_ exchange: Exchange, context: ChannelHandlerContext) {
        let target = exchange.target
        if let idle = loop.pool.takeIdle(target) { return attach(idle, to: exchange, context: context) }
        loop.pool.connect(target).assumeIsolatedUnsafeUnchecked().whenComplete { result in
            guard self.exchange === exchange else {
                // The client left meanwhile.
                if case .success(let connection) = result { connection.channel.close(promise: nil) }
                return
            }
            switch result {
            case .success(let connection):
                self.attach(connection, to: exchange, context: context)
            case .failure(let error):
                let now = DispatchTime.now().uptimeNanoseconds
                self.loop.pool.recordFailure(target.key, now: now)
                self.loop.metrics.upstreamError("connect")
                // One retry, elsewhere, for idempotent requests whose body was not streamed yet.
                if !exchange.retried, exchange.head.method.isIdempotent, exchange.bytesIn == 0,
                    let next = self.loop.pool.pick(exchange.plan.route, now: now, excluding: target.key)
                {
                    exchange.retried = true
                    exchange.target = next
                    return self.connect(exchange, context: context)
                }
                let timedOut = (error as? ChannelError).map { if case .connectTimeout = $0 { true } else { false } } ?? false
                self.failBeforeResponse(
                    exchange, status: timedOut ? .gatewayTimeout : .badGateway,
                    detail: timedOut ? "The upstream did not accept the connection in time." : "The upstream could not be reached.", context: context)
            }
        }
    }

    private func attach(_ connection: UpstreamConnection, to exchange: Exchange, context: ChannelHandlerContext) {
        exchange.upstream = connection
        connection.handler.delegate = self
        var head = exchange.upstreamHead
        head.headers.replaceOrAdd(name: "host", value: exchange.target.port == 80 ? exchange.target.host : exchange.target.key)
        connection.channel.write(HTTPClientRequestPart.head(head), promise: nil)
        for part in exchange.pending { connection.channel.write(part, promise: nil) }
        exchange.pending = []
        exchange.pendingBytes = 0
        connection.channel.flush()
        if !connection.channel.isWritable || exchange.pausedClient { setClientReading(connection.channel.isWritable, context: context, exchange) }
        if exchange.requestEnded { armTimeout(exchange) }
    }

    private func armTimeout(_ exchange: Exchange) {
        guard exchange.timeout == nil, let context else { return }
        exchange.timeout = context.eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: shared.settings.responseTimeout) { [weak self] in
            guard let self, self.exchange === exchange, !exchange.responseStarted, let context = self.context else { return }
            self.loop.pool.recordFailure(exchange.target.key, now: DispatchTime.now().uptimeNanoseconds)
            self.loop.metrics.upstreamError("timeout")
            exchange.upstream?.handler.delegate = nil
            exchange.upstream?.channel.close(promise: nil)
            self.failBeforeResponse(exchange, status: .gatewayTimeout, detail: "The upstream did not answer in time.", context: context)
        }
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
            localAnswer = (response, exchange.head, exchange.started, exchange.requestID)
            discardingBody = true
            context.channel.setOption(.autoRead, value: true).whenComplete { _ in }
        }
    }

    // MARK: Upstream side (called by UpstreamResponseHandler on this loop)

    func upstreamRead(_ part: HTTPClientResponsePart) {
        guard let exchange, let context else { return }
        switch part {
        case .head(let response):
            exchange.timeout?.cancel()
            exchange.responseStarted = true
            exchange.status = response.status.code
            exchange.upstreamKeepAlive = response.isKeepAlive
            var headers = HTTPHeaders()
            headers.reserveCapacity(response.headers.count + exchange.plan.responseHeaders.count + 2)
            let hop = HopByHop(response.headers)
            for (name, value) in response.headers where !hop.contains(name) { headers.add(name: name, value: value) }
            for (name, value) in exchange.plan.responseHeaders { headers.replaceOrAdd(name: name, value: value) }
            headers.replaceOrAdd(name: "x-request-id", value: exchange.requestID)
            if !exchange.keepAlive { headers.replaceOrAdd(name: "connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: exchange.head.version, status: response.status, headers: headers))), promise: nil)
        case .body(let buffer):
            exchange.bytesOut += Int64(buffer.readableBytes)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        case .end(let trailers):
            self.exchange = nil
            if exchange.status >= 502 && exchange.status <= 504 {
                loop.pool.recordFailure(exchange.target.key, now: DispatchTime.now().uptimeNanoseconds)
            } else {
                loop.pool.recordSuccess(exchange.target.key)
            }
            // Back to the pool before the client's end is written: writing it may start the
            // next pipelined request at once, which should find this connection idle.
            if let upstream = exchange.upstream {
                if exchange.pausedUpstream { upstream.channel.setOption(.autoRead, value: true).whenComplete { _ in } }
                if exchange.upstreamKeepAlive { loop.pool.release(upstream) } else {
                    upstream.handler.delegate = nil
                    upstream.channel.close(promise: nil)
                }
            }
            finish(exchange, status: exchange.status, forwarded: true, rejection: nil)
            endResponse(trailers, close: !exchange.keepAlive, context: context)
            if exchange.pausedClient { context.channel.setOption(.autoRead, value: true).whenComplete { _ in } }
        }
    }

    func upstreamReadComplete() {
        context?.flush()
    }

    func upstreamClosed() {
        guard let exchange, let context else { return }
        exchange.upstream = nil
        exchange.timeout?.cancel()
        loop.pool.recordFailure(exchange.target.key, now: DispatchTime.now().uptimeNanoseconds)
        loop.metrics.upstreamError("closed")
        if exchange.responseStarted {
            // Half a response was sent: the client cannot be told otherwise than by closing.
            self.exchange = nil
            finish(exchange, status: 502, forwarded: true, rejection: nil)
            context.close(promise: nil)
        } else {
            failBeforeResponse(exchange, status: .badGateway, detail: "The upstream closed the connection without answering.", context: context)
        }
    }

    func upstreamWritabilityChanged(_ writable: Bool) {
        guard let context, let exchange else { return }
        setClientReading(writable, context: context, exchange)
    }

    // MARK: Helpers

    private func upstreamRequestHead(_ head: HTTPRequestHead, plan: ForwardPlan, target: UpstreamTargetConfig, requestID: String) -> HTTPRequestHead {
        var headers = HTTPHeaders()
        headers.reserveCapacity(head.headers.count + 10)
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
            headers.add(name: name, value: value)
        }
        headers.add(name: "X-Forwarded-For", value: forwardedFor.map { "\($0), \(clientIP)" } ?? clientIP)
        headers.add(name: "X-Forwarded-Proto", value: "http")
        if !host.isEmpty { headers.add(name: "X-Forwarded-Host", value: host) }
        headers.add(name: "X-Request-Id", value: requestID)
        headers.add(name: "X-Tollgate-Tenant", value: plan.tenant.slug)
        headers.add(name: "X-Tollgate-App-Id", value: plan.app.idText)
        headers.add(name: "X-Tollgate-Client-Id", value: plan.app.clientID)
        headers.add(name: "X-Tollgate-Team-Id", value: plan.app.teamIDText)
        headers.add(name: "X-Tollgate-Plan-Id", value: plan.grant.planIDText)
        headers.add(name: "X-Tollgate-Subscription-Id", value: plan.grant.subscriptionIDText)
        return HTTPRequestHead(version: .http1_1, method: head.method, uri: target.pathPrefix + plan.upstreamURI, headers: headers)
    }

    private func infrastructureResponse(_ head: HTTPRequestHead) -> LocalResponse? {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        switch path {
        case "/healthz":
            return LocalResponse(status: .ok, headers: [("Content-Type", "application/json")], body: "{\"status\":\"ok\"}", rejection: nil)
        case "/readyz":
            let (ready, body) = shared.store.readinessJSON()
            return LocalResponse(status: ready ? .ok : .serviceUnavailable, headers: [("Content-Type", "application/json")], body: body, rejection: nil)
        case "/metrics":
            return LocalResponse(status: .ok, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")], body: shared.metricsText(), rejection: nil)
        default:
            return nil
        }
    }

    private func writeLocal(_ response: LocalResponse, head: HTTPRequestHead?, requestID: String? = nil, context: ChannelHandlerContext, close: Bool) {
        var headers = HTTPHeaders()
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        headers.add(name: "Content-Length", value: String(response.body.utf8.count))
        headers.add(name: "Cache-Control", value: "no-store")
        if let requestID { headers.add(name: "X-Request-Id", value: requestID) }
        if close { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head?.version ?? .http1_1, status: response.status, headers: headers))), promise: nil)
        if head?.method != .HEAD && !response.body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: response.body)))), promise: nil)
        }
        endResponse(nil, close: close, context: context)
    }

    /// Writes a response's end and flushes; closes the connection after it when asked. A kept-alive
    /// connection's end carries no promise: with one, the encoder sends an empty write down the
    /// pipeline to keep its order, and a future is made per call.
    private func endResponse(_ trailers: HTTPHeaders?, close: Bool, context: ChannelHandlerContext) {
        if close {
            context.writeAndFlush(wrapOutboundOut(.end(trailers))).assumeIsolatedUnsafeUnchecked().whenComplete { _ in context.close(promise: nil) }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
        }
    }

    private func meterLocal(_ response: LocalResponse, head: HTTPRequestHead, started: UInt64) {
        let elapsed = DispatchTime.now().uptimeNanoseconds - started
        if let reason = response.rejection { loop.metrics.rejected(reason.rawValue) }
        guard let tenant = response.tenant else { return }
        loop.metrics.request(api: response.route?.slug ?? "-", status: response.status.code, nanoseconds: elapsed)
        shared.usage.record(
            UsageEvent(
                tenantID: tenant.id, apiID: response.route?.apiID, appID: response.app?.id, subscriptionID: response.grant?.subscriptionID,
                planID: response.grant?.planID, method: head.method.rawValue, status: Int(response.status.code), latencyMicroseconds: Int64(elapsed / 1000),
                bytesIn: 0, bytesOut: Int64(response.body.utf8.count), rejection: response.rejection, forwarded: false))
    }

    private func finish(_ exchange: Exchange, status: UInt, forwarded: Bool, rejection: UsageEvent.Rejection?) {
        exchange.timeout?.cancel()
        let elapsed = DispatchTime.now().uptimeNanoseconds - exchange.started
        let plan = exchange.plan
        let billable = UsageEvent.isBillable(forwarded: forwarded, status: Int(status))
        if plan.quotaReserved { shared.quotas.settle(subscription: plan.grant.subscriptionID, billable: billable) }
        loop.metrics.request(api: plan.route.slug, status: status, nanoseconds: elapsed)
        if let rejection { loop.metrics.rejected(rejection.rawValue) }
        shared.usage.record(
            UsageEvent(
                tenantID: plan.tenant.id, apiID: plan.route.apiID, appID: plan.app.id, subscriptionID: plan.grant.subscriptionID, planID: plan.grant.planID,
                method: exchange.head.method.rawValue, status: Int(status), latencyMicroseconds: Int64(elapsed / 1000), bytesIn: exchange.bytesIn,
                bytesOut: exchange.bytesOut, rejection: rejection, forwarded: forwarded))
    }
}

/// Connection-scoped header names (RFC 9110 §7.6.1) of one message: the standard ones plus any its
/// `Connection` header lists. `Transfer-Encoding` is kept: NIO's codecs re-frame the body on each
/// side from it. Compares bytes without allocating: building a `Set` of lowercased names per
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
        switch name.utf8.count {
        case 2: name.isASCII(caseInsensitively: "te")
        case 7: name.isASCII(caseInsensitively: "trailer") || name.isASCII(caseInsensitively: "upgrade")
        case 10: name.isASCII(caseInsensitively: "connection") || name.isASCII(caseInsensitively: "keep-alive")
        case 16: name.isASCII(caseInsensitively: "proxy-connection")
        case 18: name.isASCII(caseInsensitively: "proxy-authenticate")
        case 19: name.isASCII(caseInsensitively: "proxy-authorization")
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
