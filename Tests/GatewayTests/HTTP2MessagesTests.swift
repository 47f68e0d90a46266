import NIOCore
import NIOHPACK
import NIOHTTP1
import Testing

@testable import Gateway

@Suite struct HTTP2MessagesTests {
    @Test func aRequestBlockBecomesTheHeadTheGateDecides() throws {
        let block = HPACKHeaders([
            (":method", "POST"), (":scheme", "https"), (":authority", "api.example.com"), (":path", "/t/demo/echo/v1/items?x=1"),
            ("content-type", "application/json"), ("cookie", "a=1"), ("cookie", "b=2"), ("host", "ignored.example.com"),
        ])
        let head = try HTTP2Messages.requestHead(block).get()
        #expect(head.method == .POST)
        #expect(head.uri == "/t/demo/echo/v1/items?x=1")
        #expect(head.headers["host"] == ["api.example.com"])
        #expect(head.headers["cookie"] == ["a=1; b=2"])
        #expect(head.headers["content-type"] == ["application/json"])
        #expect(!head.headers.contains { $0.name.hasPrefix(":") })
        #expect(WebSocketHandshake.requestedUpgrade(head) == nil)
    }

    @Test(arguments: [
        ([(":method", "GET"), (":path", "relative")], HTTP2Messages.RequestProblem.malformed("The request's :path must start with /.")),
        ([(":path", "/")], .malformed("The request has no :method.")),
        ([(":method", "CONNECT"), (":authority", "example.com:443")], .connectNotSupported),
        ([(":method", "GET"), (":path", "/"), (":authority", "bad host")], .malformed("The request's :authority is not a host.")),
    ])
    func blocksTheGatewayCannotForwardAreRefusedSayingWhy(fields: [(String, String)], problem: HTTP2Messages.RequestProblem) {
        #expect(throws: problem) { try HTTP2Messages.requestHead(HPACKHeaders(fields)).get() }
    }

    @Test func anUpstreamHeadLosesItsConnectionFieldsAndGainsTheGateways() throws {
        let raw =
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\n"
            + "Transfer-Encoding: chunked\r\nX-Request-Id: upstream-id\r\nRateLimit: forged\r\nSet-Cookie: s=1\r\n\r\n"
        let bytes = Array(raw.utf8)
        let block = try bytes.withUnsafeBytes { pointer -> HPACKHeaders in
            guard case .complete(let response, _) = HTTPHeadParser.parseResponse(pointer, maxBytes: 65_536, requestMethod: .GET) else {
                throw HeadNotParsed()
            }
            return HTTP2Messages.responseHeaders(
                response, bytes: pointer, added: [("RateLimit", "\"rate\";r=4;t=1")], requestID: "req-1", strictTransportSecurity: "max-age=60")
        }
        #expect(block[":status"] == ["200"])
        #expect(block["content-type"] == ["text/plain"])
        #expect(block["set-cookie"] == ["s=1"])
        #expect(block["ratelimit"] == ["\"rate\";r=4;t=1"])
        #expect(block["x-request-id"] == ["req-1"])
        #expect(block["strict-transport-security"] == ["max-age=60"])
        for name in ["connection", "keep-alive", "x-hop", "transfer-encoding"] { #expect(block[name].isEmpty, "\(name) is connection-specific") }
    }

    @Test func thePrefaceIsRecognisedWholeOrInPartAndNothingElseIs() {
        let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        #expect(preface.withUnsafeBytes { HTTP2Server.matchPreface($0) } == .yes)
        #expect((preface + Array("more".utf8)).withUnsafeBytes { HTTP2Server.matchPreface($0) } == .yes)
        #expect(Array(preface.prefix(10)).withUnsafeBytes { HTTP2Server.matchPreface($0) } == .undecided)
        #expect(Array("PRI / HTTP/1.1\r\n".utf8).withUnsafeBytes { HTTP2Server.matchPreface($0) } == .no)
        #expect(Array("GET / HTTP/1.1\r\n".utf8).withUnsafeBytes { HTTP2Server.matchPreface($0) } == .no)
    }

    @Test func aRelayedStreamsHeadersLoseCredentialsAndGainTheGatewaysOwn() {
        let block = HPACKHeaders([
            (":method", "POST"), (":scheme", "http"), (":authority", "gw.example.com"), (":path", "/t/demo/echo/v1/pkg.Svc/Call"),
            ("content-type", "application/grpc"), ("te", "trailers"), ("authorization", "Bearer secret"), ("x-api-key", "tgk_secret"),
            ("x-tollgate-app-id", "forged"), ("x-forwarded-for", "10.1.1.1"), ("grpc-timeout", "5S"),
        ])
        let target = UpstreamTargetConfig(host: "10.0.0.5", port: 50051, pathPrefix: "/base", weight: 1, http2: true)
        let out = HTTP2Messages.upstreamRequestHeaders(
            block, method: "POST", target: target, path: "/pkg.Svc/Call", requestID: "req-9", clientIP: "127.0.0.1", secure: true,
            identityLines: ["X-Tollgate-Tenant: demo\r\n", "X-Tollgate-App-Id: app-1\r\nX-Tollgate-Team-Id: team-1\r\n"])
        #expect(out[":authority"] == ["10.0.0.5:50051"])
        #expect(out[":path"] == ["/base/pkg.Svc/Call"])
        #expect(out[":scheme"] == ["http"])
        #expect(out["te"] == ["trailers"])
        #expect(out["grpc-timeout"] == ["5S"])
        #expect(out["authorization"].isEmpty && out["x-api-key"].isEmpty)
        #expect(out["x-tollgate-app-id"] == ["app-1"])
        #expect(out["x-tollgate-tenant"] == ["demo"])
        #expect(out["x-forwarded-for"] == ["10.1.1.1, 127.0.0.1"])
        #expect(out["x-forwarded-proto"] == ["https"])
        #expect(out["x-forwarded-host"] == ["gw.example.com"])
        #expect(out["x-request-id"] == ["req-9"])
    }

    struct HeadNotParsed: Error {}
}
