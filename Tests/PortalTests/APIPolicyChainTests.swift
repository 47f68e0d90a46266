import Foundation
import Gateway
import Hummingbird
import HummingbirdTesting
import PostgresNIO
import Testing

@testable import Portal

/// An API's policy chain: the pure rules, `GET|PUT /apis/{id}/policies`, the API page's forms, and
/// the gateway snapshot compiling what was stored.
@Suite struct APIPolicyChainTests {
    static let limit = #"{"kind":"client_rate_limit","config":{"requests":100,"per_seconds":60}}"#

    // MARK: pure rules

    @Test func aWholeListIsCheckedAndEveryProblemNamedByPointer() {
        let body = #"{"policies":[{"kind":"client_rate_limit","config":{"requests":10,"per_seconds":60}},"#
            + #"{"kind":"client_rate_limit","phase":"response","config":{"requests":0,"per_seconds":60}},{"kind":"cache"},{"kind":"client_rate_limit","config":[]}],"x":1}"#
        guard case .failure(let problems) = APIPolicyChain.parse(Array(body.utf8)) else {
            Issue.record("accepted")
            return
        }
        #expect(problems.list.map(\.pointer) == ["/x", "/policies/1/phase", "/policies/1/config/requests", "/policies/2/kind", "/policies/3/config"])
        let error = APIPolicyChain.invalid(problems.list)
        #expect(error.status == .unprocessableContent)
        #expect(error.detail.contains("/x"))
        #expect(error.fieldErrors["/policies/1/config/requests"]?.contains("1 to 1000000") == true)
    }

    @Test func theListIsBoundedAndAnEmptyOneIsFine() {
        let many = "{\"policies\":[" + Array(repeating: Self.limit, count: APIPolicyChain.maximumPolicies + 1).joined(separator: ",") + "]}"
        guard case .failure(let problems) = APIPolicyChain.parse(Array(many.utf8)) else {
            Issue.record("accepted \(APIPolicyChain.maximumPolicies + 1) policies")
            return
        }
        #expect(problems.list.map(\.pointer) == ["/policies"])
        #expect((try? APIPolicyChain.parse(Array(#"{"policies":[]}"#.utf8)).get())?.isEmpty == true)
        guard case .failure(let syntax) = APIPolicyChain.parse(Array("{".utf8)) else { return }
        #expect(syntax.list.map(\.pointer) == [""])
    }

    @Test func theChainListsBuiltInStepsThenAddedOnesByPhase() throws {
        let policy = try #require(try? APIPolicyChain.parse(Array("{\"policies\":[\(Self.limit)]}".utf8)).get())
        let entries = APIPolicyChain.entries(builtIn: APIGatewayPolicy(ipDeny: ["10.0.0.0/8"], methods: ["GET"]), policies: policy)
        #expect(entries.map(\.kind) == ["ip_access", "cors", "methods", "body_limit", "client_rate_limit", "plan_limits", "deprecation"])
        #expect(entries.map(\.phase.rawValue) == ["pre_auth", "pre_auth", "pre_auth", "pre_auth", "pre_auth", "post_auth", "response"])
        #expect(entries.map(\.enabled) == [true, false, true, false, true, true, true])
        #expect(entries[4].index == 0 && !entries[4].builtIn)
    }

    @Test func editsApplyToTheCurrentListOrSayItChanged() throws {
        let a = APIPolicy(config: .clientRateLimit(ClientRateLimitConfig(requests: 1, perSeconds: 1)))
        let b = APIPolicy(config: .clientRateLimit(ClientRateLimitConfig(requests: 2, perSeconds: 1)))
        #expect(APIPolicyEdit.add(b).applied(to: [a]) == [a, b])
        #expect(APIPolicyEdit.moveUp(1).applied(to: [a, b]) == [b, a])
        #expect(APIPolicyEdit.moveDown(1).applied(to: [a, b]) == [a, b])
        #expect(APIPolicyEdit.moveUp(0).applied(to: [a, b]) == [a, b])
        #expect(APIPolicyEdit.replace(0, b).applied(to: [a]) == [b])
        #expect(APIPolicyEdit.remove(0).applied(to: [a, b]) == [b])
        #expect(APIPolicyEdit.remove(2).applied(to: [a, b]) == nil)
        #expect(APIPolicyEdit.moveDown(-1).applied(to: [a]) == nil)
        #expect(APIPolicyEdit.add(a).applied(to: Array(repeating: a, count: APIPolicyChain.maximumPolicies)) == nil)
    }

