import Billing
import Foundation
import NIOCore
import NIOHPACK
import NIOHTTP1

/// Where a translated call writes its HTTP answer: the HTTP/1.1 connection or the HTTP/2 stream
/// the JSON request came on.
protocol TranscodedResponseWriter: AnyObject {
    /// The response head; `contentLength` nil: the body streams (chunked on HTTP/1.1).
    func transcodedHead(status: HTTPResponseStatus, headers: [(String, String)], contentLength: Int?)
    func transcodedBody(_ bytes: ByteBuffer)
    /// The body is complete.
    func transcodedEnd()
    /// A problem before the head, metered already.
    func transcodedFailed(_ response: LocalResponse)
    /// The response broke after its head: the connection (or stream) can only be cut.
    func transcodedBroken()
    func transcodedFlush()
    var allocator: ByteBufferAllocator { get }
}

/// One HTTP/JSON call translated to a gRPC call: the JSON body is read whole (within the API's body
/// limit), made into the method's request message (`GRPCTranscoding`), sent through the same
/// `HTTP2UpstreamCall` as a relayed gRPC stream — same target choice, circuit breaker, deadline and
/// metering (the call's `grpc-status`, mapped like relayed calls) — and each response message is
/// decoded back to JSON: a unary answer as one JSON body, a server stream as newline-delimited
/// JSON (`application/x-ndjson`), a non-OK status as problem+json with the HTTP status grpc-gateway
/// gives it (`GRPCStatus.meteredHTTPStatus`) and the gRPC message as its detail.
final class GRPCTranscodedCall {
    /// Largest single response message decoded (a larger one ends the call, 502).
    static let maximumResponseMessageBytes = 16 * 1024 * 1024

    let plan: ForwardPlan
    let requestID: String
    private let call: GRPCTranscoding.Call
    private let transcoding: GRPCTranscoding
    let head: HTTPRequestHead
    private let started: UInt64
    private let target: UpstreamTargetConfig
    private let loop: LoopState
    private let meter: CallMeter
    private let quotas: QuotaTracker
    private let responseTimeout: TimeAmount
    private let connection: (clientIP: String, secure: Bool)
    private unowned let writer: any TranscodedResponseWriter
    let bodyLimit: Int
    private var body: [UInt8] = []
    private(set) var requestEnded = false
    private var upstream: HTTP2UpstreamCall?
    /// Response DATA not yet cut into messages.
    private var pendingResponse: [UInt8] = []
    private var unaryReply: [UInt8]?
    private var headWritten = false
    private var done = false

    init(
        plan: ForwardPlan, call: GRPCTranscoding.Call, transcoding: GRPCTranscoding, head: HTTPRequestHead, requestID: String, started: UInt64,
        target: UpstreamTargetConfig, loop: LoopState, meter: CallMeter, quotas: QuotaTracker, bodyLimit: Int, responseTimeout: TimeAmount,
        clientIP: String, secure: Bool, writer: any TranscodedResponseWriter
    ) {
        self.plan = plan
        self.call = call
        self.transcoding = transcoding
        self.head = head
        self.requestID = requestID
        self.started = started
        self.target = target
        self.loop = loop
        self.meter = meter
        self.quotas = quotas
        self.bodyLimit = bodyLimit
        self.responseTimeout = responseTimeout
        self.connection = (clientIP, secure)
        self.writer = writer
    }

    var isStreaming: Bool { call.method.serverStreaming }

    /// Request body bytes (payload only); false once the body outgrew the limit (answered 413).
    func receive(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard !done else { return true }
        guard body.count + bytes.count <= bodyLimit else {
            refuse(.problem(.payloadTooLarge, "Request too large", "The body is larger than \(bodyLimit) bytes.", rejection: .tooLarge))
            return false
        }
        body.append(contentsOf: bytes)
        return true
    }

