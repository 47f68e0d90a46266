import Foundation
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOHTTP1
import Testing

@testable import Gateway

/// The pure parts of WebSockets over HTTP/2 (RFC 8441): reading an extended CONNECT, the handshake
/// the upstream hears, the accept check, the stream's 200, and when an HTTP/2 tunnel looks at its
/// limits. End to end (stock `h2` + `wsproto` client, stock `websockets` upstream) in scripts/peers.py.
@Suite struct WebSocketOverHTTP2Tests {
    static func connect(_ protocolName: String?, extra: [(String, String)] = []) -> HPACKHeaders {
        var fields = [(":method", "CONNECT")]
        if let protocolName { fields.append((":protocol", protocolName)) }
        fields += [(":scheme", "https"), (":authority", "api.example.com"), (":path", "/t/demo/echo/v1/chat?room=1"), ("sec-websocket-version", "13")]
        return HPACKHeaders(fields + extra)
    }

    @Test func anExtendedConnectForWebSocketIsTheGETAnHTTP1HandshakeWouldBe() throws {
        // act
        let request = try HTTP2Messages.request(Self.connect("websocket", extra: [("sec-websocket-protocol", "chat")])).get()
        let plain = try HTTP2Messages.request(HPACKHeaders([(":method", "GET"), (":scheme", "https"), (":path", "/x")])).get()
        // assert
        #expect(request.webSocket)
        #expect(request.head.method == .GET)
        #expect(request.head.uri == "/t/demo/echo/v1/chat?room=1")
        #expect(request.head.headers["host"] == ["api.example.com"])
        #expect(request.head.headers["sec-websocket-protocol"] == ["chat"])
        #expect(!plain.webSocket)
        #expect(try HTTP2Messages.request(Self.connect("WebSocket")).get().webSocket)
    }

    @Test(arguments: [nil, "connect-udp", "h2c", ""])
    func connectForAnythingButWebSocketIsStillRefused(protocolName: String?) {
        #expect(throws: HTTP2Messages.RequestProblem.connectNotSupported) { try HTTP2Messages.request(Self.connect(protocolName)).get() }
    }

    @Test func theUpstreamHearsTheGatewaysKeyAndVersion13AndTheClientsOffers() throws {
        // setup: a client that (wrongly) sent a key of its own
        var head = try HTTP2Messages.request(
            Self.connect("websocket", extra: [("sec-websocket-key", "Y2xpZW50LWtleS0xMjM0NQ=="), ("sec-websocket-extensions", "permessage-deflate")])
        ).get().head
        head.headers.replaceOrAdd(name: "sec-websocket-version", value: "8")
        // act
        let upstream = WebSocketOverHTTP2.upstreamHead(head, key: "dGhlIHNhbXBsZSBub25jZQ==")
        // assert
        #expect(upstream.headers["sec-websocket-key"] == ["dGhlIHNhbXBsZSBub25jZQ=="])
        #expect(upstream.headers["sec-websocket-version"] == ["13"])
        #expect(upstream.headers["sec-websocket-extensions"] == ["permessage-deflate"])
        #expect(upstream.method == .GET)
    }

    @Test func keysAreFreshAndTheAcceptIsRFC6455s() throws {
        // the example of RFC 6455 §1.3
        #expect(WebSocketOverHTTP2.accept(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        let keys = Set((0..<20).map { _ in WebSocketOverHTTP2.newKey() })
        #expect(keys.count == 20)
        for key in keys { #expect(Data(base64Encoded: key)?.count == 16) }
        let expected = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        #expect(WebSocketOverHTTP2.acceptMatches([" s3pPLMBiTxaQ9kYGzzhZRbK+xOo= "], expected: expected))
        #expect(!WebSocketOverHTTP2.acceptMatches([], expected: expected))
        #expect(!WebSocketOverHTTP2.acceptMatches(["s3pPLMBiTxaQ9kYGzzhZRbK+xOo"], expected: expected))
        #expect(!WebSocketOverHTTP2.acceptMatches([Substring(expected), Substring(expected)], expected: expected))
    }

    @Test func theStreamsAnswerIs200WithWhatTheUpstreamChoseAndTheGatewaysHeaders() throws {
        // setup
        let raw =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
            + "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\nX-Upstream: 1\r\n\r\n"
        let bytes = Array(raw.utf8)
        // act
        let block = try bytes.withUnsafeBytes { pointer -> HPACKHeaders in
            guard case .complete(let response, _) = HTTPHeadParser.parseResponse(pointer, maxBytes: 65_536, requestMethod: .GET) else {
                throw CancellationError()
            }
            return WebSocketOverHTTP2.acceptedHeaders(
                response, bytes: pointer, added: [("RateLimit-Policy", "\"plan\";q=10;w=1")], requestID: "req-1", strictTransportSecurity: nil)
        }
        // assert
        #expect(block[":status"] == ["200"])
        #expect(block["sec-websocket-protocol"] == ["chat"])
        #expect(block["sec-websocket-extensions"] == ["permessage-deflate"])
        #expect(block["ratelimit-policy"] == ["\"plan\";q=10;w=1"])
        #expect(block["x-request-id"] == ["req-1"])
        for name in ["upgrade", "connection", "sec-websocket-accept", "strict-transport-security"] { #expect(block[name].isEmpty, "\(name) is not sent") }
    }

    @Test func aTunnelWithItsOwnTimerLooksAgainWhenTheFirstLimitCouldBeReached() {
        let limits = TunnelLimits(idle: 100, maxDuration: 1_000)
        #expect(limits.untilNextCheck(now: 150, opened: 100, lastActivity: 120) == 70)  // idle at 220
        #expect(limits.untilNextCheck(now: 1_050, opened: 100, lastActivity: 1_040) == 50)  // max at 1100
        #expect(limits.untilNextCheck(now: 5_000, opened: 100, lastActivity: 120) == 1)  // overdue: at once
        #expect(TunnelLimits(idle: 100, maxDuration: nil).untilNextCheck(now: 10, opened: 0, lastActivity: 10) == 100)
        #expect(TunnelLimits(idle: .max, maxDuration: .max).untilNextCheck(now: 10, opened: 5, lastActivity: 5) == .max)  // no trap
    }

    @Test func theListenerAdvertisesExtendedConnectOnlyWhenItIsOn() {
        let on = HTTP2Server.connectionConfiguration(maxHeaderBytes: 16_384, extendedConnect: true).initialSettings
        let off = HTTP2Server.connectionConfiguration(maxHeaderBytes: 16_384, extendedConnect: false).initialSettings
        #expect(on.contains { $0.parameter == .enableConnectProtocol && $0.value == 1 })
        #expect(!off.contains { $0.parameter == .enableConnectProtocol })
        #expect(GatewayServer.Configuration(host: "127.0.0.1", port: 0).webSocketOverHTTP2)
    }
}
