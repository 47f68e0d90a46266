import Foundation
import Logging
import MetricsTestKit
import NIOCore
import Testing

@testable import Gateway

/// Log sinks: the record and its encoding, the batcher's rules, the collector URL rules, and the
/// sinks at work behind a real gateway with a real upstream and a real collector on 127.0.0.1.
@Suite struct AccessLogTests {
    static let bearer = "eyJhbGciOiJFUzI1NiJ9.secret-bearer-token.sig"
    static let querySecret = "query-secret-4711"

    // MARK: The record

    static func record(route: String = "/t/demo/echo/v1/hello", requestID: String = "r-1") -> AccessLogRecord {
        AccessLogRecord(
            requestID: requestID, clientIP: "127.0.0.1", epochMilliseconds: 1_733_365_692_123, protocolName: .http1, method: "GET", route: route,
            status: 200, latencyMicroseconds: 12_345, upstreamLatencyMicroseconds: 9_007, bytesIn: 10, bytesOut: 20,
            tenantID: UUID(uuidString: "00000000-0000-0000-0000-00000000000A"), tenant: "demo", apiID: nil, appID: nil, clientID: "tgc_demo",
            planID: nil, rejection: nil, cache: nil)
    }

    static func object(_ line: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }

    @Test func aRecordIsOneLineOfJSONWithItsFields() throws {
        // act
        let line = Self.record().jsonLine
        // assert
        #expect(line.hasSuffix("}\n"))
        #expect(line.dropLast().contains("\n") == false)
        let object = try Self.object(line)
        #expect(object["request_id"] as? String == "r-1")
        #expect(object["time"] as? String == "2024-12-05T02:28:12.123Z")
        #expect(object["protocol"] as? String == "HTTP/1.1")
        #expect(object["status"] as? Int == 200)
        #expect(object["latency_ms"] as? Double == 12.345)
        #expect(object["upstream_latency_ms"] as? Double == 9.007)
        #expect(object["tenant_id"] as? String == "00000000-0000-0000-0000-00000000000a")
        #expect(object["api_id"] is NSNull)
        #expect(object["rejection"] is NSNull)
        #expect(object["cache"] == nil)  // only for cached APIs
    }

    @Test func stringsAreEscapedSoARecordStaysOneLine() throws {
        // a request id is the client's own header value: anything it may hold must stay inside its string
        let hostile = "a\"b\\c\nd\re\tf\u{1}g\u{7F}h\u{2028}i\u{2029}j é 🚀"
        let line = Self.record(requestID: hostile).jsonLine
        #expect(line.filter { $0 == "\n" }.count == 1)
        #expect(!line.unicodeScalars.contains { $0 == "\u{2028}" || $0 == "\u{2029}" || ($0.value < 0x20 && $0 != "\n") })
        #expect(try Self.object(line)["request_id"] as? String == hostile)
    }

    @Test func theRouteNeverHoldsTheQueryString() {
        #expect(AccessLogRecord.route(ofTarget: "/echo/v1/x?api_key=secret&a=b") == "/echo/v1/x")
        #expect(AccessLogRecord.route(ofTarget: "/echo/v1/x#frag") == "/echo/v1/x")
        #expect(AccessLogRecord.route(ofTarget: "/?") == "/")
        #expect(AccessLogRecord.route(ofTarget: "/plain") == "/plain")
        // long paths are cut on a character boundary
        let long = "/" + String(repeating: "é", count: 3000)
        let cut = AccessLogRecord.route(ofTarget: long)
        #expect(cut.utf8.count <= AccessLogRecord.maximumRouteBytes)
        #expect(cut.utf8.count >= AccessLogRecord.maximumRouteBytes - 1)
        #expect(!cut.contains("\u{FFFD}"))
    }

