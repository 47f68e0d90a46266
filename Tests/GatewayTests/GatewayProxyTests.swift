import Billing
import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import Gateway

/// The data plane end to end: a real gateway listener proxying to a real upstream on loopback.
@Suite struct GatewayProxyTests {
    static func withWorld(
        _ build: @Sendable (TestWorld, TestUpstream) -> GatewaySnapshot = { $0.snapshot(targets: [.loopback($1.port)]) },
        configure: @Sendable (inout GatewayServer.Configuration) -> Void = { _ in },
        _ body: @Sendable (TestWorld, TestUpstream, GatewayHarness) async throws -> Void
    ) async throws {
        let world = TestWorld()
        let upstream = try await TestUpstream.start()
        try await GatewayHarness.run(snapshot: build(world, upstream), configure: configure) { gateway in
            try await body(world, upstream, gateway)
        }
        await upstream.stop()
    }

    @Test func aValidTokenIsProxiedWithThePathStrippedAndIdentityHeadersSet() async throws {
        try await Self.withWorld { world, upstream, gateway in
            // act
            let response = try await gateway.request(
                "GET", "/t/demo/echo/v1/hello?x=1",
                headers: [
                    ("Authorization", "Bearer \(world.token())"), ("X-Tollgate-App-Id", "forged"), ("X-Request-Id", "req-123"),
                    ("Connection", "close, X-Secret-Hop"), ("X-Secret-Hop", "drop me"),
                ])
            // assert
            #expect(response.status == 200)
            #expect(response.headers["x-request-id"] == "req-123")
            #expect(response.headers["ratelimit-policy"] == "\"rate\";q=1000;w=1")
            #expect(response.headers["ratelimit"]?.hasPrefix("\"rate\";r=999;") == true)
            #expect(response.headers["keep-alive"] == nil)
            let seen = try #require(upstream.seen.last)
            #expect(seen.uri == "/hello?x=1")
            #expect(seen.header("x-tollgate-app-id") == world.appID.uuidString.lowercased())
            #expect(seen.header("x-tollgate-subscription-id") == world.subscriptionID.uuidString.lowercased())
            #expect(seen.header("x-tollgate-plan-id") == world.planID.uuidString.lowercased())
            #expect(seen.header("x-request-id") == "req-123")
            #expect(seen.header("x-forwarded-for") == "127.0.0.1")
            #expect(seen.header("x-forwarded-host") == "gateway.test")
            #expect(seen.header("authorization") == nil)
            #expect(seen.header("x-secret-hop") == nil)
            #expect(gateway.usage.recent.last?.status == 200)
            #expect(gateway.usage.recent.last?.forwarded == true)
            #expect(gateway.usage.recent.last?.subscriptionID == world.subscriptionID)
        }
    }

    @Test func apiKeysWorkToo() async throws {
        try await Self.withWorld { _, upstream, gateway in
            let response = try await gateway.request("POST", "/t/demo/echo/v1/items", headers: [("X-API-Key", TestWorld.apiKey)], body: "{\"a\":1}")
            #expect(response.status == 200)
            #expect(upstream.seen.last?.bodyBytes == 7)
            #expect(upstream.seen.last?.header("x-api-key") == nil)
            let wrong = try await gateway.request("GET", "/t/demo/echo/v1/items", headers: [("X-API-Key", "tgk_nope")])
            #expect(wrong.status == 401)
        }
    }

