import Billing
import Foundation
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

    @Test func eventsWaitInTheSpoolWhilePostgresIsDownAndArriveOnceItIsBack() async throws {
        try await TestDatabase.withDatabase { database in
            let tenant = try await Fixtures.tenant(database, slug: "acme")
            let spool = FileManager.default.temporaryDirectory.appendingPathComponent("spool-\(UUID().uuidString).jsonl").path
            defer { try? FileManager.default.removeItem(atPath: spool) }
            struct Down: Error {}
            let configuration = UsageMeter.Configuration(gateway: "g1", spoolPath: spool)
            // a meter whose database is unreachable spools both flushes, in order
            let offline = UsageMeter(configuration: configuration, logger: database.logger, write: { _ in throw Down() })
            for i in 0..<5 { offline.record(Self.event(tenant: tenant.id, subscription: nil, at: Date().addingTimeInterval(Double(i)))) }
            await offline.flush()
            for i in 5..<8 { offline.record(Self.event(tenant: tenant.id, subscription: nil, at: Date().addingTimeInterval(Double(i)))) }
            await offline.flush()
            #expect(offline.isSpooling)
            #expect(try await Self.count(database, "SELECT count(*)::text FROM usage_events") == ["0"])
            // once Postgres answers, the spool is replayed first and emptied
            let store = UsageStore(logger: database.logger)
            let online = UsageMeter(configuration: configuration, logger: database.logger, write: { try await store.write($0, client: database.client) })
            online.record(Self.event(tenant: tenant.id, subscription: nil, at: Date().addingTimeInterval(100)))
            await online.flush()
            #expect(!online.isSpooling)
            #expect(try await Self.count(database, "SELECT count(*)::text FROM usage_events") == ["9"])
            // the gateway-side tally came through the spool too, under the meter that counted it
            #expect(try await Self.count(database, "SELECT sum(answered)::text FROM usage_answered") == ["9"])
            #expect(try await Self.count(database, "SELECT count(DISTINCT meter_id)::text FROM usage_answered") == ["2"])
            // replaying the same events again changes nothing
            await online.flush()
            #expect(try await Self.count(database, "SELECT sum(calls)::text FROM usage_hourly_live") == ["9"])
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
