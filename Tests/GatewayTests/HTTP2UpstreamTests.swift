import Billing
import Foundation
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import Testing

@testable import Gateway

/// APIs whose upstream protocol is `h2`: calls from HTTP/1.1 and HTTP/2 clients go through the
/// exchange core as streams of one multiplexed HTTP/2 connection — real NIO HTTP/2 upstreams on
/// loopback (h2c prior knowledge, and TLS with ALPN `h2`), real HTTP/1.1 and HTTP/2 clients.
@Suite struct HTTP2UpstreamTests {
    static let key = ("X-API-Key", TestWorld.apiKey)

    /// (The test upstream's special paths work without a prefix.)
    static func h2Target(_ port: Int, tls: Bool = false, prefix: String = "") -> UpstreamTargetConfig {
        UpstreamTargetConfig(host: "127.0.0.1", port: port, pathPrefix: prefix, weight: 1, tls: tls, h2: true)
    }

    @Test func theProtocolIsDecidedPerTargetOnceAndGRPCTargetsStayAsTheyAre() throws {
        let plain = try #require(UpstreamTargetConfig(url: "http://127.0.0.1:8080/p", weight: 1))
        #expect(!plain.h2 && plain.speaking(.http1) == plain)
        let h2 = plain.speaking(.h2)
        #expect(h2.h2 && !h2.http2 && h2.speaksHTTP2 && h2.key == "h2c://127.0.0.1:8080" && h2.pathPrefix == "/p")
        #expect(h2.speaking(.http1) == plain)
        let tls = try #require(UpstreamTargetConfig(url: "https://api.example.com", weight: 1)).speaking(.h2)
        #expect(tls.h2 && tls.tls && tls.key == "h2+https://api.example.com:443")
        let grpc = try #require(UpstreamTargetConfig(url: "grpc://127.0.0.1:9000", weight: 1))
        #expect(grpc.speaking(.h2) == grpc && !grpc.speaking(.h2).h2)
    }

