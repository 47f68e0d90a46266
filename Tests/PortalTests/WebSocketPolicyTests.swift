import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import Gateway
@testable import Portal

/// The `websocket` policy from the portal: `PUT /apis/{id}/policies` with pointers at every bad
/// value, the API page's form (field marked, what was typed kept, post/redirect/get), and the
/// loader handing the API's route its limits.
@Suite struct WebSocketPolicyTests {
    @Test(arguments: [
        (#"{"idle_seconds":30}"#, true, ""),
        (#"{"idle_seconds":30,"max_seconds":600}"#, true, ""),
        (#"{"idle_seconds":86400,"max_seconds":604800}"#, true, ""),
        (#"{}"#, false, "/idle_seconds"),
        (#"{"idle_seconds":0}"#, false, "/idle_seconds"),
        (#"{"idle_seconds":86401}"#, false, "/idle_seconds"),
        (#"{"idle_seconds":"30"}"#, false, "/idle_seconds"),
        (#"{"idle_seconds":1.5}"#, false, "/idle_seconds"),
        (#"{"idle_seconds":9223372036854775807}"#, false, "/idle_seconds"),
        (#"{"idle_seconds":30,"max_seconds":0}"#, false, "/max_seconds"),
        (#"{"idle_seconds":30,"max_seconds":604801}"#, false, "/max_seconds"),
        (#"{"idle_seconds":30,"ping":true}"#, false, "/ping"),
    ])
    func theConfigurationIsBoundedAndEachProblemHasItsPointer(json: String, valid: Bool, pointer: String) throws {
        // setup
        guard case .object(let object)? = JSONValue.parse(json) else { throw CancellationError() }
        // act
        let parsed = WebSocketConfig.parse(object)
        // assert
        switch parsed {
        case .success(let config):
            #expect(valid)
            // what is stored reads back the same
            guard case .object(let again) = config.json else { throw CancellationError() }
            #expect(try WebSocketConfig.parse(again).get() == config)
        case .failure(let problems):
            #expect(!valid)
            #expect(problems.list.map(\.pointer) == [pointer])
        }
    }

    @Test func thePolicysLimitsReplaceTheInstallationsAndAnUnsetMaximumKeepsItsOwn() {
        // setup
        let installation = TunnelLimits(idle: 300_000_000_000, maxDuration: 3_600_000_000_000)
        let uncapped = TunnelLimits(idle: 300_000_000_000, maxDuration: nil)
        // act + assert
        #expect(installation.applying(nil) == installation)
        #expect(installation.applying(WebSocketConfig(idleSeconds: 5)) == TunnelLimits(idle: 5_000_000_000, maxDuration: 3_600_000_000_000))
        #expect(installation.applying(WebSocketConfig(idleSeconds: 5, maxSeconds: 7_200)) == TunnelLimits(idle: 5_000_000_000, maxDuration: 7_200_000_000_000))
        #expect(uncapped.applying(WebSocketConfig(idleSeconds: 86_400, maxSeconds: 604_800)) == TunnelLimits(idle: 86_400_000_000_000, maxDuration: 604_800_000_000_000))
        #expect(uncapped.applying(WebSocketConfig(idleSeconds: 10)).maxDuration == nil)
    }

    @Test func webSocketsOverHTTP2AreOnUnlessTheEnvironmentSaysFalse() throws {
        #expect(try AppConfig.fromEnvironment([:]).gatewayWebSocketOverHTTP2)
        #expect(try !AppConfig.fromEnvironment(["TOLLGATE_HTTP2_WEBSOCKET": "false"]).gatewayWebSocketOverHTTP2)
        #expect(throws: (any Error).self) { try AppConfig.fromEnvironment(["TOLLGATE_HTTP2_WEBSOCKET": "maybe"]) }
    }

    @Test func theJSONAPITakesOneSetOfLimitsAndTheLoaderGivesThemToTheRoute() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let path = "/t/acme/api/v1/apis/\(id)/policies"
                let limits = #"{"kind":"websocket","config":{"idle_seconds":45,"max_seconds":900}}"#
                // act
                let twice = try await APITests.call(client, .put, path, token: world.provider, body: "{\"policies\":[\(limits),\(limits)]}")
                let bad = try await APITests.call(
                    client, .put, path, token: world.provider, body: #"{"policies":[{"kind":"websocket","config":{"idle_seconds":0,"max_seconds":-1}}]}"#)
                let good = try await APITests.call(client, .put, path, token: world.provider, body: "{\"policies\":[\(limits)]}")
                // assert
                #expect(twice.status == .unprocessableContent)
                #expect((try APITests.json(twice)["errors"] as? [String: String])?.keys.sorted() == ["/policies/1/kind"])
                #expect(bad.status == .unprocessableContent)
                #expect((try APITests.json(bad)["errors"] as? [String: String])?.keys.sorted() == ["/policies/0/config/idle_seconds", "/policies/0/config/max_seconds"])
                #expect(good.status == .ok)
                let read = try APITests.json(try await APITests.call(client, .get, path, token: world.provider))
                let stored = (read["policies"] as? [[String: Any]])?.first
                #expect(stored?["kind"] as? String == "websocket")
                #expect(stored?["phase"] as? String == "response")
                #expect((stored?["config"] as? [String: Any])?["max_seconds"] as? Int == 900)
                let snapshot = try await portal.snapshot()
                let route = snapshot.tenantsBySlug["acme"]?.routes.first { $0.apiID.uuidString == id.uppercased() }
                #expect(route?.webSocket == WebSocketConfig(idleSeconds: 45, maxSeconds: 900))
                // removed: the route keeps the installation's limits again
                #expect(try await APITests.call(client, .put, path, token: world.provider, body: #"{"policies":[]}"#).status == .ok)
                let after = try await portal.snapshot()
                #expect(after.tenantsBySlug["acme"]?.routes.first { $0.apiID.uuidString == id.uppercased() }?.webSocket == nil)
                // a gRPC API takes no WebSockets: refused rather than stored and ignored
                let grpc = try await APITests.call(
                    client, .patch, "/t/acme/api/v1/apis/\(id)", token: world.provider, body: #"{"targets":[{"url":"grpc://127.0.0.1:9","weight":1}]}"#)
                #expect(grpc.status == .ok)
                let onGRPC = try await APITests.call(client, .put, path, token: world.provider, body: "{\"policies\":[\(limits)]}")
                #expect(onGRPC.status == .unprocessableContent)
                #expect((try APITests.json(onGRPC)["errors"] as? [String: String])?["/policies/0/kind"]?.contains("gRPC") == true)
            }
        }
    }

    @Test func theAPIPageAddsLimitsAndMarksABadField() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let page = "/t/acme/catalog/apis/\(id)"
                #expect(try await provider.get(client, page).text.contains("Add WebSocket limits"))
                // act: a maximum out of bounds is refused, marked, and what was typed comes back
                let refused = try await provider.submit(
                    client, page + "/policies", from: page, fields: [("op", "add"), ("kind", "websocket"), ("idle_seconds", "90"), ("max_seconds", "999999999")])
                #expect(refused.status == .unprocessableContent)
                #expect(refused.text.contains("id=\"newws-max_seconds-error\""))
                #expect(refused.text.contains("value=\"90\""))
                #expect(refused.text.contains("value=\"999999999\""))
                let added = try await provider.submit(
                    client, page + "/policies", from: page, fields: [("op", "add"), ("kind", "websocket"), ("idle_seconds", "90"), ("max_seconds", "")])
                #expect(added.status == .seeOther)
                // assert
                let shown = try await provider.get(client, page)
                #expect(shown.text.contains("closed after 90 s without traffic, or at the installation&#39;s maximum duration")
                    || shown.text.contains("closed after 90 s without traffic, or at the installation's maximum duration"))
                #expect(shown.text.contains("On the response"))
                #expect(!shown.text.contains("Add WebSocket limits"))  // one per API
                // a second add from a stale tab says why it is refused
                let second = try await provider.submit(
                    client, page + "/policies", from: page, fields: [("op", "add"), ("kind", "websocket"), ("idle_seconds", "30"), ("max_seconds", "")])
                #expect(second.status == .conflict)
                #expect(second.text.contains("An API has one set of WebSocket limits."))
                // the saved policy's own form edits it in place
                let edited = try await provider.submit(
                    client, page + "/policies", from: page, fields: [("op", "save"), ("index", "0"), ("kind", "websocket"), ("idle_seconds", "20"), ("max_seconds", "120")])
                #expect(edited.status == .seeOther)
                #expect(try await provider.get(client, page).text.contains("closed after 20 s without traffic, or 120 s after opening"))
            }
        }
    }
}