    @Test func badTokensAreRefusedWith401AndTheReason() async throws {
        try await Self.withWorld({ world, upstream in world.snapshot(targets: [.loopback(upstream.port)], revoked: ["revoked-jti"]) }) {
            world, upstream, gateway in
            let cases: [(String, String)] = [
                (world.token(alg: "HS256"), "Only ES256"),
                (world.token(kid: "other"), "unknown key"),
                (world.token(signer: .init()), "signature is invalid"),
                (world.token(expiresIn: -120), "expired"),
                (world.token(audience: "urn:tollgate:gateway:acme"), "not meant for this gateway"),
                (world.token(issuer: "http://evil.example/t/demo2"), "another authorization server"),
                (world.token(jti: "revoked-jti"), "revoked"),
                ("not.a.jwt", "malformed"),
            ]
            for (token, reason) in cases {
                let response = try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [("Authorization", "Bearer \(token)")])
                #expect(response.status == 401, "\(reason)")
                #expect(response.headers["www-authenticate"]?.contains("invalid_token") == true, "\(reason)")
                #expect(response.body.contains(reason), "\(response.body)")
            }
            let missing = try await gateway.request("GET", "/t/demo/echo/v1/x")
            #expect(missing.status == 401)
            #expect(missing.headers["www-authenticate"] == "Bearer realm=\"demo\"")
            #expect(upstream.seen.isEmpty)
            #expect(gateway.usage.recent.allSatisfy { $0.rejection == .unauthenticated && !$0.isBillable })
        }
    }

    @Test func aTokenSignedWithAKeyTheSnapshotLacksIsDecidedAgainAfterTheReload() async throws {
        try await Self.withWorld { world, upstream, gateway in
            // setup: a "reloader" that installs a snapshot holding the new key once the gateway asks
            let reloader = Task {
                while !gateway.store.takeKeyRefreshRequest() { try await Task.sleep(for: .milliseconds(5)) }
                try await Task.sleep(for: .milliseconds(100))  // a reload takes a moment
                gateway.store.install(world.snapshot(targets: [.loopback(upstream.port)], version: 2, keyIDs: ["k1", "k2"]))
            }
            // act: the first call with a token of the rotated-in key
            let response = try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [("Authorization", "Bearer \(world.token(kid: "k2"))")])
            try await reloader.value
            // assert: answered after the reload, not refused before it
            #expect(response.status == 200, "\(response.body)")
            #expect(upstream.seen.count == 1)
            #expect(gateway.usage.recent.map(\.status) == [200])
        }
    }

    @Test func noSubscriptionOrMissingScopeIs403SayingWhich() async throws {
        try await Self.withWorld({ world, upstream in world.snapshot(targets: [.loopback(upstream.port)], subscribed: false) }) { world, _, gateway in
            let response = try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [("Authorization", "Bearer \(world.token())")])
            #expect(response.status == 403)
            #expect(response.body.contains("no active subscription to echo v1"))
        }
        try await Self.withWorld { world, _, gateway in
            let response = try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [("Authorization", "Bearer \(world.token(scope: "other"))")])
            #expect(response.status == 403)
            #expect(response.body.contains("scope does not include echo"))
        }
    }

    @Test func theRateLimitAnswers429WithRetryAfterAndRejectedCallsAreNotBillable() async throws {
        try await Self.withWorld({ world, upstream in world.snapshot(targets: [.loopback(upstream.port)], rate: 1, burst: 2) }) { _, upstream, gateway in
            // The bucket starts full (burst 2) and refills one token a second. A slow machine may
            // refill a token between calls, so keep calling (bounded) until the first refusal.
            var statuses: [Int] = []
            var refused: RawResponse?
            while refused == nil, statuses.count < 10 {
                let response = try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [("X-API-Key", TestWorld.apiKey)])
                statuses.append(response.status)
                if response.status == 429 { refused = response }
            }
            let allowed = statuses.filter { $0 == 200 }.count
            #expect(Array(statuses.prefix(2)) == [200, 200])
            #expect(statuses.last == 429)
            #expect(allowed == statuses.count - 1)
            #expect(refused?.headers["retry-after"] == "1")
            #expect(refused?.headers["ratelimit"] == "\"rate\";r=0;t=1")
            #expect(upstream.seen.count == allowed)
            #expect(gateway.usage.billableCount == allowed)
        }
    }

    @Test func theQuotaRefusesBeyondTheMonthAndOnlyBillableCallsCount() async throws {
        try await Self.withWorld({ world, upstream in world.snapshot(targets: [.loopback(upstream.port)], quota: 2) }) { _, _, gateway in
            // a 503 from the upstream is not billable, so it does not use the quota
            let failed = try await gateway.request("GET", "/t/demo/echo/v1/status/503", headers: [("X-API-Key", TestWorld.apiKey)])
            #expect(failed.status == 503)
            let first = try await gateway.request("GET", "/t/demo/echo/v1/a", headers: [("X-API-Key", TestWorld.apiKey)])
            let second = try await gateway.request("GET", "/t/demo/echo/v1/b", headers: [("X-API-Key", TestWorld.apiKey)])
            let third = try await gateway.request("GET", "/t/demo/echo/v1/c", headers: [("X-API-Key", TestWorld.apiKey)])
            let statuses: [Int] = [first.status, second.status, third.status]
            #expect(statuses == [200, 200, 429])
            #expect(first.headers["ratelimit-policy"]?.contains("\"quota\";q=2;w=") == true)
            #expect(first.headers["ratelimit"]?.contains("\"quota\";r=1;") == true)
            #expect(third.body.contains("Quota exhausted"))
            #expect(Int(third.headers["retry-after"] ?? "") ?? 0 > 0)
        }
    }

    @Test func policiesAnswerAtTheGateway() async throws {
        let cors = CORSPolicy(allowedOrigins: ["https://app.example"], allowCredentials: true)
        try await Self.withWorld({ world, upstream in
            world.snapshot(
                targets: [.loopback(upstream.port)], cors: cors, ipRules: IPAccessRules(deny: [IPRange("10.0.0.0/8")!]), methods: ["GET", "POST", "OPTIONS"],
                maxRequestBytes: 16)
        }) { _, upstream, gateway in
            let key = ("X-API-Key", TestWorld.apiKey)
            // preflight answered without credentials, never proxied
            let preflight = try await gateway.request(
                "OPTIONS", "/t/demo/echo/v1/x", headers: [("Origin", "https://app.example"), ("Access-Control-Request-Method", "POST")])
            #expect(preflight.status == 204)
            #expect(preflight.headers["access-control-allow-origin"] == "https://app.example")
            #expect(preflight.headers["access-control-allow-credentials"] == "true")
            let stranger = try await gateway.request(
                "OPTIONS", "/t/demo/echo/v1/x", headers: [("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")])
            #expect(stranger.headers["access-control-allow-origin"] == nil)
            // simple requests get the CORS headers
            let simple = try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [key, ("Origin", "https://app.example")])
            #expect(simple.headers["access-control-allow-origin"] == "https://app.example")
            // methods, body size
            #expect(try await gateway.request("DELETE", "/t/demo/echo/v1/x", headers: [key]).status == 405)
            let large = try await gateway.request("POST", "/t/demo/echo/v1/x", headers: [key], body: String(repeating: "a", count: 17))
            #expect(large.status == 413)
            #expect(upstream.seen.count == 1)
        }
        // loopback is denied when only 10/8 may call
        try await Self.withWorld({ world, upstream in
            world.snapshot(targets: [.loopback(upstream.port)], ipRules: IPAccessRules(allow: [IPRange("10.0.0.0/8")!]))
        }) { _, _, gateway in
            let response = try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [("X-API-Key", TestWorld.apiKey)])
            #expect(response.status == 403)
            #expect(response.body.contains("address"))
        }
    }

    @Test func deprecatedAPIsSayWhenTheyGoAndRetiredOnesAreRefused() async throws {
        let sunset = Date(timeIntervalSince1970: 1_800_000_000)
        try await Self.withWorld({ world, upstream in world.snapshot(targets: [.loopback(upstream.port)], state: .deprecated, sunset: sunset) }) {
            _, _, gateway in
            let response = try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [("X-API-Key", TestWorld.apiKey)])
            #expect(response.status == 200)
            #expect(response.headers["deprecation"] == "@1700000000")
            #expect(response.headers["sunset"] == "Fri, 15 Jan 2027 08:00:00 GMT")
        }
        try await Self.withWorld({ world, upstream in world.snapshot(targets: [.loopback(upstream.port)], state: .retired) }) { _, upstream, gateway in
            let response = try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [("X-API-Key", TestWorld.apiKey)])
            #expect(response.status == 410)
            #expect(upstream.seen.isEmpty)
        }
    }

    @Test func unknownTenantsAndPathsAre404() async throws {
        try await Self.withWorld { _, _, gateway in
            #expect(try await gateway.request("GET", "/t/nobody/echo/v1/x").status == 404)
            #expect(try await gateway.request("GET", "/t/demo/echo/v2/x").status == 404)
            #expect(try await gateway.request("GET", "/t/demo/echo/v10").status == 404)
            // host-based tenancy
            let byHost = try await gateway.request("GET", "/echo/v1/x", headers: [("X-API-Key", TestWorld.apiKey)], host: "demo.localhost:8000")
            #expect(byHost.status == 200)
            // host names are case-insensitive; a host that only ends like the base domain is not a tenant
            #expect(try await gateway.request("GET", "/echo/v1/x", headers: [("X-API-Key", TestWorld.apiKey)], host: "DEMO.LocalHost").status == 200)
            #expect(try await gateway.request("GET", "/echo/v1/x", headers: [("X-API-Key", TestWorld.apiKey)], host: "demolocalhost").status == 404)
        }
    }

    @Test func keepAliveReusesTheUpstreamConnection() async throws {
        try await Self.withWorld { _, upstream, gateway in
            var text = ""
            for i in 0..<5 { text += "GET /t/demo/echo/v1/\(i) HTTP/1.1\r\nHost: g\r\nX-API-Key: \(TestWorld.apiKey)\r\n\(i == 4 ? "Connection: close\r\n" : "")\r\n" }
            let responses = try await gateway.send(text)
            #expect(responses.map(\.status) == [200, 200, 200, 200, 200])
            #expect(upstream.connections == 1)
            #expect(upstream.seen.map(\.uri) == ["/0", "/1", "/2", "/3", "/4"])
        }
    }

    @Test func largeResponsesStreamThrough() async throws {
        try await Self.withWorld { _, _, gateway in
            let response = try await gateway.request("GET", "/t/demo/echo/v1/big", headers: [("X-API-Key", TestWorld.apiKey)])
            #expect(response.status == 200)
            #expect(response.body.utf8.count == 1 << 20)
            #expect(gateway.usage.recent.last?.bytesOut == 1 << 20)
        }
    }
}