    /// The request body ended: the message is made and the gRPC call starts.
    func endRequest() {
        guard !requestEnded else { return }
        requestEnded = true
        guard !done else { return }
        let message: [UInt8]
        do { message = try transcoding.requestMessage(call, body: body) } catch {
            let status: HTTPResponseStatus = error.isTooLarge ? .payloadTooLarge : .badRequest
            var response = LocalResponse.problem(status, "Invalid request message", error.reason, rejection: error.isTooLarge ? .tooLarge : nil)
            if !error.pointer.isEmpty { response = Self.withPointer(response, error.pointer, error.reason) }
            return refuse(response)
        }
        body = []
        var frame = writer.allocator.buffer(capacity: message.count + 5)
        frame.writeInteger(UInt8(0))
        frame.writeInteger(UInt32(message.count))
        frame.writeBytes(message)
        var block = HPACKHeaders()
        block.add(name: ":authority", value: head.headers.first(name: "host") ?? target.hostHeader)
        if let forwarded = head.headers.first(name: "x-forwarded-for") { block.add(name: "x-forwarded-for", value: forwarded) }
        block.add(name: "content-type", value: "application/grpc")
        block.add(name: "te", value: "trailers")
        let headers = HTTP2Messages.upstreamRequestHeaders(
            block, method: "POST", target: target, path: call.method.grpcPath, requestID: requestID, clientIP: connection.clientIP,
            secure: connection.secure, identityLines: [plan.tenant.identityHeaderLine, plan.app.identityHeaderLines, plan.grant.identityHeaderLines])
        let upstream = HTTP2UpstreamCall(
            plan: plan, method: head.method, requestID: requestID, started: started, target: target, client: self, loop: loop, meter: meter)
        self.upstream = upstream
        // a unary answer is bounded as a whole by the response timeout (a relayed stream only until
        // its headers): its JSON cannot be written before the trailers, so a stalled one would hang
        let wholeCall = isStreaming ? nil : UInt64(max(1, responseTimeout.nanoseconds))
        upstream.start(headers: headers, endStream: false, grpcTimeout: wholeCall, responseTimeout: responseTimeout)
        upstream.send(frame, endStream: true)
        upstream.flush()
    }

    /// The client went away (or timed out): the upstream stream is reset, the call metered as it
    /// stands (`status` when it never reached the upstream).
    func cancel(status: UInt = 499) {
        guard !done else { return }
        done = true
        if let upstream {
            self.upstream = nil
            upstream.cancel()
        } else {
            // settles the quota unit too (not billable: never forwarded)
            meter.recordCall(plan, method: head.method, started: started, status: status, forwarded: false, bytesIn: Int64(body.count), bytesOut: 0, rejection: nil)
        }
    }

    /// A refusal before the upstream call: metered as a local answer of this plan, its quota unit given back.
    private func refuse(_ response: LocalResponse) {
        guard !done else { return }
        done = true
        var response = response
        response.tenant = plan.tenant
        response.route = plan.route
        response.app = plan.app
        response.grant = plan.grant
        response.headers += plan.responseHeaders
        if plan.quotaReserved { quotas.settle(subscription: plan.grant.subscriptionID, billable: false) }
        meter.recordLocal(response, method: head.method, started: started)
        writer.transcodedFailed(response)
    }

    /// A problem whose `errors` name the JSON pointer of the value at fault.
    static func withPointer(_ response: LocalResponse, _ pointer: String, _ reason: String) -> LocalResponse {
        var response = response
        if response.body.hasSuffix("}") {
            response.body = String(response.body.dropLast()) + ",\"errors\":[{\"pointer\":\(JSONText.quote(pointer)),\"detail\":\(JSONText.quote(reason))}]}"
        }
        return response
    }

    // MARK: Answer

    private var answerHeaders: [(String, String)] { plan.responseHeaders + [("Cache-Control", "no-store")] }

    private func writeStreamHead() {
        guard !headWritten else { return }
        headWritten = true
        writer.transcodedHead(status: .ok, headers: [("Content-Type", "application/x-ndjson")] + answerHeaders, contentLength: nil)
    }

    /// Cuts complete length-prefixed messages out of the response DATA.
    private func messages() -> [[UInt8]]? {
        var out: [[UInt8]] = []
        while pendingResponse.count >= 5 {
            let length = Int(pendingResponse[1]) << 24 | Int(pendingResponse[2]) << 16 | Int(pendingResponse[3]) << 8 | Int(pendingResponse[4])
            guard pendingResponse[0] == 0, length <= Self.maximumResponseMessageBytes else { return nil }
            guard pendingResponse.count >= 5 + length else { break }
            out.append(Array(pendingResponse[5..<(5 + length)]))
            pendingResponse.removeFirst(5 + length)
        }
        return out
    }

    private func decoded(_ message: [UInt8]) -> [UInt8]? {
        try? transcoding.responseJSON(call, wire: message)
    }

    /// The upstream answered something the gateway cannot turn into JSON.
    private func badReply(_ detail: String) {
        let upstream = self.upstream
        self.upstream = nil
        upstream?.cancel()
        finishAnswer(.problem(.badGateway, "Bad gateway", detail, rejection: nil), broken: headWritten)
    }

