import Billing
import Foundation
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// The side an `HTTP2UpstreamCall` relays its upstream's frames to: an HTTP/2 client stream
/// (pass-through), or a `GRPCTranscodedCall` that turns them into JSON for an HTTP client.
protocol GRPCRelayClient: AnyObject {
    func relay(headers: HPACKHeaders, endStream: Bool)
    func relay(data: ByteBuffer, endStream: Bool)
    func relayFlush()
    func relayClientReading(_ on: Bool)
    /// The call failed before its response: the gateway's own answer, metered already.
    func relayFailed(grpcStatus: Int, message: String, httpStatus: HTTPResponseStatus, headers: [(String, String)])
    func relayEnded(_ call: HTTP2UpstreamCall)
    /// The call's caller as the access log names it (read only when the call is logged).
    var logCaller: CallMeter.Caller { get }
    /// The HTTP status a call that reached its end is metered as: by default its `grpc-status`'s
    /// equivalent (the upstream's HTTP status without one). A translated call says 502 when the
    /// reply it must turn into JSON is broken, since that is what its client gets.
    func relayMeteredStatus(grpcStatus: Int?, httpStatus: UInt) -> UInt
}

extension GRPCRelayClient {
    func relayMeteredStatus(grpcStatus: Int?, httpStatus: UInt) -> UInt {
        grpcStatus.map(GRPCStatus.meteredHTTPStatus) ?? httpStatus
    }
}

/// A client stream relayed to a stream of an HTTP/2 upstream (`grpc://`, `grpcs://` targets):
/// frames pass as frames — request DATA up, response HEADERS, DATA and trailers down — so gRPC's
/// streaming calls of every kind and its trailers survive. The same target choice, circuit breaker
/// and metering as the HTTP/1 exchange; the call's deadline is its `grpc-timeout` when it sends
/// one, else the gateway's response timeout until the response headers arrive.
final class HTTP2UpstreamCall {
    let plan: ForwardPlan
    let requestID: String
    private let method: HTTPMethod
    private let started: UInt64
    private let target: UpstreamTargetConfig
    private unowned let client: any GRPCRelayClient
    private let loop: LoopState
    private let meter: CallMeter
    private var upstream: (any Channel)?
    private var pending: [HTTP2Frame.FramePayload] = []
    private var responseStarted = false
    private var finished = false
    /// The call's gRPC status (trailers, or a trailers-only answer), when it has one.
    private var grpcStatus: Int?
    private var httpStatus: UInt = 0
    private var bytesIn: Int64 = 0
    private var bytesOut: Int64 = 0
    private var deadline: Scheduled<Void>?

    init(plan: ForwardPlan, method: HTTPMethod, requestID: String, started: UInt64, target: UpstreamTargetConfig, client: any GRPCRelayClient, loop: LoopState, meter: CallMeter) {
        self.plan = plan
        self.method = method
        self.requestID = requestID
        self.started = started
        self.target = target
        self.client = client
        self.loop = loop
        self.meter = meter
    }

