import Billing
import Foundation
import NIOConcurrencyHelpers
import PostgresNIO
import Testing

@testable import Portal

/// The durable meter against the real database: idempotent batches, rollups, the spool.
@Suite struct MeterTests {
    static func event(tenant: UUID, subscription: UUID?, at: Date, status: Int = 200, latency: Int64 = 800, rejection: UsageEvent.Rejection? = nil)
        -> UsageEvent
    {
        UsageEvent(
            at: at, tenantID: tenant, apiID: UUID(), appID: nil, subscriptionID: subscription, planID: nil, method: "GET", status: status, latencyMicroseconds: latency,
            bytesIn: 10, bytesOut: 100, rejection: rejection, forwarded: rejection == nil)
    }

    static func count(_ database: Database, _ sql: String) async throws -> [String] {
        try await database.withSystemScope { connection in
            var rows: [String] = []
            for try await row in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: database.logger).decode(String.self) { rows.append(row) }
            return rows
        }
    }

    @Test func aReplayedBatchIsStoredAndCountedOnce() async throws {
        try await TestDatabase.withDatabase { database in
            // setup
            let tenant = try await Fixtures.tenant(database, slug: "acme")
            let subscription = UUID()
            let hour = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 / 3600).rounded(.down) * 3600)
            let events = [
                Self.event(tenant: tenant.id, subscription: subscription, at: hour.addingTimeInterval(10), latency: 90),
                Self.event(tenant: tenant.id, subscription: subscription, at: hour.addingTimeInterval(20), status: 503, latency: 2_000),
                Self.event(tenant: tenant.id, subscription: subscription, at: hour.addingTimeInterval(30), status: 429, rejection: .rateLimited),
                Self.event(tenant: tenant.id, subscription: nil, at: hour.addingTimeInterval(40), status: 401, rejection: .unauthenticated),
            ]
            let store = UsageStore(logger: database.logger)
            // act
            let first = try await store.write(UsageBatch(meterID: "g1", events: events), client: database.client)
            let again = try await store.write(UsageBatch(meterID: "g1", events: events), client: database.client)
            let late = Self.event(tenant: tenant.id, subscription: nil, at: hour.addingTimeInterval(50), status: 401, rejection: .unauthenticated)
            let mixed = try await store.write(UsageBatch(meterID: "g1", events: events + [late]), client: database.client)
            let folded = try await store.fold(client: database.client)
            // assert
            #expect(first == 4)
            #expect(again == 0)
            #expect(mixed == 1)  // only the one not stored before
            #expect(folded == 3)  // one delta per (subscription, hour) of the first write, one of the mixed; none of the replay
            #expect(try await Self.count(database, "SELECT count(*)::text FROM usage_events") == ["5"])
            #expect(try await Self.count(database, "SELECT count(*)::text FROM usage_deltas") == ["0"])
            let rollup = try await Self.count(
                database,
                "SELECT calls || ' ' || billable || ' ' || errors || ' ' || rejected::text || ' ' || status_2xx || status_4xx || status_5xx || ' ' || bytes_out FROM usage_hourly WHERE subscription_id = '\(subscription)'")
            #expect(rollup == ["3 1 1 {\"rate_limited\": 1} 111 300"])
            let anonymous = try await Self.count(
                database, "SELECT calls::text FROM usage_hourly WHERE subscription_id = '00000000-0000-0000-0000-000000000000'")
            #expect(anonymous == ["2"])
            let buckets = try await Self.count(database, "SELECT latency::text FROM usage_hourly WHERE subscription_id = '\(subscription)'")
            let counts = (buckets.first ?? "").trimmingCharacters(in: CharacterSet(charactersIn: "{}")).split(separator: ",").compactMap { Int64($0) }
            #expect(counts.count == LatencyHistogram.bounds.count)  // the fold sums each bucket by position
            #expect(counts.reduce(0, +) == 3)
            #expect(counts[LatencyHistogram.bucket(90)] == 1)
            #expect(counts[LatencyHistogram.bucket(2_000)] == 1)
        }
    }

    @Test func dailyRollupsSumTheHoursOfEachUTCDayOnce() async throws {
        try await TestDatabase.withDatabase { database in
            // setup: calls on both sides of a UTC midnight, in two batches
            let tenant = try await Fixtures.tenant(database, slug: "acme")
            let subscription = UUID()
            let midnight = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 / 86_400).rounded(.down) * 86_400)
            let first = [
                Self.event(tenant: tenant.id, subscription: subscription, at: midnight.addingTimeInterval(-60)),
                Self.event(tenant: tenant.id, subscription: subscription, at: midnight.addingTimeInterval(-30), status: 503),
                Self.event(tenant: tenant.id, subscription: subscription, at: midnight.addingTimeInterval(60), status: 429, rejection: .rateLimited),
                Self.event(tenant: tenant.id, subscription: subscription, at: midnight.addingTimeInterval(7_200)),
            ]
            let second = [Self.event(tenant: tenant.id, subscription: subscription, at: midnight.addingTimeInterval(7_300))]
            let store = UsageStore(logger: database.logger)
            // act: the first batch is replayed once
            try await store.write(UsageBatch(meterID: "g1", events: first), client: database.client)
            try await store.write(UsageBatch(meterID: "g1", events: second), client: database.client)
            try await store.write(UsageBatch(meterID: "g1", events: first), client: database.client)
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withFullDate]
            let yesterday = formatter.string(from: midnight.addingTimeInterval(-1))
            let today = formatter.string(from: midnight)
            // assert: before any fold, readers of the live view already see every call, by day
            let live = try await Self.count(
                database,
                "SELECT day::text || ' ' || sum(calls) || ' ' || sum(billable) || ' ' || sum(rejected) || ' ' || sum(errors) || ' ' || sum(bytes_out) FROM usage_daily_live WHERE subscription_id = '\(subscription)' GROUP BY day ORDER BY day")
            #expect(live == ["\(yesterday) 2 1 0 1 200", "\(today) 3 2 1 0 300"])
            #expect(try await Self.count(database, "SELECT count(*)::text FROM usage_daily") == ["0"])
            // and after it, one row per day holds them: day, calls, billable, rejected, errors, bytes out
            #expect(try await store.fold(client: database.client) == 4)  // 3 hours of the first batch, 1 of the second
            let daily = try await Self.count(
                database,
                "SELECT day::text || ' ' || calls || ' ' || billable || ' ' || rejected || ' ' || errors || ' ' || bytes_out FROM usage_daily WHERE subscription_id = '\(subscription)' ORDER BY day")
            #expect(daily == ["\(yesterday) 2 1 0 1 200", "\(today) 3 2 1 0 300"])
            let hourlyByDay = try await Self.count(
                database,
                "SELECT day || ' ' || sum(calls) || ' ' || sum(billable) FROM (SELECT (hour AT TIME ZONE 'UTC')::date::text AS day, calls, billable FROM usage_hourly WHERE subscription_id = '\(subscription)') h GROUP BY day ORDER BY day")
            #expect(hourlyByDay == ["\(yesterday) 2 1", "\(today) 3 2"])
            // a second fold finds nothing left and changes nothing
            #expect(try await store.fold(client: database.client) == 0)
            #expect(try await Self.count(database, "SELECT sum(calls)::text FROM usage_daily WHERE subscription_id = '\(subscription)'") == ["5"])
        }
    }

    @Test func foldsRacingWritesAndEachOtherCountEveryCallOnce() async throws {
        try await TestDatabase.withDatabase { database in
            // setup: 3 subscriptions, 40 batches of 25 calls on the current hour
            let tenant = try await Fixtures.tenant(database, slug: "acme")
            let subscriptions = [UUID(), UUID(), UUID()]
            let hour = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 / 3600).rounded(.down) * 3600)
            let batches = (0..<40).map { b in
                (0..<25).map { i in
                    Self.event(tenant: tenant.id, subscription: subscriptions[(b + i) % 3], at: hour.addingTimeInterval(60 + Double(b * 25 + i) / 1000))
                }
            }
            let store = UsageStore(logger: database.logger)
            // act: two writers and two folders at once, then a last fold
            try await withThrowingTaskGroup(of: Void.self) { group in
                for half in 0..<2 {
                    group.addTask {
                        for batch in batches[(half * 20)..<(half * 20 + 20)] {
                            try await store.write(UsageBatch(meterID: "g\(half)", events: batch), client: database.client)
                        }
                    }
                    group.addTask {
                        for _ in 0..<10 { try await store.fold(client: database.client) }
                    }
                }
                try await group.waitForAll()
            }
            try await store.fold(client: database.client)
            // assert: every call once in the hourly and the daily rollups, one row per key, nothing left over
            #expect(try await Self.count(database, "SELECT sum(calls)::text || ' ' || count(*) FROM usage_hourly") == ["1000 3"])
            #expect(try await Self.count(database, "SELECT sum(calls)::text || ' ' || count(*) FROM usage_daily") == ["1000 3"])
            #expect(try await Self.count(database, "SELECT count(*)::text FROM usage_deltas") == ["0"])
        }
    }

    /// A write-ahead spool directory of a test's own.
    static func spoolDirectory() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("spool-\(UUID().uuidString)").path
    }

    static func segments(_ directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".wal") }
    }

    static func eventually(_ what: String, seconds: Double = 20, _ condition: @Sendable () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("never happened: \(what)")
    }

    /// A switchable database: while `down`, writes fail (an outage) or never return (a hung
    /// connection); otherwise they reach the real store.
    final class Switch: Sendable {
        enum Mode { case up, failing, hanging }
        struct Refused: Error, CustomStringConvertible {
            var description: String { "connection refused" }
        }
        let mode = NIOLockedValueBox(Mode.up)
        let reports = NIOLockedValueBox<[UsageMeter.Progress]>([])

        func write(_ batch: UsageBatch, store: UsageStore, client: PostgresClient) async throws {
            switch mode.withLockedValue({ $0 }) {
            case .up: try await store.write(batch, client: client)
            case .failing: throw Refused()
            case .hanging:
                // never returns and ignores cancellation, as a query on a dead connection did
                await withUnsafeContinuation { (_: UnsafeContinuation<Void, Never>) in }
            }
        }
    }

    static func meter(_ database: Database, _ db: Switch, directory: String, tweak: (inout UsageMeter.Configuration) -> Void = { _ in }) -> UsageMeter {
        var configuration = UsageMeter.Configuration(gateway: "g1", spoolDirectory: directory)
        configuration.writeTimeout = .milliseconds(300)
        configuration.retryDelay = .milliseconds(20)
        configuration.maxRetryDelay = .milliseconds(100)
        configuration.shutdownTimeout = .seconds(2)
        tweak(&configuration)
        let store = UsageStore(logger: database.logger)
        let client = database.client
        return UsageMeter(
            configuration: configuration, logger: database.logger, write: { try await db.write($0, store: store, client: client) },
            report: { progress in
                db.reports.withLockedValue { $0.append(progress) }
                guard db.mode.withLockedValue({ $0 }) == .up else { throw CancellationError() }
            })
    }

    @Test func eventsWaitInTheSpoolWhilePostgresIsDownAndArriveOnceItIsBack() async throws {
        try await TestDatabase.withDatabase { database in
            // setup: a meter whose database refuses every write
            let tenant = try await Fixtures.tenant(database, slug: "acme")
            let directory = Self.spoolDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let db = Switch()
            db.mode.withLockedValue { $0 = .failing }
            let meter = Self.meter(database, db, directory: directory)
            let running = Task { try await meter.run() }
            // act: calls during the outage
            for i in 0..<8 { meter.record(Self.event(tenant: tenant.id, subscription: nil, at: Date().addingTimeInterval(Double(i) / 1000))) }
            // assert: all of them durable in the spool, none in Postgres, the state says why
            try await Self.eventually("8 events spooled") { meter.status.spoolEvents == 8 && meter.status.state == .spooling }
            #expect(meter.status.lastError == "connection refused", "\(meter.status)")
            #expect(meter.status.spoolBytes > 8 * 100)
            #expect(!Self.segments(directory).isEmpty)
            #expect(try await Self.count(database, "SELECT count(*)::text FROM usage_events") == ["0"])
            // act: Postgres is back
            db.mode.withLockedValue { $0 = .up }
            try await Self.eventually("the spool replayed") { try await Self.count(database, "SELECT count(*)::text FROM usage_events") == ["8"] }
            try await Self.eventually("segments deleted once confirmed") { meter.status.spoolEvents == 0 && Self.segments(directory).isEmpty }
            // numbered 1…8 for this tenant and month, in the order they were recorded
            #expect(try await Self.count(database, "SELECT string_agg(seq::text, ',' ORDER BY seq) FROM usage_events") == ["1,2,3,4,5,6,7,8"])
            #expect(meter.status.state == .writing)
            // act: more calls, and a shutdown while their segment is still open for appends
            for i in 8..<10 { meter.record(Self.event(tenant: tenant.id, subscription: nil, at: Date().addingTimeInterval(Double(i) / 1000))) }
            running.cancel()
            try await running.value
            // assert: stored, and no segment left behind (it was confirmed)
            #expect(try await Self.count(database, "SELECT count(*)::text FROM usage_events") == ["10"])
            #expect(Self.segments(directory).isEmpty)
        }
    }

    @Test func aWriteThatNeverReturnsDoesNotStopTheMeter() async throws {
        try await TestDatabase.withDatabase { database in
            // setup: writes hang (and ignore cancellation) — the freeze seen in Postgres outages
            let tenant = try await Fixtures.tenant(database, slug: "acme")
            let directory = Self.spoolDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let db = Switch()
            db.mode.withLockedValue { $0 = .hanging }
            let meter = Self.meter(database, db, directory: directory)
            let running = Task { try await meter.run() }
            // act: calls keep coming while the writes hang, then the database recovers
            for i in 0..<5 { meter.record(Self.event(tenant: tenant.id, subscription: nil, at: Date().addingTimeInterval(Double(i) / 1000))) }
            try await Self.eventually("5 spooled despite the hung write") { meter.status.spoolEvents == 5 }
            try await Self.eventually("the hung write given up") { meter.status.lastError?.contains("did not answer") == true }
            for i in 5..<9 { meter.record(Self.event(tenant: tenant.id, subscription: nil, at: Date().addingTimeInterval(Double(i) / 1000))) }
            try await Self.eventually("9 spooled") { meter.status.spoolEvents == 9 }
            db.mode.withLockedValue { $0 = .up }
            // assert: everything arrives once the database answers again
            try await Self.eventually("stored after recovery") { try await Self.count(database, "SELECT count(*)::text FROM usage_events") == ["9"] }
            running.cancel()
            try await running.value
        }
    }

    /// A query that never answers (a half-open connection, a stopped server) inside the meter's
    /// two deadlines — the write's and the connection's: whichever fires first, the connection is
    /// abandoned, and the next operation runs on a new one instead of queueing behind the stuck query.
    @Test func aQueryPastItsDeadlineGivesUpItsConnection() async throws {
        // setup
        let connection = MeterConnection(configuration: try DatabaseURL(TestDatabase.url).connectionConfiguration(), logger: TestDatabase.logger)
        let backend: @Sendable (PostgresConnection) async throws -> Int32 = { connection in
            var pid: Int32 = 0
            for try await value in try await connection.query("SELECT pg_backend_pid()", logger: TestDatabase.logger).decode(Int32.self) { pid = value }
            return pid
        }
        let first = try await connection.run(deadline: .seconds(10), backend)
        // act: a query that outlives the deadline, wrapped in an enclosing deadline of the same length
        // (as the meter's write is), so the outer one may be the one that fires
        await #expect(throws: (any Error).self) {
            try await Deadline.run(.milliseconds(300)) {
                try await connection.run(deadline: .milliseconds(300)) { connection in
                    for try await _ in try await connection.query("SELECT pg_sleep(30)", logger: TestDatabase.logger) {}
                    return 0
                }
            }
        }
        let second = try await connection.run(deadline: .seconds(5), backend)
        // assert: a new backend answered at once (the stuck one would have held the query 30 s)
        #expect(second != first)
        await connection.close()
    }

    @Test func aShutdownWithPostgresDownEndsAndTheNextRunReplaysTheSpool() async throws {
        try await TestDatabase.withDatabase { database in
            let tenant = try await Fixtures.tenant(database, slug: "acme")
            let directory = Self.spoolDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let db = Switch()
            db.mode.withLockedValue { $0 = .failing }
            // act: a run that answers 6 calls and shuts down while Postgres is away
            let first = Self.meter(database, db, directory: directory)
            let running = Task { try await first.run() }
            for i in 0..<6 { first.record(Self.event(tenant: tenant.id, subscription: nil, at: Date().addingTimeInterval(Double(i) / 1000))) }
            try await Self.eventually("spooled") { first.status.spoolEvents == 6 }
            running.cancel()
            try await running.value  // returns: the shutdown is bounded although nothing can be written
            #expect(Self.segments(directory).count >= 1)
            #expect(try await Self.count(database, "SELECT count(*)::text FROM usage_events") == ["0"])
            // the next run on the directory, with Postgres back, replays it and reports how it ended
            db.mode.withLockedValue { $0 = .up }
            let second = Self.meter(database, db, directory: directory)
            let again = Task { try await second.run() }
            try await Self.eventually("replayed") { try await Self.count(database, "SELECT count(*)::text FROM usage_events") == ["6"] }
            try await Self.eventually("the earlier run reported as ended cleanly") {
                db.reports.withLockedValue { $0.contains { $0.meterID == second.meterID && $0.earlierRuns.map(\.meterID) == [first.meterID] && $0.earlierRuns[0].clean } }
            }
            #expect(try await Self.count(database, "SELECT DISTINCT gateway FROM usage_events") == [first.meterID])
            try await Self.eventually("segments gone") { Self.segments(directory).isEmpty }
            again.cancel()
            try await again.value
        }
    }

    /// A spool at its cap during an outage says "degraded"; once Postgres took the backlog and the
    /// segments are gone it says "writing" again, whether or not another call comes to try it.
    @Test func aFullSpoolIsNoLongerDegradedOnceItsBacklogIsWritten() async throws {
        try await TestDatabase.withDatabase { database in
            let tenant = try await Fixtures.tenant(database, slug: "acme")
            let directory = Self.spoolDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let db = Switch()
            db.mode.withLockedValue { $0 = .failing }
            let meter = Self.meter(database, db, directory: directory) { $0.spoolCapBytes = 2_000 }
            let running = Task { try await meter.run() }
            // act: an outage long enough to fill the spool
            for i in 0..<60 {
                meter.record(Self.event(tenant: tenant.id, subscription: nil, at: Date().addingTimeInterval(Double(i) / 1000)))
                if i % 10 == 9 { try await Task.sleep(for: .milliseconds(70)) }
            }
            try await Self.eventually("degraded") { meter.status.state == .degraded }
            db.mode.withLockedValue { $0 = .up }
            // assert: everything stored, and the state recovers with no further call
            try await Self.eventually("stored") { try await Self.count(database, "SELECT count(*)::text FROM usage_events") == ["60"] }
            try await Self.eventually("writing again") { meter.status.state == .writing }
            running.cancel()
            try await running.value
        }
    }

    @Test func whenTheSpoolRefusesEventsTheyGoToPostgresFromMemoryOrAreCountedAsDropped() async throws {
        try await TestDatabase.withDatabase { database in
            let tenant = try await Fixtures.tenant(database, slug: "acme")
            let directory = Self.spoolDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let db = Switch()
            // setup: a spool that takes nothing (a full disk), memory for 10 events
            let meter = Self.meter(database, db, directory: directory) {
                $0.spoolCapBytes = 0
                $0.memoryCapEvents = 10
            }
            let running = Task { try await meter.run() }
            // act: with Postgres up, nothing is lost
            for i in 0..<4 { meter.record(Self.event(tenant: tenant.id, subscription: nil, at: Date().addingTimeInterval(Double(i) / 1000))) }
            try await Self.eventually("stored from memory") { try await Self.count(database, "SELECT count(*)::text FROM usage_events") == ["4"] }
            #expect(meter.status.state == .degraded)
            // act: with Postgres down as well, what memory cannot hold is dropped, and counted
            db.mode.withLockedValue { $0 = .failing }
            for i in 0..<30 {
                meter.record(Self.event(tenant: tenant.id, subscription: nil, at: Date().addingTimeInterval(Double(4 + i) / 1000)))
                if i % 5 == 4 { try await Task.sleep(for: .milliseconds(80)) }
            }
            try await Self.eventually("drops counted") { meter.status.dropped > 0 }
            db.mode.withLockedValue { $0 = .up }
            try await Self.eventually("the rest stored") { meter.status.backlogEvents == 0 }
            // assert: stored + dropped = answered, and the numbers show the gap
            let stored = Int(try await Self.count(database, "SELECT count(*)::text FROM usage_events").first ?? "") ?? -1
            #expect(stored + meter.status.dropped == 34)
            #expect(try await Self.count(database, "SELECT max(seq)::text FROM usage_events").first.flatMap { Int($0) } ?? 0 <= 34)
            running.cancel()
            try await running.value
        }
    }

    @Test func usageExportsAsCSVByDayAndSubscriptionWithNames() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup: a real subscription (team, app, API, plan) and metered calls on two days
                let s = try await SubscriptionTests.setup(portal, client)
                let subscription = try APITests.json(try await SubscriptionTests.subscribe(client, s, plan: s.freePlan))
                let subscriptionID = try #require(UUID(uuidString: subscription["id"] as? String ?? ""))
                let tenant = try #require(
                    try await portal.database.withPlatform { try await TenantRepository(logger: TestDatabase.logger).find(slug: "acme", on: $0) })
                let day1 = try #require(ISO8601DateFormatter().date(from: "2026-11-03T10:00:00Z"))
                let day2 = try #require(ISO8601DateFormatter().date(from: "2026-11-04T23:30:00Z"))
                var events = (0..<3).map { Self.event(tenant: tenant.id, subscription: subscriptionID, at: day1.addingTimeInterval(Double($0))) }
                events.append(Self.event(tenant: tenant.id, subscription: subscriptionID, at: day2, status: 429, rejection: .rateLimited))
                try await UsageStore(logger: TestDatabase.logger).write(UsageBatch(meterID: "g1", events: events), client: portal.database.client)
                // a name that needs quoting in CSV
                try await portal.database.withSystemScope { connection in
                    try await connection.query("UPDATE apps SET name = 'Billing \"sync\", v2' WHERE name = 'Billing sync'", logger: TestDatabase.logger)
                }
                // act
                var csv = ""
                let rows = try await UsageExport(client: portal.database.client, logger: TestDatabase.logger).run(
                    tenant: "acme", from: try #require(ISO8601DateFormatter().date(from: "2026-11-01T00:00:00Z")),
                    to: try #require(ISO8601DateFormatter().date(from: "2026-12-01T00:00:00Z"))
                ) { csv += $0 }
                // assert
                #expect(rows == 2)
                let lines = csv.components(separatedBy: "\r\n").filter { !$0.isEmpty }
                try #require(lines.count == 3)
                #expect(lines.first == UsageExport.header.joined(separator: ","))
                #expect(lines[1].hasPrefix("2026-11-03,acme,"))
                #expect(lines[1].contains(",Users,"))
                #expect(lines[1].contains(",\"Billing \"\"sync\"\", v2\","))
                #expect(lines[1].contains(",echo,v1,"))
                #expect(lines[1].hasSuffix(",3,3,0,0,30,300"))
                #expect(lines[2].hasPrefix("2026-11-04,"))
                #expect(lines[2].hasSuffix(",1,0,1,0,10,100"))
            }
        }
    }
}
