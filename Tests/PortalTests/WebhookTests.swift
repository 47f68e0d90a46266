import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import Portal

/// Webhook rules that need no I/O: backoff, signatures, target addresses.
@Suite struct WebhookRuleTests {
    @Test(arguments: [
        (1, 0.5, WebhookRetryPolicy.Decision.retry(afterSeconds: 15)),
        (2, 0.5, .retry(afterSeconds: 30)),
        (3, 0.5, .retry(afterSeconds: 60)),
        (9, 0.5, .retry(afterSeconds: 3600)),  // 15 * 2^8 = 3840, capped
        (1, 0.0, .retry(afterSeconds: 12)),  // -20 %
        (1, 1.0, .retry(afterSeconds: 18)),  // +20 %
        (10, 0.5, .giveUp),
        (50, 0.5, .giveUp),
    ])
    func backoffDoublesUpToTheCapThenGivesUp(attempts: Int, random: Double, expected: WebhookRetryPolicy.Decision) {
        #expect(WebhookRetryPolicy().decide(afterFailedAttempts: attempts, random: random) == expected)
    }

    @Test func signaturesVerifyOnlyForTheSameSecretBodyAndFreshTimestamp() {
        let body = Array(#"{"type":"subscription.approved"}"#.utf8)
        let header = WebhookSignature.header(secret: "whsec_a", timestamp: 1_700_000_000, body: body)
        #expect(header.hasPrefix("t=1700000000,v1="))
        #expect(WebhookSignature.verify(header: header, secret: "whsec_a", body: body, now: 1_700_000_100))
        #expect(!WebhookSignature.verify(header: header, secret: "whsec_b", body: body, now: 1_700_000_100))
        #expect(!WebhookSignature.verify(header: header, secret: "whsec_a", body: body + [0x20], now: 1_700_000_100))
        #expect(!WebhookSignature.verify(header: header, secret: "whsec_a", body: body, now: 1_700_000_301))
        #expect(!WebhookSignature.verify(header: "garbage", secret: "whsec_a", body: body, now: 1_700_000_000))
    }

    @Test(arguments: [
        ("8.8.8.8", WebhookTargetPolicy.AddressKind.public), ("127.0.0.1", .loopback), ("127.9.9.9", .loopback), ("10.1.2.3", .private),
        ("172.16.0.1", .private), ("172.32.0.1", .public), ("192.168.1.1", .private), ("169.254.169.254", .linkLocal), ("100.64.0.1", .sharedNAT),
        ("0.0.0.0", .unspecified), ("224.0.0.1", .multicast), ("255.255.255.255", .reserved), ("::1", .loopback), ("::", .unspecified),
        ("fd00::1", .private), ("fe80::1", .linkLocal), ("ff02::1", .multicast), ("::ffff:127.0.0.1", .loopback), ("2606:4700::1111", .public),
        ("example.com", .invalid), ("1.2.3", .invalid),
    ])
    func addressesAreClassified(address: String, kind: WebhookTargetPolicy.AddressKind) {
        #expect(WebhookTargetPolicy.classify(address) == kind)
    }

    @Test func targetURLsAreCheckedBeforeTheyAreStored() throws {
        let strict = WebhookTargetPolicy(allowPrivateNetworks: false, ownPorts: [8080, 8000])
        #expect(try strict.validate("https://hooks.example.com/tollgate").port == 443)
        for bad in [
            "ftp://example.com/x", "example.com/hook", "https://user:pw@example.com/", "http://127.0.0.1:9000/", "http://localhost/x",
            "http://169.254.169.254/latest/meta-data", "http://[::1]:9000/", "http://10.0.0.5/", "https://example.com/#frag",
        ] {
            #expect(throws: AppError.self, "\(bad)") { try strict.validate(bad) }
        }
        let local = WebhookTargetPolicy(allowPrivateNetworks: true, ownPorts: [8080, 8000])
        #expect(try local.validate("http://127.0.0.1:9000/hooks").host == "127.0.0.1")
        #expect(throws: AppError.self) { try local.validate("http://127.0.0.1:8080/t/demo/api/v1/me") }
        #expect(throws: AppError.self) { try local.validate("http://localhost:8000/echo") }
        #expect(throws: AppError.self) { try local.check(addresses: ["93.184.216.34", "127.0.0.1"], port: 8000) }
        #expect(throws: AppError.self) { try strict.check(addresses: [], port: 443) }
    }
}

/// Webhooks end to end: outbox rows written with the change, signed deliveries to a real HTTP
/// receiver on loopback, retries, the delivery log and redelivery.
@Suite struct WebhookDeliveryTests {
    static func allowLoopback(_ config: inout AppConfig) { config.webhooksAllowPrivateNetworks = true }

