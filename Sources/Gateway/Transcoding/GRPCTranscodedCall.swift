import Billing
import Foundation
import NIOCore
import NIOHPACK
import NIOHTTP1

/// Where a translated call writes its HTTP answer: the HTTP/1.1 connection or the HTTP/2 stream
/// the JSON request came on.
protocol TranscodedResponseWriter: AnyObject {
    /// The response head; `contentLength` nil: the body streams (chunked on HTTP/1.1);
    /// `endsWithTrailers`: the answer will end with a trailer section (chunked on HTTP/1.1 too).
    func transcodedHead(status: HTTPResponseStatus, headers: [(String, String)], contentLength: Int?, endsWithTrailers: Bool)
    func transcodedBody(_ bytes: ByteBuffer)
    /// The body is complete; `trailers` (only for a client that accepts them, `TranscodedTrailers`)
    /// make its trailer section.
    func transcodedEnd(trailers: [(String, String)])
    /// A problem before the head, metered already.
    func transcodedFailed(_ response: LocalResponse)
    /// The response broke after its head: the connection (or stream) can only be cut.
    func transcodedBroken()
    func transcodedFlush()
    /// Pauses (false) or resumes reading the client's body: a client stream's upstream is not
    /// taking its messages as fast as they come.
    func transcodedClientReading(_ on: Bool)
    var allocator: ByteBufferAllocator { get }
}