    @Test func callsFromHTTP1ClientsReachAnH2cUpstreamWithTheGatewaysHeadersAndBodies() async throws {
        // setup
        let upstream = try await TestUpstream.start(http2: true)
        defer { Task { await upstream.stop() } }
        let world = TestWorld()
        // one event loop: its pool holds one connection per target
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [Self.h2Target(upstream.port, prefix: "/base")]), configure: { $0.eventLoopThreads = 1 }) { gateway in
            // act
            let get = try await gateway.request("GET", "/t/demo/echo/v1/hello?x=1", headers: [Self.key, ("Connection", "keep-alive, x-drop"), ("X-Drop", "1")])
            let post = try await gateway.request("POST", "/t/demo/echo/v1/items", headers: [Self.key, ("Content-Type", "application/json")], body: #"{"a":1}"#)
            let chunked = try await gateway.send(
                "POST /t/demo/echo/v1/chunks HTTP/1.1\r\nHost: gateway.test\r\nX-API-Key: \(TestWorld.apiKey)\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                    + "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            // assert
            #expect(get.status == 200, "\(get.body)")
            #expect(get.body.contains(#""uri":"/base/hello?x=1""#))
            #expect(get.headers["x-request-id"] != nil && get.headers["ratelimit-policy"] != nil)
            #expect(post.status == 200 && post.body.contains(#""body_bytes":7"#), "\(post.body)")
            #expect(chunked.first?.status == 200 && chunked.first?.body.contains(#""body_bytes":11"#) == true, "\(chunked)")
            let seen = upstream.seen
            #expect(seen.count == 3)
            let first = try #require(seen.first)
            // NIO's HTTP/2 codec turns :authority into Host: the target's host header
            #expect(first.header("host") == "127.0.0.1:\(upstream.port)")
            #expect(first.header("x-api-key") == nil && first.header("x-drop") == nil && first.header("connection") == nil)
            #expect(first.header("x-request-id") == get.headers["x-request-id"] && first.header("x-forwarded-for") == "127.0.0.1")
            #expect(first.header("x-tollgate-app-id") == world.appID.lowercasedText)
            #expect(seen.contains { $0.method == "POST" && $0.body == "hello world" })
            // one multiplexed connection carries every call
            #expect(upstream.connections == 1)
            try await Self.waitForUsage(gateway, count: 3)
            #expect(gateway.usage.recent.allSatisfy { $0.isBillable && $0.status == 200 })
        }
    }

    @Test func callsFromHTTP2ClientsStreamBothWaysAndGetTheUpstreamsTrailers() async throws {
        // setup
        let upstream = try await TestUpstream.start(http2: true)
        defer { Task { await upstream.stop() } }
        let world = TestWorld()
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [Self.h2Target(upstream.port)])) { gateway in
            // act
            let get = try await HTTP2TestClient.request(port: gateway.port, path: "/t/demo/echo/v1/hello", headers: [("x-api-key", TestWorld.apiKey)])
            let post = try await HTTP2TestClient.request(
                port: gateway.port, method: .POST, path: "/t/demo/echo/v1/upload", headers: [("x-api-key", TestWorld.apiKey)],
                body: ["part one,", "part two"])
            let trailers = try await HTTP2TestClient.request(port: gateway.port, path: "/t/demo/echo/v1/trailers", headers: [("x-api-key", TestWorld.apiKey)])
            let big = try await HTTP2TestClient.request(port: gateway.port, path: "/t/demo/echo/v1/big", headers: [("x-api-key", TestWorld.apiKey)])
            // assert
            #expect(get.status == 200 && get.body.contains(#""uri":"/hello""#), "\(get)")
            #expect(get.header("x-request-id") != nil && get.header("ratelimit-policy") != nil)
            #expect(post.status == 200 && post.body.contains(#""body_bytes":17"#), "\(post.body)")
            #expect(upstream.seen.contains { $0.uri == "/upload" && $0.body == "part one,part two" })
            #expect(trailers.status == 200 && trailers.body == "first,second")
            #expect(trailers.trailer("x-checksum") == "abc123" && trailers.trailer("x-note") == "done", "\(trailers.trailers)")
            // 1 MiB through 64 KiB flow-control windows on both sides
            #expect(big.status == 200 && big.body.utf8.count == 1 << 20)
            try await Self.waitForUsage(gateway, count: 4)
            #expect(gateway.usage.recent.allSatisfy { $0.isBillable })
            #expect(gateway.usage.recent.contains { $0.bytesOut == 1 << 20 })
        }
    }

    @Test func anHTTP1ClientGetsTheUpstreamsTrailersInAChunkedBody() async throws {
        let upstream = try await TestUpstream.start(http2: true)
        defer { Task { await upstream.stop() } }
        let world = TestWorld()
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [Self.h2Target(upstream.port)])) { gateway in
            let raw = try await GatewayListenerTests.exchange(
                port: gateway.port, "GET /t/demo/echo/v1/trailers HTTP/1.1\r\nHost: gateway.test\r\nX-API-Key: \(TestWorld.apiKey)\r\nConnection: close\r\n\r\n")
            #expect(raw.hasPrefix("HTTP/1.1 200"), "\(raw)")
            #expect(raw.lowercased().contains("transfer-encoding: chunked"))
            #expect(raw.contains("0\r\nx-checksum: abc123\r\nx-note: done\r\n\r\n"), "\(raw)")
            #expect(RawResponse.parseAll(raw).first?.body == "first,second")
        }
    }

    @Test func aTLSUpstreamIsCalledOverH2WhenItsALPNChoosesIt() async throws {
        // setup
        let ca = try DevelopmentCA.create(commonName: "h2 CA")
        let upstream = try await TestUpstream.start(tls: try Self.serverContext(ca, alpn: ["h2"]), http2: true)
        defer { Task { await upstream.stop() } }
        let world = TestWorld()
        let snapshot = world.snapshot(
            targets: [Self.h2Target(upstream.port, tls: true)], upstreamTLS: try UpstreamTLS.context(caBundlePEM: ca.certificatePEM, http2: true))
        try await GatewayHarness.run(snapshot: snapshot, configure: { $0.eventLoopThreads = 1 }) { gateway in
            // act
            let fromHTTP1 = try await gateway.request("GET", "/t/demo/echo/v1/secure", headers: [Self.key])
            let fromHTTP2 = try await HTTP2TestClient.request(port: gateway.port, path: "/t/demo/echo/v1/trailers", headers: [("x-api-key", TestWorld.apiKey)])
            // assert
            #expect(fromHTTP1.status == 200 && fromHTTP1.body.contains(#""uri":"/secure""#), "\(fromHTTP1.body)")
            #expect(fromHTTP2.status == 200 && fromHTTP2.trailer("x-checksum") == "abc123")
            #expect(upstream.connections == 1)
        }
    }

    @Test func aTLSUpstreamThatDoesNotChooseH2IsA502SayingSoNotBilledAndCounted() async throws {
        // setup: an HTTP/1.1-only TLS upstream (ALPN http/1.1)
        let ca = try DevelopmentCA.create(commonName: "h1 CA")
        let upstream = try await TestUpstream.start(tls: try Self.serverContext(ca, alpn: ["http/1.1"]))
        defer { Task { await upstream.stop() } }
        let world = TestWorld()
        let snapshot = world.snapshot(
            targets: [Self.h2Target(upstream.port, tls: true)], upstreamTLS: try UpstreamTLS.context(caBundlePEM: ca.certificatePEM, http2: true))
        try await GatewayHarness.run(snapshot: snapshot) { gateway in
            // act
            let response = try await gateway.request("GET", "/t/demo/echo/v1/hello", headers: [Self.key])
            let overHTTP2 = try await HTTP2TestClient.request(port: gateway.port, path: "/t/demo/echo/v1/hello", headers: [("x-api-key", TestWorld.apiKey)])
            // assert
            #expect(response.status == 502)
            #expect(response.body.contains("HTTP/2") && response.body.contains("ALPN"), "\(response.body)")
            #expect(overHTTP2.status == 502 && overHTTP2.body.contains("HTTP/2"))
            #expect(upstream.seen.isEmpty)
            try await Self.waitForUsage(gateway, count: 2)
            #expect(gateway.usage.recent.allSatisfy { !$0.isBillable && $0.status == 502 })
            #expect(gateway.metrics.counters(label: "tollgate_gateway_upstream_errors_total", dimensions: [("kind", "tls")]).map(\.totalValue).reduce(0, +) >= 2)
        }
    }

    @Test func anUpstreamThatDoesNotSpeakH2cIsA502() async throws {
        let upstream = try await TestUpstream.start()  // HTTP/1.1 only
        defer { Task { await upstream.stop() } }
        let world = TestWorld()
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [Self.h2Target(upstream.port)]), configure: { $0.connectTimeout = .seconds(2) }) { gateway in
            let response = try await gateway.request("GET", "/t/demo/echo/v1/hello", headers: [Self.key])
            #expect(response.status == 502 && response.body.contains("HTTP/2"), "\(response.body)")
            try await Self.waitForUsage(gateway, count: 1)
            #expect(gateway.usage.recent.allSatisfy { !$0.isBillable })
        }
    }

    @Test func theResponseTransformationAndTheCacheApplyToAnH2Upstream() async throws {
        // setup
        let upstream = try await TestUpstream.start(http2: true)
        defer { Task { await upstream.stop() } }
        let world = TestWorld()
        let cache = try ResponseCacheTests.policy(#"{"ttl_seconds": 60, "shared": true}"#, store: ResponseCacheStore())
        let snapshot = world.snapshot(targets: [Self.h2Target(upstream.port)], responseTransform: TransformTests.responseTransform, responseCache: cache)
        try await GatewayHarness.run(snapshot: snapshot) { gateway in
            // act: kept from the h2 upstream over HTTP/1.1, then a hit over HTTP/2
            let first = try await gateway.request("GET", "/t/demo/echo/v1/doc", headers: [Self.key, ("X-Respond-With", "X-Internal=secret")])
            let second = try await HTTP2TestClient.request(
                port: gateway.port, path: "/t/demo/echo/v1/doc", headers: [("x-api-key", TestWorld.apiKey), ("x-respond-with", "X-Internal=secret")])
            // assert
            #expect(first.status == 200 && first.headers["x-public"] == "secret" && first.headers["x-internal"] == nil, "\(first.headers)")
            #expect(first.headers["x-served-for"] == "tgc_demo" && first.headers["cache-status"]?.contains("stored") == true)
            #expect(second.status == 200 && second.header("cache-status")?.contains("hit") == true, "\(second.headers)")
            #expect(second.header("x-public") == "secret" && second.body.contains(#""uri":"/doc""#))
            #expect(upstream.seen.count == 1)
        }
    }

    @Test func theResponseTimeoutResetsTheStreamAndAnswers504() async throws {
        let upstream = try await TestUpstream.start(http2: true)
        defer { Task { await upstream.stop() } }
        let world = TestWorld()
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [Self.h2Target(upstream.port)]), configure: { $0.responseTimeout = .seconds(1) }) { gateway in
            // /slow answers after 3 s
            let slow = try await gateway.request("GET", "/t/demo/echo/v1/slow", headers: [Self.key])
            #expect(slow.status == 504, "\(slow.body)")
            // the connection stays usable for the next call
            #expect(try await gateway.request("GET", "/t/demo/echo/v1/fast", headers: [Self.key]).status == 200)
            try await Self.waitForUsage(gateway, count: 2)
            #expect(gateway.usage.recent.contains { $0.status == 504 && !$0.isBillable })
        }
    }

    // MARK: Support

    static func serverContext(_ ca: DevelopmentCA, alpn: [String]) throws -> NIOSSLContext {
        try TestUpstream.serverContext(ca, alpn: alpn)
    }

    static func waitForUsage(_ gateway: GatewayHarness, count: Int) async throws {
        for _ in 0..<200 where gateway.usage.recent.count < count { try await Task.sleep(for: .milliseconds(50)) }
        #expect(gateway.usage.recent.count == count)
    }
}