    /// A dispatcher for the test's duration (its HTTP client must be shut down, even when the test throws).
    static func withDispatcher<T: Sendable>(
        _ portal: TestPortal, targets: WebhookTargetPolicy? = nil, _ body: (WebhookDispatcher) async throws -> T
    ) async throws -> T {
        let dispatcher = WebhookDispatcher(
            database: portal.database, secret: portal.services.secret, targets: targets ?? portal.services.config.webhookTargets,
            logger: TestDatabase.logger)
        do {
            let result = try await body(dispatcher)
            try await dispatcher.shutdown()
            return result
        } catch {
            try? await dispatcher.shutdown()
            throw error
        }
    }

    static func register(_ client: some TestClientProtocol, token: String, body: String) async throws -> (id: String, secret: String) {
        let response = try await APITests.call(client, .post, "/t/acme/api/v1/webhooks", token: token, body: body)
        #expect(response.status == .created)
        let json = try APITests.json(response)
        return ((json["endpoint"] as? [String: Any])?["id"] as? String ?? "", json["secret"] as? String ?? "")
    }

    @Test func subscriptionEventsReachTheTeamsInvolvedSigned() async throws {
        let receiver = try await WebhookReceiver.start()
        try await TestPortal.with(configure: Self.allowLoopback) { portal in
            try await portal.application().test(.router) { client in
                // setup: the consumer team hears everything about its apps; the provider team only new requests
                let s = try await SubscriptionTests.setup(portal, client)
                let consumer = try await Self.register(
                    client, token: s.world.developer, body: #"{"url":"\#(receiver.url)/consumer","team_id":"\#(s.world.consumerTeam)"}"#)
                let provider = try await Self.register(
                    client, token: s.world.provider,
                    body: #"{"url":"\#(receiver.url)/provider","team_id":"\#(s.world.providerTeam)","events":["subscription.requested"]}"#)
                #expect(consumer.secret.hasPrefix("whsec_"))
                // act
                let id = try APITests.json(try await SubscriptionTests.subscribe(client, s, plan: s.proPlan))["id"] as? String ?? ""
                #expect(try await SubscriptionTests.act(client, s.world.provider, id, #"{"action":"approve"}"#).status == .ok)
                let sent = try await Self.withDispatcher(portal) { try await $0.deliverDue() }
                // assert
                #expect(sent == 3)
                let received = receiver.received
                #expect(received.count == 3)
                let now = Int(Date().timeIntervalSince1970)
                for request in received {
                    let secret = request.path.hasSuffix("/consumer") ? consumer.secret : provider.secret
                    #expect(WebhookSignature.verify(header: request.headers["tollgate-signature"] ?? "", secret: secret, body: request.body, now: now))
                    let payload = try JSONSerialization.jsonObject(with: Data(request.body)) as? [String: Any] ?? [:]
                    #expect(payload["type"] as? String == request.headers["tollgate-event"])
                    #expect(((payload["data"] as? [String: Any])?["subscription_id"] as? String)?.lowercased() == id.lowercased())
                }
                let consumerTypes = received.filter { $0.path.hasSuffix("/consumer") }.compactMap { $0.headers["tollgate-event"] }.sorted()
                #expect(consumerTypes == ["subscription.approved", "subscription.requested"])
                #expect(received.filter { $0.path.hasSuffix("/provider") }.compactMap { $0.headers["tollgate-event"] } == ["subscription.requested"])
                // the delivery log says delivered
                let log = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/webhooks/\(consumer.id)/deliveries", token: s.world.developer))
                #expect((log["items"] as? [[String: Any]])?.compactMap { $0["state"] as? String } == ["delivered", "delivered"])
                // a developer cannot read the provider team's endpoint
                #expect(try await APITests.call(client, .get, "/t/acme/api/v1/webhooks/\(provider.id)", token: s.world.developer).status == .notFound)
            }
        }
        await receiver.stop()
    }

    @Test func failedDeliveriesBackOffAndCanBeRedelivered() async throws {
        let receiver = try await WebhookReceiver.start()
        receiver.respond(with: 500)
        try await TestPortal.with(configure: Self.allowLoopback) { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let app = try await AppTests.createApp(client, world)
                let appID = (app["app"] as? [String: Any])?["id"] as? String ?? ""
                let endpoint = try await Self.register(
                    client, token: world.developer,
                    body: #"{"url":"\#(receiver.url)/rotations","team_id":"\#(world.consumerTeam)","events":["app.credentials_rotated"]}"#)
                try await Self.withDispatcher(portal) { dispatcher in
                // act: rotating a credential announces it; the receiver fails
                #expect(try await APITests.call(client, .post, "/t/acme/api/v1/apps/\(appID)/client-secrets", token: world.developer, body: "{}").status == .created)
                #expect(try await dispatcher.deliverDue() == 1)
                // assert: pending with a later retry, not due again yet
                let log = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/webhooks/\(endpoint.id)/deliveries", token: world.developer))
                let first = (log["items"] as? [[String: Any]])?.first ?? [:]
                #expect(first["state"] as? String == "pending")
                #expect(first["attempts"] as? Int == 1)
                #expect(first["last_status"] as? Int == 500)
                #expect(first["next_attempt_at"] != nil)
                #expect(try await dispatcher.deliverDue() == 0)
                // redelivery goes out at once and succeeds
                receiver.respond(with: 204)
                let deliveryID = first["id"] as? String ?? ""
                let redelivered = try await APITests.call(
                    client, .post, "/t/acme/api/v1/webhooks/\(endpoint.id)/deliveries/\(deliveryID)/redeliver", token: world.developer)
                #expect(redelivered.status == .accepted)
                #expect(try await dispatcher.deliverDue() == 1)
                #expect(receiver.received.count == 2)
                let payload = try JSONSerialization.jsonObject(with: Data(receiver.received.last?.body ?? [])) as? [String: Any] ?? [:]
                #expect((payload["data"] as? [String: Any])?["change"] as? String == "added")
                let newID = try APITests.json(redelivered)["id"] as? String ?? ""
                let detail = try APITests.json(
                    try await APITests.call(client, .get, "/t/acme/api/v1/webhooks/\(endpoint.id)/deliveries/\(newID)", token: world.developer))
                #expect((detail["delivery"] as? [String: Any])?["state"] as? String == "delivered")
                #expect((detail["attempts"] as? [[String: Any]])?.first?["status"] as? Int == 204)
                let old = try APITests.json(
                    try await APITests.call(client, .get, "/t/acme/api/v1/webhooks/\(endpoint.id)/deliveries/\(deliveryID)", token: world.developer))
                #expect((old["attempts"] as? [[String: Any]])?.count == 1)
                }
            }
        }
        await receiver.stop()
    }

    /// The address rule refuses a target on every try (here: loopback, once the dispatcher no
    /// longer allows private networks), so the delivery fails at once instead of being retried.
    @Test func aDeliveryTheAddressRuleRefusesFailsAfterOneAttempt() async throws {
        let receiver = try await WebhookReceiver.start()
        try await TestPortal.with(configure: Self.allowLoopback) { portal in
            try await portal.application().test(.router) { client in
                // setup: an endpoint on loopback, registered while private targets were allowed
                let world = try await CatalogAPITests.world(portal)
                let app = try await AppTests.createApp(client, world)
                let appID = (app["app"] as? [String: Any])?["id"] as? String ?? ""
                let endpoint = try await Self.register(
                    client, token: world.developer,
                    body: #"{"url":"\#(receiver.url)/rotations","team_id":"\#(world.consumerTeam)","events":["app.credentials_rotated"]}"#)
                #expect(try await APITests.call(client, .post, "/t/acme/api/v1/apps/\(appID)/client-secrets", token: world.developer, body: "{}").status == .created)
                let strict = WebhookTargetPolicy(allowPrivateNetworks: false, ownPorts: [])
                try await Self.withDispatcher(portal, targets: strict) { dispatcher in
                    // act
                    #expect(try await dispatcher.deliverDue() == 1)
                    // assert: failed for good after one attempt, nothing sent, nothing due again
                    let log = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/webhooks/\(endpoint.id)/deliveries", token: world.developer))
                    let items = (log["items"] as? [[String: Any]]) ?? []
                    #expect(items.count == 1)
                    let delivery = items.first ?? [:]
                    #expect(delivery["state"] as? String == "failed")
                    #expect(delivery["attempts"] as? Int == 1)
                    #expect((delivery["last_error"] as? String)?.hasPrefix("refused") == true)
                    #expect(try await dispatcher.deliverDue() == 0)
                    #expect(receiver.received.isEmpty)
                }
            }
        }
        await receiver.stop()
    }

    @Test func disallowedTargetsAndOwnersAreRefused() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let world = try await CatalogAPITests.world(portal)
                func register(_ body: String) async throws -> TestResponse {
                    try await APITests.call(client, .post, "/t/acme/api/v1/webhooks", token: world.developer, body: body)
                }
                let team = world.consumerTeam
                #expect(try await register(#"{"url":"http://127.0.0.1:9000/x","team_id":"\#(team)"}"#).status == .unprocessableContent)
                #expect(try await register(#"{"url":"http://169.254.169.254/latest","team_id":"\#(team)"}"#).status == .unprocessableContent)
                #expect(try await register(#"{"url":"https://example.com/x","team_id":"\#(team)","events":["nope"]}"#).status == .unprocessableContent)
                // tenant-wide endpoints are for admins; other teams' endpoints for their admins
                #expect(try await register(#"{"url":"https://example.com/x"}"#).status == .forbidden)
                #expect(try await register(#"{"url":"https://example.com/x","team_id":"\#(world.providerTeam)"}"#).status == .forbidden)
                #expect(try await register(#"{"url":"https://example.com/x","team_id":"\#(team)"}"#).status == .created)
            }
        }
    }

