import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// Between the exchange core's HTTP/1.1 messages and one stream of an HTTP/2 upstream (an API
/// whose upstream protocol is `h2`). The exchange writes the request as it would to an HTTP/1.1
/// upstream — the head `UpstreamRequestHead` made, the body in the client's framing or the
/// gateway's chunks — and reads the response as HTTP/1.1 bytes; this turns the one into frames and
/// the frames back into the other, so transformations, the cache, metering and both client writers
/// apply unchanged. Pure: the frames to send and the bytes to read are handed to `emit`.
///
/// Request: the head (parsed strictly, as a client's would be) becomes `:method`, `:scheme`,
/// `:authority` (the target's `Host`), `:path` and the other fields lowercased, less
/// connection-specific ones (`te: trailers` stays); the body's payload (chunking removed) becomes
/// DATA frames, the last one ending the stream.
///
/// Response: an interim (1xx) header block becomes an interim head; the final one a head that keeps
/// the upstream's `content-length`, or else announces chunked framing (so a body of unknown
/// length, and its trailers, reach an HTTP/1.1 client as chunks); DATA frames become the body;
/// trailers become the chunked body's trailer section and are also handed over as fields (HTTP/2
/// clients get them as a HEADERS frame).
struct UpstreamStreamTranslator {
    enum Failure: Error, Equatable {
        /// The exchange wrote something that is not an HTTP/1.1 request (a gateway bug, not input).
        case invalidRequest(String)
        /// The upstream's frames do not make a response the gateway can relay.
        case invalidResponse(String)
    }

    /// The upstream request head the exchange writes may be larger than a client's (the gateway
    /// adds its headers): this bounds it.
    static let maxRequestHeadBytes = 64 * 1024

    private let tls: Bool
    private var requestHead: ByteBuffer?
    private var requestBody: BodyFramer?
    private var requestEnded = false
    private var requestMethod: HTTPMethod = .GET
    /// A chunked request's trailer section so far (sent as trailing HEADERS once it ended).
    private var requestTrailers: ByteBuffer?

    private enum ResponseState: Equatable {
        case head
        case body(chunked: Bool)
        case done
    }

    private var response = ResponseState.head

    init(tls: Bool) { self.tls = tls }

    var responseEnded: Bool { response == .done }

    // MARK: Request

