import Foundation
import Gateway
import Hummingbird
import HummingbirdTesting
import Testing

@testable import Portal

/// Request and response transformations from the portal: the JSON chain, the API page's forms, the
/// form ⇄ config mapping, and the snapshot compiling what was stored.
@Suite struct TransformPolicyTests {
    static let request =
        #"{"kind":"request_transform","config":{"headers":{"set":{"X-Caller":"$app_id"},"remove":["X-Debug"]},"path":{"match":"/users/{id}","replace":"/v2/people/{id}"}}}"#

    @Test func theFormMapsLinesToOperationsAndProblemsBackToTheirArea() throws {
        // setup
        let form = FormData(pairs: [
            ("header_remove", "X-Debug\r\nX-Trace"), ("header_rename", "X-Old X-New"), ("header_set", "X-Caller: $client_id\r\nX-Note: a: b"),
            ("query_add", "v: 2"), ("path_match", "/users/{id}"), ("path_replace", "/people/{id}"),
        ])
        // act
        let config = try TransformForm.config(.request, from: form).get()
        // assert: CRLF from a browser splits lines; the first colon separates name and value
        #expect(config.headers.remove == ["X-Debug", "X-Trace"])
        #expect(config.headers.rename == [.init(from: "X-Old", to: "X-New")])
        #expect(config.headers.set.map { "\($0.name)=\($0.value.text)" } == ["X-Caller=$client_id", "X-Note=a: b"])
        #expect(config.query.add.map(\.name) == ["v"])
        #expect(config.path?.replace == "/people/{id}")
        // the stored config shows in the same areas again
        let values = TransformForm.values(config, side: .request)
        #expect(values["header_remove"] as? String == "X-Debug\nX-Trace")
        #expect(values["path_match"] as? String == "/users/{id}")
        // problems land on the area they came from
        guard case .failure(let errors) = TransformForm.config(.request, from: FormData(pairs: [("header_set", "Host: evil"), ("path_match", "users")]))
        else {
            Issue.record("accepted")
            return
        }
        #expect(errors.fields.keys.sorted() == ["header_set", "path_match"])
        guard case .failure(let lines) = TransformForm.config(.response, from: FormData(pairs: [("header_rename", "only-one")])) else { return }
        #expect(lines.fields["header_rename"]?.contains("old name, a space, the new name") == true)
    }

    @Test func theJSONChainTakesTransformsAndRefusesTheGatewaysHeaders() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let path = "/t/acme/api/v1/apis/\(id)/policies"
                // act: refused names and an unknown variable
                let bad = try await APITests.call(
                    client, .put, path, token: world.provider,
                    body: #"{"policies":[{"kind":"request_transform","config":{"headers":{"set":{"X-Forwarded-For":"1.2.3.4","X-A":"$password"}}}},{"kind":"response_transform","config":{"headers":{"remove":["RateLimit"]}}}]}"#
                )
                // assert
                #expect(bad.status == .unprocessableContent)
                let errors = (try APITests.json(bad)["errors"] as? [String: String]) ?? [:]
                #expect(errors.keys.sorted() == ["/policies/0/config/headers/set/X-A", "/policies/0/config/headers/set/X-Forwarded-For", "/policies/1/config/headers/remove/0"])
                #expect(errors["/policies/0/config/headers/set/X-Forwarded-For"]?.contains("cannot be transformed") == true)
                // a good chain is stored, read back in its phases and compiled into the snapshot
                let good = try await APITests.call(
                    client, .put, path, token: world.provider,
                    body: #"{"policies":[\#(Self.request),{"kind":"response_transform","config":{"headers":{"remove":["Server"]}}}]}"#)
                #expect(good.status == .ok)
                let read = try APITests.json(try await APITests.call(client, .get, path, token: world.provider))
                let policies = read["policies"] as? [[String: Any]] ?? []
                #expect(policies.compactMap { $0["phase"] as? String } == ["pre_forward", "response"])
                let chain = (read["chain"] as? [[String: Any]] ?? []).compactMap { $0["kind"] as? String }
                #expect(chain.firstIndex(of: "request_transform")! < chain.firstIndex(of: "deprecation")!)
                let loader = SnapshotLoader(
                    client: portal.database.client, baseDomain: "localhost", publicURL: portal.services.config.publicURL, logger: TestDatabase.logger)
                let snapshot = try await loader.load(version: 1)
                let route = try #require(snapshot.tenantsBySlug["acme"]?.routes.first { $0.apiID.uuidString == id.uppercased() })
                #expect(route.requestTransform?.steps.first?.path?.match == "/users/{id}")
                #expect(route.responseTransform?.touched == ["server"])
                // documented
                let document = String(buffer: try await APITests.call(client, .get, "/t/acme/api/v1/openapi.json", token: nil).body)
                #expect(document.contains("\"RequestTransformConfig\"") && document.contains("\"ResponseTransformConfig\""))
            }
        }
    }

    @Test func theAPIPageAddsEditsAndMarksTransformMistakes() async throws {
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
                #expect(before.text.contains("Add a request transformation") && before.text.contains("Add a response transformation"))
                #expect(before.text.contains("id=\"newreq-path_match\""))
                #expect(!before.text.contains("id=\"newres-path_match\""))  // a response has no path
                // act: add a request transformation (post/redirect/get)
                let added = try await provider.submit(
                    client, action, from: page,
                    fields: [("op", "add"), ("kind", "request_transform"), ("header_set", "X-Caller: $app_id"), ("path_match", "/users/{id}"), ("path_replace", "/v2/people/{id}")])
                #expect(added.status == .seeOther)
                let shown = try await provider.get(client, page)
                #expect(shown.text.contains("headers: set X-Caller; path /users/{id} → /v2/people/{id}"))
                #expect(shown.text.contains("id=\"p0-header_set\""))
                // bad input: the area is marked and keeps what was typed
                let refused = try await provider.submit(
                    client, action, from: page, fields: [("op", "add"), ("kind", "response_transform"), ("header_remove", "Content-Length")])
                #expect(refused.status == .unprocessableContent)
                #expect(refused.text.contains("id=\"newres-header_remove-error\""))
                #expect(refused.text.contains(">Content-Length</textarea>"))
                #expect(refused.text.contains("<details id=\"add-response-transform\" open>"))
                // edit the stored one
                let edited = try await provider.submit(
                    client, action, from: page, fields: [("op", "save"), ("index", "0"), ("kind", "request_transform"), ("query_set", "v: 2")])
                #expect(edited.status == .seeOther)
                let after = try await provider.get(client, page)
                #expect(after.text.contains("query: set v"))
                #expect(!after.text.contains("headers: set X-Caller"))
            }
        }
    }
}
