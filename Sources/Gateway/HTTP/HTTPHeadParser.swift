import Foundation
import NIOCore
import NIOHTTP1

/// One header line of a parsed head, as offsets into the head's bytes.
struct HeaderField: Equatable {
    var name: Range<Int>
    /// Without the whitespace around it.
    var value: Range<Int>
    /// From the name's first byte to the end of the value (what is copied when forwarding).
    var line: Range<Int> { name.lowerBound..<value.upperBound }
}

/// The outcome of parsing an HTTP/1.1 message head from the bytes read so far.
enum HeadParse<Head> {
    case incomplete
    /// The head (or its field count) is beyond the limit: 431 for a request, 502 for a response.
    case tooLarge
    case invalid(HTTPResponseStatus, String)
    /// `length` bytes (the terminating empty line included) were the head.
    case complete(Head, length: Int)
}

/// A client's request head, checked strictly (RFC 9112): the gateway forwards what it parsed, so
/// every ambiguity another server could read differently — request smuggling — is refused here.
struct ParsedRequest {
    var head: HTTPRequestHead
    var framing: BodyFramer.Framing
}

/// An upstream's response head: kept as offsets, because its lines are copied to the client as
/// they came except for the few the gateway removes or sets.
struct ParsedResponse {
    var status: Int
    var isHTTP10: Bool
    /// "200 OK": the status code and reason phrase as the upstream sent them.
    var statusText: Range<Int>
    var fields: [HeaderField]
    var framing: BodyFramer.Framing
    var keepAlive: Bool
    /// Names the `Connection` header lists, lowercased (hop-by-hop for this message).
    var connectionListed: [String]
}

enum HTTPHeadParser {
    static let maxFields = 128

    // MARK: Requests

    static func parseRequest(_ bytes: UnsafeRawBufferPointer, maxBytes: Int) -> HeadParse<ParsedRequest> {
        // RFC 9112 §2.2: empty lines before a request line are ignored
        var start = 0
        while start + 1 < bytes.count && bytes[start] == UInt8(ascii: "\r") && bytes[start + 1] == UInt8(ascii: "\n") { start += 2 }
        let lines: Lines
        switch scan(bytes, from: start, maxBytes: maxBytes + start) {
        case .incomplete: return .incomplete
        case .tooLarge: return .tooLarge
        case .invalid(let status, let reason): return .invalid(status, reason)
        case .complete(let scanned, _): lines = scanned
        }
        // request-line = method SP request-target SP HTTP-version
        let line = lines.startLine
        guard let firstSpace = firstIndex(of: UInt8(ascii: " "), in: bytes, line),
            let secondSpace = firstIndex(of: UInt8(ascii: " "), in: bytes, (firstSpace + 1)..<line.upperBound)
        else { return .invalid(.badRequest, "The request line is not 'method target version'.") }
        let methodRange = line.lowerBound..<firstSpace
        let targetRange = (firstSpace + 1)..<secondSpace
        let versionRange = (secondSpace + 1)..<line.upperBound
        guard !methodRange.isEmpty, methodRange.allSatisfy({ isTokenByte(bytes[$0]) }) else {
            return .invalid(.badRequest, "The method is not a token.")
        }
        guard !targetRange.isEmpty, targetRange.allSatisfy({ bytes[$0] > 0x20 && bytes[$0] < 0x7f }) else {
            return .invalid(.badRequest, "The request target has characters outside visible ASCII.")
        }
        guard let version = httpVersion(bytes, versionRange) else {
            return looksLikeHTTP(bytes, versionRange)
                ? .invalid(.httpVersionNotSupported, "Only HTTP/1.0 and HTTP/1.1 are served here.")
                : .invalid(.badRequest, "The request line does not end in an HTTP version.")
        }
        var headers = HTTPHeaders()
        headers.reserveCapacity(lines.fields.count)
        var hosts = 0
        for field in lines.fields {
            if equals(bytes, field.name, "host") { hosts += 1 }
            headers.add(name: string(bytes, field.name), value: string(bytes, field.value))
        }
        if hosts > 1 || (hosts == 0 && version.minor == 1) {
            return .invalid(.badRequest, hosts > 1 ? "More than one Host header." : "An HTTP/1.1 request needs a Host header.")
        }
        let framing: BodyFramer.Framing
        switch requestFraming(bytes, lines.fields, isHTTP10: version.minor == 0) {
        case .success(let found): framing = found
        case .failure(let refusal): return .invalid(refusal.status, refusal.reason)
        }
        let method = HTTPMethod(rawValue: string(bytes, methodRange))
        let head = HTTPRequestHead(version: version, method: method, uri: string(bytes, targetRange), headers: headers)
        return .complete(ParsedRequest(head: head, framing: framing), length: lines.length)
    }