/// The translation between the exchange's HTTP/1.1 messages and HTTP/2 frames, alone.
@Suite struct UpstreamStreamTranslatorTests {
    static func frames(_ text: String, tls: Bool = false) throws -> [HTTP2Frame.FramePayload] {
        var translator = UpstreamStreamTranslator(tls: tls)
        var out: [HTTP2Frame.FramePayload] = []
        // byte by byte too: heads and chunks split anywhere
        for byte in text.utf8 { try translator.request(ByteBuffer(bytes: [byte])) { out.append($0) } }
        return out
    }

    static func headers(_ frame: HTTP2Frame.FramePayload?) -> HPACKHeaders? {
        if case .headers(let headers) = frame { return headers.headers }
        return nil
    }

    static func payload(_ frames: [HTTP2Frame.FramePayload]) -> (String, Bool) {
        var text = ""
        var ended = false
        for case .data(let data) in frames {
            if case .byteBuffer(let buffer) = data.data { text += String(buffer: buffer) }
            ended = ended || data.endStream
        }
        return (text, ended)
    }

    @Test func aRequestHeadBecomesPseudoHeadersLessConnectionSpecificFields() throws {
        let frames = try Self.frames(
            "GET /p?q=1 HTTP/1.1\r\nHost: up.example:8443\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nAccept: */*\r\n\r\n", tls: true)
        #expect(frames.count == 1)
        guard case .headers(let headers) = frames.first else { Issue.record("no headers"); return }
        #expect(headers.endStream)
        let block = headers.headers
        #expect(block[":method"] == ["GET"] && block[":scheme"] == ["https"] && block[":authority"] == ["up.example:8443"] && block[":path"] == ["/p?q=1"])
        #expect(block["te"] == ["trailers"] && block["accept"] == ["*/*"])
        #expect(block["host"].isEmpty && block["connection"].isEmpty && block["x-hop"].isEmpty && block["keep-alive"].isEmpty)
    }

