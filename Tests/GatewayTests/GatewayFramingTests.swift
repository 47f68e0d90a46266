import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import Gateway

/// Message framing through the gateway, which forwards bodies as raw bytes: chunked bodies both
/// ways, bodiless answers, interim responses, bodies ended by closing, and requests that could be
/// read two ways (refused before anything reaches an upstream).
@Suite struct GatewayFramingTests {
    static let key = "X-API-Key: \(TestWorld.apiKey)\r\n"

    @Test func aKeptAliveConnectionGetsItsAnswerWithoutClosing() async throws {
        // the gateway closes the idle connection later; the answer must have been sent before that
        try await GatewayProxyTests.withWorld(configure: { $0.idleTimeout = .seconds(1) }) { _, _, gateway in
            let responses = try await gateway.send("GET /t/demo/echo/v1/x HTTP/1.1\r\nHost: g\r\n\(Self.key)\r\n")
            #expect(responses.map(\.status) == [200])
            #expect(responses.first?.headers["connection"] == nil)
            // the small body went out with its head; it is still counted
            try await GatewayIntegrationWait.until { gateway.usage.recent.last != nil }
            #expect(gateway.usage.recent.last?.bytesOut == Int64(responses.first?.body.utf8.count ?? -1))
        }
    }

    @Test func aHeadArrivingInPiecesIsReadOnceComplete() async throws {
        try await GatewayProxyTests.withWorld { _, upstream, gateway in
            let (channel, received) = try await GatewayListenerTests.connect(port: gateway.port)
            // seven bytes at a time, so line ends and the final empty line are split across reads
            let bytes = Array("GET /t/demo/echo/v1/pieces HTTP/1.1\r\nHost: g\r\n\(Self.key)Connection: close\r\n\r\n".utf8)
            for start in stride(from: 0, to: bytes.count, by: 7) {
                try await channel.writeAndFlush(ByteBuffer(bytes: bytes[start..<min(bytes.count, start + 7)]))
                try await Task.sleep(for: .milliseconds(5))
            }
            let text = try await received.get()
            #expect(text.hasPrefix("HTTP/1.1 200"))
            #expect(upstream.seen.map(\.uri) == ["/pieces"])
        }
    }

    @Test func aChunkedRequestBodyReachesTheUpstreamWhole() async throws {
        try await GatewayProxyTests.withWorld { _, upstream, gateway in
            let request = "POST /t/demo/echo/v1/upload HTTP/1.1\r\nHost: g\r\n\(Self.key)Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                + "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
            let responses = try await gateway.send(request)
            #expect(responses.map(\.status) == [200])
            #expect(upstream.seen.last?.bodyBytes == 11)
            #expect(gateway.usage.recent.last?.bytesIn == 11)
        }
    }

    @Test func aLargeRequestBodyStreamsThroughWhole() async throws {
        try await GatewayProxyTests.withWorld { _, upstream, gateway in
            // 2 MiB: more than the 256 KiB held while the upstream connection opens, so reading pauses and resumes
            let body = String(repeating: "b", count: 2 << 20)
            let response = try await gateway.request("POST", "/t/demo/echo/v1/upload", headers: [("X-API-Key", TestWorld.apiKey)], body: body)
            #expect(response.status == 200)
            #expect(upstream.seen.last?.bodyBytes == 2 << 20)
            #expect(gateway.usage.recent.last?.bytesIn == 2 << 20)
        }
    }

    @Test func aChunkedBodyOverTheLimitIs413AndNeverCompletesUpstream() async throws {
        try await GatewayProxyTests.withWorld({ world, upstream in world.snapshot(targets: [.loopback(upstream.port)], maxRequestBytes: 16) }) {
            _, upstream, gateway in
            // no declared length: the limit is found while the body streams
            let responses = try await gateway.send(
                "POST /t/demo/echo/v1/x HTTP/1.1\r\nHost: g\r\n\(Self.key)Transfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n4\r\nmore\r\n0\r\n\r\n")
            #expect(responses.map(\.status) == [413])
            #expect(responses.first?.headers["connection"] == "close")
            try await Task.sleep(for: .milliseconds(100))
            #expect(upstream.seen.isEmpty)
            #expect(gateway.usage.recent.last?.rejection == .tooLarge)
        }
    }