/// Upstream failures: timeouts, refused connections, retries, circuit breaking, abrupt closes.
@Suite struct GatewayUpstreamFailureTests {
    @Test func aSlowUpstreamIs504() async throws {
        try await GatewayProxyTests.withWorld(configure: { $0.responseTimeout = .milliseconds(300) }) { _, _, gateway in
            let response = try await gateway.request("GET", "/t/demo/echo/v1/slow", headers: [("X-API-Key", TestWorld.apiKey)])
            #expect(response.status == 504)
            #expect(gateway.usage.recent.last?.isBillable == false)
        }
    }

    @Test func anUpstreamThatClosesIs502() async throws {
        try await GatewayProxyTests.withWorld { _, _, gateway in
            let response = try await gateway.request("POST", "/t/demo/echo/v1/close", headers: [("X-API-Key", TestWorld.apiKey)], body: "x")
            #expect(response.status == 502)
            // and the gateway keeps serving
            #expect(try await gateway.request("GET", "/t/demo/echo/v1/ok", headers: [("X-API-Key", TestWorld.apiKey)]).status == 200)
        }
    }

    @Test func anUpstreamThatFailsWhileTheBodyArrivesIsAnsweredOnceTheBodyEndsAndCountedOnce() async throws {
        // port 1 is refused on loopback; a POST is not retried
        try await GatewayProxyTests.withWorld({ world, _ in world.snapshot(targets: [.loopback(1)]) }) { _, _, gateway in
            let (channel, received) = try await GatewayListenerTests.connect(port: gateway.port)
            try await channel.writeAndFlush(
                ByteBuffer(string: "POST /t/demo/echo/v1/x HTTP/1.1\r\nHost: g\r\nX-API-Key: \(TestWorld.apiKey)\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello"))
            // the refused connection is known long before the rest of the body comes
            try await GatewayIntegrationWait.until { gateway.usage.recent.last != nil }
            try await channel.writeAndFlush(ByteBuffer(string: "world"))
            let text = try await received.get()
            #expect(text.hasPrefix("HTTP/1.1 502"))
            #expect(gateway.usage.recent.count == 1)
            #expect(gateway.usage.recent.last?.rejection == .upstreamUnavailable)
            let rejections = gateway.metrics.counters(label: "tollgate_gateway_rejections_total", dimensions: [("reason", "upstream_unavailable")])
            #expect(rejections.map(\.totalValue).reduce(0, +) == 1)
            let requests = gateway.metrics.counters(label: "tollgate_gateway_requests_total", dimensions: [("api", "echo"), ("status", "502")])
            #expect(requests.map(\.totalValue).reduce(0, +) == 1)
        }
    }