    /// Request bytes from the exchange: the frames they make, in order.
    mutating func request(_ bytes: ByteBuffer, emit: (HTTP2Frame.FramePayload) -> Void) throws(Failure) {
        var input = bytes
        if requestBody == nil {
            if var partial = requestHead {
                requestHead = nil
                partial.writeBuffer(&input)
                input = partial
            }
            let parsed = input.withUnsafeReadableBytes { HTTPHeadParser.parseRequest($0, maxBytes: Self.maxRequestHeadBytes) }
            switch parsed {
            case .incomplete:
                requestHead = input
                return
            case .tooLarge:
                throw .invalidRequest("The request head is larger than \(Self.maxRequestHeadBytes) bytes.")
            case .invalid(_, let reason):
                throw .invalidRequest(reason)
            case .complete(let request, let length):
                input.moveReaderIndex(forwardBy: length)
                requestMethod = request.head.method
                let framer = BodyFramer(request.framing)
                requestBody = framer
                let block = Self.requestHeaders(request.head, tls: tls)
                if framer.isDone {
                    requestEnded = true
                    emit(.headers(.init(headers: block, endStream: true)))
                    return
                }
                emit(.headers(.init(headers: block)))
            }
        }
        guard !requestEnded, var framer = requestBody, input.readableBytes > 0 else { return }
        var payload: [Range<Int>] = []
        let step: BodyFramer.Step
        do {
            step = try input.withUnsafeReadableBytes { bytes in try framer.consume(bytes) { payload.append($0) } }
        } catch {
            throw .invalidRequest("The request body's framing is invalid.")
        }
        requestBody = framer
        requestEnded = step.ended
        if let from = step.trailersFrom {
            var section = input.getSlice(at: input.readerIndex + from, length: step.consumed - from)!
            if requestTrailers == nil { requestTrailers = section } else { requestTrailers!.writeBuffer(&section) }
        }
        var trailers = HPACKHeaders()
        if step.ended, let section = requestTrailers {
            requestTrailers = nil
            for (name, value) in TrailerSection.fields(in: section) where TrailerSection.forwards(name) && TrailerSection.isValue(value) {
                trailers.add(name: name.lowercased(), value: value)
            }
        }
        // the stream ends with the last DATA frame, or with the trailers when there are any
        let dataEnds = step.ended && trailers.isEmpty
        for (index, range) in payload.enumerated() where !range.isEmpty {
            let last = dataEnds && index == payload.count - 1
            let data = input.getSlice(at: input.readerIndex + range.lowerBound, length: range.count)!
            emit(.data(.init(data: .byteBuffer(data), endStream: last)))
        }
        if !trailers.isEmpty {
            emit(.headers(.init(headers: trailers, endStream: true)))
        } else if dataEnds && (payload.last?.isEmpty ?? true) {
            emit(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)))
        }
    }

    /// The request head as an HTTP/2 header block.
    static func requestHeaders(_ head: HTTPRequestHead, tls: Bool) -> HPACKHeaders {
        var block = HPACKHeaders()
        block.reserveCapacity(head.headers.count + 4)
        block.add(name: ":method", value: head.method.rawValue)
        block.add(name: ":scheme", value: tls ? "https" : "http")
        block.add(name: ":authority", value: head.headers.first(name: "host") ?? "")
        block.add(name: ":path", value: head.uri)
        let hop = HopByHop(head.headers)
        for (name, value) in head.headers {
            if name.isASCII(caseInsensitively: "te") {
                // the one connection-specific field HTTP/2 keeps (gRPC and trailers need it)
                if value.trimmingASCIIWhitespace().lowercased() == "trailers" { block.add(name: "te", value: "trailers") }
                continue
            }
            if name.isASCII(caseInsensitively: "host") || name.isASCII(caseInsensitively: "transfer-encoding") || hop.contains(name) { continue }
            block.add(name: name.lowercased(), value: value)
        }
        return block
    }

    // MARK: Response

    /// A frame from the upstream: the HTTP/1.1 bytes it makes for the exchange, and (before those
    /// bytes) the trailers it carried, if any.
    mutating func response(
        _ frame: HTTP2Frame.FramePayload, allocator: ByteBufferAllocator, trailers: ([(String, String)]) -> Void, emit: (ByteBuffer) -> Void
    ) throws(Failure) {
        switch (frame, response) {
        case (.headers(let headers), .head):
            try responseHead(headers.headers, endStream: headers.endStream, allocator: allocator, emit: emit)
        case (.headers(let headers), .body(let chunked)):
            guard headers.endStream else { throw .invalidResponse("The upstream sent a second header block that does not end the stream.") }
            response = .done
            var fields: [(String, String)] = []
            for (name, value, _) in headers.headers where !Self.isConnectionSpecific(name) && name != "content-length" {
                guard Self.isFieldValue(value) else { throw .invalidResponse("The upstream sent a trailer with control characters.") }
                fields.append((name, value))
            }
            trailers(fields)
            guard chunked else { return }
            var out = allocator.buffer(capacity: 64)
            out.writeStaticString("0\r\n")
            for (name, value) in fields { out.writeHeader(name, value) }
            out.writeStaticString("\r\n")
            emit(out)
        case (.data(let data), .body(let chunked)):
            guard case .byteBuffer(let payload) = data.data else { return }
            if data.endStream { response = .done }
            guard chunked else { return emit(payload) }
            if payload.readableBytes > 0 {
                var size = allocator.buffer(capacity: 20)
                size.writeString(String(payload.readableBytes, radix: 16))
                size.writeStaticString("\r\n")
                emit(size)
                emit(payload)
                emit(data.endStream ? Self.chunkEndAndLastChunk : Self.chunkEnd)
            } else if data.endStream {
                emit(Self.lastChunk)
            }
        case (.data, .head):
            throw .invalidResponse("The upstream sent data before its response headers.")
        default:
            // after the end, and frames that carry no message (priority, window updates)
            return
        }
    }

    private static let chunkEnd = ByteBuffer(string: "\r\n")
    private static let lastChunk = ByteBuffer(string: "0\r\n\r\n")
    private static let chunkEndAndLastChunk = ByteBuffer(string: "\r\n0\r\n\r\n")

    private mutating func responseHead(_ block: HPACKHeaders, endStream: Bool, allocator: ByteBufferAllocator, emit: (ByteBuffer) -> Void) throws(Failure) {
        guard let text = block.first(name: ":status"), text.utf8.count == 3, let status = Int(text), (100...599).contains(status) else {
            throw .invalidResponse("The upstream's response has no valid :status.")
        }
        let interim = status < 200
        if interim && (status == 101 || endStream) { throw .invalidResponse("The upstream sent an informational response the gateway cannot relay.") }
        let bodyless = requestMethod == .HEAD || status == 204 || status == 304
        var hasLength = false
        var out = allocator.buffer(capacity: 512)
        out.writeStaticString("HTTP/1.1 ")
        out.writeString(text)
        out.writeStaticString(" ")
        let phrase = HTTPResponseStatus(statusCode: status).reasonPhrase
        // HTTP/2 has no reason phrases: NIO's, or one for the codes it lacks (clients ignore it)
        out.writeString(phrase.isEmpty ? (status == 103 ? "Early Hints" : "Status") : phrase)
        out.writeStaticString("\r\n")
        for (name, value, _) in block {
            if name.utf8.first == UInt8(ascii: ":") {
                if name == ":status" { continue }
                throw .invalidResponse("The upstream's response has the pseudo-header \(name).")
            }
            if Self.isConnectionSpecific(name) { continue }
            guard Self.isFieldValue(value) else { throw .invalidResponse("The upstream sent a header value with control characters.") }
            if name == "content-length" { hasLength = true }
            out.writeHeader(name, value)
        }
        if interim {
            out.writeStaticString("\r\n")
            return emit(out)
        }
        var chunked = false
        if !bodyless && !hasLength {
            if endStream {
                out.writeStaticString("content-length: 0\r\n")
            } else {
                out.writeStaticString("transfer-encoding: chunked\r\n")
                chunked = true
            }
        }
        out.writeStaticString("\r\n")
        response = endStream ? .done : .body(chunked: chunked)
        emit(out)
    }

    /// Fields HTTP/2 forbids or the HTTP/1.1 side frames itself.
    private static func isConnectionSpecific(_ name: String) -> Bool {
        name.utf8.first == UInt8(ascii: ":") || name == "transfer-encoding" || HopByHop.isStandard(name)
    }

    /// A field value an HTTP/1.1 head may carry: no control characters but tab.
    private static func isFieldValue(_ value: String) -> Bool {
        !value.utf8.contains { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7f }
    }
}