    struct Refusal: Error {
        var status: HTTPResponseStatus
        var reason: String
    }

    private static func requestFraming(_ bytes: UnsafeRawBufferPointer, _ fields: [HeaderField], isHTTP10: Bool) -> Result<BodyFramer.Framing, Refusal> {
        let length: Int?
        switch contentLength(bytes, fields) {
        case .success(let value): length = value
        case .failure(let refusal): return .failure(refusal)
        }
        var codings: [Range<Int>] = []
        for field in fields where equals(bytes, field.name, "transfer-encoding") { codings += listItems(bytes, field.value) }
        if codings.isEmpty { return .success(length.map { .length($0) } ?? .none) }
        // A length and a coding, or a coding in HTTP/1.0, is how requests are smuggled past proxies.
        if length != nil { return .failure(Refusal(status: .badRequest, reason: "Both Content-Length and Transfer-Encoding are present.")) }
        if isHTTP10 { return .failure(Refusal(status: .badRequest, reason: "Transfer-Encoding is not defined for HTTP/1.0.")) }
        guard codings.count == 1, equals(bytes, codings[0], "chunked") else {
            let chunkedLast = codings.last.map { equals(bytes, $0, "chunked") } ?? false
            return .failure(
                chunkedLast
                    ? Refusal(status: .notImplemented, reason: "Only the chunked transfer coding is supported.")
                    : Refusal(status: .badRequest, reason: "A request body's transfer coding must end in chunked."))
        }
        return .success(.chunked)
    }

    // MARK: Responses

    /// `requestMethod` decides whether a body follows (none after HEAD).
    /// Whether the response's first bytes are (the start of) `HTTP/`.
    static func couldStartStatusLine(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let prefix: StaticString = "HTTP/"
        for index in 0..<min(bytes.count, prefix.utf8CodeUnitCount) where bytes[index] != prefix.utf8Start[index] { return false }
        return true
    }