    @Test func idempotentRequestsRetryOnAnotherTargetWhenTheConnectionFails() async throws {
        // a port nobody listens on: port 1 (tcpmux) is refused on loopback. A port found by binding and
        // closing a socket was taken by another test's listener under the parallel suite (seen once).
        let deadPort = 1
        try await GatewayProxyTests.withWorld({ world, upstream in
            world.snapshot(targets: [.loopback(deadPort, weight: 100), .loopback(upstream.port, weight: 1)])
        }) { _, upstream, gateway in
            let response = try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [("X-API-Key", TestWorld.apiKey)])
            #expect(response.status == 200)
            #expect(upstream.seen.count == 1)
        }
    }

    @Test func aDeadTargetOpensTheCircuitAndFailsFast() async throws {
        // port 1 is refused on loopback; a freed ephemeral port was taken by another test's listener
        // under the parallel suite and the first call hung (seen in CI)
        let deadPort = 1
        // one event loop: circuit state is per loop (like nginx workers), so this makes the count exact
        try await GatewayProxyTests.withWorld({ world, _ in world.snapshot(targets: [.loopback(deadPort)]) }, configure: { $0.eventLoopThreads = 1 }) {
            _, _, gateway in
            var statuses: [Int] = []
            for _ in 0..<7 {
                statuses.append(try await gateway.request("POST", "/t/demo/echo/v1/x", headers: [("X-API-Key", TestWorld.apiKey)], body: "1").status)
            }
            // five failures open it; then calls fail fast. (On a starved machine the 10 s open time
            // can pass before the 6th call, which is then the half-open trial: a 502 again.)
            #expect(Array(statuses.prefix(5)) == [502, 502, 502, 502, 502])
            #expect(statuses.dropFirst(5).contains(503), "\(statuses)")
        }
    }

    @Test func malformedAndOversizedRequestsEndCleanly() async throws {
        try await GatewayProxyTests.withWorld { _, _, gateway in
            let garbage = try await gateway.send("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot hex\r\n\r\n")
            #expect(garbage.first?.status ?? 400 >= 400)
            let huge = "GET /t/demo/echo/v1/x HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 20_000))\r\nConnection: close\r\n\r\n"
            let tooBig = try await gateway.send(huge)
            #expect(tooBig.first?.status == 431)
            #expect(try await gateway.request("GET", "/healthz").status == 200)
        }
    }

    @Test func aClientThatLeavesMidRequestLeavesNoMessBehind() async throws {
        try await GatewayProxyTests.withWorld { _, _, gateway in
            // the client asks for a slow answer and hangs up at once
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: gateway.port).get()
            try await channel.writeAndFlush(ByteBuffer(string: "GET /t/demo/echo/v1/slow HTTP/1.1\r\nHost: g\r\nX-API-Key: \(TestWorld.apiKey)\r\n\r\n"))
            try await Task.sleep(for: .milliseconds(200))
            try await channel.close()
            // the gateway records the abandoned call and keeps serving
            try await GatewayIntegrationWait.until { gateway.usage.recent.contains { $0.status == 499 } }
            #expect(gateway.usage.recent.contains { $0.status == 499 })
            #expect(try await gateway.request("GET", "/t/demo/echo/v1/ok", headers: [("X-API-Key", TestWorld.apiKey)]).status == 200)
        }
    }

    /// SIGTERM's order on the listener: stop accepting, close idle keep-alive connections, let an
    /// exchange under way finish and answer it with `Connection: close`, read no further request.
    @Test func aGracefulShutdownFinishesTheCallUnderWayAndClosesTheRest() async throws {
        try await GatewayProxyTests.withWorld { _, _, gateway in
            // setup: an idle keep-alive connection, and one waiting for a slow upstream with a second request pipelined
            let (idle, idleBytes) = try await GatewayListenerTests.connect(port: gateway.port)
            try await idle.writeAndFlush(ByteBuffer(string: "GET /t/demo/echo/v1/ok HTTP/1.1\r\nHost: g\r\nX-API-Key: \(TestWorld.apiKey)\r\n\r\n"))
            try await GatewayIntegrationWait.until { gateway.usage.recent.count == 1 }
            let (busy, busyBytes) = try await GatewayListenerTests.connect(port: gateway.port)
            try await busy.writeAndFlush(
                ByteBuffer(
                    string: "GET /t/demo/echo/v1/slow HTTP/1.1\r\nHost: g\r\nX-API-Key: \(TestWorld.apiKey)\r\n\r\n"
                        + "GET /t/demo/echo/v1/ok HTTP/1.1\r\nHost: g\r\nX-API-Key: \(TestWorld.apiKey)\r\n\r\n"))
            try await Task.sleep(for: .milliseconds(300))
            // act: the shutdown begins while the slow call is under way
            await gateway.beginShutdown()
            let idleText = try await idleBytes.get()
            let busyText = try await busyBytes.get()
            // assert: the idle connection got its one answer and was closed; the busy one got the slow
            // answer, marked Connection: close, and nothing for the pipelined request
            let idleResponses = RawResponse.parseAll(idleText)
            #expect(idleResponses.map(\.status) == [200])
            let busyResponses = RawResponse.parseAll(busyText)
            #expect(busyResponses.map(\.status) == [200])
            #expect(busyResponses.first?.headers["connection"]?.lowercased() == "close")
            #expect(gateway.usage.recent.map(\.status) == [200, 200])  // both answered calls metered, the unread one not
            // and the listener no longer accepts. Its close comes when the service group reaches the
            // gateway's graceful shutdown, which on a loaded machine (the full parallel suite) was
            // seen to lag the drain of the open connections by seconds: give it up to 30 s.
            var refused = false
            for _ in 0..<600 where !refused {
                do {
                    let (stray, _) = try await GatewayListenerTests.connect(port: gateway.port)
                    try? await stray.close()
                    try await Task.sleep(for: .milliseconds(50))
                } catch {
                    refused = true
                }
            }
            #expect(refused)
            _ = idle
            _ = busy
        }
    }

    @Test func aSlowClientIsDisconnected() async throws {
        // 1 s, not less: under the parallel suite a request can reach the gateway several hundred ms
        // after its connection opened, and a shorter timeout then closes it before the bytes arrive
        try await GatewayProxyTests.withWorld(configure: { $0.idleTimeout = .seconds(1) }) { _, _, gateway in
            // half a request head, then silence: the gateway closes the connection
            let started = Date()
            let text = try await GatewayListenerTests.exchange(port: gateway.port, "GET /t/demo/echo/v1/x HTTP/1.1\r\nHost: x\r\n")
            #expect(Date().timeIntervalSince(started) < 9)  // closed by the gateway, not by the harness's 10 s cap; a loaded suite delays sweeps by seconds
            #expect(text.isEmpty || text.hasPrefix("HTTP/1.1 408"))
        }
    }
}