    private func finishAnswer(_ problem: LocalResponse, broken: Bool) {
        guard !done else { return }
        done = true
        if broken {
            writer.transcodedBroken()
        } else {
            var problem = problem
            problem.headers += plan.responseHeaders
            writer.transcodedFailed(problem)
        }
    }

    /// The call's end: its status from trailers (or a trailers-only answer).
    private func ended(_ trailers: HPACKHeaders) {
        guard !done else { return }
        let code = trailers.first(name: "grpc-status").flatMap { Int($0) } ?? GRPCStatus.unknown
        let message = trailers.first(name: "grpc-message").map { $0.removingPercentEncoding ?? $0 } ?? ""
        if code == GRPCStatus.ok {
            if isStreaming {
                writeStreamHead()
                done = true
                writer.transcodedEnd()
                return
            }
            guard let reply = unaryReply else { return badReply("The upstream ended the call without a response message.") }
            done = true
            writer.transcodedHead(status: .ok, headers: [("Content-Type", "application/json")] + answerHeaders, contentLength: reply.count)
            var buffer = writer.allocator.buffer(capacity: reply.count)
            buffer.writeBytes(reply)
            writer.transcodedBody(buffer)
            writer.transcodedEnd()
            return
        }
        let status = HTTPResponseStatus(statusCode: Int(GRPCStatus.meteredHTTPStatus(code)))
        let detail = message.isEmpty ? GRPCStatus.name(code) : message
        if headWritten {
            // a stream that failed after messages: its last line says so
            done = true
            let line = "{\"error\":{\"code\":\(code),\"status\":\(JSONText.quote(GRPCStatus.name(code))),\"message\":\(JSONText.quote(detail))}}\n"
            writer.transcodedBody(writer.allocator.buffer(string: line))
            writer.transcodedEnd()
            return
        }
        var problem = LocalResponse.problem(status, GRPCStatus.name(code), detail, rejection: nil)
        problem.body = String(problem.body.dropLast()) + ",\"grpc_status\":\(code)}"
        finishAnswer(problem, broken: false)
    }
}

extension GRPCTranscodedCall: GRPCRelayClient {
    func relay(headers: HPACKHeaders, endStream: Bool) {
        guard !done else { return }
        if let status = headers.first(name: ":status") {
            guard status == "200", GRPCStatus.isGRPC(headers.first(name: "content-type")) else {
                return badReply("The upstream answered HTTP \(status) instead of a gRPC response.")
            }
            if isStreaming && !endStream { writeStreamHead() }
        }
        if endStream { ended(headers) }
    }

    func relay(data: ByteBuffer, endStream: Bool) {
        guard !done else { return }
        pendingResponse.append(contentsOf: data.readableBytesView)
        guard let complete = messages() else { return badReply("The upstream's response is not a gRPC message the gateway can read (compressed or too large).") }
        for message in complete {
            guard let json = decoded(message) else { return badReply("The upstream's response message does not match \(call.method.outputType).") }
            if isStreaming {
                writeStreamHead()
                var line = writer.allocator.buffer(capacity: json.count + 1)
                line.writeBytes(json)
                line.writeInteger(UInt8(ascii: "\n"))
                writer.transcodedBody(line)
            } else {
                guard unaryReply == nil else { return badReply("The upstream sent more than one response message for a unary call.") }
                unaryReply = json
            }
        }
        if endStream {
            // DATA that ends the stream without trailers: a broken gRPC answer
            var trailers = HPACKHeaders()
            trailers.add(name: "grpc-status", value: String(GRPCStatus.internalError))
            trailers.add(name: "grpc-message", value: "the upstream ended the stream without trailers")
            ended(trailers)
        }
    }

    func relayFlush() { writer.transcodedFlush() }

    func relayClientReading(_ on: Bool) {
        // the request body was read whole before the call started: nothing to pause
    }

    func relayFailed(grpcStatus: Int, message: String, httpStatus: HTTPResponseStatus, headers: [(String, String)]) {
        guard !done else { return }
        done = true
        var response = LocalResponse.problem(httpStatus, httpStatus == .gatewayTimeout ? "Upstream timeout" : "Bad gateway", message, rejection: nil)
        response.headers += headers
        writer.transcodedFailed(response)
    }

    func relayEnded(_ call: HTTP2UpstreamCall) {
        if upstream === call { upstream = nil }
    }
}
