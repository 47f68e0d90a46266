import Billing
import Foundation
import Gateway
import Hummingbird
import HummingbirdTesting
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import Testing

@testable import Portal

/// The gateway against the real database: snapshots loaded from what the portal wrote, changes
/// applied from NOTIFY, tokens issued by the portal's OAuth server, quotas shared by two gateways.
@Suite struct GatewayIntegrationTests {
    struct Live: Sendable {
        let ports: [Int]
        let stores: [SnapshotStore]
        let usage: InMemoryUsageSink
    }

    /// `count` gateway processes' worth of services (each its own snapshot, quota tracker and
    /// listener) on the test database.
    static func withGateways(_ portal: TestPortal, count: Int = 1, sharedWindows: Bool = false, _ body: @Sendable (Live) async throws -> Void) async throws {
        let logger = Logger(label: "gateway-test")
        let client = portal.database.client
        let bound = AsyncStream<Int>.makeStream()
        let usage = InMemoryUsageSink()
        var services: [any Service] = []
        var stores: [SnapshotStore] = []
        for _ in 0..<count {
            let store = SnapshotStore()
            let quotas = QuotaTracker()
            stores.append(store)
            services.append(SnapshotReloader(
                    client: client, store: store, baseDomain: "localhost", publicURL: portal.services.config.publicURL, logger: logger,
                    debounce: .milliseconds(20)))
            services.append(QuotaSyncService(tracker: quotas, client: client, interval: .milliseconds(100), logger: logger))
            var windowTrackers: [PlanWindow.Span: QuotaTracker] = [:]
            if sharedWindows {
                for span in PlanWindow.Span.allCases {
                    windowTrackers[span] = QuotaTracker()
                    services.append(QuotaSyncService(tracker: windowTrackers[span]!, client: client, interval: .milliseconds(100), logger: logger))
                }
            }
            services.append(
                GatewayServer(
                    configuration: .init(host: "127.0.0.1", port: 0), store: store, rateLimiter: RateLimiter(windowTrackers: windowTrackers), quotas: quotas,
                    usage: usage, logger: logger,
                    metricsText: { "" }, onBound: { bound.continuation.yield($0) }))
        }
        let group = ServiceGroup(services: services, logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var ports: [Int] = []
            for await port in bound.stream {
                ports.append(port)
                if ports.count == count { break }
            }
            // a first load under the whole parallel suite can take several seconds: a generous bound
            for store in stores { try await eventually(seconds: 20) { store.currentStatus.loaded } }
            do { try await body(Live(ports: ports, stores: stores, usage: usage)) } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    /// Polls until `condition` holds, failing after `seconds` (a correctness bound, not a speed test).
    static func eventually(seconds: Double = 5, _ condition: @Sendable () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(25))
        }
        Issue.record("condition not met within \(seconds) s")
    }

    static func call(_ port: Int, _ path: String, headers: [(String, String)]) async throws -> (status: Int, text: String) {
        var text = "GET \(path) HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        let response = try await RawHTTP.exchange(port: port, text + "\r\n")
        return (Int(response.split(separator: " ").dropFirst().first ?? "") ?? 0, response)
    }

