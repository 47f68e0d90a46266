import NIOCore
import NIOHTTP1
import Testing

@testable import Gateway

/// The gateway's own HTTP/1.1 head parser: strict where a lenient reading lets requests be smuggled.
@Suite struct HTTPHeadParserTests {
    static func request(_ text: String, maxBytes: Int = 1024) -> HeadParse<ParsedRequest> {
        Array(text.utf8).withUnsafeBytes { HTTPHeadParser.parseRequest($0, maxBytes: maxBytes) }
    }

    static func response(_ text: String, method: HTTPMethod = .GET) -> HeadParse<ParsedResponse> {
        Array(text.utf8).withUnsafeBytes { HTTPHeadParser.parseResponse($0, maxBytes: 1024, requestMethod: method) }
    }

    @Test func aRequestHeadIsParsedAndItsLengthReported() throws {
        let text = "\r\nPOST /a/b?c=d HTTP/1.1\r\nHost: example.test\r\nX-Spaced:   padded value \t\r\nContent-Length: 5\r\n\r\nhello"
        guard case .complete(let request, let length) = Self.request(text) else { Issue.record("not parsed"); return }
        #expect(request.head.method == .POST)
        #expect(request.head.uri == "/a/b?c=d")
        #expect(request.head.version == .http1_1)
        #expect(request.head.headers.first(name: "x-spaced") == "padded value")
        #expect(request.framing == .length(5))
        #expect(length == text.utf8.count - 5)
    }