    static func parseResponse(_ bytes: UnsafeRawBufferPointer, maxBytes: Int, requestMethod: HTTPMethod) -> HeadParse<ParsedResponse> {
        let lines: Lines
        switch scan(bytes, from: 0, maxBytes: maxBytes) {
        case .incomplete:
            // bytes that cannot become a status line (an HTTP/2 server's SETTINGS, say) are refused
            // now rather than awaited until the response deadline
            return couldStartStatusLine(bytes) ? .incomplete : .invalid(.badGateway, "The status line does not start with HTTP/1.x.")
        case .tooLarge: return .tooLarge
        case .invalid(let status, let reason): return .invalid(status, reason)
        case .complete(let scanned, _): lines = scanned
        }
        // status-line = HTTP-version SP status-code SP [ reason-phrase ]
        let line = lines.startLine
        guard line.count >= 12, let version = httpVersion(bytes, line.lowerBound..<(line.lowerBound + 8)), bytes[line.lowerBound + 8] == UInt8(ascii: " ")
        else { return .invalid(.badGateway, "The status line does not start with HTTP/1.x.") }
        let codeStart = line.lowerBound + 9
        var status = 0
        for index in codeStart..<(codeStart + 3) {
            let byte = bytes[index]
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return .invalid(.badGateway, "The status code is not three digits.") }
            status = status * 10 + Int(byte - UInt8(ascii: "0"))
        }
        guard status >= 100, line.count == 12 || bytes[codeStart + 3] == UInt8(ascii: " ") else {
            return .invalid(.badGateway, "The status code is not three digits.")
        }
        var listed: [String] = []
        var closes = false
        var keepAliveToken = false
        for field in lines.fields where equals(bytes, field.name, "connection") {
            for token in listItems(bytes, field.value) {
                if equals(bytes, token, "close") {
                    closes = true
                } else if equals(bytes, token, "keep-alive") {
                    keepAliveToken = true
                } else if !HopByHop.isStandard(bytes, token) && !equals(bytes, token, "transfer-encoding") {
                    listed.append(string(bytes, token).lowercased())
                }
            }
        }
        var keepAlive = version.minor == 1 ? !closes : (keepAliveToken && !closes)
        var framing = BodyFramer.Framing.untilClose
        if requestMethod == .HEAD || (100..<200).contains(status) || status == 204 || status == 304 {
            framing = .none
        } else {
            var codings: [Range<Int>] = []
            for field in lines.fields where equals(bytes, field.name, "transfer-encoding") { codings += listItems(bytes, field.value) }
            if let last = codings.last {
                // RFC 9112 §6.3: chunked last frames the body; any other coding runs until close
                framing = equals(bytes, last, "chunked") ? .chunked : .untilClose
                // a length beside a coding: the coding wins, and the connection cannot be trusted after
                if contentLengthPresent(bytes, lines.fields) { keepAlive = false }
            } else {
                switch contentLength(bytes, lines.fields) {
                case .success(let length): if let length { framing = .length(length) }
                case .failure: return .invalid(.badGateway, "The upstream sent an invalid Content-Length.")
                }
            }
        }
        if framing == .untilClose { keepAlive = false }
        let statusText = codeStart..<line.upperBound
        return .complete(
            ParsedResponse(
                status: status, isHTTP10: version.minor == 0, statusText: statusText, fields: lines.fields, framing: framing, keepAlive: keepAlive,
                connectionListed: listed),
            length: lines.length)
    }

    /// Whether an empty line — the end of a head — occurs in `bytes` after `offset` (backing up two
    /// bytes, so one split across reads is found). The handler calls this on each read and parses
    /// only once it is true: re-parsing a head that arrives a few bytes at a time from its start on
    /// every read would cost time quadratic in its length.
    static func containsHeadEnd(_ bytes: UnsafeRawBufferPointer, from offset: Int) -> Bool {
        guard let base = bytes.baseAddress else { return false }
        var index = max(0, offset - 2)
        while index + 1 < bytes.count, let found = memchr(base + index, Int32(UInt8(ascii: "\n")), bytes.count - index - 1) {
            let lf = base.distance(to: UnsafeRawPointer(found))
            let next = bytes[lf + 1]
            if next == UInt8(ascii: "\n") { return true }
            if next == UInt8(ascii: "\r") && lf + 2 < bytes.count && bytes[lf + 2] == UInt8(ascii: "\n") { return true }
            index = lf + 1
        }
        return false
    }

    // MARK: Shared

    struct Lines {
        var startLine: Range<Int>
        var fields: [HeaderField]
        var length: Int
    }

    /// Splits a head into its start line and fields, validating each field line.
    static func scan(_ bytes: UnsafeRawBufferPointer, from start: Int, maxBytes: Int) -> HeadParse<Lines> {
        let end = bytes.count
        guard let base = bytes.baseAddress else { return .incomplete }
        // memchr finds line ends several bytes at a time (the byte loop it replaced was the
        // parser's largest cost in the gateway's profile)
        func lineEnd(from index: Int) -> Int? {
            guard index < end, let found = memchr(base + index, Int32(UInt8(ascii: "\n")), end - index) else { return nil }
            return base.distance(to: UnsafeRawPointer(found))
        }
        guard let firstLF = lineEnd(from: start) else { return end > maxBytes ? .tooLarge : .incomplete }
        guard firstLF > start, bytes[firstLF - 1] == UInt8(ascii: "\r") else { return .invalid(.badRequest, "Lines must end in CRLF.") }
        let startLine = start..<(firstLF - 1)
        if startLine.contains(where: { BodyFramer.isControl(bytes[$0]) }) { return .invalid(.badRequest, "Control characters in the start line.") }
        var fields: [HeaderField] = []
        fields.reserveCapacity(16)
        var lineStart = firstLF + 1
        while true {
            guard let lf = lineEnd(from: lineStart) else { return end > maxBytes ? .tooLarge : .incomplete }
            if lf + 1 - start > maxBytes { return .tooLarge }
            guard lf > lineStart, bytes[lf - 1] == UInt8(ascii: "\r") else { return .invalid(.badRequest, "Lines must end in CRLF.") }
            let contentEnd = lf - 1
            if contentEnd == lineStart { return .complete(Lines(startLine: startLine, fields: fields, length: lf + 1), length: lf + 1) }
            guard fields.count < maxFields else { return .tooLarge }
            // field-line = field-name ":" OWS field-value OWS; no folding, no space before the colon
            var colon = lineStart
            while colon < contentEnd && isTokenByte(bytes[colon]) { colon += 1 }
            guard colon > lineStart, colon < contentEnd, bytes[colon] == UInt8(ascii: ":") else {
                return .invalid(.badRequest, "A header line is not 'name: value'.")
            }
            var valueStart = colon + 1
            while valueStart < contentEnd && isWhitespace(bytes[valueStart]) { valueStart += 1 }
            var valueEnd = contentEnd
            while valueEnd > valueStart && isWhitespace(bytes[valueEnd - 1]) { valueEnd -= 1 }
            for index in valueStart..<valueEnd where BodyFramer.isControl(bytes[index]) {
                return .invalid(.badRequest, "Control characters in a header value.")
            }
            fields.append(HeaderField(name: lineStart..<colon, value: valueStart..<valueEnd))
            lineStart = lf + 1
        }
    }

    /// The Content-Length all such fields agree on; a refusal when they disagree or are not digits.
    private static func contentLength(_ bytes: UnsafeRawBufferPointer, _ fields: [HeaderField]) -> Result<Int?, Refusal> {
        var found: Int?
        for field in fields where equals(bytes, field.name, "content-length") {
            for item in listItems(bytes, field.value) {
                guard !item.isEmpty, item.count <= 18, item.allSatisfy({ bytes[$0] >= UInt8(ascii: "0") && bytes[$0] <= UInt8(ascii: "9") }) else {
                    return .failure(Refusal(status: .badRequest, reason: "Content-Length is not a number."))
                }
                let value = item.reduce(0) { $0 * 10 + Int(bytes[$1] - UInt8(ascii: "0")) }
                if let found, found != value { return .failure(Refusal(status: .badRequest, reason: "Content-Length values disagree.")) }
                found = value
            }
        }
        return .success(found)
    }

    private static func contentLengthPresent(_ bytes: UnsafeRawBufferPointer, _ fields: [HeaderField]) -> Bool {
        fields.contains { equals(bytes, $0.name, "content-length") }
    }

    /// The comma-separated items of a field value, without surrounding whitespace or empty items.
    static func listItems(_ bytes: UnsafeRawBufferPointer, _ value: Range<Int>) -> ListItems { ListItems(bytes: bytes, value: value) }

    /// Yields a list field's items one by one: read for every upstream response's `Connection`,
    /// where an array of them was an allocation per call.
    struct ListItems: Sequence, IteratorProtocol {
        let bytes: UnsafeRawBufferPointer
        let end: Int
        var position: Int
        var finished = false

        init(bytes: UnsafeRawBufferPointer, value: Range<Int>) {
            self.bytes = bytes
            self.end = value.upperBound
            self.position = value.lowerBound
        }

        mutating func next() -> Range<Int>? {
            while !finished {
                var comma = position
                while comma < end && bytes[comma] != UInt8(ascii: ",") { comma += 1 }
                var lower = position
                var upper = comma
                while lower < upper && HTTPHeadParser.isWhitespace(bytes[lower]) { lower += 1 }
                while upper > lower && HTTPHeadParser.isWhitespace(bytes[upper - 1]) { upper -= 1 }
                if comma >= end { finished = true } else { position = comma + 1 }
                if lower < upper { return lower..<upper }
            }
            return nil
        }
    }

    private static func httpVersion(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> HTTPVersion? {
        guard range.count == 8, equals(bytes, range.lowerBound..<(range.lowerBound + 7), "http/1.") else { return nil }
        switch bytes[range.lowerBound + 7] {
        case UInt8(ascii: "1"): return .http1_1
        case UInt8(ascii: "0"): return .http1_0
        default: return nil
        }
    }

    private static func looksLikeHTTP(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Bool {
        range.count >= 5 && equals(bytes, range.lowerBound..<(range.lowerBound + 5), "http/")
    }

    /// Whether the bytes equal `lowercase` (ASCII, lower case) with ASCII letters folded.
    static func equals(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ lowercase: String) -> Bool {
        guard range.count == lowercase.utf8.count else { return false }
        var index = range.lowerBound
        for expected in lowercase.utf8 {
            let byte = bytes[index]
            if (byte >= 0x41 && byte <= 0x5a ? byte | 0x20 : byte) != expected { return false }
            index += 1
        }
        return true
    }

    /// Whether the bytes equal `name` with ASCII letters folded on both sides.
    static func equals(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, caseFolded name: String) -> Bool {
        guard range.count == name.utf8.count else { return false }
        var index = range.lowerBound
        for expected in name.utf8 {
            let byte = bytes[index]
            if (byte >= 0x41 && byte <= 0x5a ? byte | 0x20 : byte) != (expected >= 0x41 && expected <= 0x5a ? expected | 0x20 : expected) { return false }
            index += 1
        }
        return true
    }

    static func string(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    private static func firstIndex(of byte: UInt8, in bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        range.first { bytes[$0] == byte }
    }

    /// tchar (RFC 9110 §5.6.2).
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "*"),
            UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"),
            UInt8(ascii: "~"):
            true
        default: false
        }
    }

    static func isWhitespace(_ byte: UInt8) -> Bool { byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
}