    @Test func timesAreRFC3339WithMillisecondsInUTC() {
        #expect(RFC3339.milliseconds(0) == "1970-01-01T00:00:00.000Z")
        #expect(RFC3339.milliseconds(951_782_400_000) == "2000-02-29T00:00:00.000Z")  // leap day of a century leap year
        #expect(RFC3339.milliseconds(1_709_251_199_999) == "2024-02-29T23:59:59.999Z")
        #expect(RFC3339.milliseconds(1_735_689_600_000) == "2025-01-01T00:00:00.000Z")
        #expect(RFC3339.milliseconds(-1) == "1969-12-31T23:59:59.999Z")
        #expect(RFC3339.milliseconds(4_102_444_800_000) == "2100-01-01T00:00:00.000Z")
        #expect(AccessLogJSON.milliseconds(0) == "0.000")
        #expect(AccessLogJSON.milliseconds(5) == "0.005")
        #expect(AccessLogJSON.milliseconds(-7) == "0.000")  // a clock step never reads negative
        #expect(AccessLogJSON.milliseconds(Int64.max).hasSuffix(".807"))
    }

    // MARK: The batcher

    static let second: UInt64 = 1_000_000_000

    static func limits(capacity: Int = 5, batch: Int = 2, attempts: Int = 3) -> LogBatcher.Limits {
        LogBatcher.Limits(
            capacity: capacity, batchSize: batch, flushNanoseconds: 5 * second, maxAttempts: attempts, baseBackoffNanoseconds: second,
            maxBackoffNanoseconds: 8 * second)
    }

    @Test func aBatchLeavesWhenFullOrWhenItsOldestWaitedTheFlushInterval() {
        // setup
        var batcher = LogBatcher(limits: Self.limits())
        // act + assert: one record waits for the flush interval
        #expect(batcher.append("a", now: 0) == .queued(wake: false))
        #expect(batcher.next(now: 1) == .wait(until: 5 * Self.second))
        #expect(batcher.next(now: 5 * Self.second) == .send(.init(records: ["a"], attempts: 1)))
        #expect(batcher.next(now: 5 * Self.second) == .idle)  // one batch in flight at a time
        #expect(batcher.succeeded() == 1)
        // a full batch wakes the driver and leaves at once
        #expect(batcher.append("b", now: 6 * Self.second) == .queued(wake: false))
        #expect(batcher.append("c", now: 6 * Self.second) == .queued(wake: true))
        #expect(batcher.next(now: 6 * Self.second) == .send(.init(records: ["b", "c"], attempts: 1)))
        #expect(batcher.succeeded() == 2)
        #expect(batcher.depth == 0)
        #expect(batcher.next(now: 100 * Self.second) == .idle)
    }