/// One HTTP/JSON call translated to a gRPC call: the JSON body is read whole (within the API's body
/// limit) — a client stream's NDJSON line by line instead —, made into the method's request
/// message(s) (`GRPCTranscoding`) with the client's metadata and deadline (`TranscodedMetadata`), sent through the same
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
    /// The upstream's metadata as `Grpc-Metadata-*` headers: its response headers', and its
    /// trailers' for a client that does not accept trailers (`TranscodedTrailers`).
    private var responseMetadata: [(String, String)] = []
    /// The client said `TE: trailers`: the upstream's trailer metadata end the answer as
    /// `Grpc-Trailer-*` fields (`trailerMetadata`).
    private let sendsTrailers: Bool
    private var trailerMetadata: [(String, String)] = []
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
        self.sendsTrailers = TranscodedTrailers.accepted(by: head)
    }

    var isStreaming: Bool { call.method.serverStreaming }
    /// A client- or bidirectional-streaming method: its body is newline-delimited JSON, one message
    /// a line, each sent upstream as it arrives.
    var streamsRequest: Bool { call.method.clientStreaming }
    /// The most messages one client stream carries (more: 413).
    static let maximumStreamMessages = 10_000
    private var receivedBytes = 0
    private var lines = 0
    private var streamedMessages = 0
    private var clientPaused = false
    private var began = false

    /// Request body bytes (payload only); false once the body outgrew the limit (answered 413).
    func receive(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard !done else { return true }
        guard receivedBytes + bytes.count <= bodyLimit else {
            failRequest(.problem(.payloadTooLarge, "Request too large", "The body is larger than \(bodyLimit) bytes.", rejection: .tooLarge))
            return false
        }
        receivedBytes += bytes.count
        body.append(contentsOf: bytes)
        if streamsRequest {
            sendCompleteLines()
            upstream?.flush()
        }
        return true
    }

    /// The call has its head: a client stream's upstream call starts now, before its body, so that
    /// each line reaches the upstream as it arrives (a unary request waits for its whole body).
    func begin() {
        guard streamsRequest, !done, !began else { return }
        began = true
        let contentType = head.headers.first(name: "content-type")?.lowercased() ?? ""
        guard contentType.hasPrefix("application/x-ndjson") else {
            return refuse(.problem(
                .unsupportedMediaType, "NDJSON required",
                "\(call.method.grpcPath) takes a stream of messages: send them as newline-delimited JSON, one per line, with Content-Type: application/x-ndjson.",
                rejection: nil))
        }
        startUpstream()
    }

    /// The request body ended: a unary request's message is made and the gRPC call starts; a client
    /// stream's last line is sent and the stream closed.
    func endRequest() {
        guard !requestEnded else { return }
        requestEnded = true
        guard !done else { return }
        if streamsRequest {
            if !began { begin() }
            guard !done, let upstream else { return }
            if !body.isEmpty {
                let last = body
                body = []
                guard sendLine(last[...]) else { return }
            }
            upstream.send(writer.allocator.buffer(capacity: 0), endStream: true)
            upstream.flush()
            return
        }
        let message: [UInt8]
        do { message = try transcoding.requestMessage(call, body: body) } catch {
            return refuse(Self.invalidMessage(error, line: nil))
        }
        body = []
        guard startUpstream(), let upstream else { return }
        upstream.send(frame(message), endStream: true)
        upstream.flush()
    }

    /// Opens the upstream call with the request's metadata and deadline; false when they are not
    /// valid (answered 400).
    @discardableResult
    private func startUpstream() -> Bool {
        var metadata: [(String, String)]
        do { metadata = try TranscodedMetadata.request(head.headers) } catch {
            refuse(.problem(.badRequest, "Invalid metadata header", "\(error.header): \(error.reason).", rejection: nil))
            return false
        }
        if let transform = plan.route.requestTransform {
            metadata = TranscodedMetadata.transformed(metadata, by: transform, context: transformContext)
        }
        var clientDeadline: UInt64?
        if let value = head.headers.first(name: "grpc-timeout") {
            guard let parsed = GRPCStatus.timeout(value) else {
                refuse(.problem(
                    .badRequest, "Invalid Grpc-Timeout", "Grpc-Timeout is 1 to 8 digits and a unit (H, M, S, m, u or n), as gRPC writes it.", rejection: nil))
                return false
            }
            clientDeadline = parsed
        }
        var block = HPACKHeaders()
        block.add(name: ":authority", value: head.headers.first(name: "host") ?? target.hostHeader)
        if let forwarded = head.headers.first(name: "x-forwarded-for") { block.add(name: "x-forwarded-for", value: forwarded) }
        block.add(name: "content-type", value: "application/grpc")
        block.add(name: "te", value: "trailers")
        let now = DispatchTime.now().uptimeNanoseconds
        let deadline = Self.callDeadline(
            client: clientDeadline, elapsed: now > started ? now - started : 0, streaming: isStreaming, responseTimeout: responseTimeout)
        if clientDeadline != nil, let deadline { block.add(name: "grpc-timeout", value: GRPCStatus.timeoutValue(nanoseconds: deadline)) }
        for (key, value) in metadata { block.add(name: key, value: value) }
        let headers = HTTP2Messages.upstreamRequestHeaders(
            block, method: "POST", target: target, path: call.method.grpcPath, requestID: requestID, clientIP: connection.clientIP,
            secure: connection.secure, identityLines: [plan.tenant.identityHeaderLine, plan.app.identityHeaderLines, plan.grant.identityHeaderLines])
        let upstream = HTTP2UpstreamCall(
            plan: plan, method: head.method, requestID: requestID, started: started, target: target, client: self, loop: loop, meter: meter)
        self.upstream = upstream
        upstream.start(headers: headers, endStream: false, grpcTimeout: deadline, responseTimeout: responseTimeout)
        return true
    }

    /// A message as one length-prefixed gRPC frame (uncompressed).
    private func frame(_ message: [UInt8]) -> ByteBuffer {
        var frame = writer.allocator.buffer(capacity: message.count + 5)
        frame.writeInteger(UInt8(0))
        frame.writeInteger(UInt32(message.count))
        frame.writeBytes(message)
        return frame
    }

    /// The problem for a request message that cannot be made (`line`: its line in a client stream).
    private static func invalidMessage(_ error: GRPCTranscoding.Failure, line: Int?) -> LocalResponse {
        let status: HTTPResponseStatus = error.isTooLarge ? .payloadTooLarge : .badRequest
        let reason = line.map { "Line \($0): \(error.reason)" } ?? error.reason
        var response = LocalResponse.problem(status, "Invalid request message", reason, rejection: error.isTooLarge ? .tooLarge : nil)
        if !error.pointer.isEmpty || line != nil { response = withPointer(response, error.pointer, reason, line: line) }
        return response
    }

    // MARK: Client streams

    /// Sends each complete line of the body as a message, keeping a partial last line.
    private func sendCompleteLines() {
        var start = 0
        while !done, let newline = body[start...].firstIndex(of: UInt8(ascii: "\n")) {
            let line = body[start..<newline]
            start = newline + 1
            guard sendLine(line) else { return }
        }
        if start > 0 { body.removeFirst(start) }
    }

    /// One NDJSON line as one message of the client stream; blank lines (a CRLF's CR included) carry
    /// none. False when the call failed on it.
    private func sendLine(_ line: ArraySlice<UInt8>) -> Bool {
        lines += 1
        guard !line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) else { return true }
        guard streamedMessages < Self.maximumStreamMessages else {
            failRequest(.problem(
                .payloadTooLarge, "Too many messages", "A client stream carries at most \(Self.maximumStreamMessages) messages.", rejection: .tooLarge))
            return false
        }
        let message: [UInt8]
        do { message = try transcoding.requestMessage(call, body: Array(line)) } catch {
            failRequest(Self.invalidMessage(error, line: lines))
            return false
        }
        streamedMessages += 1
        upstream?.send(frame(message), endStream: false)
        return true
    }

    /// The request failed after its upstream call started: the call is cut and metered as the
    /// client's answer; a response already under way (bidirectional) ends with an error line.
    private func failRequest(_ response: LocalResponse) {
        guard let upstream else { return refuse(response) }
        self.upstream = nil
        upstream.cancel(meteredAs: response.status.code)
        guard headWritten else { return finishAnswer(response, broken: false) }
        done = true
        let code = response.status == .badRequest ? GRPCStatus.invalidArgument : GRPCStatus.resourceExhausted
        let detail = Self.problemDetail(response)
        let line = "{\"error\":{\"code\":\(code),\"status\":\(JSONText.quote(GRPCStatus.name(code))),\"message\":\(JSONText.quote(detail))}}\n"
        writer.transcodedBody(writer.allocator.buffer(string: line))
        writer.transcodedEnd(trailers: [])
    }

    private static func problemDetail(_ response: LocalResponse) -> String {
        guard case .object(let members)? = try? JSONTree.parse(Array(response.body.utf8)),
            case .string(let detail)? = members.first(where: { $0.key == "detail" })?.value
        else { return response.status.reasonPhrase }
        return detail
    }

    /// A server stream's deadline is kept up to a day, as a relayed call's `grpc-timeout` is.
    static let longestStreamDeadline: UInt64 = 86_400_000_000_000

    /// How long the gateway gives the upstream call, in nanoseconds from its start; nil: no deadline
    /// of its own (a server stream without a client deadline, bounded by the response timeout until
    /// its headers like a relayed one). A unary answer is bounded as a whole by the response timeout
    /// — its JSON cannot be written before the trailers, so a stalled one would hang — and by the
    /// client's deadline (`Grpc-Timeout`) when that is sooner. A client deadline counts from the
    /// request's arrival, so reading the body used some of it up; one already spent is 1 ns.
    static func callDeadline(client: UInt64?, elapsed: UInt64, streaming: Bool, responseTimeout: TimeAmount) -> UInt64? {
        let remaining = client.map { $0 > elapsed ? $0 - elapsed : 1 }
        if streaming { return remaining.map { min($0, longestStreamDeadline) } }
        let bound = UInt64(max(1, responseTimeout.nanoseconds))
        return min(remaining ?? bound, bound)
    }

    /// The answer's head is written (a stream under way): it can no longer become a problem.
    var answerStarted: Bool { headWritten }

    /// The client went away (or timed out): the upstream stream is reset, the call metered as it
    /// stands (`status` when it never reached the upstream, or when the gateway timed the client out).
    func cancel(status: UInt = 499) {
        guard !done else { return }
        done = true
        if let upstream {
            self.upstream = nil
            upstream.cancel(meteredAs: status == 499 ? nil : status)
        } else {
            // settles the quota unit too (not billable: never forwarded)
            meter.recordCall(
                plan, method: head.method, started: started, status: status, forwarded: false, bytesIn: Int64(body.count), bytesOut: 0, rejection: nil,
                caller: logCaller)
        }
    }

    /// A refusal before the upstream call: metered as a local answer of this plan, its quota unit given back.
    private func refuse(_ response: LocalResponse) {
        guard !done else { return }
        done = true
        var response = plan.refusal(response, quotas: quotas)
        response.headers += plan.responseHeaders
        meter.recordLocal(response, method: head.method, started: started, caller: logCaller)
        writer.transcodedFailed(response)
    }

    /// A problem whose `errors` name the JSON pointer of the value at fault (and, in a client
    /// stream, the line it is on, counted from 1).
    static func withPointer(_ response: LocalResponse, _ pointer: String, _ reason: String, line: Int? = nil) -> LocalResponse {
        var response = response
        if response.body.hasSuffix("}") {
            let lineMember = line.map { ",\"line\":\($0)" } ?? ""
            response.body = String(response.body.dropLast())
                + ",\"errors\":[{\"pointer\":\(JSONText.quote(pointer)),\"detail\":\(JSONText.quote(reason))\(lineMember)}]}"
        }
        return response
    }

    // MARK: Answer

    private var answerHeaders: [(String, String)] { plan.responseHeaders + [("Cache-Control", "no-store")] + transformedResponseMetadata }

    private var transformContext: TransformContext { TransformContext(plan: plan, requestID: requestID, clientIP: connection.clientIP) }

    /// The upstream's metadata as headers, after the route's response transformations (their header
    /// operations act on these headers, as on an HTTP upstream's).
    private var transformedResponseMetadata: [(String, String)] {
        guard let transform = plan.route.responseTransform else { return responseMetadata }
        var fields = responseMetadata.map { (name: $0.0, value: $0.1) }
        let context = transformContext
        for step in transform.steps { FieldOperations.apply(step, to: &fields, render: context.render, same: FieldOperations.sameHeader) }
        return fields.map { ($0.name, $0.value) }
    }

    private var gatewayHeaderNames: Set<String> { Set(plan.responseHeaders.map { $0.0.lowercased() }) }

    /// The upstream's response-header metadata as client headers (`TranscodedMetadata.response`).
    private func collectMetadata(_ block: HPACKHeaders) {
        responseMetadata += TranscodedMetadata.response(block, gatewayHeaders: gatewayHeaderNames)
    }

    /// The upstream's trailer metadata: trailer fields for a client that accepts them, else headers
    /// while the head is still to be written (`TranscodedTrailers`).
    private func collectTrailerMetadata(_ block: HPACKHeaders) {
        if sendsTrailers {
            let fields = TranscodedMetadata.response(block, gatewayHeaders: gatewayHeaderNames, prefix: TranscodedMetadata.trailerPrefix)
            trailerMetadata += TranscodedTrailers.removing(fields, by: plan.route.responseTransform)
        } else if !headWritten {
            collectMetadata(block)
        }
    }

    /// The answer's headers, with the `Trailer` announcement when trailer fields are known now.
    private func headers(_ leading: [(String, String)]) -> [(String, String)] {
        guard let announced = TranscodedTrailers.announcement(trailerMetadata) else { return leading + answerHeaders }
        return leading + answerHeaders + [("Trailer", announced)]
    }

    private func writeStreamHead() {
        guard !headWritten else { return }
        headWritten = true
        // a stream's head is written before its trailers, unless it ended first
        writer.transcodedHead(
            status: .ok, headers: headers([("Content-Type", "application/x-ndjson")]), contentLength: nil, endsWithTrailers: sendsTrailers)
    }

    /// Ends the answer, with the trailer section for a client that accepts one.
    private func endAnswer() {
        writer.transcodedEnd(trailers: sendsTrailers ? trailerMetadata : [])
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

    /// The upstream answered something the gateway cannot turn into JSON: the client gets a 502,
    /// and the call is metered as that (forwarded, not billable), not as the upstream's status.
    private func badReply(_ detail: String) {
        let upstream = self.upstream
        self.upstream = nil
        upstream?.cancel(meteredAs: HTTPResponseStatus.badGateway.code)
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
        guard let code = trailers.first(name: "grpc-status").flatMap({ Int($0) }) else {
            // metered 502 already (`relayMeteredStatus`)
            if headWritten { return badReply("The upstream ended the call without its gRPC status.") }
            return finishAnswer(.problem(.badGateway, "Bad gateway", "The upstream ended the call without its gRPC status.", rejection: nil), broken: false)
        }
        let message = trailers.first(name: "grpc-message").map { $0.removingPercentEncoding ?? $0 } ?? ""
        if code == GRPCStatus.ok {
            if isStreaming {
                writeStreamHead()
                done = true
                endAnswer()
                return
            }
            guard let reply = unaryReply else { return badReply("The upstream ended the call without a response message.") }
            done = true
            headWritten = true
            writer.transcodedHead(
                status: .ok, headers: headers([("Content-Type", "application/json")]), contentLength: reply.count,
                endsWithTrailers: !trailerMetadata.isEmpty)
            var buffer = writer.allocator.buffer(capacity: reply.count)
            buffer.writeBytes(reply)
            writer.transcodedBody(buffer)
            endAnswer()
            return
        }
        let status = HTTPResponseStatus(statusCode: Int(GRPCStatus.meteredHTTPStatus(code)))
        let detail = message.isEmpty ? GRPCStatus.name(code) : message
        if headWritten {
            // a stream that failed after messages: its last line says so
            done = true
            let line = "{\"error\":{\"code\":\(code),\"status\":\(JSONText.quote(GRPCStatus.name(code))),\"message\":\(JSONText.quote(detail))}}\n"
            writer.transcodedBody(writer.allocator.buffer(string: line))
            endAnswer()
            return
        }
        var problem = LocalResponse.problem(status, GRPCStatus.name(code), detail, rejection: nil)
        problem.body = String(problem.body.dropLast()) + ",\"grpc_status\":\(code)}"
        guard !trailerMetadata.isEmpty else {
            problem.headers += transformedResponseMetadata
            return finishAnswer(problem, broken: false)
        }
        // a problem with trailer fields to send is written as an answer that ends with them
        done = true
        headWritten = true
        let body = writer.allocator.buffer(string: problem.body)
        writer.transcodedHead(status: status, headers: headers(problem.headers), contentLength: body.readableBytes, endsWithTrailers: true)
        writer.transcodedBody(body)
        endAnswer()
    }
}

