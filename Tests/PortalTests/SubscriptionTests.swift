import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import Portal

/// Subscriptions through the JSON API: the state machine, sides, history.
@Suite struct SubscriptionTests {
    struct Setup {
        let world: CatalogAPITests.World
        let appID: String
        let apiID: String
        let freePlan: String
        let proPlan: String
    }

    static let free = """
        {"name":"Free","rate_per_second":5,"burst":10,"monthly_quota":1000,"monthly_fee_minor":0,"included_requests":1000,
         "tier_mode":"flat","tiers":[{"unit_price_micros":0}],"approval":"automatic","visibility":"public"}
        """

    static func setup(_ portal: TestPortal, _ client: some TestClientProtocol) async throws -> Setup {
        let world = try await CatalogAPITests.world(portal)
        let apiID = try await PlanAPITests.publishedAPI(client, world)
        let free = try APITests.json(try await APITests.call(client, .post, "/t/acme/api/v1/apis/\(apiID)/plans", token: world.provider, body: Self.free))
        let pro = try APITests.json(try await APITests.call(client, .post, "/t/acme/api/v1/apis/\(apiID)/plans", token: world.provider, body: PlanAPITests.pro))
        let app = try await AppTests.createApp(client, world)
        return Setup(
            world: world, appID: (app["app"] as? [String: Any])?["id"] as? String ?? "", apiID: apiID, freePlan: free["id"] as? String ?? "",
            proPlan: pro["id"] as? String ?? "")
    }

