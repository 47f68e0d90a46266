import Billing
import Foundation
import MetricsTestKit
import NIOCore
import Testing

@testable import Gateway

@Suite struct ResponseCacheTests {
    // MARK: RFC 9111 rules

    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    static func verdict(_ headers: [(String, String)], status: Int = 200, ttl: Int = 60, vary: [String] = []) -> Cacheability.Verdict {
        Cacheability.response(status: status, headers: headers.map { (name: $0.0, value: $0.1) }, policyTTL: ttl, vary: vary, now: now)
    }

    @Test func whatASharedCacheMayKeepAndForHowLong() {
        #expect(Self.verdict([]) == .store(ttl: 60))  // no freshness information: the policy's time
        #expect(Self.verdict([("cache-control", "max-age=30")]) == .store(ttl: 30))  // never longer than the upstream allows
        #expect(Self.verdict([("cache-control", "max-age=3600")]) == .store(ttl: 60))  // never longer than the policy
        #expect(Self.verdict([("cache-control", "max-age=300, s-maxage=10")]) == .store(ttl: 10))  // s-maxage is the shared cache's
        #expect(Self.verdict([("cache-control", "public, max-age=\"20\"")]) == .store(ttl: 20))
        #expect(Self.verdict([("cache-control", "max-age=30"), ("age", "25")]) == .store(ttl: 5))
        #expect(Self.verdict([("cache-control", "max-age=30"), ("age", "30")]) == .skip("stale"))
        #expect(Self.verdict([("cache-control", "max-age=99999999999999999999")]) == .store(ttl: 60))  // huge: capped, no trap
        #expect(Self.verdict([("cache-control", "max-age=-1")]) == .skip("max-age"))
        #expect(Self.verdict([("cache-control", "max-age=0")]) == .skip("stale"))
        #expect(Self.verdict([("cache-control", "no-store")]) == .skip("no-store"))
        #expect(Self.verdict([("cache-control", "Private")]) == .skip("private"))
        #expect(Self.verdict([("cache-control", "no-cache")]) == .skip("no-cache"))
        #expect(Self.verdict([("set-cookie", "a=1")]) == .skip("set-cookie"))
        #expect(Self.verdict([("vary", "*")]) == .skip("vary"))
        #expect(Self.verdict([("vary", "Authorization")], vary: ["authorization"]) == .skip("vary"))
        #expect(Self.verdict([("vary", "Accept-Language")]) == .skip("vary"))  // the key does not hold it
        #expect(Self.verdict([("vary", "accept-language")], vary: ["accept-language"]) == .store(ttl: 60))
        #expect(Self.verdict([], status: 500) == .skip("status"))
        #expect(Self.verdict([], status: 206) == .skip("status"))
        #expect(Self.verdict([], status: 404) == .store(ttl: 60))
        // Expires counts from the response's Date, else from now; an unreadable one is expired
        #expect(Self.verdict([("expires", "Fri, 15 Jan 2027 08:00:20 GMT"), ("date", "Fri, 15 Jan 2027 08:00:00 GMT")]) == .store(ttl: 20))
        #expect(Self.verdict([("expires", "0")]) == .skip("expires"))
        #expect(Self.verdict([("expires", "Thu, 01 Jan 2026 00:00:00 GMT")]) == .skip("expires"))
        #expect(Self.verdict([("expires", "Thu, 01 Jan 2026 00:00:00 GMT"), ("cache-control", "max-age=15")]) == .store(ttl: 15))  // max-age wins
    }

    @Test func requestsAskingForAFreshAnswerBypassTheCache() {
        #expect(Cacheability.requestBypasses(cacheControl: [], pragma: []) == (false, false))
        #expect(Cacheability.requestBypasses(cacheControl: ["no-cache"], pragma: []) == (true, false))
        #expect(Cacheability.requestBypasses(cacheControl: ["max-age=0"], pragma: []) == (true, false))
        #expect(Cacheability.requestBypasses(cacheControl: ["no-store"], pragma: []) == (true, true))
        #expect(Cacheability.requestBypasses(cacheControl: [], pragma: ["no-cache"]) == (true, false))
        #expect(Cacheability.requestBypasses(cacheControl: ["max-stale"], pragma: ["no-cache"]) == (false, false))  // Cache-Control wins over Pragma
    }