extension GRPCTranscodedCall: GRPCRelayClient {
    /// An HTTP client's call translated to gRPC is logged as the HTTP call it is.
    var logCaller: CallMeter.Caller {
        CallMeter.Caller(requestID: requestID, clientIP: connection.clientIP, target: head.uri, protocolName: head.version.major == 2 ? .http2 : .http1)
    }

    func relay(headers: HPACKHeaders, endStream: Bool) {
        guard !done else { return }
        if let status = headers.first(name: ":status") {
            guard status == "200", GRPCStatus.isGRPC(headers.first(name: "content-type")) else {
                return badReply("The upstream answered HTTP \(status) instead of a gRPC response.")
            }
            // a trailers-only answer's one block is its trailers
            if endStream { collectTrailerMetadata(headers) } else { collectMetadata(headers) }
            if isStreaming && !endStream { writeStreamHead() }
        } else {
            collectTrailerMetadata(headers)
        }
        if endStream { ended(headers) }
    }

    func relay(data: ByteBuffer, endStream: Bool) {
        guard !done else { return }
        pendingResponse.append(contentsOf: data.readableBytesView)
        guard let complete = messages() else { return badReply("The upstream's response is not a gRPC message the gateway can read (compressed or too large).") }
        for message in complete {
            let json: [UInt8]
            do { json = try transcoding.responseJSON(call, wire: message) } catch {
                // not the method's output type, or an Any of a type the descriptor set lacks
                return badReply("The upstream's response message is not a \(call.method.outputType) the gateway can translate: \(error.reason)")
            }
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
            // DATA that ends the stream without trailers: a broken gRPC answer (metered 502 already)
            if headWritten {
                var trailers = HPACKHeaders()
                trailers.add(name: "grpc-status", value: String(GRPCStatus.internalError))
                trailers.add(name: "grpc-message", value: "the upstream ended the stream without trailers")
                return ended(trailers)
            }
            finishAnswer(.problem(.badGateway, "Bad gateway", "The upstream ended the call without its gRPC status.", rejection: nil), broken: false)
        }
    }

    func relayFlush() { writer.transcodedFlush() }

    /// Asked as the upstream's call ends, before its last frame is relayed here: an OK unary call
    /// without its message, or an end without a `grpc-status`, is answered 502 (`ended`), so it is
    /// metered so. (A message that does not decode ends the call earlier, through `badReply`.)
    func relayMeteredStatus(grpcStatus: Int?, httpStatus: UInt) -> UInt {
        guard let grpcStatus else { return HTTPResponseStatus.badGateway.code }
        if grpcStatus == GRPCStatus.ok && !isStreaming && unaryReply == nil { return HTTPResponseStatus.badGateway.code }
        return GRPCStatus.meteredHTTPStatus(grpcStatus)
    }

    func relayClientReading(_ on: Bool) {
        // only a client stream writes while the client's body is still coming
        guard streamsRequest, !requestEnded, clientPaused == on else { return }
        clientPaused = !on
        writer.transcodedClientReading(on)
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
        if clientPaused {
            clientPaused = false
            writer.transcodedClientReading(true)
        }
    }
}