    static func subscribe(_ client: some TestClientProtocol, _ s: Setup, plan: String) async throws -> TestResponse {
        try await APITests.call(client, .post, "/t/acme/api/v1/apps/\(s.appID)/subscriptions", token: s.world.developer, body: #"{"plan_id":"\#(plan)"}"#)
    }

    static func act(_ client: some TestClientProtocol, _ token: String, _ id: String, _ body: String) async throws -> TestResponse {
        try await APITests.call(client, .post, "/t/acme/api/v1/subscriptions/\(id)/actions", token: token, body: body)
    }

    @Test func automaticPlansActivateAndOnlyOneOpenSubscriptionPerAPI() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let s = try await Self.setup(portal, client)
                let first = try await Self.subscribe(client, s, plan: s.freePlan)
                #expect(first.status == .created)
                #expect(try APITests.json(first)["state"] as? String == "active")
                let second = try await Self.subscribe(client, s, plan: s.proPlan)
                #expect(second.status == .conflict)
            }
        }
    }

    @Test func manualPlansWaitForTheProvider() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let s = try await Self.setup(portal, client)
                let requested = try APITests.json(try await Self.subscribe(client, s, plan: s.proPlan))
                let id = requested["id"] as? String ?? ""
                #expect(requested["state"] as? String == "pending")
                // the provider's queue shows it
                let queue = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/subscriptions?state=pending", token: s.world.provider))
                #expect((queue["items"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == [id])
                // the developer cannot approve their own request; a rejection needs a reason
                #expect(try await Self.act(client, s.world.developer, id, #"{"action":"approve"}"#).status == .forbidden)
                #expect(try await Self.act(client, s.world.provider, id, #"{"action":"reject"}"#).status == .unprocessableContent)
                let approved = try await Self.act(client, s.world.provider, id, #"{"action":"approve"}"#)
                #expect(try APITests.json(approved)["state"] as? String == "active")
                #expect(try await Self.act(client, s.world.provider, id, #"{"action":"approve"}"#).status == .conflict)
            }
        }
    }

    @Test func aChangeToAManualPlanWaitsInTheQueueAndARejectionKeepsTheOldPlan() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let s = try await Self.setup(portal, client)
                let id = try APITests.json(try await Self.subscribe(client, s, plan: s.freePlan))["id"] as? String ?? ""
                let asked = try await Self.act(client, s.world.developer, id, #"{"action":"change_plan","plan_id":"\#(s.proPlan)"}"#)
                #expect(asked.status == .ok)
                #expect(try APITests.json(asked)["plan_id"] as? String == s.freePlan)
                // asking twice for the same plan is a conflict, not a second request
                #expect(try await Self.act(client, s.world.developer, id, #"{"action":"change_plan","plan_id":"\#(s.proPlan)"}"#).status == .conflict)
                // the provider's queue holds it; the gateway still serves Free
                let queue = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/subscriptions?awaiting=provider", token: s.world.provider))
                #expect((queue["items"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == [id])
                let snapshot = try await portal.snapshot()
                let grant = snapshot.tenantsBySlug["acme"]?.apps.values.first { $0.id.uuidString.lowercased() == s.appID.lowercased() }?
                    .subscriptions.values.first
                #expect(grant?.planID.uuidString.lowercased() == s.freePlan.lowercased())
                // the developer cannot approve it; a rejection needs a reason and keeps Free
                #expect(try await Self.act(client, s.world.developer, id, #"{"action":"approve"}"#).status == .forbidden)
                #expect(try await Self.act(client, s.world.provider, id, #"{"action":"reject"}"#).status == .unprocessableContent)
                let rejected = try APITests.json(try await Self.act(client, s.world.provider, id, #"{"action":"reject","reason":"talk to sales first"}"#))
                #expect(rejected["state"] as? String == "active")
                #expect(rejected["plan_id"] as? String == s.freePlan)
                #expect(rejected["requested_plan_id"] == nil)
                let after = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/subscriptions?awaiting=provider", token: s.world.provider))
                #expect((after["items"] as? [[String: Any]])?.isEmpty == true)
                // webhooks as for a new request: requested, then rejected
                let types = try await portal.outboxTypes()
                #expect(types.contains("subscription.plan_change_requested"))
                #expect(types.contains("subscription.plan_change_rejected"))
                #expect(!types.contains("subscription.plan_changed"))
            }
        }
    }

    /// A restricted API is open to the app's team, not to every team its developer is in.
    @Test func restrictedAPIsCheckTheAppsTeamNotTheCallers() async throws {
        try await TestPortal.with { portal in
            let world = try await CatalogAPITests.world(portal)
            try await portal.application().test(.router) { client in
                // setup: the API allows team "users"; the developer is also in team "side", which is not allowed
                let created = try APITests.json(
                    try await APITests.call(
                        client, .post, "/t/acme/api/v1/apis", token: world.provider,
                        body: CatalogAPITests.createBody(team: world.providerTeam, visibility: "restricted", allowed: [world.consumerTeam])))
                let apiID = created["id"] as? String ?? ""
                _ = try await APITests.call(client, .post, "/t/acme/api/v1/apis/\(apiID)/transitions", token: world.provider, body: #"{"transition":"publish"}"#)
                let plan = try APITests.json(try await APITests.call(client, .post, "/t/acme/api/v1/apis/\(apiID)/plans", token: world.provider, body: Self.free))
                let planID = plan["id"] as? String ?? ""
                let side = try APITests.json(
                    try await APITests.call(client, .post, "/t/acme/api/v1/teams", token: world.developer, body: #"{"name":"Side","slug":"side"}"#))
                let sideTeam = side["id"] as? String ?? ""
                let sideApp = try APITests.json(
                    try await APITests.call(client, .post, "/t/acme/api/v1/apps", token: world.developer, body: #"{"team_id":"\#(sideTeam)","name":"Side app"}"#))
                let sideAppID = (sideApp["app"] as? [String: Any])?["id"] as? String ?? ""
                let usersApp = try await AppTests.createApp(client, world)
                let usersAppID = (usersApp["app"] as? [String: Any])?["id"] as? String ?? ""
                // act + assert: the side team's app is refused, the allowed team's app subscribes
                let refused = try await APITests.call(
                    client, .post, "/t/acme/api/v1/apps/\(sideAppID)/subscriptions", token: world.developer, body: #"{"plan_id":"\#(planID)"}"#)
                #expect(refused.status == .unprocessableContent)
                let accepted = try await APITests.call(
                    client, .post, "/t/acme/api/v1/apps/\(usersAppID)/subscriptions", token: world.developer, body: #"{"plan_id":"\#(planID)"}"#)
                #expect(accepted.status == .created)
                #expect(try await Self.grantedApps(portal).contains(usersAppID.lowercased()))
                // a token of the allowed team's app carries the API in its scope
                let slug = created["slug"] as? String ?? ""
                let credentials = ((usersApp["app"] as? [String: Any])?["client_id"] as? String ?? "", usersApp["secret"] as? String ?? "")
                func scopes() async throws -> [String] {
                    let token = try APITests.json(try await OAuthTests.form(client, [("grant_type", "client_credentials")], basic: credentials))
                    return (token["scope"] as? String ?? "").split(separator: " ").map(String.init)
                }
                #expect(try await scopes().contains(slug))
                // the provider withdraws the team: the gateway stops serving that app at once, and new
                // tokens no longer name the API
                let patched = try await APITests.call(
                    client, .patch, "/t/acme/api/v1/apis/\(apiID)", token: world.provider, body: #"{"allowed_team_ids":["\#(sideTeam)"]}"#)
                #expect(patched.status == .ok)
                #expect(try await !Self.grantedApps(portal).contains(usersAppID.lowercased()))
                #expect(try await !scopes().contains(slug))
            }
        }
    }

    /// Apps the gateway snapshot lets through to some API (lower-cased ids).
    static func grantedApps(_ portal: TestPortal) async throws -> Set<String> {
        let snapshot = try await portal.snapshot()
        return Set(snapshot.tenantsBySlug.values.flatMap { $0.apps.values.filter { !$0.subscriptions.isEmpty }.map { $0.id.uuidString.lowercased() } })
    }

    @Test func suspendResumeChangePlanAndCancelAreRecorded() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let s = try await Self.setup(portal, client)
                let id = try APITests.json(try await Self.subscribe(client, s, plan: s.freePlan))["id"] as? String ?? ""
                #expect(try await Self.act(client, s.world.provider, id, #"{"action":"suspend","reason":"abuse report"}"#).status == .ok)
                #expect(try await Self.act(client, s.world.developer, id, #"{"action":"resume"}"#).status == .forbidden)
                #expect(try await Self.act(client, s.world.provider, id, #"{"action":"resume"}"#).status == .ok)
                // Pro needs approval: the change is a request, Free keeps serving
                let changed = try APITests.json(try await Self.act(client, s.world.developer, id, #"{"action":"change_plan","plan_id":"\#(s.proPlan)"}"#))
                #expect(changed["plan_name"] as? String == "Free")
                #expect(changed["requested_plan_name"] as? String == "Pro")
                #expect(changed["state"] as? String == "active")
                let approved = try APITests.json(
                    try await Self.act(client, s.world.provider, id, #"{"action":"approve","reason":"welcome to Pro"}"#))
                #expect(approved["plan_name"] as? String == "Pro")
                #expect(approved["requested_plan_id"] == nil)
                #expect(try await Self.act(client, s.world.provider, id, #"{"action":"cancel"}"#).status == .forbidden)
                #expect(try await Self.act(client, s.world.developer, id, #"{"action":"cancel"}"#).status == .ok)
                let detail = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/subscriptions/\(id)", token: s.world.developer))
                let history = detail["history"] as? [[String: Any]] ?? []
                #expect(
                    history.compactMap { $0["event"] as? String } == ["request", "suspend", "resume", "request_plan_change", "approve_plan_change", "cancel"])
                #expect(history[3]["requested_plan_id"] as? String == s.proPlan)
                #expect(history[3]["to_plan_id"] as? String == s.freePlan)
                #expect(history[4]["to_plan_id"] as? String == s.proPlan)
                #expect(history[4]["reason"] as? String == "welcome to Pro")
                #expect(history[1]["reason"] as? String == "abuse report")
                #expect(history[1]["actor_side"] as? String == "provider")
                // after cancelling, the app may subscribe again
                #expect(try await Self.subscribe(client, s, plan: s.freePlan).status == .created)
            }
        }
    }

    @Test func strangersSeeNothingAndDraftsTakeNoSubscriptions() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let s = try await Self.setup(portal, client)
                let id = try APITests.json(try await Self.subscribe(client, s, plan: s.freePlan))["id"] as? String ?? ""
                let tenant = try await Fixtures.tenantID(portal, "acme")
                let tenantValue = try await portal.database.withPlatform { try await TenantRepository(logger: portal.database.logger).find(slug: "acme", on: $0) }
                #expect(tenantValue?.id == tenant)
                let stranger = try await Fixtures.user(portal.database, tenant: tenantValue!, email: "eve@example.com", roles: [.developer])
                let eve = try await APITests.token(portal, tenant: tenantValue!, user: stranger, scopes: [.read, .write])
                #expect(try await APITests.call(client, .get, "/t/acme/api/v1/subscriptions/\(id)", token: eve).status == .notFound)
                #expect(try await Self.act(client, eve, id, #"{"action":"cancel"}"#).status == .notFound)
                // a draft API's plan cannot be subscribed to
                let draft = try APITests.json(
                    try await APITests.call(
                        client, .post, "/t/acme/api/v1/apis", token: s.world.provider,
                        body: CatalogAPITests.createBody(team: s.world.providerTeam, path: "/draft/v1", version: "d1")))
                let draftPlan = try APITests.json(
                    try await APITests.call(client, .post, "/t/acme/api/v1/apis/\(draft["id"] as? String ?? "")/plans", token: s.world.provider, body: Self.free))
                let refused = try await Self.subscribe(client, s, plan: draftPlan["id"] as? String ?? "")
                #expect(refused.status == .unprocessableContent || refused.status == .conflict)
            }
        }
    }

    @Test func subscribeAndApproveThroughThePages() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let s = try await Self.setup(portal, client)
                var developer = Browser()
                _ = try await developer.signIn(client, tenant: "acme", email: "dev@example.com")
                let appPage = try await developer.get(client, "/t/acme/apps/\(s.appID)")
                #expect(appPage.text.contains("Echo v1 — Pro"))
                let subscribed = try await developer.submit(
                    client, "/t/acme/apps/\(s.appID)/subscriptions", from: "/t/acme/apps/\(s.appID)", fields: [("plan_id", s.proPlan)])
                #expect(subscribed.status == .seeOther)
                let location = subscribed.headers[.location] ?? ""
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let queue = try await provider.get(client, "/t/acme/subscriptions")
                #expect(queue.text.contains("pending approval"))
                let approved = try await provider.submit(client, location + "/actions", from: location, fields: [("action", "approve")])
                #expect(approved.status == .seeOther)
                let page = try await developer.get(client, location)
                #expect(page.text.contains("State: <strong>active</strong>"))
                // the developer is offered cancel and plan change, not the provider's suspend
                #expect(page.text.contains("value=\"cancel\""))
                #expect(!page.text.contains("value=\"suspend\""))
                let denied = try await developer.submit(client, location + "/actions", from: location, fields: [("action", "suspend"), ("reason", "x")])
                #expect(denied.status == .forbidden)
                #expect(denied.text.contains("cannot suspend"))
            }
        }
    }
}