    /// Opens the upstream stream and sends the request headers (`block`, made by the client side).
    func start(headers block: HPACKHeaders, endStream: Bool, grpcTimeout: UInt64?, responseTimeout: TimeAmount) {
        pending.append(.headers(.init(headers: block, endStream: endStream)))
        // a deadline beyond a day is no deadline the gateway keeps (the timer would outlive reason)
        let grpcTimeout = grpcTimeout.flatMap { $0 <= 86_400_000_000_000 ? $0 : nil }
        let timeout = grpcTimeout.map { TimeAmount.nanoseconds(Int64(min($0, UInt64(Int64.max)))) } ?? responseTimeout
        deadline = loop.pool.eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: timeout) { [self] in
            // a gRPC deadline bounds the whole call; the gateway's own timeout only its first answer
            guard !finished, grpcTimeout != nil || !responseStarted else { return }
            loop.metrics.upstreamError("timeout")
            if grpcTimeout == nil { loop.pool.recordFailure(target, now: DispatchTime.now().uptimeNanoseconds) }
            end(grpcStatus: GRPCStatus.deadlineExceeded, message: "The call did not complete within its deadline.", httpStatus: .gatewayTimeout)
        }
        loop.http2Upstreams.openStream(to: target, tls: plan.route.upstreamTLS).assumeIsolatedUnsafeUnchecked().whenComplete { [self] result in
            switch result {
            case .success(let (stream, handler)):
                guard !finished else {
                    stream.close(promise: nil)
                    return
                }
                upstream = stream
                handler.call = self
                for frame in pending { stream.write(frame, promise: nil) }
                pending = []
                stream.flush()
            case .failure(let error):
                guard !finished else { return }
                loop.pool.recordFailure(target, now: DispatchTime.now().uptimeNanoseconds)
                loop.metrics.upstreamError(UpstreamTLS.isTLSFailure(error) ? "tls" : "connect")
                let detail = UpstreamTLS.isTLSFailure(error) ? UpstreamTLS.describe(error) : "The upstream could not be reached."
                end(grpcStatus: GRPCStatus.unavailable, message: detail, httpStatus: .badGateway)
            }
        }
    }

    /// Request body bytes (or the request's end) from the client.
    func send(_ data: ByteBuffer, endStream: Bool) {
        guard !finished else { return }
        bytesIn += Int64(data.readableBytes)
        let frame = HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(data), endStream: endStream))
        if let upstream { upstream.write(frame, promise: nil) } else { pending.append(frame) }
    }

    func flush() { upstream?.flush() }

    /// The client went away (or reset its stream): the upstream stream is reset too. `status`:
    /// what the call is metered as when the client side ends it for a reason of its own (a
    /// translated call's undecodable reply: 502); else the upstream's answer so far, or 499.
    func cancel(meteredAs status: UInt? = nil) {
        guard !finished else { return }
        finish(status: status ?? (responseStarted ? httpStatus : 499))
        upstream?.close(promise: nil)
    }

    func clientWritabilityChanged(_ writable: Bool) {
        upstream?.setOption(.autoRead, value: writable).whenComplete { _ in }
        // a stream channel does not read again by itself when autoRead comes back on
        if writable { upstream?.read() }
    }

    // MARK: Upstream side

    func upstreamFrame(_ frame: HTTP2Frame.FramePayload) {
        guard !finished else { return }
        // metered before the frame is relayed: writing the stream's end can close the client's
        // stream at once, and its closing must find the call finished, not cut short
        switch frame {
        case .headers(let headers):
            var relayed = headers.headers
            if !responseStarted {
                responseStarted = true
                httpStatus = headers.headers.first(name: ":status").flatMap { UInt($0) } ?? 502
                relayed = responseHeaders(headers.headers)
            }
            if headers.endStream {
                // trailers, or a trailers-only answer
                grpcStatus = headers.headers.first(name: "grpc-status").flatMap { Int($0) }
                complete()
            }
            client.relay(headers: relayed, endStream: headers.endStream)
        case .data(let data):
            guard case .byteBuffer(let buffer) = data.data else { return }
            bytesOut += Int64(buffer.readableBytes)
            if data.endStream { complete() }
            client.relay(data: buffer, endStream: data.endStream)
        case .rstStream:
            upstreamBroke()
        default:
            break
        }
    }

    func upstreamReadComplete() {
        // a finished call's last frames were flushed as they ended the client's stream
        guard !finished else { return }
        client.relayFlush()
    }

    func upstreamClosed() {
        guard !finished else { return }
        upstreamBroke()
    }

    func upstreamWritabilityChanged(_ writable: Bool) {
        guard !finished else { return }
        client.relayClientReading(writable)
    }

    /// The upstream's response headers for the client: its own fields less the request id, then
    /// the gateway's (rate limits, deprecation, CORS, request id).
    private func responseHeaders(_ block: HPACKHeaders) -> HPACKHeaders {
        var out = HPACKHeaders()
        let added = plan.responseHeaders
        for (name, value, indexing) in block {
            if name == "x-request-id" || added.contains(where: { name.isASCII(caseInsensitively: $0.0.lowercased()) }) { continue }
            out.add(name: name, value: value, indexing: indexing)
        }
        for (name, value) in added { out.add(name: name.lowercased(), value: value) }
        out.add(name: "x-request-id", value: requestID)
        return out
    }

    private func complete() {
        loop.pool.recordSuccess(target)
        finish(status: client.relayMeteredStatus(grpcStatus: grpcStatus, httpStatus: httpStatus))
        upstream = nil
    }

    /// The upstream reset or closed the stream before its end.
    private func upstreamBroke() {
        loop.pool.recordFailure(target, now: DispatchTime.now().uptimeNanoseconds)
        loop.metrics.upstreamError("closed")
        end(grpcStatus: GRPCStatus.unavailable, message: "The upstream ended the call without completing it.", httpStatus: .badGateway)
    }

    /// Ends the call from the gateway's side with a gRPC status: as trailers when the response has
    /// started, as a trailers-only answer otherwise.
    private func end(grpcStatus code: Int, message: String, httpStatus: HTTPResponseStatus) {
        // held strongly to the end: relaying the trailers can end a translated call's answer, and
        // with it the last other reference to the client, before the flush below
        let client = self.client
        let started = responseStarted
        finish(status: httpStatus.code, forwarded: started, rejection: started ? nil : .upstreamUnavailable)
        upstream?.close(promise: nil)
        upstream = nil
        if started {
            var trailers = HPACKHeaders()
            trailers.add(name: "grpc-status", value: String(code))
            trailers.add(name: "grpc-message", value: GRPCStatus.encodeMessage(message))
            client.relay(headers: trailers, endStream: true)
            client.relayFlush()
        } else {
            client.relayFailed(grpcStatus: code, message: message, httpStatus: httpStatus, headers: plan.responseHeaders)
        }
    }

    private func finish(status: UInt, forwarded: Bool = true, rejection: UsageEvent.Rejection? = nil) {
        guard !finished else { return }
        finished = true
        deadline?.cancel()
        meter.recordCall(
            plan, method: method, started: started, status: status, forwarded: forwarded, bytesIn: bytesIn, bytesOut: bytesOut, rejection: rejection,
            caller: client.logCaller)
        client.relayEnded(self)
    }
}