    @Test func anotherTenantSeesNoneOfTheOutbox() async throws {
        try await TestPortal.with(configure: Self.allowLoopback) { portal in
            try await portal.application().test(.router) { client in
                let world = try await CatalogAPITests.world(portal)
                let endpoint = try await Self.register(client, token: world.developer, body: #"{"url":"https://example.com/x","team_id":"\#(world.consumerTeam)"}"#)
                let app = try await AppTests.createApp(client, world)
                let appID = (app["app"] as? [String: Any])?["id"] as? String ?? ""
                _ = try await APITests.call(client, .post, "/t/acme/api/v1/apps/\(appID)/api-keys", token: world.developer, body: "{}")
                let other = try await Fixtures.tenant(portal.database, slug: "other")
                let counts = try await portal.database.withTenant(other.id) { connection -> [Int] in
                    var result: [Int] = []
                    for table in ["webhook_endpoints", "webhook_events", "webhook_deliveries"] {
                        for try await n in try await connection.query("SELECT count(*)::int FROM \(unescaped: table)", logger: TestDatabase.logger).decode(Int.self) {
                            result.append(n)
                        }
                    }
                    return result
                }
                #expect(counts == [0, 0, 0])
                let acme = try await portal.database.withPlatform { try await TenantRepository(logger: TestDatabase.logger).find(slug: "acme", on: $0) }
                let own = try await portal.database.withTenant(acme?.id ?? UUID()) { connection -> Int in
                    for try await n in try await connection.query("SELECT count(*)::int FROM webhook_deliveries", logger: TestDatabase.logger).decode(Int.self) { return n }
                    return -1
                }
                #expect(own == 1)
                #expect(!endpoint.id.isEmpty)
            }
        }
    }
}

/// The webhook pages: a tenant admin registers an endpoint through the form and sees its secret once.
@Suite struct WebhookPageTests {
    @Test func adminRegistersATenantEndpointThroughTheForm() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            try await portal.application().test(.router) { client in
                var browser = Browser()
                _ = try await browser.signIn(client, tenant: "acme", email: "ada@example.com")
                let list = try await browser.get(client, "/t/acme/webhooks")
                #expect(list.status == .ok)
                #expect(list.text.contains("subscription.plan_changed"))
                // a refused target comes back as the form with the reason
                let refused = try await browser.submit(
                    client, "/t/acme/webhooks", from: "/t/acme/webhooks", fields: [("team_id", ""), ("url", "http://10.0.0.1/hook")])
                #expect(refused.status == .unprocessableContent)
                #expect(refused.text.contains("private addresses are refused"))
                let created = try await browser.submit(
                    client, "/t/acme/webhooks", from: "/t/acme/webhooks",
                    fields: [("team_id", ""), ("url", "https://hooks.example.com/tollgate"), ("events", "subscription.approved")])
                #expect(created.status == .seeOther)  // post/redirect/get; the secret waits in the session's flash
                let shown = try await browser.get(client, created.headers[.location] ?? "")
                #expect(shown.text.contains("whsec_"))
                #expect(shown.text.contains("subscription.approved"))
                #expect(!(try await browser.get(client, created.headers[.location] ?? "")).text.contains("id=\"new-secret\""))
                let again = try await browser.get(client, "/t/acme/webhooks")
                #expect(again.text.contains("https://hooks.example.com/tollgate"))
            }
        }
    }
}