    @Test func aFullBufferDropsAndTheBatchInFlightDoesNotCount() {
        var batcher = LogBatcher(limits: Self.limits(capacity: 3, batch: 2))
        for record in ["a", "b", "c"] { #expect(batcher.append(record, now: 0) != .dropped) }
        #expect(batcher.append("d", now: 0) == .dropped)
        #expect(batcher.next(now: 0) == .send(.init(records: ["a", "b"], attempts: 1)))
        #expect(batcher.append("d", now: 0) != .dropped)
        #expect(batcher.append("e", now: 0) != .dropped)
        #expect(batcher.append("f", now: 0) == .dropped)
        #expect(batcher.queued == 3)
        #expect(batcher.depth == 5)
    }

    @Test func failuresAreRetriedWithBackoffThenDropped() {
        // setup
        var batcher = LogBatcher(limits: Self.limits(attempts: 3))
        _ = batcher.append("a", now: 0)
        _ = batcher.append("b", now: 0)
        #expect(batcher.next(now: 0) == .send(.init(records: ["a", "b"], attempts: 1)))
        // act + assert: jitter 0 waits half the step (1 s → 0.5 s), the step doubles
        #expect(batcher.failed(retryable: true, now: 10 * Self.second, jitter: 0) == .retry(at: 10 * Self.second + Self.second / 2))
        #expect(batcher.next(now: 10 * Self.second) == .wait(until: 10 * Self.second + Self.second / 2))
        #expect(batcher.next(now: 11 * Self.second) == .send(.init(records: ["a", "b"], attempts: 2)))
        #expect(batcher.failed(retryable: true, now: 11 * Self.second, jitter: 0) == .retry(at: 12 * Self.second))
        #expect(batcher.next(now: 12 * Self.second) == .send(.init(records: ["a", "b"], attempts: 3)))
        #expect(batcher.failed(retryable: true, now: 12 * Self.second, jitter: 0) == .dropped(count: 2, reason: .retriesExhausted))
        #expect(batcher.depth == 0)
    }

    @Test func aRefusedBatchIsNotSentAgain() {
        var batcher = LogBatcher(limits: Self.limits())
        _ = batcher.append("a", now: 0)
        _ = batcher.append("b", now: 0)
        _ = batcher.next(now: 0)
        #expect(batcher.failed(retryable: false, now: 0, jitter: 0.5) == .dropped(count: 2, reason: .rejected))
        #expect(batcher.next(now: 0) == .idle)
        #expect(batcher.succeeded() == 0)  // nothing in flight
    }

    @Test func backoffGrowsIsCappedAndJitteredWithoutTrapping() {
        let limits = Self.limits()
        #expect(LogBatcher.backoff(attempt: 1, limits: limits, jitter: 0) == Self.second / 2)
        #expect(LogBatcher.backoff(attempt: 2, limits: limits, jitter: 0) == Self.second)
        #expect(LogBatcher.backoff(attempt: 3, limits: limits, jitter: 0.5) == 2 * Self.second + Self.second)
        #expect(LogBatcher.backoff(attempt: 10, limits: limits, jitter: 0) == 4 * Self.second)  // capped at 8 s, halved
        #expect(LogBatcher.backoff(attempt: 10, limits: limits, jitter: 1) < 8 * Self.second)
        #expect(LogBatcher.backoff(attempt: Int.max, limits: limits, jitter: .nan) == 4 * Self.second)
        #expect(LogBatcher.backoff(attempt: 0, limits: limits, jitter: -3) == Self.second / 2)
        let huge = LogBatcher.Limits(baseBackoffNanoseconds: .max, maxBackoffNanoseconds: .max)
        #expect(LogBatcher.backoff(attempt: 64, limits: huge, jitter: 0.99) <= .max)
    }

    @Test func shutdownTakesWhatIsHeldButNotTheBatchInFlight() {
        var batcher = LogBatcher(limits: Self.limits(capacity: 10, batch: 2))
        for record in ["a", "b", "c"] { _ = batcher.append(record, now: 0) }
        _ = batcher.next(now: 0)
        #expect(batcher.drainAll() == ["c"])
        #expect(batcher.succeeded() == 2)
        var retrying = LogBatcher(limits: Self.limits(capacity: 10, batch: 2))
        for record in ["a", "b", "c"] { _ = retrying.append(record, now: 0) }
        _ = retrying.next(now: 0)
        _ = retrying.failed(retryable: true, now: 0, jitter: 0)
        #expect(retrying.drainAll() == ["a", "b", "c"])
        #expect(retrying.depth == 0)
    }

    // MARK: The policy's configuration

    @Test func theCollectorURLIsCheckedLikeAnUpstreamTarget() {
        #expect(HTTPLogConfig.urlProblem("https://logs.example.com/ingest") == nil)
        #expect(HTTPLogConfig.urlProblem("http://127.0.0.1:9000/x") == nil)
        for refused in [
            "", "ftp://logs.example.com/", "file:///etc/passwd", "https://user:pass@logs.example.com/", "https://token@logs.example.com/",
            "https://logs.example.com/?key=1", "https://logs.example.com/#x", "https:///nohost", "https://logs.example.com/a b",
            "https://logs.example.com/\r\nX: y", "logs.example.com", "https://logs.example.com:99999/",
            "https://logs.example.com/" + String(repeating: "a", count: 600),
        ] {
            #expect(HTTPLogConfig.urlProblem(refused) != nil, "\(refused)")
        }
    }

    @Test func theConfigurationIsBoundedAndHasNoSecrets() {
        #expect(HTTPLogConfig.parse(["url": .string("https://logs.example.com/")]) == .success(HTTPLogConfig(url: "https://logs.example.com/")))
        #expect(
            HTTPLogConfig.parse(["url": .string(" https://l.example/ "), "batch_size": .integer(1000), "flush_seconds": .integer(1)])
                == .success(HTTPLogConfig(url: "https://l.example/", batchSize: 1000, flushSeconds: 1)))
        guard case .failure(let problems) = HTTPLogConfig.parse([
            "batch_size": .integer(0), "flush_seconds": .integer(Int64.max), "authorization": .string("Bearer x"),
        ]) else {
            Issue.record("accepted")
            return
        }
        #expect(Set(problems.list.map(\.pointer)) == ["/url", "/batch_size", "/flush_seconds", "/authorization"])
    }