    @Test func theKeyHoldsTheAppUnlessShared() {
        let api = UUID()
        let app = UUID()
        let mine = ResponseCachePolicy.key(method: "GET", uri: "/a?x=1", vary: ["en"], app: app, api: api)
        #expect(mine != ResponseCachePolicy.key(method: "GET", uri: "/a?x=1", vary: ["en"], app: UUID(), api: api))
        #expect(mine != ResponseCachePolicy.key(method: "HEAD", uri: "/a?x=1", vary: ["en"], app: app, api: api))
        #expect(mine != ResponseCachePolicy.key(method: "GET", uri: "/a?x=1", vary: ["de"], app: app, api: api))
        #expect(mine != ResponseCachePolicy.key(method: "GET", uri: "/a?x=1", vary: ["en"], app: app, api: UUID()))
        #expect(ResponseCachePolicy.key(method: "GET", uri: "/a", vary: [], app: nil, api: api) == ResponseCachePolicy.key(method: "GET", uri: "/a", vary: [], app: nil, api: api))
    }

    @Test func configsAreCheckedNamingTheField() {
        func problems(_ json: String) -> [String] {
            guard case .object(let object)? = JSONValue.parse(json), case .failure(let found) = ResponseCacheConfig.parse(object) else { return [] }
            return found.list.map(\.pointer)
        }
        #expect(problems(#"{}"#) == ["/ttl_seconds"])
        #expect(problems(#"{"ttl_seconds": 0}"#) == ["/ttl_seconds"])
        #expect(problems(#"{"ttl_seconds": 86401}"#) == ["/ttl_seconds"])
        #expect(problems(#"{"ttl_seconds": 60, "vary": ["Authorization", "bad name"], "shared": "yes", "max_body_bytes": 2000000, "x": 1}"#) == [
            "/x", "/max_body_bytes", "/shared", "/vary/0", "/vary/1",
        ])
        guard case .object(let object)? = JSONValue.parse(#"{"ttl_seconds": 30, "vary": ["Accept-Language", "accept-language"]}"#),
            case .success(let config) = ResponseCacheConfig.parse(object)
        else {
            Issue.record("refused")
            return
        }
        #expect(config == ResponseCacheConfig(ttlSeconds: 30, vary: ["Accept-Language"], shared: false, maxBodyBytes: 256 * 1024))
    }

    // MARK: bounded memory

    static func entry(_ bytes: Int, api: UUID = UUID(), expires: UInt64 = .max) -> CachedResponse {
        CachedResponse(
            apiID: api, fingerprint: 1, status: 200, head: ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\n"),
            body: ByteBuffer(repeating: 0x61, count: bytes), storedAt: 0, expiresAt: expires)
    }

    @Test func theTableEvictsTheLeastRecentlyUsedWithinItsBounds() {
        // setup: room for about three 1,000-byte entries
        var table = CacheTable(maxBytes: 3_600, maxEntries: 10)
        // act
        #expect(table.put("a", Self.entry(1_000)) == 0)
        #expect(table.put("b", Self.entry(1_000)) == 0)
        #expect(table.put("c", Self.entry(1_000)) == 0)
        #expect(table.get("a", now: 1) != nil)  // a is now the most recent
        let evicted = table.put("d", Self.entry(1_000))
        // assert
        #expect(evicted == 1)
        #expect(table.keysByRecency == ["d", "a", "c"])
        #expect(table.bytes <= 3_600)
        #expect(table.put("huge", Self.entry(5_000)) == nil)  // alone over the bound: not kept
        #expect(table.count == 3)
        // the entry bound holds too, and a replaced key is counted once
        var few = CacheTable(maxBytes: 1 << 20, maxEntries: 2)
        few.put("a", Self.entry(10))
        few.put("a", Self.entry(20))
        few.put("b", Self.entry(10))
        few.put("c", Self.entry(10))
        #expect(few.keysByRecency == ["c", "b"])
        // expired entries are dropped when met; removal by API frees their bytes
        var timed = CacheTable(maxBytes: 1 << 20, maxEntries: 10)
        let api = UUID()
        timed.put("old", Self.entry(10, expires: 5))
        timed.put("x", Self.entry(10, api: api))
        timed.put("y", Self.entry(10, api: api))
        #expect(timed.get("old", now: 5) == nil)
        #expect(timed.count == 2)
        #expect(timed.removeAll { $0.apiID == api } == 2)
        #expect(timed.count == 0 && timed.bytes == 0)
    }

    @Test func manyChurningEntriesStayWithinTheBytes() {
        var table = CacheTable(maxBytes: 50_000, maxEntries: 1_000)
        for index in 0..<5_000 { table.put("k\(index)", Self.entry(index % 700)) }
        #expect(table.bytes <= 50_000)
        #expect(table.count <= 1_000)
        #expect(table.keysByRecency.first == "k4999")
        #expect(table.keysByRecency.count == table.count)
    }

    // MARK: end to end

    static func policy(_ json: String = #"{"ttl_seconds": 60}"#, store: ResponseCacheStore) throws -> ResponseCachePolicy {
        guard case .object(let object)? = JSONValue.parse(json) else { throw CancellationError() }
        return ResponseCachePolicy(config: try ResponseCacheConfig.parse(object).get(), store: store, fingerprint: 7)
    }

    static let key = ("X-API-Key", TestWorld.apiKey)

    @Test func aSecondCallIsAnsweredFromTheCacheAndStillMeteredAndGated() async throws {
        let metrics = TestMetrics()
        let store = ResponseCacheStore(metricsFactory: metrics)
        let cache = try Self.policy(store: store)
        try await GatewayProxyTests.withWorld({ world, upstream in world.snapshot(targets: [.loopback(upstream.port)], responseCache: cache) }) {
            world, upstream, gateway in
            // act
            let first = try await gateway.request("GET", "/t/demo/echo/v1/items?page=1", headers: [Self.key])
            let second = try await gateway.request("GET", "/t/demo/echo/v1/items?page=1", headers: [Self.key])
            let otherQuery = try await gateway.request("GET", "/t/demo/echo/v1/items?page=2", headers: [Self.key])
            let anonymous = try await gateway.request("GET", "/t/demo/echo/v1/items?page=1")
            // assert
            #expect(first.status == 200)
            #expect(first.headers["cache-status"] == "tollgate; fwd=miss; stored; fwd-status=200")
            #expect(second.status == 200)
            #expect(second.headers["cache-status"]?.hasPrefix("tollgate; hit; ttl=") == true)
            #expect(second.headers["age"] != nil)
            #expect(second.body == first.body)
            #expect(second.headers["x-upstream"] == "test")
            #expect(second.headers["ratelimit"]?.hasPrefix("\"rate\";r=") == true)  // the gate ran: limits counted
            #expect(second.headers["x-request-id"] != first.headers["x-request-id"])
            #expect(otherQuery.headers["cache-status"]?.contains("fwd=miss") == true)
            #expect(anonymous.status == 401)  // no credentials: no cached answer either
            #expect(upstream.seen.count == 2)
            // metered: the hit is an answered, billable call like the first, flagged as a hit
            let events = gateway.usage.recent.filter { $0.status == 200 }
            #expect(events.count == 3)
            #expect(events.allSatisfy { $0.isBillable && $0.appID == world.appID })
            #expect(events.map(\.cache) == [nil, .hit, nil])
            #expect(metrics.counters(label: "tollgate_gateway_cache_hits_total").map(\.totalValue).reduce(0, +) == 1)
            #expect(metrics.counters(label: "tollgate_gateway_cache_misses_total").map(\.totalValue).reduce(0, +) == 2)
            #expect(store.usage.entries == 2)
            // purged on demand: the next call goes to the upstream again
            #expect(store.purge(api: world.apiID) == 2)
            let afterPurge = try await gateway.request("GET", "/t/demo/echo/v1/items?page=1", headers: [Self.key])
            #expect(afterPurge.headers["cache-status"]?.contains("fwd=miss; stored") == true)
            #expect(upstream.seen.count == 3)
        }
    }

    /// A plan may make cache hits free: they are still answered and metered (flagged), but not
    /// billable, and they give their quota unit back.
    @Test func aPlanThatDoesNotBillHitsLeavesThemOutOfTheQuota() async throws {
        let store = ResponseCacheStore()
        let cache = try Self.policy(store: store)
        try await GatewayProxyTests.withWorld({ world, upstream in
            world.snapshot(targets: [.loopback(upstream.port)], quota: 2, responseCache: cache, cacheHitsBillable: false)
        }) { world, upstream, gateway in
            // act: one miss, three hits, a second miss (the quota's last unit), then a third miss
            let first = try await gateway.request("GET", "/t/demo/echo/v1/a", headers: [Self.key])
            var hits: [Int] = []
            for _ in 0..<3 { hits.append(try await gateway.request("GET", "/t/demo/echo/v1/a", headers: [Self.key]).status) }
            let second = try await gateway.request("GET", "/t/demo/echo/v1/b", headers: [Self.key])
            let third = try await gateway.request("GET", "/t/demo/echo/v1/c", headers: [Self.key])
            // assert: the hits cost nothing, so the second miss still fits the quota of 2
            #expect(first.status == 200)
            #expect(hits == [200, 200, 200])
            #expect(second.status == 200)
            #expect(third.status == 429)
            #expect(upstream.seen.count == 2)
            let answered = gateway.usage.recent.filter { $0.status == 200 }
            #expect(answered.map(\.cache) == [nil, .unbilledHit, .unbilledHit, .unbilledHit, nil])
            #expect(answered.map(\.isBillable) == [true, false, false, false, true])
            #expect(gateway.usage.billableCount == 2)
        }
    }

    @Test func whatMayNotBeKeptIsForwardedEveryTimeAndSaysWhy() async throws {
        let store = ResponseCacheStore()
        let cache = try Self.policy(store: store)
        try await GatewayProxyTests.withWorld({ world, upstream in world.snapshot(targets: [.loopback(upstream.port)], responseCache: cache) }) {
            _, upstream, gateway in
            // act + assert: the upstream forbids it
            for _ in 0..<2 {
                let response = try await gateway.request(
                    "GET", "/t/demo/echo/v1/private", headers: [Self.key, ("X-Respond-With", "Cache-Control=private, max-age=60")])
                #expect(response.headers["cache-status"] == "tollgate; fwd=miss; detail=private; fwd-status=200")
            }
            // a status a shared cache may not keep
            let failed = try await gateway.request("GET", "/t/demo/echo/v1/status/503", headers: [Self.key])
            #expect(failed.headers["cache-status"] == "tollgate; fwd=miss; detail=status; fwd-status=503")
            // not GET/HEAD
            let posted = try await gateway.request("POST", "/t/demo/echo/v1/items", headers: [Self.key], body: "{}")
            #expect(posted.headers["cache-status"] == "tollgate; fwd=method; fwd-status=200")
            // a client asking for a fresh answer is forwarded, and its answer refreshes the cache
            _ = try await gateway.request("GET", "/t/demo/echo/v1/fresh", headers: [Self.key])
            let fresh = try await gateway.request("GET", "/t/demo/echo/v1/fresh", headers: [Self.key, ("Cache-Control", "no-cache")])
            #expect(fresh.headers["cache-status"] == "tollgate; fwd=request; stored; fwd-status=200")
            #expect(upstream.seen.count == 6)
            #expect(store.usage.entries == 1)
        }
    }

    @Test func aHitReachesHTTP2ClientsAndPassesTheResponseTransformation() async throws {
        let store = ResponseCacheStore()
        let cache = try Self.policy(#"{"ttl_seconds": 60, "shared": true}"#, store: store)
        try await GatewayProxyTests.withWorld({ world, upstream in
            world.snapshot(targets: [.loopback(upstream.port)], responseTransform: TransformTests.responseTransform, responseCache: cache)
        }) { _, upstream, gateway in
            // setup: kept over HTTP/1.1
            let first = try await gateway.request("GET", "/t/demo/echo/v1/doc", headers: [Self.key, ("X-Respond-With", "X-Internal=secret")])
            #expect(first.headers["x-public"] == "secret")
            // act: the same call over h2c
            let output = try TransformTests.curl([
                "--http2-prior-knowledge", "-s", "-D", "-", "-H", "X-API-Key: \(TestWorld.apiKey)", "-H", "X-Respond-With: X-Internal=secret", "-H",
                "Host: gateway.test", "http://127.0.0.1:\(gateway.port)/t/demo/echo/v1/doc",
            ])
            // assert
            let lines = output.lowercased().split(separator: "\r\n").map { $0.trimmingCharacters(in: .whitespaces) }
            #expect(lines.first == "http/2 200")
            #expect(lines.contains { $0.hasPrefix("cache-status: tollgate; hit; ttl=") })
            #expect(lines.contains("x-public: secret"))  // the kept head is transformed like a fresh one
            #expect(!lines.contains { $0.hasPrefix("x-internal:") })
            #expect(output.contains("\"uri\":\"/doc\""))
            #expect(upstream.seen.count == 1)
        }
    }
}