    /// Order only means something within a phase: a move swaps with the nearest policy of the same
    /// phase, across policies of other phases stored between them (the page showed "saved" and
    /// nothing moved when a move swapped across phases).
    @Test func movesStayWithinThePhase() throws {
        let limit = APIPolicy(config: .clientRateLimit(ClientRateLimitConfig(requests: 1, perSeconds: 1)))
        let other = APIPolicy(config: .clientRateLimit(ClientRateLimitConfig(requests: 2, perSeconds: 1)))
        guard case .object(let object)? = JSONValue.parse(#"{"headers": {"set": {"X-A": "1"}}}"#) else { throw CancellationError() }
        let transform = try APIPolicy.make(kind: .requestTransform, config: object).get()
        let list = [limit, transform, other]
        #expect(APIPolicyEdit.moveDown(0).applied(to: list) == [other, transform, limit])
        #expect(APIPolicyEdit.moveUp(2).applied(to: list) == [other, transform, limit])
        // alone in its phase: nothing to move past
        #expect(APIPolicyEdit.moveDown(1).applied(to: list) == list)
        #expect(APIPolicyEdit.neighbour(of: 1, in: list, step: -1) == nil)
        #expect(APIPolicyEdit.neighbour(of: 1, in: list, step: 1) == nil)
    }

    // MARK: JSON API

    @Test func providersReplaceTheChainAsAWholeAtomicallyAndAudited() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let path = "/t/acme/api/v1/apis/\(id)/policies"
                // the empty chain still lists the built-in steps
                let empty = try APITests.json(try await APITests.call(client, .get, path, token: world.provider))
                #expect((empty["policies"] as? [Any])?.isEmpty == true)
                #expect((empty["chain"] as? [[String: Any]])?.compactMap { $0["kind"] as? String }.first == "ip_access")
                // act: a list with one good and one bad entry
                let bad = try await APITests.call(
                    client, .put, path, token: world.provider,
                    body: #"{"policies":[\#(Self.limit),{"kind":"client_rate_limit","config":{"requests":10,"per_seconds":0}}]}"#)
                // assert: 422 naming the entry, and nothing stored (the good entry neither)
                #expect(bad.status == .unprocessableContent)
                #expect(bad.headers[.contentType]?.hasPrefix("application/problem+json") == true)
                let problem = try APITests.json(bad)
                #expect((problem["errors"] as? [String: String])?.keys.sorted() == ["/policies/1/config/per_seconds"])
                #expect((problem["detail"] as? String)?.contains("/policies/1/config/per_seconds") == true)
                let afterBad = try APITests.json(try await APITests.call(client, .get, path, token: world.provider))
                #expect((afterBad["policies"] as? [Any])?.isEmpty == true)
                // a good list is stored with its defaults written out and listed in its phase
                let good = try await APITests.call(
                    client, .put, path, token: world.provider,
                    body: #"{"policies":[{"kind":"client_rate_limit","phase":"pre_auth","config":{"requests":5,"per_seconds":1,"key_header":"X-Real-IP"}},\#(Self.limit)]}"#)
                #expect(good.status == .ok)
                let read = try APITests.json(try await APITests.call(client, .get, path, token: world.provider))
                let policies = read["policies"] as? [[String: Any]] ?? []
                #expect(policies.count == 2)
                let first = policies.first?["config"] as? [String: Any]
                #expect(first?["burst"] as? Int == 5)
                #expect(first?["max_clients"] as? Int == 10_000)
                #expect(first?["key_header"] as? String == "X-Real-IP")
                #expect(policies.first?["phase"] as? String == "pre_auth")
                let chain = read["chain"] as? [[String: Any]] ?? []
                #expect(chain.compactMap { $0["kind"] as? String } == [
                    "ip_access", "cors", "methods", "body_limit", "client_rate_limit", "client_rate_limit", "plan_limits", "deprecation",
                ])
                #expect(chain.compactMap { $0["index"] as? Int } == [0, 1])
                // audited
                let audited = try await portal.database.withSystemScope { connection in
                    var details: [String] = []
                    for try await text in try await connection.query(
                        "SELECT details::text FROM audit_events WHERE action = 'api.updated' AND details->>'fields' = 'policies'", logger: TestDatabase.logger
                    ).decode(String.self) { details.append(text) }
                    return details
                }
                #expect(audited.count == 1)
                #expect(audited.first?.contains("client_rate_limit client_rate_limit") == true)
                // emptied again
                #expect(try await APITests.call(client, .put, path, token: world.provider, body: #"{"policies":[]}"#).status == .ok)
                let cleared = try APITests.json(try await APITests.call(client, .get, path, token: world.provider))
                #expect((cleared["policies"] as? [Any])?.isEmpty == true)
            }
        }
    }

    @Test func badBodiesAndOtherPeopleAreRefusedClearly() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let path = "/t/acme/api/v1/apis/\(id)/policies"
                // consumers may neither read nor change the chain
                #expect(try await APITests.call(client, .get, path, token: world.developer).status == .forbidden)
                #expect(try await APITests.call(client, .put, path, token: world.developer, body: #"{"policies":[]}"#).status == .forbidden)
                // malformed JSON is 400, an unknown kind 422 with its pointer, a huge body 413
                #expect(try await APITests.call(client, .put, path, token: world.provider, body: "{\"policies\":").status == .badRequest)
                let unknown = try await APITests.call(client, .put, path, token: world.provider, body: #"{"policies":[{"kind":"teleport"}]}"#)
                #expect(unknown.status == .unprocessableContent)
                #expect((try APITests.json(unknown)["errors"] as? [String: String])?.keys.sorted() == ["/policies/0/kind"])
                let huge = "{\"policies\":[],\"pad\":\"" + String(repeating: "x", count: APIPolicyChain.maximumBodyBytes) + "\"}"
                #expect(try await APITests.call(client, .put, path, token: world.provider, body: huge).status == .contentTooLarge)
                #expect(try await APITests.call(client, .get, "/t/acme/api/v1/apis/\(UUID())/policies", token: world.provider).status == .notFound)
                // documented next to the other API settings
                let document = try await APITests.call(client, .get, "/t/acme/api/v1/openapi.json", token: nil)
                let text = String(buffer: document.body)
                #expect(text.contains("\"/apis/{api}/policies\""))
                #expect(text.contains("\"setPolicies\"") && text.contains("\"ClientRateLimitConfig\""))
            }
        }
    }

    @Test func aChangeIsAnnouncedToGatewaysAndCompiledIntoTheSnapshot() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let payloads = try await portal.database.client.withConnection { connection in
                    try await connection.listen(on: "tollgate_config") { notifications in
                        // act
                        let saved = try await APITests.call(
                            client, .put, "/t/acme/api/v1/apis/\(id)/policies", token: world.provider, body: "{\"policies\":[\(Self.limit)]}")
                        #expect(saved.status == .ok)
                        var seen: [String] = []
                        for try await notification in notifications {
                            seen.append(notification.payload)
                            if notification.payload.contains("\"api_policies\"") { break }
                        }
                        return seen
                    }
                }
                // assert: announced with the tenant, and the loader compiles it for the route
                #expect(payloads.contains { $0.contains("\"api_policies\"") && $0.contains("tenant_id") })
                let loader = SnapshotLoader(
                    client: portal.database.client, baseDomain: "localhost", publicURL: portal.services.config.publicURL, logger: TestDatabase.logger)
                let snapshot = try await loader.load(version: 1)
                let route = try #require(snapshot.tenantsBySlug["acme"]?.routes.first { $0.apiID.uuidString == id.uppercased() })
                #expect(route.preAuth.count == 1)
                guard case .clientRateLimit(let limit)? = route.preAuth.first else { return }
                #expect(limit.config == ClientRateLimitConfig(requests: 100, perSeconds: 60))
                // a reload keeps the limiter (and so every client's bucket)
                let again = try await loader.load(version: 2)
                guard case .clientRateLimit(let same)? = again.tenantsBySlug["acme"]?.routes.first(where: { $0.apiID == route.apiID })?.preAuth.first
                else {
                    Issue.record("policy lost on reload")
                    return
                }
                #expect(same.limiter === limit.limiter)
            }
        }
    }

    // MARK: the API page

    @Test func thePolicyFormsAddEditMoveAndRemoveAndExplainMistakes() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let page = "/t/acme/catalog/apis/\(id)"
                let action = page + "/policies"
                let before = try await provider.get(client, page)
                #expect(before.text.contains("<h2 id=\"policies\">Policies</h2>"))
                #expect(before.text.contains("Client addresses") && before.text.contains("Subscription and plan limits"))
                // act: add two policies (post/redirect/get)
                let added = try await provider.submit(
                    client, action, from: page,
                    fields: [("op", "add"), ("kind", "client_rate_limit"), ("requests", "100"), ("per_seconds", "60"), ("key_header", "X-Real-IP")])
                #expect(added.status == .seeOther)
                _ = try await provider.submit(
                    client, action, from: page, fields: [("op", "add"), ("kind", "client_rate_limit"), ("requests", "7"), ("per_seconds", "1")])
                let shown = try await provider.get(client, page)
                #expect(shown.text.contains("Policies saved."))
                let first = try #require(shown.text.range(of: "100 requests per 60 s per X-Real-IP header"))
                let second = try #require(shown.text.range(of: "7 requests per 1 s per client address"))
                #expect(first.lowerBound < second.lowerBound)
                // bad input: the page says what and marks the field, keeping what was typed
                let refused = try await provider.submit(
                    client, action, from: page, fields: [("op", "add"), ("kind", "client_rate_limit"), ("requests", "lots"), ("per_seconds", "60")])
                #expect(refused.status == .unprocessableContent)
                #expect(refused.text.contains("correct the fields marked below"))
                #expect(refused.text.contains("id=\"new-requests-error\""))
                #expect(refused.text.contains("value=\"lots\""))
                #expect(refused.text.contains("aria-invalid=\"true\""))
                let badEdit = try await provider.submit(
                    client, action, from: page,
                    fields: [("op", "save"), ("index", "1"), ("kind", "client_rate_limit"), ("requests", "7"), ("per_seconds", "999999")])
                #expect(badEdit.status == .unprocessableContent)
                #expect(badEdit.text.contains("id=\"p1-per_seconds-error\""))
                // edit, move the second up, remove the (now second) first one
                #expect(
                    try await provider.submit(
                        client, action, from: page,
                        fields: [("op", "save"), ("index", "1"), ("kind", "client_rate_limit"), ("requests", "8"), ("per_seconds", "2")]
                    ).status == .seeOther)
                #expect(try await provider.submit(client, action, from: page, fields: [("op", "up"), ("index", "1")]).status == .seeOther)
                let moved = try await provider.get(client, page)
                let eight = try #require(moved.text.range(of: "8 requests per 2 s"))
                let hundred = try #require(moved.text.range(of: "100 requests per 60 s"))
                #expect(eight.lowerBound < hundred.lowerBound)
                #expect(try await provider.submit(client, action, from: page, fields: [("op", "remove"), ("index", "1")]).status == .seeOther)
                let after = try await provider.get(client, page)
                #expect(after.text.contains("8 requests per 2 s"))
                #expect(!after.text.contains("100 requests per 60 s"))
                // an index that no longer exists changes nothing and says so
                let stale = try await provider.submit(client, action, from: page, fields: [("op", "remove"), ("index", "5")])
                #expect(stale.status == .conflict)
                #expect(stale.text.contains("changed meanwhile"))
            }
        }
    }
}