    @Test func anHTTP10ClientCanKeepTheConnectionAlive() async throws {
        try await GatewayProxyTests.withWorld { _, upstream, gateway in
            let first = "GET /t/demo/echo/v1/one HTTP/1.0\r\n\(Self.key)Connection: keep-alive\r\n\r\n"
            let second = "GET /t/demo/echo/v1/two HTTP/1.0\r\n\(Self.key)\r\n"
            let text = try await GatewayListenerTests.exchange(port: gateway.port, first + second)
            #expect(text.components(separatedBy: "HTTP/1.0 200 OK").count - 1 == 2)
            #expect(text.lowercased().contains("connection: keep-alive"))
            #expect(upstream.seen.map(\.uri) == ["/one", "/two"])
        }
    }

    @Test func aChunkedResponseIsRelayedAsItCame() async throws {
        try await GatewayProxyTests.withWorld { _, _, gateway in
            let response = try await gateway.request("GET", "/t/demo/echo/v1/chunked", headers: [("X-API-Key", TestWorld.apiKey)])
            #expect(response.status == 200)
            #expect(response.headers["transfer-encoding"] == "chunked")
            #expect(response.body == "first,second,third")
            #expect(gateway.usage.recent.last?.bytesOut == 18)
        }
    }

    @Test func anHTTP10ClientGetsAChunkedBodyUnchunkedAndTheConnectionClosed() async throws {
        try await GatewayProxyTests.withWorld { _, _, gateway in
            let text = try await GatewayListenerTests.exchange(port: gateway.port, "GET /t/demo/echo/v1/chunked HTTP/1.0\r\n\(Self.key)\r\n")
            #expect(text.hasPrefix("HTTP/1.0 200"))
            #expect(!text.lowercased().contains("transfer-encoding"))
            #expect(text.lowercased().contains("connection: close"))
            #expect(text.hasSuffix("\r\n\r\nfirst,second,third"))
        }
    }

    @Test func bodilessAnswersKeepTheConnectionInStep() async throws {
        try await GatewayProxyTests.withWorld { _, upstream, gateway in
            // a HEAD answer declares a length but has no body; 204 has neither: the request
            // pipelined behind each must still be read as a request
            let text = "HEAD /t/demo/echo/v1/a HTTP/1.1\r\nHost: g\r\n\(Self.key)\r\n"
                + "GET /t/demo/echo/v1/status/204 HTTP/1.1\r\nHost: g\r\n\(Self.key)\r\n"
                + "GET /t/demo/echo/v1/b HTTP/1.1\r\nHost: g\r\n\(Self.key)Connection: close\r\n\r\n"
            let raw = try await GatewayListenerTests.exchange(port: gateway.port, text)
            let statuses = raw.components(separatedBy: "\r\n").filter { $0.hasPrefix("HTTP/1.1 ") }.map { $0.split(separator: " ")[1] }
            #expect(statuses == ["200", "204", "200"])
            #expect(upstream.seen.map(\.uri) == ["/a", "/status/204", "/b"])
            // the HEAD answer's head is followed directly by the next response
            let headAnswer = raw.components(separatedBy: "HTTP/1.1 204")[0]
            #expect(headAnswer.lowercased().contains("content-length: "))
            #expect(headAnswer.hasSuffix("\r\n\r\n"))
        }
    }