    @Test(arguments: [
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world", "hello world"),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n", "hello world"),
    ])
    func requestBodiesBecomeDataFramesWithoutTheirFraming(request: String, body: String) throws {
        let frames = try Self.frames(request)
        let headers = try #require(Self.headers(frames.first))
        #expect(headers["transfer-encoding"].isEmpty)
        let (payload, ended) = Self.payload(Array(frames.dropFirst()))
        #expect(payload == body && ended)
    }

    @Test func aChunkedRequestsTrailersEndTheStreamAsHeadersLessThoseThatMayNotPass() throws {
        let frames = try Self.frames(
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-Checksum: abc\r\nContent-Length: 5\r\nAuthorization: x\r\n\r\n")
        let (payload, dataEnded) = Self.payload(Array(frames.dropFirst()))
        #expect(payload == "hi" && !dataEnded)
        guard case .headers(let trailers) = frames.last else { Issue.record("no trailers: \(frames)"); return }
        #expect(trailers.endStream && trailers.headers["x-checksum"] == ["abc"] && trailers.headers.count == 1)
    }

    @Test func aBrokenRequestIsRefused() {
        var translator = UpstreamStreamTranslator(tls: false)
        #expect(throws: UpstreamStreamTranslator.Failure.self) {
            try translator.request(ByteBuffer(string: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")) { _ in }
        }
    }

    static func response(_ frames: [HTTP2Frame.FramePayload], method: HTTPMethod = .GET) throws -> (String, [(String, String)]) {
        var translator = UpstreamStreamTranslator(tls: false)
        try translator.request(ByteBuffer(string: "\(method.rawValue) / HTTP/1.1\r\nHost: h\r\n\r\n")) { _ in }
        var text = ""
        var trailers: [(String, String)] = []
        for frame in frames {
            try translator.response(frame, allocator: ByteBufferAllocator(), trailers: { trailers = $0 }) { text += String(buffer: $0) }
        }
        return (text, trailers)
    }

    static func headersFrame(_ fields: [(String, String)], end: Bool = false) -> HTTP2Frame.FramePayload {
        .headers(.init(headers: HPACKHeaders(fields), endStream: end))
    }

    static func dataFrame(_ text: String, end: Bool = false) -> HTTP2Frame.FramePayload {
        .data(.init(data: .byteBuffer(ByteBuffer(string: text)), endStream: end))
    }

    @Test func aResponseOfUnknownLengthBecomesChunkedWithItsTrailers() throws {
        let (text, trailers) = try Self.response([
            Self.headersFrame([(":status", "103"), ("link", "</a.css>; rel=preload")]),
            Self.headersFrame([(":status", "200"), ("content-type", "text/plain")]),
            Self.dataFrame("abc"), Self.dataFrame(""), Self.dataFrame("de"),
            Self.headersFrame([("grpc-status", "0"), ("content-length", "9")], end: true),
        ])
        #expect(
            text
                == "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
                + "3\r\nabc\r\n2\r\nde\r\n0\r\ngrpc-status: 0\r\n\r\n")
        #expect(trailers.count == 1 && trailers.first?.0 == "grpc-status")
    }

    @Test func aResponseWithALengthKeepsItAndAnEmptyOneSaysZero() throws {
        let (sized, _) = try Self.response([Self.headersFrame([(":status", "201"), ("content-length", "2")]), Self.dataFrame("ok", end: true)])
        #expect(sized == "HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok")
        let (empty, _) = try Self.response([Self.headersFrame([(":status", "200")], end: true)])
        #expect(empty == "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        let (head, _) = try Self.response([Self.headersFrame([(":status", "200"), ("content-type", "a/b")], end: true)], method: .HEAD)
        #expect(head == "HTTP/1.1 200 OK\r\ncontent-type: a/b\r\n\r\n")
    }

    @Test(arguments: [
        [HTTP2UpstreamTestsFrames.status("2000")],
        [HTTP2UpstreamTestsFrames.status("101")],
        [HTTP2UpstreamTestsFrames.data],
        [UpstreamStreamTranslatorTests.headersFrame([(":status", "200"), ("x", "a\r\nInjected: 1")])],
        [HTTP2UpstreamTestsFrames.status("200"), HTTP2UpstreamTestsFrames.status("200")],
    ])
    func responsesTheGatewayCannotRelayAreRefused(frames: [HTTP2Frame.FramePayload]) {
        #expect(throws: UpstreamStreamTranslator.Failure.self) { _ = try Self.response(frames) }
    }
}

