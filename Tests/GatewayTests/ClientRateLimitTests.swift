import Billing
import Foundation
import Testing

@testable import Gateway

/// Limits per client before authentication: the pure bucket table, the config parser, and the
/// gate refusing with 429 before any credential check (a real gateway and upstream on loopback).
@Suite struct ClientRateLimitTests {
    static let second: UInt64 = 1_000_000_000

    // MARK: the bucket table

    @Test func aClientGetsItsBurstThenWaitsForTheRefill() {
        // setup: 2 requests per 60 s, burst 2
        var table = ClientBucketTable(capacity: 10, rate: 2.0 / 60, burst: 2)
        let a = ClientKey([127, 0, 0, 1])
        // act
        let first = table.take(a, now: 0)
        let second = table.take(a, now: 1)
        let third = table.take(a, now: 2)
        let later = table.take(a, now: 31 * Self.second)  // one token refilled after 30 s
        // assert
        #expect(first.decision == .allowed(remaining: 1))
        #expect(second.decision == .allowed(remaining: 0))
        #expect(third.decision == .refused(retryAfterSeconds: 30))
        #expect(later.decision == .allowed(remaining: 0))
        #expect(!first.evicted && table.count == 1)
    }

    @Test func clientsHaveTheirOwnBuckets() {
        var table = ClientBucketTable(capacity: 10, rate: 1, burst: 1)
        #expect(table.take(ClientKey([10, 0, 0, 1]), now: 0).decision == .allowed(remaining: 0))
        #expect(table.take(ClientKey([10, 0, 0, 1]), now: 0).decision == .refused(retryAfterSeconds: 1))
        #expect(table.take(ClientKey([10, 0, 0, 2]), now: 0).decision == .allowed(remaining: 0))
    }

    @Test func theLeastRecentlySeenClientIsForgottenWhenTheTableIsFull() {
        // setup
        var table = ClientBucketTable(capacity: 2, rate: 1, burst: 5)
        let (a, b, c) = (ClientKey([1]), ClientKey([2]), ClientKey([3]))
        _ = table.take(a, now: 0)
        _ = table.take(b, now: 0)
        _ = table.take(a, now: 0)  // a is now more recent than b
        // act
        let outcome = table.take(c, now: 0)
        // assert
        #expect(outcome.evicted)
        #expect(table.count == 2)
        #expect(table.remembers(a) && table.remembers(c) && !table.remembers(b))
        #expect(table.evictions == 1)
        // b comes back with a full bucket (forgetting only ever helps a client) and pushes out a
        #expect(table.take(b, now: 0).decision == .allowed(remaining: 4))
        #expect(!table.remembers(a))
        #expect(table.take(c, now: 0).decision == .allowed(remaining: 3))
    }

    @Test func aTableOfOneAndManyChurningClientsStayWithinTheCap() {
        var one = ClientBucketTable(capacity: 1, rate: 1, burst: 1)
        for i in 0..<1_000 { _ = one.take(ClientKey([UInt8(i % 256), UInt8(i / 256)]), now: 0) }
        #expect(one.count == 1)
        #expect(one.evictions == 999)
        let limiter = ClientRateLimiter(config: ClientRateLimitConfig(requests: 1, perSeconds: 1, maxClients: 100))
        for i in 0..<5_000 { _ = limiter.take(ClientKey(withUnsafeBytes(of: UInt32(i)) { Array($0) }), now: 0) }
        #expect(limiter.count <= 100)
        #expect(limiter.capacity <= 100)
        #expect(limiter.count > 50)
    }

    @Test func hugeGapsAndRatesDoNotTrap() {
        var table = ClientBucketTable(capacity: 4, rate: 1_000_000, burst: 1_000_000)
        #expect(table.take(ClientKey([1]), now: UInt64.max - 1).decision == .allowed(remaining: 999_999))
        #expect(table.take(ClientKey([1]), now: 0).decision == .allowed(remaining: 999_998))  // time going back: no refill
        var slow = ClientBucketTable(capacity: 4, rate: 1.0 / 86_400, burst: 1)
        _ = slow.take(ClientKey([2]), now: 0)
        #expect(slow.take(ClientKey([2]), now: 0).decision == .refused(retryAfterSeconds: 86_400))
    }

    // MARK: the configuration

