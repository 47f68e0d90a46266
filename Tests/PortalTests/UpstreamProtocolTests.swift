import Foundation
import Gateway
import Hummingbird
import HummingbirdTesting
import Testing

@testable import Portal

/// An API's upstream protocol (`http1` | `h2`): set at creation or by PATCH and on the API page,
/// validated against the targets, carried into the gateway's snapshot.
@Suite struct UpstreamProtocolTests {
    // an empty value is refused like an unknown one; only an absent one keeps what is stored;
    // spelled exactly as the API document's enum (no case folding, no trimming)
    @Test(arguments: [
        ("h2", UpstreamProtocol?.some(.h2)), ("http1", .some(.http1)), ("HTTP1", nil), ("H2", nil), (" h2", nil), ("", nil), (" ", nil), ("h3", nil),
        ("http/2", nil),
    ])
    func theChoiceIsParsedOrExplained(text: String, parsed: UpstreamProtocol?) {
        let result = UpstreamProtocolChoice.parse(text, targets: [UpstreamTarget(url: "https://api.example.com", weight: 1)])
        switch result {
        case .success(let chosen): #expect(chosen == parsed && parsed != nil)
        case .failure(let problem): #expect(parsed == nil && problem.message.contains("http1"))
        }
        if case .success(let absent) = UpstreamProtocolChoice.parse(nil, targets: nil) { #expect(absent == nil) } else { Issue.record("absent must mean unchanged") }
        #expect(UpstreamProtocolChoice.problem(.h2, targets: [UpstreamTarget(url: "grpc://10.0.0.5:50051", weight: 1)]) != nil)
        #expect(UpstreamProtocolChoice.problem(.http1, targets: [UpstreamTarget(url: "grpc://10.0.0.5:50051", weight: 1)]) == nil)
    }

    /// A body decoded with `convertFromSnakeCase` names the member as the client spelled it.
    @Test(arguments: [
        (#"{"upstream_protocol": 2}"#, "wrong type at upstream_protocol"), (#"{"upstream_ca_pem": []}"#, "wrong type at upstream_ca_pem"),
        (#"{"allowed_team_ids": ["x", 3]}"#, "wrong type at allowed_team_ids.1"),
    ])
    func decodingErrorsNameTheWireMember(body: String, expected: String) {
        struct Body: Decodable {
            var upstreamProtocol: String?
            var upstreamCaPem: String?
            var allowedTeamIds: [String]?
        }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        do {
            _ = try decoder.decode(Body.self, from: Data(body.utf8))
            Issue.record("decoded \(body)")
        } catch let error as DecodingError {
            #expect(APIDecoding.describe(error) == expected)
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test func theJSONAPISetsItChecksItAndTheSnapshotCarriesIt() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let path = "/t/acme/api/v1/apis/\(id)"
                #expect(try APITests.json(try await APITests.call(client, .get, path, token: world.provider))["upstream_protocol"] as? String == "http1")
                // act
                let set = try await APITests.call(
                    client, .patch, path, token: world.provider,
                    body: #"{"upstream_protocol":"h2","targets":[{"url":"http://127.0.0.1:9301","weight":1},{"url":"https://api.example.com/v2","weight":1}]}"#)
                let unknown = try await APITests.call(client, .patch, path, token: world.provider, body: #"{"upstream_protocol":"h3"}"#)
                let empty = try await APITests.call(client, .patch, path, token: world.provider, body: #"{"upstream_protocol":""}"#)
                let grpcTargets = try await APITests.call(
                    client, .patch, path, token: world.provider, body: #"{"targets":[{"url":"grpc://10.0.0.5:50051","weight":1}]}"#)
                // assert
                #expect(set.status == .ok)
                #expect(try APITests.json(set)["upstream_protocol"] as? String == "h2")
                #expect(unknown.status == .unprocessableContent)
                #expect((try APITests.json(unknown)["errors"] as? [String: String])?["upstream_protocol"]?.contains("http1") == true)
                #expect(empty.status == .unprocessableContent)
                #expect((try APITests.json(empty)["errors"] as? [String: String])?["upstream_protocol"]?.contains("http1") == true)
                // gRPC targets are HTTP/2 anyway: h2 stays refused for them, whichever field changes
                #expect(grpcTargets.status == .unprocessableContent)
                #expect((try APITests.json(grpcTargets)["errors"] as? [String: String])?["targets"]?.contains("gRPC") == true)
                let snapshot = try await portal.snapshot()
                let route = try #require(snapshot.tenantsBySlug["acme"]?.routes.first { $0.apiID.uuidString == id.uppercased() })
                #expect(route.targets.map(\.h2) == [true, true] && route.targets.map(\.http2) == [false, false])
                #expect(route.targets.map(\.address) == ["h2c://127.0.0.1:9301", "h2+https://api.example.com:443"])
                // the TLS target's pool key names its TLS settings too; the plaintext one is its address
                #expect(route.targets[0].key == "h2c://127.0.0.1:9301" && route.targets[1].key == "h2+https://api.example.com:443#\(route.upstreamTLS?.identity ?? "")")
                #expect(route.upstreamTLS != nil)
                // WebSocket handshakes reach its https targets over HTTP/1.1: a context without ALPN h2
                let upgradeTLS = try #require(route.upgradeTLS)
                #expect(upgradeTLS.identity != route.upstreamTLS?.identity)
                // absent keeps the stored protocol; null puts the default back (JSON merge patch)
                let renamed = try await APITests.call(client, .patch, path, token: world.provider, body: #"{"name":"Renamed"}"#)
                #expect(renamed.status == .ok)
                #expect(try APITests.json(renamed)["upstream_protocol"] as? String == "h2")
                let reset = try await APITests.call(client, .patch, path, token: world.provider, body: #"{"upstream_protocol":null}"#)
                #expect(reset.status == .ok)
                #expect(try APITests.json(reset)["upstream_protocol"] as? String == "http1")
                #expect(try APITests.json(try await APITests.call(client, .get, path, token: world.provider))["upstream_protocol"] as? String == "http1")
                // documented, null included
                let document = String(buffer: try await APITests.call(client, .get, "/t/acme/api/v1/openapi.json", token: nil).body)
                #expect(document.contains("\"upstream_protocol\""))
                #expect(document.contains("null sets the default, http1"))
            }
        }
    }

    @Test func theAPIPageFormSetsItAndMarksTheFieldOnError() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let page = "/t/acme/catalog/apis/\(id)"
                let saved = try await provider.submit(
                    client, page + "/settings", from: page, fields: [("targets", "http://127.0.0.1:9300 1\r\n"), ("upstream_protocol", "h2")])
                #expect(saved.status == .seeOther)  // post/redirect/get
                let shown = try await provider.get(client, page)
                #expect(shown.text.contains("Settings saved."))
                #expect(shown.text.contains(#"<option value="h2" selected>"#))
                let wrong = try await provider.submit(
                    client, page + "/settings", from: page, fields: [("targets", "grpc://10.0.0.5:50051 1"), ("upstream_protocol", "h2")])
                #expect(wrong.status == .unprocessableContent)
                #expect(wrong.text.contains(#"id="upstream_protocol-error""#))
                #expect(wrong.text.contains(#"<option value="h2" selected>"#))  // what was chosen stays chosen
                // a tampered value — empty or unknown — is refused with the field marked, not ignored
                for tampered in ["", "h3"] {
                    let refused = try await provider.submit(
                        client, page + "/settings", from: page, fields: [("targets", "http://127.0.0.1:9300 1"), ("upstream_protocol", tampered)])
                    #expect(refused.status == .unprocessableContent, "'\(tampered)'")
                    #expect(refused.text.contains(#"id="upstream_protocol-error""#) && refused.text.contains(#"aria-invalid="true""#), "'\(tampered)'")
                    #expect(refused.text.contains("Choose HTTP/1.1 (http1) or HTTP/2"), "'\(tampered)'")
                    // the select shows what is stored (h2), not the first option
                    #expect(refused.text.contains(#"<option value="h2" selected>"#), "'\(tampered)'")
                }
                // another field's error: the select shows the valid protocol submitted, not the stored one
                let badTargets = try await provider.submit(
                    client, page + "/settings", from: page, fields: [("targets", "ftp://127.0.0.1:9300 1"), ("upstream_protocol", "http1")])
                #expect(badTargets.status == .unprocessableContent)
                #expect(badTargets.text.contains(#"class="field-error""#) && !badTargets.text.contains(#"id="upstream_protocol-error""#))
                #expect(!badTargets.text.contains(#"<option value="h2" selected>"#))
                // a post without the field (only the targets) keeps the stored protocol
                let partial = try await provider.submit(client, page + "/settings", from: page, fields: [("targets", "http://127.0.0.1:9301 1")])
                #expect(partial.status == .seeOther)
                #expect(try await provider.get(client, page).text.contains(#"<option value="h2" selected>"#))
            }
        }
    }
}