enum HTTP2UpstreamTestsFrames {
    static func status(_ code: String) -> HTTP2Frame.FramePayload { UpstreamStreamTranslatorTests.headersFrame([(":status", code)]) }
    static let data = UpstreamStreamTranslatorTests.dataFrame("x")
}

/// Request trailers on their way to an upstream: which fields pass, and where a chunked body's
/// trailer section starts however the bytes are split.
@Suite struct RequestTrailerTests {
    @Test(arguments: [
        ("x-checksum", true), ("Grpc-Status", true), ("Content-Length", false), ("transfer-encoding", false), ("Host", false),
        ("authorization", false), ("X-API-Key", false), ("x-tollgate-app-id", false), ("X-Forwarded-For", false), ("connection", false),
        ("te", false), ("trailer", false), ("bad name", false), ("", false), ("x-request-id", false),
    ])
    func onlyFieldsThatMayPassAreForwarded(name: String, forwarded: Bool) {
        #expect(TrailerSection.forwards(name) == forwarded)
    }

    @Test func aSectionIsReadAndWrittenBackFiltered() {
        let fields = TrailerSection.fields(in: ByteBuffer(string: "X-Checksum:  abc \r\nContent-Length: 3\r\nnocolon\r\n\r\n"))
        #expect(fields.map(\.name) == ["X-Checksum", "Content-Length"] && fields.first?.value == "abc")
        let section = TrailerSection.section(fields + [("x-bad", "a\r\nb")], allocator: ByteBufferAllocator())
        #expect(String(buffer: section) == "X-Checksum: abc\r\n\r\n")
    }