/// The per-loop idle sweep that replaced an IdleStateHandler per connection.
@Suite struct GatewayIdleTests {
    @Test func aConnectionThatSendsNothingIsClosedQuietly() async throws {
        try await GatewayProxyTests.withWorld(configure: { $0.idleTimeout = .seconds(1) }) { _, _, gateway in
            let started = Date()
            let text = try await GatewayListenerTests.exchange(port: gateway.port, "")
            #expect(text.isEmpty)
            #expect(Date().timeIntervalSince(started) < 9)  // closed by the gateway, not by the harness's 10 s cap; a loaded suite delays sweeps by seconds
        }
    }

    @Test func waitingForASlowUpstreamIsNotIdleness() async throws {
        // the upstream takes 3 s, beyond the client idle timeout: the client still gets its answer.
        // (1 s, not less: under the parallel suite a request was once sent 300 ms after connecting,
        // and the gateway rightly closed the connection as idle before it arrived.)
        try await GatewayProxyTests.withWorld(configure: { $0.idleTimeout = .seconds(1) }) { _, _, gateway in
            let response = try await gateway.request("GET", "/t/demo/echo/v1/slow", headers: [("X-API-Key", TestWorld.apiKey)])
            #expect(response.status == 200)
        }
    }
}

/// Polls a condition for up to 5 s (a correctness bound for asynchronous effects, not a speed test).
enum GatewayIntegrationWait {
    static func until(_ condition: @Sendable () -> Bool) async throws {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline && !condition() { try await Task.sleep(for: .milliseconds(20)) }
    }
}