    // MARK: Sinks behind a real gateway

    static func waitFor(_ seconds: Double = 10, _ condition: @Sendable () async throws -> Bool) async throws {
        let until = Date().addingTimeInterval(seconds)
        while Date() < until {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("the condition did not hold within \(seconds) s")
    }

    /// `flushNanoseconds`: how long a lone record waits for its batch; tests that count batches make
    /// it long, so that a batch forms by size alone however slowly the calls come under load.
    static func logs(
        _ metrics: TestMetrics, http: URL? = nil, file: String? = nil, attempts: Int = 5, flushNanoseconds: UInt64 = 200_000_000
    ) -> AccessLogs {
        var configuration = AccessLogs.Configuration(filePath: file, httpURL: http, httpAuthorization: "Bearer installation-collector-secret")
        configuration.httpLimits = LogBatcher.Limits(
            capacity: 100, batchSize: 2, flushNanoseconds: flushNanoseconds, maxAttempts: attempts, baseBackoffNanoseconds: 20_000_000,
            maxBackoffNanoseconds: 100_000_000)
        configuration.tick = .milliseconds(50)
        configuration.metricsFactory = metrics
        return AccessLogs(configuration: configuration, logger: Logger(label: "test"))
    }

    @Test func theInstallationSinkShipsEveryCallAndNoSecret() async throws {
        // setup
        let upstream = try await TestUpstream.start()
        let collector = try await TestCollector.start()
        let world = TestWorld()
        let metrics = TestMetrics()
        let logs = Self.logs(metrics, http: collector.url)
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [.loopback(upstream.port)]), accessLogs: logs) { gateway in
            // act: a key call with a secret in the query, a token call, a refused call
            let keyed = try await gateway.request("GET", "/t/demo/echo/v1/a?api_key=\(AccessLogTests.querySecret)", headers: [("X-API-Key", TestWorld.apiKey)])
            let token = world.token()
            let bearer = try await gateway.request("GET", "/t/demo/echo/v1/b", headers: [("Authorization", "Bearer \(token)"), ("Cookie", "session=cookie-secret")])
            let refused = try await gateway.request("GET", "/t/demo/echo/v1/c", headers: [("Authorization", "Bearer \(Self.bearer)")])
            #expect(keyed.status == 200)
            #expect(bearer.status == 200)
            #expect(refused.status == 401)
            // assert: three records arrive (a batch of two, then one by the flush interval)
            try await Self.waitFor { collector.lines.count >= 3 }
            let lines = collector.lines
            #expect(lines.count == 3)
            #expect(collector.received.allSatisfy { $0.header("content-type") == "application/x-ndjson" })
            #expect(collector.received.allSatisfy { $0.header("authorization") == "Bearer installation-collector-secret" })
            let records = try lines.map(Self.object)
            #expect(records.map { $0["route"] as? String } == ["/t/demo/echo/v1/a", "/t/demo/echo/v1/b", "/t/demo/echo/v1/c"])
            #expect(records.map { $0["status"] as? Int } == [200, 200, 401])
            #expect(records[2]["rejection"] as? String == "unauthenticated")
            #expect(records[0]["app_id"] as? String == world.appID.uuidString.lowercased())
            #expect(records[0]["client_id"] as? String == "tgc_demo")
            #expect(records[0]["plan_id"] as? String == world.planID.uuidString.lowercased())
            #expect(records[0]["client_ip"] as? String == "127.0.0.1")
            #expect(records[0]["request_id"] as? String == keyed.headers["x-request-id"])
            #expect(records[0]["upstream_latency_ms"] is Double)
            #expect(records[2]["upstream_latency_ms"] is NSNull)
            for secret in [TestWorld.apiKey, token, Self.bearer, Self.querySecret, "cookie-secret", "installation-collector-secret"] {
                #expect(!lines.contains { $0.contains(secret) }, "a secret reached the log")
            }
            // counted once the collector's answer is back, which may be after the body arrived
            try await Self.waitFor { metrics.counters(label: "tollgate_gateway_log_records_sent_total", dimensions: [("sink", "http")]).map(\.totalValue).reduce(0, +) == 3 }
        }
        await collector.stop()
        await upstream.stop()
    }

    @Test func aPerAPISinkGetsItsAPIsCallsAndSurvivesAReload() async throws {
        // setup: no installation sink, one API sink made as the snapshot loader makes it
        let upstream = try await TestUpstream.start()
        let collector = try await TestCollector.start()
        let world = TestWorld()
        let metrics = TestMetrics()
        let logs = Self.logs(metrics)
        let config = HTTPLogConfig(url: collector.url.absoluteString, batchSize: 1, flushSeconds: 1)
        let sink = try #require(logs.apiSinks(for: [world.apiID: config])[world.apiID])
        #expect(logs.apiSinks(for: [world.apiID: config])[world.apiID] === sink)  // a reload keeps the sink and what it holds
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [.loopback(upstream.port)], httpLog: sink), accessLogs: logs) { gateway in
            // act
            let response = try await gateway.request("GET", "/t/demo/echo/v1/x?token=\(AccessLogTests.querySecret)", headers: [("X-API-Key", TestWorld.apiKey)])
            #expect(response.status == 200)
            // assert
            try await Self.waitFor { collector.lines.count >= 1 }
            let record = try Self.object(try #require(collector.lines.first))
            #expect(record["api_id"] as? String == world.apiID.uuidString.lowercased())
            #expect(record["route"] as? String == "/t/demo/echo/v1/x")
            #expect(collector.received.allSatisfy { $0.header("authorization") == nil })
            #expect(!collector.lines.contains { $0.contains(Self.querySecret) || $0.contains(TestWorld.apiKey) })
            try await Self.waitFor { metrics.counters(label: "tollgate_gateway_log_records_sent_total", dimensions: [("sink", "api_http")]).map(\.totalValue).reduce(0, +) == 1 }
        }
        await collector.stop()
        await upstream.stop()
    }

    @Test func aFailingCollectorIsRetriedThenTheBatchIsDroppedAndCounted() async throws {
        // setup: the collector answers 503 every time
        let upstream = try await TestUpstream.start()
        let collector = try await TestCollector.start()
        collector.answer(503)
        let world = TestWorld()
        let metrics = TestMetrics()
        let logs = Self.logs(metrics, http: collector.url, attempts: 3, flushNanoseconds: 60_000_000_000)
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [.loopback(upstream.port)]), accessLogs: logs) { gateway in
            // act: one batch of two
            for _ in 0..<2 { #expect(try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [("X-API-Key", TestWorld.apiKey)]).status == 200) }
            // assert: sent three times, then dropped as retries_exhausted
            let dropped: @Sendable () -> Int64 = { metrics.counters(label: "tollgate_gateway_log_records_dropped_total", dimensions: [("sink", "http"), ("reason", "retries_exhausted")]).map(\.totalValue).reduce(0, +) }
            try await Self.waitFor { dropped() == 2 }
            #expect(collector.received.count == 3)
            #expect(Set(collector.received.map(\.body)).count == 1)  // the same batch each time
            #expect(logs.http?.depth == 0)
        }
        await collector.stop()
        await upstream.stop()
    }

    @Test func aCollectorThatIsDownCostsTheCallsNothingAndDropsAreCounted() async throws {
        // setup: a port nobody listens on
        let upstream = try await TestUpstream.start()
        let closed = try await TestCollector.start()
        let url = closed.url
        await closed.stop()
        let world = TestWorld()
        let metrics = TestMetrics()
        let logs = Self.logs(metrics, http: url, attempts: 2)
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [.loopback(upstream.port)]), accessLogs: logs) { gateway in
            // act: the calls are answered as usual
            for _ in 0..<4 { #expect(try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [("X-API-Key", TestWorld.apiKey)]).status == 200) }
            // assert
            let dropped: @Sendable () -> Int64 = { metrics.counters(label: "tollgate_gateway_log_records_dropped_total", dimensions: [("sink", "http"), ("reason", "retries_exhausted")]).map(\.totalValue).reduce(0, +) }
            try await Self.waitFor { dropped() == 4 }
            #expect(gateway.usage.count == 4)  // metering is untouched
        }
        await upstream.stop()
    }

    @Test func aRefusingCollectorIsNotRetried() async throws {
        let upstream = try await TestUpstream.start()
        let collector = try await TestCollector.start()
        collector.answer(400)
        let world = TestWorld()
        let metrics = TestMetrics()
        let logs = Self.logs(metrics, http: collector.url, attempts: 5, flushNanoseconds: 60_000_000_000)
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [.loopback(upstream.port)]), accessLogs: logs) { gateway in
            for _ in 0..<2 { _ = try await gateway.request("GET", "/t/demo/echo/v1/x", headers: [("X-API-Key", TestWorld.apiKey)]) }
            let dropped: @Sendable () -> Int64 = { metrics.counters(label: "tollgate_gateway_log_records_dropped_total", dimensions: [("sink", "http"), ("reason", "rejected")]).map(\.totalValue).reduce(0, +) }
            try await Self.waitFor { dropped() == 2 }
            #expect(collector.received.count == 1)
        }
        await collector.stop()
        await upstream.stop()
    }

    @Test func theFileSinkWritesLinesAndReopensAtItsPath() async throws {
        // setup
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("accesslog-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/access.jsonl"
        let metrics = TestMetrics()
        let file = AccessLogFile(path: path, capacityBytes: 4096, metrics: LogSinkMetrics(sink: "file", factory: metrics))
        try file.open()
        // act: two lines, a rotation (rename, then reopen), one more
        file.append("{\"n\":1}\n")
        file.append("{\"n\":2}\n")
        #expect(file.writeQueued() == 2)
        try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
        file.append("{\"n\":3}\n")
        file.reopen()
        #expect(file.writeQueued() == 1)
        // a full buffer drops (4096 bytes)
        let big = String(repeating: "x", count: 3000) + "\n"
        file.append(big)
        file.append(big)
        file.close()
        // assert
        #expect(try String(contentsOfFile: path + ".1", encoding: .utf8) == "{\"n\":1}\n{\"n\":2}\n")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "{\"n\":3}\n" + big)
        let mode = try #require(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
        #expect(mode & 0o137 == 0)  // at most rw-r----- (0640)
        #expect(metrics.counters(label: "tollgate_gateway_log_records_dropped_total", dimensions: [("sink", "file"), ("reason", "buffer_full")]).map(\.totalValue).reduce(0, +) == 1)
        #expect(metrics.counters(label: "tollgate_gateway_log_records_sent_total", dimensions: [("sink", "file")]).map(\.totalValue).reduce(0, +) == 4)
    }

    @Test func theInstallationFileGetsEveryCallThroughTheGateway() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("accesslog-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/access.jsonl"
        let upstream = try await TestUpstream.start()
        let world = TestWorld()
        let logs = Self.logs(TestMetrics(), file: path)
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [.loopback(upstream.port)]), accessLogs: logs) { gateway in
            _ = try await gateway.request("GET", "/t/demo/echo/v1/f?k=\(AccessLogTests.querySecret)", headers: [("X-API-Key", TestWorld.apiKey)])
            _ = try await gateway.request("GET", "/t/demo/echo/v1/g", headers: [("X-API-Key", "tgk_wrong")])
            try await Self.waitFor { ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").count >= 2 }
        }
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let records = try text.split(separator: "\n").map { try Self.object(String($0)) }
        #expect(records.map { $0["status"] as? Int } == [200, 401])
        #expect(!text.contains(Self.querySecret) && !text.contains(TestWorld.apiKey) && !text.contains("tgk_wrong"))
        await upstream.stop()
    }

    @Test func anHTTP2CallIsLoggedWithItsProtocolAndACachedAPIWithItsCacheStatus() async throws {
        // setup: a cached API, the installation's collector
        let upstream = try await TestUpstream.start()
        let collector = try await TestCollector.start()
        let world = TestWorld()
        let logs = Self.logs(TestMetrics(), http: collector.url)
        let store = ResponseCacheStore()
        let cache = ResponseCachePolicy(config: ResponseCacheConfig(ttlSeconds: 60), store: store, fingerprint: 1)
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [.loopback(upstream.port)], responseCache: cache), accessLogs: logs) { gateway in
            // act: the same GET twice over h2c (a miss, then a hit), with a key in the query
            for _ in 0..<2 {
                _ = try TransformTests.curl([
                    "--http2-prior-knowledge", "-s", "-o", "/dev/null", "-H", "X-API-Key: \(TestWorld.apiKey)", "-H", "Host: gateway.test",
                    "http://127.0.0.1:\(gateway.port)/t/demo/echo/v1/h2?key=\(AccessLogTests.querySecret)",
                ])
            }
            // assert
            try await Self.waitFor { collector.lines.count >= 2 }
            let records = try collector.lines.map(Self.object)
            #expect(records.map { $0["protocol"] as? String } == ["HTTP/2", "HTTP/2"])
            #expect(records.map { $0["cache"] as? String } == ["miss", "hit"])
            #expect(records[1]["upstream_latency_ms"] is NSNull)  // the cache answered
            #expect(records.allSatisfy { $0["route"] as? String == "/t/demo/echo/v1/h2" })
            #expect(!collector.lines.contains { $0.contains(AccessLogTests.querySecret) || $0.contains(TestWorld.apiKey) })
        }
        await collector.stop()
        await upstream.stop()
    }

    @Test func whatASinkHoldsAtShutdownIsSentAfterTheGatewayDrained() async throws {
        // setup: batches that would wait a minute
        let upstream = try await TestUpstream.start()
        let collector = try await TestCollector.start()
        let world = TestWorld()
        let metrics = TestMetrics()
        var configuration = AccessLogs.Configuration(httpURL: collector.url)
        configuration.httpLimits = LogBatcher.Limits(capacity: 100, batchSize: 100, flushNanoseconds: 60_000_000_000)
        configuration.metricsFactory = metrics
        let logs = AccessLogs(configuration: configuration, logger: Logger(label: "test"))
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [.loopback(upstream.port)]), accessLogs: logs) { gateway in
            // act
            for _ in 0..<3 { _ = try await gateway.request("GET", "/t/demo/echo/v1/s", headers: [("X-API-Key", TestWorld.apiKey)]) }
            logs.recordGauges()
            #expect(metrics.recorders.first { $0.label == "tollgate_gateway_log_buffer_records" && $0.dimensions.contains { $0 == ("sink", "http") } }?.lastValue == 3)
            #expect(collector.received.isEmpty)
        }
        // assert: the harness stopped the gateway, then the sinks, which sent the three at once
        #expect(collector.lines.count == 3)
        #expect(collector.received.count == 1)
        #expect(metrics.counters(label: "tollgate_gateway_log_records_sent_total", dimensions: [("sink", "http")]).map(\.totalValue).reduce(0, +) == 3)
        await collector.stop()
        await upstream.stop()
    }

    @Test func aTenantsReloadReplacesOnlyThatTenantsSinks() {
        // setup: two tenants' APIs with sinks
        let logs = Self.logs(TestMetrics())
        let (tenantA, tenantB, apiA, apiB) = (UUID(), UUID(), UUID(), UUID())
        let config = HTTPLogConfig(url: "http://127.0.0.1:9/logs")
        let first = logs.apiSinks(for: [apiA: config, apiB: config], tenants: [apiA: tenantA, apiB: tenantB])
        // act: tenant A's reload finds its sink removed; tenant B's is not in that load at all
        let afterA = logs.apiSinks(for: [:], tenants: [:], onlyTenant: tenantA)
        let full = logs.apiSinks(for: [apiB: config], tenants: [apiB: tenantB])
        // assert
        #expect(afterA.isEmpty)
        #expect(full[apiB] === first[apiB])  // tenant B's sink survived tenant A's reload
        #expect(full[apiA] == nil)
        #expect(logs.apiSinks(for: [apiB: HTTPLogConfig(url: "http://127.0.0.1:9/other")], tenants: [apiB: tenantB])[apiB] !== first[apiB])
    }
}