    @Test(arguments: [
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", BodyFramer.Framing.none),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n", .chunked),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7, 7\r\n\r\n", .length(7)),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", .length(0)),
        ("GET / HTTP/1.0\r\n\r\n", .none),
    ])
    func framingFollowsTheHeaders(text: String, framing: BodyFramer.Framing) {
        guard case .complete(let request, _) = Self.request(text) else { Issue.record("not parsed: \(text)"); return }
        #expect(request.framing == framing)
    }

    @Test func aResponseThatCannotBecomeAStatusLineIsRefusedBeforeItEnds() {
        // an h2c server's SETTINGS frame where an HTTP/1.1 head was expected: no CRLF will ever come
        let settings = "\u{0}\u{0}\u{6}\u{4}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{3}\u{0}\u{0}\u{0}d"
        guard case .invalid(let status, _) = Self.response(settings) else { Issue.record("not refused"); return }
        #expect(status == .badGateway)
        // the start of a real head still waits for the rest
        for partial in ["H", "HTTP/", "HTTP/1.1 200", "HTTP/1.1 200 OK\r\nContent-Le"] {
            guard case .incomplete = Self.response(partial) else { Issue.record("refused too early: \(partial)"); continue }
        }
        guard case .invalid = Self.response("HTTX/1.1 200") else { Issue.record("a wrong protocol name waits"); return }
    }

    @Test func anUnfinishedHeadAsksForMoreUntilItIsTooLarge() {
        guard case .incomplete = Self.request("GET / HTTP/1.1\r\nHost: x\r\n") else { Issue.record("expected incomplete"); return }
        guard case .tooLarge = Self.request("GET / HTTP/1.1\r\nX: \(String(repeating: "a", count: 2000))", maxBytes: 1024) else {
            Issue.record("expected too large")
            return
        }
        guard case .tooLarge = Self.request("GET / HTTP/1.1\r\nHost: x\r\nX: \(String(repeating: "a", count: 2000))\r\n\r\n", maxBytes: 1024) else {
            Issue.record("expected too large")
            return
        }
        let manyFields = "GET / HTTP/1.1\r\nHost: x\r\n" + String(repeating: "A: b\r\n", count: HTTPHeadParser.maxFields) + "\r\n"
        guard case .tooLarge = Self.request(manyFields, maxBytes: 100_000) else { Issue.record("expected too many fields"); return }
    }

    @Test(arguments: [
        ("GET / HTTP/1.1\nHost: x\n\n", 400),  // bare LF
        ("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),  // space before the colon
        ("GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400),  // obsolete line folding
        ("GET / HTTP/1.1\r\nX: y\r\n\r\n", 400),  // HTTP/1.1 without Host
        ("GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n", 400),
        ("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        ("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: x\r\nX: a\u{1}b\r\n\r\n", 400),
        ("THIS IS NOT HTTP\r\n\r\n", 400),
    ])
    func ambiguousOrMalformedRequestsAreRefused(text: String, status: Int) {
        guard case .invalid(let refused, _) = Self.request(text) else { Issue.record("accepted: \(text.debugDescription)"); return }
        #expect(Int(refused.code) == status)
    }

    @Test(arguments: [
        ("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", HTTPMethod.GET, BodyFramer.Framing.length(12), true),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", .GET, .chunked, true),
        ("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", .GET, .untilClose, false),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", .GET, .untilClose, false),
        ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", .GET, .chunked, false),
        ("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", .HEAD, .none, true),
        ("HTTP/1.1 204 No Content\r\n\r\n", .GET, .none, true),
        ("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", .GET, .none, true),
        ("HTTP/1.1 100 Continue\r\n\r\n", .PUT, .none, true),
        ("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", .GET, .length(1), false),
        ("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", .GET, .length(1), false),
        ("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n", .GET, .length(1), true),
    ])
    func responseFramingAndKeepAlive(text: String, method: HTTPMethod, framing: BodyFramer.Framing, keepAlive: Bool) {
        guard case .complete(let response, let length) = Self.response(text, method: method) else { Issue.record("not parsed: \(text)"); return }
        #expect(response.framing == framing)
        #expect(response.keepAlive == keepAlive)
        #expect(length == text.utf8.count)
    }

    @Test func aResponseKeepsItsStatusTextAndNamesItsConnectionScopedHeaders() {
        let text = "HTTP/1.1 418 I'm a teapot\r\nConnection: X-Hop, keep-alive\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n"
        guard case .complete(let response, _) = Self.response(text) else { Issue.record("not parsed"); return }
        #expect(response.status == 418)
        let statusText = Array(text.utf8).withUnsafeBytes { HTTPHeadParser.string($0, response.statusText) }
        #expect(statusText == "418 I'm a teapot")
        #expect(response.connectionListed == ["x-hop"])
        #expect(response.fields.count == 3)
    }

    @Test func theEndOfAHeadIsFoundAcrossReads() {
        func found(_ text: String, from offset: Int) -> Bool { Array(text.utf8).withUnsafeBytes { HTTPHeadParser.containsHeadEnd($0, from: offset) } }
        #expect(!found("GET / HTTP/1.1\r\nHost: x\r\n", from: 0))
        // the terminator split over reads: the earlier read ended after "\r\n\r"
        #expect(found("GET / HTTP/1.1\r\nHost: x\r\n\r\n", from: 26))
        #expect(found("GET / HTTP/1.1\nHost: x\n\n", from: 23))
        #expect(!found("GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n", from: 10))
    }

    @Test(arguments: ["HTTP/1.1 2x0 OK\r\n\r\n", "HTTP/2 200\r\n\r\n", "HTTP/1.1 200OK\r\n\r\n", "HTTP/1.1 099 Low\r\n\r\n", "ICY 200 OK\r\n\r\n"])
    func brokenStatusLinesAreRefused(text: String) {
        guard case .invalid = Self.response(text) else { Issue.record("accepted: \(text.debugDescription)"); return }
    }
}

/// Finding where a body ends in the byte stream, fed whole or one byte at a time.
@Suite struct BodyFramerTests {
    /// Feeds `text` in pieces of `step` bytes; returns the payload, bytes consumed and whether it ended.
    static func run(_ framing: BodyFramer.Framing, _ text: String, step: Int) throws -> (payload: String, consumed: Int, ended: Bool) {
        var framer = BodyFramer(framing)
        let bytes = Array(text.utf8)
        var payload: [UInt8] = []
        var offset = 0
        while offset < bytes.count {
            let piece = Array(bytes[offset..<min(bytes.count, offset + step)])
            let result = try piece.withUnsafeBytes { raw in try framer.consume(raw) { payload += piece[$0] } }
            offset += result.consumed
            if result.ended { return (String(decoding: payload, as: UTF8.self), offset, true) }
            if result.consumed < piece.count { break }
        }
        return (String(decoding: payload, as: UTF8.self), offset, false)
    }

    @Test(arguments: [1, 3, 1000])
    func aLengthEndsWhereItSaysAndLeavesTheRest(step: Int) throws {
        let result = try Self.run(.length(5), "helloGET / HTTP/1.1", step: step)
        #expect(result.payload == "hello")
        #expect(result.consumed == 5)
        #expect(result.ended)
    }

    @Test(arguments: [1, 2, 7, 1000])
    func chunksWithExtensionsAndTrailersEndAfterTheTrailers(step: Int) throws {
        let body = "4;ext=\"x\"\r\nWiki\r\nA \r\npedia in\r\n\r\n0\r\nExpires: never\r\n\r\n"
        let result = try Self.run(.chunked, body + "NEXT", step: step)
        #expect(result.payload == "Wikipedia in\r\n")
        #expect(result.consumed == body.utf8.count)
        #expect(result.ended)
    }

    @Test func aBodyUntilCloseNeverEnds() throws {
        let result = try Self.run(.untilClose, "all of it", step: 4)
        #expect(result.payload == "all of it")
        #expect(result.consumed == 9)
        #expect(!result.ended)
    }

    @Test func noBodyEndsAtOnce() throws {
        var framer = BodyFramer(.none)
        #expect(framer.isDone)
        let step = try [UInt8]("GET".utf8).withUnsafeBytes { try framer.consume($0) { _ in Issue.record("no payload expected") } }
        #expect(step == BodyFramer.Step(consumed: 0, ended: true))
    }

    @Test(arguments: [
        ("zz\r\n", BodyFramer.Failure.invalidChunkSize),
        ("\r\n", .invalidChunkSize),
        ("1234567890abcdef0\r\n", .invalidChunkSize),
        ("3\r\nabcX\r\n", .invalidChunkFraming),
        ("3\nabc", .invalidChunkSize),
        ("3;\(String(repeating: "e", count: 5000))\r\n", .chunkExtensionTooLong),
        ("0\r\n\(String(repeating: "T: v\r\n", count: 3000))\r\n", .trailersTooLong),
    ])
    func brokenChunksAreRefused(text: String, failure: BodyFramer.Failure) {
        #expect(throws: failure) { _ = try Self.run(.chunked, text, step: 1000) }
    }
}

/// Heads written into one reservation: the bytes are those written, whether the first reservation
/// held them or the head had to be written again into a larger one.
@Suite struct HeadBytesTests {
    static func written(estimate: Int, prefix: String = "") -> (ByteBuffer, runs: Int) {
        var buffer = ByteBufferAllocator().buffer(string: prefix)
        var runs = 0
        HeadBytes.write(into: &buffer, estimate: estimate) { out in
            runs += 1
            out.put("GET / HTTP/1.1\r\n")
            out.header("Host", "example.test")
            out.header("X-Long", String(repeating: "v", count: 700))
            out.put(UnsafeRawBufferPointer(start: nil, count: 0))
            out.put("\r\n")
        }
        return (buffer, runs)
    }

    @Test func aHeadLargerThanItsEstimateIsWrittenWholeIntoALargerReservation() {
        let expected = "GET / HTTP/1.1\r\nHost: example.test\r\nX-Long: " + String(repeating: "v", count: 700) + "\r\n\r\n"
        let (roomy, roomyRuns) = Self.written(estimate: 4096)
        let (tight, tightRuns) = Self.written(estimate: 10, prefix: "kept|")
        #expect(String(buffer: roomy) == expected)
        #expect(roomyRuns == 1)
        #expect(String(buffer: tight) == "kept|" + expected)  // what the buffer held stays, nothing of the failed runs
        #expect(tightRuns > 1)  // the first reservation (at least 64 bytes, as the allocator rounds it) was too small for 739
    }
}