    static func parse(_ json: String) -> Result<ClientRateLimitConfig, PolicyConfigProblems> {
        guard case .object(let object)? = JSONValue.parse(json) else { return .failure(PolicyConfigProblems([PolicyConfigProblem("", "not an object")])) }
        return ClientRateLimitConfig.parse(object)
    }

    @Test func aMinimalConfigGetsItsDefaults() throws {
        let config = try Self.parse(#"{"requests": 100, "per_seconds": 60}"#).get()
        #expect(config == ClientRateLimitConfig(requests: 100, perSeconds: 60, burst: 100, keyHeader: nil, maxClients: 10_000))
        let keyed = try Self.parse(#"{"requests": 5, "per_seconds": 1, "burst": 20, "key_header": " X-Real-IP ", "max_clients": 100}"#).get()
        #expect(keyed.keyHeader == "X-Real-IP")
        #expect(keyed.burst == 20 && keyed.maxClients == 100)
        #expect(try Self.parse(#"{"requests": 5, "per_seconds": 1, "key_header": ""}"#).get().keyHeader == nil)
    }

    @Test(arguments: [
        (#"{"per_seconds": 60}"#, "/requests"),
        (#"{"requests": 0, "per_seconds": 60}"#, "/requests"),
        (#"{"requests": 1000001, "per_seconds": 60}"#, "/requests"),
        (#"{"requests": 1.5, "per_seconds": 60}"#, "/requests"),
        (#"{"requests": true, "per_seconds": 60}"#, "/requests"),
        (#"{"requests": "10", "per_seconds": 60}"#, "/requests"),
        (#"{"requests": 99999999999999999999999, "per_seconds": 60}"#, "/requests"),
        (#"{"requests": 10, "per_seconds": 86401}"#, "/per_seconds"),
        (#"{"requests": 10, "per_seconds": 60, "burst": -1}"#, "/burst"),
        (#"{"requests": 10, "per_seconds": 60, "max_clients": 99}"#, "/max_clients"),
        (#"{"requests": 10, "per_seconds": 60, "max_clients": 100001}"#, "/max_clients"),
        (#"{"requests": 10, "per_seconds": 60, "key_header": "X Real"}"#, "/key_header"),
        (#"{"requests": 10, "per_seconds": 60, "key_header": "Authorization"}"#, "/key_header"),
        (#"{"requests": 10, "per_seconds": 60, "key_header": 5}"#, "/key_header"),
        (#"{"requests": 10, "per_seconds": 60, "rate": 5}"#, "/rate"),
        (#"{"requests": 10, "per_seconds": 60, "a/b": 5}"#, "/a~1b"),
    ])
    func badConfigsAreRefusedNamingTheField(json: String, pointer: String) {
        guard case .failure(let problems) = Self.parse(json) else {
            Issue.record("accepted \(json)")
            return
        }
        #expect(problems.list.map(\.pointer) == [pointer], "\(json)")
        #expect(problems.list.allSatisfy { !$0.message.isEmpty })
    }

    @Test func theRegistryKeepsALimiterAcrossLoadsUntilItsConfigChanges() {
        // setup
        let registry = ClientLimiterRegistry()
        let api = UUID()
        let row = StoredPolicy(apiID: api, position: 0, kind: "client_rate_limit", config: #"{"requests": 2, "per_seconds": 60}"#)
        // act
        let first = registry.compile([row]).byAPI[api]
        let again = registry.compile([row]).byAPI[api]
        var changed = row
        changed.config = #"{"requests": 3, "per_seconds": 60}"#
        let third = registry.compile([changed, StoredPolicy(apiID: api, position: 1, kind: "unknown_kind", config: "{}")])
        // assert
        guard case .clientRateLimit(let a)? = first?.first, case .clientRateLimit(let b)? = again?.first,
            case .clientRateLimit(let c)? = third.byAPI[api]?.first
        else {
            Issue.record("not compiled")
            return
        }
        #expect(a.limiter === b.limiter)
        #expect(c.limiter !== a.limiter)
        #expect(third.skipped.map(\.kind) == ["unknown_kind"])
        #expect(registry.compile([]).byAPI.isEmpty)
        #expect(registry.usage.capacity == 0)  // a removed policy's memory goes with it
    }

    // MARK: the gate, end to end

    static func limit(_ json: String) throws -> [PreAuthPolicy] {
        guard case .object(let object)? = JSONValue.parse(json) else { throw CancellationError() }
        return [.clientRateLimit(ClientRateLimit(limiter: ClientRateLimiter(config: try ClientRateLimitConfig.parse(object).get())))]
    }

    @Test func theClientLimitAnswers429BeforeABadCredentialIsChecked() async throws {
        let policies = try Self.limit(#"{"requests": 2, "per_seconds": 60}"#)
        try await GatewayProxyTests.withWorld({ world, upstream in world.snapshot(targets: [.loopback(upstream.port)], preAuth: policies) }) {
            world, upstream, gateway in
            // act: a client with a wrong key, three times
            var statuses: [Int] = []
            var last: RawResponse?
            for _ in 0..<3 {
                let response = try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [("X-API-Key", "tgk_wrong")])
                statuses.append(response.status)
                last = response
            }
            // assert: the first two reach the credential check (401), the third is refused before it
            #expect(statuses == [401, 401, 429])
            let refused = try #require(last)
            #expect(refused.headers["content-type"] == "application/problem+json")
            // a token bucket of 2 per 60 s gains one every 30 s; how long the three calls took
            // (a loaded machine) shortens the wait, never lengthens it
            let retryAfter = try #require(refused.headers["retry-after"].flatMap(Int.init))
            #expect((10...30).contains(retryAfter))
            #expect(refused.headers["ratelimit-policy"] == "\"client\";q=2;w=60")
            #expect(refused.headers["ratelimit"] == "\"client\";r=0;t=\(retryAfter)")
            #expect(refused.headers["www-authenticate"] == nil)
            #expect(refused.body.contains("2 requests per 60 s from one client"))
            // even a good credential from that client is refused now, before it is looked at
            let good = try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [("Authorization", "Bearer \(world.token())")])
            #expect(good.status == 429)
            #expect(upstream.seen.isEmpty)
            // metered as a rejection of the API, for no app or subscription, never billable
            let events = gateway.usage.recent.filter { $0.rejection == .clientRateLimited }
            #expect(events.count == 2)
            #expect(events.allSatisfy { $0.apiID == world.apiID && $0.appID == nil && $0.subscriptionID == nil && !$0.isBillable && $0.status == 429 })
            let counted = gateway.metrics.counters(label: "tollgate_gateway_rejections_total", dimensions: [("reason", "client_rate_limited")])
            #expect(counted.map(\.totalValue).reduce(0, +) == 2)
        }
    }

    @Test func aHeaderKeysTheLimitAndItsAbsenceFallsBackToTheAddress() async throws {
        let policies = try Self.limit(#"{"requests": 1, "per_seconds": 60, "key_header": "X-Real-IP"}"#)
        try await GatewayProxyTests.withWorld({ world, upstream in world.snapshot(targets: [.loopback(upstream.port)], preAuth: policies) }) {
            _, upstream, gateway in
            let key = ("X-API-Key", TestWorld.apiKey)
            // act + assert: each header value has its own bucket
            let first = try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [key, ("X-Real-IP", "198.51.100.7")])
            #expect(first.status == 200)
            // on a forwarded call, the client's item comes first in the same fields as the plan's
            #expect(first.headers["ratelimit-policy"] == "\"client\";q=1;w=60, \"rate\";q=1000;w=1")
            #expect(first.headers["ratelimit"]?.hasPrefix("\"client\";r=0;t=60, \"rate\";r=999;") == true)
            #expect(try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [key, ("X-Real-IP", "198.51.100.7")]).status == 429)
            #expect(try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [key, ("X-Real-IP", "198.51.100.8")]).status == 200)
            // no header: the loopback address's own bucket, once
            #expect(try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [key]).status == 200)
            #expect(try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [key]).status == 429)
            #expect(upstream.seen.count == 3)
        }
    }

    @Test func anAPIWithoutPoliciesAnswersAsBefore() async throws {
        try await GatewayProxyTests.withWorld { _, _, gateway in
            let response = try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [("X-API-Key", TestWorld.apiKey)])
            #expect(response.status == 200)
            #expect(response.headers["ratelimit-policy"] == "\"rate\";q=1000;w=1")
        }
    }
}