    /// A subscribed app whose API points at `upstream`; returns an access token and the subscription id.
    static func world(_ portal: TestPortal, _ client: some TestClientProtocol, upstream: String, plan: String? = nil) async throws
        -> (token: String, subscriptionID: String, setup: SubscriptionTests.Setup, clientID: String, secret: String)
    {
        let s = try await SubscriptionTests.setup(portal, client)
        _ = try await APITests.call(
            client, .patch, "/t/acme/api/v1/apis/\(s.apiID)", token: s.world.provider, body: #"{"targets":[{"url":"\#(upstream)","weight":1}]}"#)
        var planID = s.freePlan
        if let plan {
            planID = try APITests.json(try await APITests.call(client, .post, "/t/acme/api/v1/apis/\(s.apiID)/plans", token: s.world.provider, body: plan))["id"]
                as? String ?? ""
        }
        let subscription = try APITests.json(try await SubscriptionTests.subscribe(client, s, plan: planID))
        let detail = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/apps/\(s.appID)", token: s.world.developer))
        let clientID = (detail["app"] as? [String: Any])?["client_id"] as? String ?? ""
        let secret = try APITests.json(
            try await APITests.call(client, .post, "/t/acme/api/v1/apps/\(s.appID)/client-secrets", token: s.world.developer, body: "{}"))["secret"] as? String ?? ""
        let token = try APITests.json(try await OAuthTests.form(client, [("grant_type", "client_credentials")], basic: (clientID, secret)))["access_token"]
            as? String ?? ""
        return (token, subscription["id"] as? String ?? "", s, clientID, secret)
    }

    @Test func aPortalTokenReachesTheUpstreamThroughTheGateway() async throws {
        let upstream = try await WebhookReceiver.start()
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let w = try await Self.world(portal, client, upstream: "http://127.0.0.1:\(upstream.port)/base")
                try await Self.withGateways(portal) { live in
                    // act
                    let response = try await Self.call(live.ports[0], "/t/acme/echo/v1/hello?q=1", headers: [("Authorization", "Bearer \(w.token)")])
                    // assert
                    #expect(response.status == 200)
                    let seen = try #require(upstream.received.last)
                    #expect(seen.path == "/base/hello?q=1")
                    #expect(seen.headers["x-tollgate-subscription-id"] == w.subscriptionID.lowercased())
                    #expect(live.usage.billableCount == 1)
                }
            }
        }
        await upstream.stop()
    }

    /// A limit per client set through the portal reaches the gateway by NOTIFY and refuses the
    /// client before its credential is checked: a bad key gets 401 until the limit, then 429.
    @Test func aClientLimitFromThePortalRefusesBeforeTheCredentialCheck() async throws {
        let upstream = try await WebhookReceiver.start()
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let w = try await Self.world(portal, client, upstream: "http://127.0.0.1:\(upstream.port)")
                try await Self.withGateways(portal) { live in
                    let port = live.ports[0]
                    #expect(try await Self.call(port, "/t/acme/echo/v1/x", headers: [("Authorization", "Bearer \(w.token)")]).status == 200)
                    let version = live.stores[0].snapshot.version
                    // act: the provider adds a limit of 2 calls a minute per client address
                    let saved = try await APITests.call(
                        client, .put, "/t/acme/api/v1/apis/\(w.setup.apiID)/policies", token: w.setup.world.provider,
                        body: #"{"policies":[{"kind":"client_rate_limit","config":{"requests":2,"per_seconds":60}}]}"#)
                    #expect(saved.status == .ok)
                    try await Self.eventually { live.stores[0].snapshot.tenantsBySlug["acme"]?.routes.contains { !$0.preAuth.isEmpty } == true }
                    #expect(live.stores[0].snapshot.version > version)
                    // assert
                    var statuses: [Int] = []
                    for _ in 0..<3 { statuses.append(try await Self.call(port, "/t/acme/echo/v1/x", headers: [("X-API-Key", "tgk_bad")]).status) }
                    #expect(statuses == [401, 401, 429])
                    let good = try await Self.call(port, "/t/acme/echo/v1/x", headers: [("Authorization", "Bearer \(w.token)")])
                    #expect(good.status == 429)
                    #expect(good.text.contains("RateLimit-Policy: \"client\";q=2;w=60"))
                    #expect(live.usage.recent.filter { $0.rejection == .clientRateLimited }.allSatisfy { $0.appID == nil && !$0.isBillable })
                    #expect(live.usage.recent.filter { $0.rejection == .clientRateLimited }.count == 2)
                }
            }
        }
        await upstream.stop()
    }

    @Test func revocationsAndSuspensionsApplyFromTheChangeSignal() async throws {
        let upstream = try await WebhookReceiver.start()
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let w = try await Self.world(portal, client, upstream: "http://127.0.0.1:\(upstream.port)")
                let other = try APITests.json(try await OAuthTests.form(client, [("grant_type", "client_credentials")], basic: (w.clientID, w.secret)))[
                    "access_token"] as? String ?? ""
                try await Self.withGateways(portal) { live in
                    let port = live.ports[0]
                    #expect(try await Self.call(port, "/t/acme/echo/v1/x", headers: [("Authorization", "Bearer \(w.token)")]).status == 200)
                    // the client revokes its token: the gateway hears it through NOTIFY
                    let revoked = try await OAuthTests.form(client, [("token", w.token)], basic: (w.clientID, w.secret), path: "/t/acme/oauth2/revoke")
                    #expect(revoked.status == .ok)
                    try await Self.eventually {
                        try await Self.call(port, "/t/acme/echo/v1/x", headers: [("Authorization", "Bearer \(w.token)")]).status == 401
                    }
                    // the provider suspends the subscription: the other token is refused too
                    #expect(try await Self.call(port, "/t/acme/echo/v1/x", headers: [("Authorization", "Bearer \(other)")]).status == 200)
                    _ = try await SubscriptionTests.act(client, w.setup.world.provider, w.subscriptionID, #"{"action":"suspend","reason":"abuse"}"#)
                    try await Self.eventually {
                        try await Self.call(port, "/t/acme/echo/v1/x", headers: [("Authorization", "Bearer \(other)")]).status == 403
                    }
                    #expect(live.stores[0].snapshot.version > 1)
                }
            }
        }
        await upstream.stop()
    }

    /// A day window held by two gateways through leases, like the monthly quota: used to the unit,
    /// over by at most the advance of 2 per gateway.
    @Test func twoGatewaysShareOneDayWindow() async throws {
        let upstream = try await WebhookReceiver.start()
        let plan = """
            {"name":"Daily","rate_per_second":1000,"burst":1000,"per_day":30,"monthly_fee_minor":0,"included_requests":0,
             "tier_mode":"flat","tiers":[{"unit_price_micros":0}],"approval":"automatic","visibility":"public"}
            """
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let w = try await Self.world(portal, client, upstream: "http://127.0.0.1:\(upstream.port)", plan: plan)
                // an old window's row, which the leases prune, beside a month's, which they keep
                let subscription = try #require(UUID(uuidString: w.subscriptionID))
                try await portal.database.withSystemScope { connection in
                    _ = try await connection.query(
                        """
                        INSERT INTO quota_usage (tenant_id, subscription_id, period, used)
                        SELECT tenant_id, id, p, 5 FROM subscriptions, unnest(ARRAY['2020-01-01T10:00', '2020-01']) AS p WHERE id = \(subscription)
                        """, logger: TestDatabase.logger)
                }
                try await Self.withGateways(portal, count: 2, sharedWindows: true) { live in
                    let auth = [("Authorization", "Bearer \(w.token)")]
                    let startDay = PlanWindow.Span.day.period(containing: Int64(Date().timeIntervalSince1970))
                    var ok = 0, usedUpInARow = 0, calls = 0
                    // act: alternate between the gateways until both say the day is used up (bounded)
                    while usedUpInARow < 4 && calls < 1_000 {
                        calls += 1
                        let response = try await Self.call(live.ports[calls % 2], "/t/acme/echo/v1/x", headers: auth)
                        if response.status == 200 {
                            ok += 1
                            usedUpInARow = 0
                        } else if response.status == 429 && response.text.contains("requests per day (UTC)") {
                            usedUpInARow += 1
                        } else {
                            #expect(response.status == 429 && response.text.contains("momentarily"), "\(response.text)")
                            usedUpInARow = 0
                            try await Task.sleep(for: .milliseconds(20))
                        }
                    }
                    // a run across midnight UTC met two windows: its counts prove nothing (said, not hidden)
                    guard startDay == PlanWindow.Span.day.period(containing: Int64(Date().timeIntervalSince1970)) else {
                        print("twoGatewaysShareOneDayWindow crossed midnight UTC; bounds not checked")
                        return
                    }
                    // assert
                    #expect(usedUpInARow == 4)
                    #expect(ok >= 30 && ok <= 30 + 2 * 2, "admitted \(ok)")
                    let refused = try await Self.call(live.ports[0], "/t/acme/echo/v1/x", headers: auth)
                    #expect(refused.text.contains("RateLimit: \"day\";r=0;t="))
                    let day = PlanWindow.Span.day.period(containing: Int64(Date().timeIntervalSince1970))
                    let admitted = Int64(ok)
                    try await Self.eventually(seconds: 10) {
                        try await portal.database.withSystemScope { connection -> Int64 in
                            for try await n in try await connection.query(
                                "SELECT coalesce(sum(used), 0)::bigint FROM quota_usage WHERE period = \(day)", logger: TestDatabase.logger
                            ).decode(Int64.self) { return n }
                            return 0
                        } == admitted
                    }
                    let periods = try await portal.database.withSystemScope { connection in
                        var periods: [String] = []
                        for try await period in try await connection.query(
                            "SELECT period FROM quota_usage WHERE period LIKE '2020%' ORDER BY period", logger: TestDatabase.logger
                        ).decode(String.self) { periods.append(period) }
                        return periods
                    }
                    #expect(periods == ["2020-01"])
                }
            }
        }
        await upstream.stop()
    }

    @Test func twoGatewaysShareOneMonthlyQuota() async throws {
        let upstream = try await WebhookReceiver.start()
        let plan = """
            {"name":"Tiny","rate_per_second":1000,"burst":1000,"monthly_quota":30,"monthly_fee_minor":0,"included_requests":30,
             "tier_mode":"flat","tiers":[{"unit_price_micros":0}],"approval":"automatic","visibility":"public"}
            """
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let w = try await Self.world(portal, client, upstream: "http://127.0.0.1:\(upstream.port)", plan: plan)
                try await Self.withGateways(portal, count: 2) { live in
                    let auth = [("Authorization", "Bearer \(w.token)")]
                    // setup: calls alternate between the two gateways, each admitting from its own lease
                    var ok = 0, exhaustedInARow = 0, calls = 0
                    // act: until both have said the month is used up (bounded; a pending 429 waits a little)
                    while exhaustedInARow < 4 && calls < 1_000 {
                        calls += 1
                        let response = try await Self.call(live.ports[calls % 2], "/t/acme/echo/v1/x", headers: auth)
                        if response.status == 200 {
                            ok += 1
                            exhaustedInARow = 0
                        } else if response.status == 429 && response.text.contains("Quota exhausted") {
                            exhaustedInARow += 1
                        } else {
                            #expect(response.status == 429, "\(response.text)")
                            exhaustedInARow = 0
                            try await Task.sleep(for: .milliseconds(20))
                        }
                    }
                    // assert: the quota is used to the unit, over by at most the advance of 2 per gateway;
                    // quota_usage counts what was used (billable), not what was leased
                    #expect(exhaustedInARow == 4)
                    #expect(ok >= 30 && ok <= 30 + 2 * 2, "admitted \(ok)")
                    for port in live.ports {
                        let refused = try await Self.call(port, "/t/acme/echo/v1/x", headers: auth)
                        #expect(refused.status == 429)
                        #expect(refused.text.contains("Quota exhausted"))
                    }
                    let admitted = Int64(ok)
                    try await Self.eventually(seconds: 10) {
                        try await portal.database.withSystemScope { connection -> Int64 in
                            for try await n in try await connection.query("SELECT coalesce(sum(used), 0)::bigint FROM quota_usage", logger: TestDatabase.logger)
                                .decode(Int64.self) { return n }
                            return 0
                        } == admitted
                    }
                }
            }
        }
        await upstream.stop()
    }
}

/// Raw HTTP/1.1 over loopback: writes the request, returns what arrives until the server closes
/// (bounded by a 10 s timer so a stuck server fails the test instead of hanging it).
enum RawHTTP {
    static func exchange(port: Int, _ request: String) async throws -> String {
        let group = MultiThreadedEventLoopGroup.singleton
        let promise = group.next().makePromise(of: String.self)
        let text = NIOLockedValueBox("")
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Collector(text: text, promise: promise)) }
                }
                .connect(host: "127.0.0.1", port: port).get()
        } catch {
            promise.fail(error)
            throw error
        }
        try await channel.writeAndFlush(ByteBuffer(string: request))
        channel.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
        return try await promise.futureResult.get()
    }

    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let text: NIOLockedValueBox<String>
        let promise: EventLoopPromise<String>

        init(text: NIOLockedValueBox<String>, promise: EventLoopPromise<String>) {
            self.text = text
            self.promise = promise
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let chunk = String(buffer: unwrapInboundIn(data))
            text.withLockedValue { $0 += chunk }
        }

        func channelInactive(context: ChannelHandlerContext) { promise.succeed(text.withLockedValue { $0 }) }

        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }
}