    @Test func theGatewayInvitesTheBodyItselfAndTheUpstreamDoesNotHearTheExpectation() async throws {
        try await GatewayProxyTests.withWorld { _, upstream, gateway in
            // the test upstream answers an expectation with a 100 of its own: one 100 in all means
            // it never heard one (a server ignoring it stalled curl's upload by a second)
            let responses = try await gateway.send(
                "PUT /t/demo/echo/v1/x HTTP/1.1\r\nHost: g\r\n\(Self.key)Expect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
            #expect(responses.map(\.status) == [100, 200])
            #expect(upstream.seen.last?.bodyBytes == 3)
            #expect(upstream.seen.last?.header("expect") == nil)
            // a refused call is not invited: its answer is final
            let refused = try await gateway.send(
                "PUT /t/demo/echo/v1/x HTTP/1.1\r\nHost: g\r\nX-API-Key: nope\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
            #expect(refused.map(\.status) == [401])
        }
    }

    @Test(arguments: [
        "Content-Length: 3\r\nTransfer-Encoding: chunked",
        "Content-Length: 3\r\nContent-Length: 4",
        "Transfer-Encoding: chunked, identity",
        "Content-Length : 3",
        "X-Folded: a\r\n b",
    ])
    func ambiguousRequestsAreRefusedBeforeReachingTheUpstream(headers: String) async throws {
        try await GatewayProxyTests.withWorld { _, upstream, gateway in
            let responses = try await gateway.send("POST /t/demo/echo/v1/x HTTP/1.1\r\nHost: g\r\n\(Self.key)\(headers)\r\n\r\nabc")
            #expect(responses.first?.status == 400)
            #expect(responses.first?.headers["connection"] == "close")
            #expect(upstream.seen.isEmpty)
        }
    }

    @Test func aCallCutShortIsMeteredAndGivesItsQuotaUnitBack() async throws {
        try await GatewayProxyTests.withWorld({ world, upstream in world.snapshot(targets: [.loopback(upstream.port)], quota: 1) }) {
            _, _, gateway in
            // broken chunked framing after the request was admitted: 400, metered, not billable
            let broken = try await gateway.send(
                "POST /t/demo/echo/v1/x HTTP/1.1\r\nHost: g\r\n\(Self.key)Transfer-Encoding: chunked\r\n\r\n3\r\nabcXX\r\n")
            #expect(broken.first?.status == 400)
            try await GatewayIntegrationWait.until { gateway.usage.recent.last?.status == 400 }
            #expect(gateway.usage.recent.last?.status == 400)
            #expect(gateway.usage.recent.last?.isBillable == false)
            // the month's only unit is still there
            #expect(try await gateway.request("GET", "/t/demo/echo/v1/y", headers: [("X-API-Key", TestWorld.apiKey)]).status == 200)
        }
    }

    @Test func anUnknownTransferCodingIs501() async throws {
        try await GatewayProxyTests.withWorld { _, upstream, gateway in
            let responses = try await gateway.send("POST /t/demo/echo/v1/x HTTP/1.1\r\nHost: g\r\n\(Self.key)Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
            #expect(responses.first?.status == 501)
            #expect(upstream.seen.isEmpty)
        }
    }

    @Test func aBodyEndedByClosingIsRelayedAndTheClientConnectionClosed() async throws {
        let raw = try await RawUpstream.start(answer: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", closeAfter: true)
        try await GatewayProxyTests.withWorld({ world, _ in world.snapshot(targets: [.loopback(raw.port)]) }) { _, _, gateway in
            // keep-alive requested, but the body's end is the connection's end
            let text = try await GatewayListenerTests.exchange(port: gateway.port, "GET /t/demo/echo/v1/x HTTP/1.1\r\nHost: g\r\n\(Self.key)\r\n")
            #expect(text.hasPrefix("HTTP/1.1 200"))
            #expect(text.lowercased().contains("connection: close"))
            #expect(text.hasSuffix("\r\n\r\nuntil the end"))
            try await GatewayIntegrationWait.until { gateway.usage.recent.last?.bytesOut == 13 }
            #expect(gateway.usage.recent.last?.bytesOut == 13)
        }
        await raw.stop()
    }

    @Test(arguments: ["HTTP/1.1 2x0 OK\r\n\r\n", "HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"])
    func anInvalidUpstreamResponseIs502(answer: String) async throws {
        let raw = try await RawUpstream.start(answer: answer, closeAfter: false)
        try await GatewayProxyTests.withWorld({ world, _ in world.snapshot(targets: [.loopback(raw.port)]) }) { _, _, gateway in
            let response = try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [("X-API-Key", TestWorld.apiKey)])
            #expect(response.status == 502)
            #expect(response.headers["content-type"] == "application/problem+json")
        }
        await raw.stop()
    }
}