    @Test func theFramerSaysWhereTheTrailerSectionStartsAcrossSplits() throws {
        let body = Array("3\r\nabc\r\n0\r\nX-A: 1\r\n\r\n".utf8)
        let sectionStart = body.count - "X-A: 1\r\n\r\n".utf8.count
        for split in 0...body.count {
            var framer = BodyFramer(.chunked)
            var starts: [Int] = []
            var offset = 0
            for part in [Array(body[..<split]), Array(body[split...])] where !part.isEmpty {
                let step = try part.withUnsafeBytes { try framer.consume($0) { _ in } }
                if let from = step.trailersFrom { starts.append(offset + from) }
                offset += step.consumed
            }
            #expect(starts.first == sectionStart, "split at \(split)")
            #expect(framer.isDone)
        }
        // a body without trailers reports where its (empty) section starts too: just the final line
        var plain = BodyFramer(.chunked)
        let step = try Array("0\r\n\r\n".utf8).withUnsafeBytes { try plain.consume($0) { _ in } }
        #expect(step.trailersFrom == 3 && step.ended)
        var sized = BodyFramer(.length(3))
        #expect(try Array("abc".utf8).withUnsafeBytes { try sized.consume($0) { _ in } }.trailersFrom == nil)
    }

    @Test func trailersOfHTTP1AndHTTP2ClientsReachAnHTTP1UpstreamFiltered() async throws {
        // setup
        let upstream = try await TestUpstream.start()
        defer { Task { await upstream.stop() } }
        let world = TestWorld()
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [.loopback(upstream.port)])) { gateway in
            // act
            let fromHTTP1 = try await gateway.send(
                "POST /t/demo/echo/v1/h1 HTTP/1.1\r\nHost: gateway.test\r\nX-API-Key: \(TestWorld.apiKey)\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                    + "5\r\nhello\r\n0\r\nX-Checksum: h1sum\r\nContent-Length: 99\r\nX-Tollgate-App-Id: forged\r\n\r\n")
            let fromHTTP2 = try await HTTP2TestClient.request(
                port: gateway.port, method: .POST, path: "/t/demo/echo/v1/h2", headers: [("x-api-key", TestWorld.apiKey)], body: ["abc", "def"],
                trailers: [("x-checksum", "h2sum"), ("x-api-key", "leak")])
            // assert
            #expect(fromHTTP1.first?.status == 200, "\(fromHTTP1)")
            #expect(fromHTTP2.status == 200, "\(fromHTTP2)")
            let h1 = try #require(upstream.seen.first { $0.uri == "/h1" })
            #expect(h1.body == "hello" && h1.trailers.count == 1 && h1.trailers.first?.1 == "h1sum", "\(h1.trailers)")
            let h2 = try #require(upstream.seen.first { $0.uri == "/h2" })
            #expect(h2.body == "abcdef" && h2.trailers.count == 1 && h2.trailers.first?.1 == "h2sum", "\(h2.trailers)")
        }
    }

    @Test func trailersReachAnH2UpstreamAsTrailingHeaders() async throws {
        let upstream = try await TestUpstream.start(http2: true)
        defer { Task { await upstream.stop() } }
        let world = TestWorld()
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [HTTP2UpstreamTests.h2Target(upstream.port)])) { gateway in
            let fromHTTP1 = try await gateway.send(
                "POST /t/demo/echo/v1/h1 HTTP/1.1\r\nHost: gateway.test\r\nX-API-Key: \(TestWorld.apiKey)\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                    + "5\r\nhello\r\n0\r\nX-Checksum: h1sum\r\n\r\n")
            let fromHTTP2 = try await HTTP2TestClient.request(
                port: gateway.port, method: .POST, path: "/t/demo/echo/v1/h2", headers: [("x-api-key", TestWorld.apiKey)], body: ["abc"],
                trailers: [("x-checksum", "h2sum")])
            #expect(fromHTTP1.first?.status == 200 && fromHTTP2.status == 200)
            #expect(upstream.seen.first { $0.uri == "/h1" }?.trailers.first?.1 == "h1sum")
            #expect(upstream.seen.first { $0.uri == "/h2" }?.trailers.first?.1 == "h2sum")
        }
    }
}

/// Interim answers on HTTP/2: an upstream's `103 Early Hints` reaches an HTTP/2 client as an
/// informational HEADERS frame before the final response, from HTTP/1.1 and HTTP/2 upstreams.
@Suite struct InterimResponseTests {
    @Test func anInterimHeadBecomesAnInformationalHeaderBlock() {
        let block = HTTP2Messages.interimHeaders(ByteBuffer(string: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n"))
        #expect(block?[":status"] == ["103"] && block?["link"] == ["</a.css>; rel=preload"])
        #expect(block?["connection"].isEmpty == true && block?["x-hop"].isEmpty == true)
        #expect(HTTP2Messages.interimHeaders(ByteBuffer(string: "HTTP/1.1 100 Continue\r\n\r\n"))?[":status"] == ["100"])
        #expect(HTTP2Messages.interimHeaders(ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\n")) == nil)
        #expect(HTTP2Messages.interimHeaders(ByteBuffer(string: "HTTP/1.1 101 Switching Protocols\r\n\r\n")) == nil)
    }

    @Test(arguments: [false, true])
    func earlyHintsReachHTTP2Clients(upstreamSpeaksH2: Bool) async throws {
        let upstream = try await TestUpstream.start(http2: upstreamSpeaksH2)
        defer { Task { await upstream.stop() } }
        let world = TestWorld()
        let target = upstreamSpeaksH2 ? HTTP2UpstreamTests.h2Target(upstream.port) : UpstreamTargetConfig.loopback(upstream.port)
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [target])) { gateway in
            let response = try await HTTP2TestClient.request(port: gateway.port, path: "/t/demo/echo/v1/early-hints", headers: [("x-api-key", TestWorld.apiKey)])
            #expect(response.interim == [103], "\(response)")
            #expect(response.status == 200 && response.body.contains("early-hints"))
            // an HTTP/1.1 client gets it as an interim head
            let raw = try await GatewayListenerTests.exchange(
                port: gateway.port, "GET /t/demo/echo/v1/early-hints HTTP/1.1\r\nHost: gateway.test\r\nX-API-Key: \(TestWorld.apiKey)\r\nConnection: close\r\n\r\n")
            #expect(raw.hasPrefix("HTTP/1.1 103 Early Hints\r\n") && raw.contains("</style.css>; rel=preload"), "\(raw)")
            #expect(raw.contains("HTTP/1.1 200 OK"))
        }
    }
}
