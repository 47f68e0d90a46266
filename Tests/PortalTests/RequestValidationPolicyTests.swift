import Foundation
@testable import Gateway
import Hummingbird
import HummingbirdTesting
import NIOCore
import PostgresNIO
import Testing

@testable import Portal

/// `request_validation` from the portal: the JSON chain and its 422s (no document, a gRPC API, a
/// document that cannot be compiled, twice), the document's JSON form the gateways load, the
/// loader compiling it once per change, and the API page's form.
@Suite struct RequestValidationPolicyTests {
    static let policy = #"{"kind":"request_validation","config":{"validate":"both"}}"#

    static let document = """
        openapi: 3.1.0
        info: {title: Orders, version: "1"}
        paths:
          /orders:
            post:
              requestBody:
                required: true
                content:
                  application/json:
                    schema: {$ref: '#/components/schemas/Order'}
              responses: {"201": {description: created}}
        components:
          schemas:
            Order:
              type: object
              required: [sku]
              properties:
                sku: {type: string, pattern: '^[A-Z]{3}-[0-9]+$'}
                quantity: {type: integer, minimum: 1}
        """

    static func upload(_ client: some TestClientProtocol, id: String, token: String, body: String = document) async throws -> TestResponse {
        try await APIDocumentFlowTests.put(client, "/t/acme/api/v1/apis/\(id)/openapi", token: token, type: "application/yaml", body: body)
    }

    static func errors(_ response: TestResponse) throws -> [String: String] {
        try APITests.json(response)["errors"] as? [String: String] ?? [:]
    }

    @Test func theChainTakesItOnlyWithADocumentThatCompiles() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let path = "/t/acme/api/v1/apis/\(id)/policies"
                // act + assert: no document yet
                let noDocument = try await APITests.call(client, .put, path, token: world.provider, body: "{\"policies\":[\(Self.policy)]}")
                #expect(noDocument.status == .unprocessableContent)
                #expect(try Self.errors(noDocument)["/policies/0/kind"]?.contains("Upload the API's OpenAPI document first") == true)
                // a bad configuration, and two of them
                let badConfig = try await APITests.call(
                    client, .put, path, token: world.provider, body: #"{"policies":[{"kind":"request_validation","config":{"validate":"all","x":1}}]}"#)
                #expect(try Self.errors(badConfig).keys.sorted() == ["/policies/0/config/validate", "/policies/0/config/x"])
                let twice = try await APITests.call(client, .put, path, token: world.provider, body: "{\"policies\":[\(Self.policy),\(Self.policy)]}")
                #expect(try Self.errors(twice).keys.sorted() == ["/policies/1/kind"])
                // a document the portal accepts but the validator cannot compile (a pattern ICU refuses)
                let broken = Self.document.replacingOccurrences(of: "'^[A-Z]{3}-[0-9]+$'", with: "'(unclosed'")
                #expect(try await Self.upload(client, id: id, token: world.provider, body: broken).status == .ok)
                let uncompilable = try await APITests.call(client, .put, path, token: world.provider, body: "{\"policies\":[\(Self.policy)]}")
                #expect(uncompilable.status == .unprocessableContent)
                let message = try #require(try Self.errors(uncompilable)["/policies/0/config"])
                #expect(message.contains("#/components/schemas/Order/properties/sku/pattern"))
                #expect(message.contains("regular expression"))
                // the good document: saved, listed before forwarding
                #expect(try await Self.upload(client, id: id, token: world.provider).status == .ok)
                let saved = try await APITests.call(client, .put, path, token: world.provider, body: "{\"policies\":[\(Self.policy)]}")
                #expect(saved.status == .ok)
                let read = try APITests.json(try await APITests.call(client, .get, path, token: world.provider))
                let stored = (read["policies"] as? [[String: Any]])?.first
                #expect(stored?["phase"] as? String == "pre_forward")
                #expect((stored?["config"] as? [String: Any])?["refuse_unknown_query"] as? Bool == false)
                let chain = (read["chain"] as? [[String: Any]]) ?? []
                #expect(chain.contains { $0["kind"] as? String == "request_validation" && $0["phase"] as? String == "pre_forward" })
            }
        }
    }

    @Test func aGRPCAPICannotTakeIt() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                #expect(try await Self.upload(client, id: id, token: world.provider).status == .ok)
                let grpc = try await APITests.call(
                    client, .patch, "/t/acme/api/v1/apis/\(id)", token: world.provider, body: #"{"targets":[{"url":"grpc://10.0.0.5:50051","weight":1}]}"#)
                #expect(grpc.status == .ok)
                // act
                let refused = try await APITests.call(client, .put, "/t/acme/api/v1/apis/\(id)/policies", token: world.provider, body: "{\"policies\":[\(Self.policy)]}")
                // assert
                #expect(refused.status == .unprocessableContent)
                #expect(try Self.errors(refused)["/policies/0/kind"]?.contains("gRPC") == true)
            }
        }
    }

    @Test func theLoaderCompilesTheYAMLDocumentOnceAndFailsClosedWhenItBreaks() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                #expect(try await Self.upload(client, id: id, token: world.provider).status == .ok)
                let path = "/t/acme/api/v1/apis/\(id)/policies"
                #expect(try await APITests.call(client, .put, path, token: world.provider, body: "{\"policies\":[\(Self.policy)]}").status == .ok)
                let loader = SnapshotLoader(
                    client: portal.database.client, baseDomain: "localhost", publicURL: portal.services.config.publicURL, logger: TestDatabase.logger)
                // act
                let first = try await loader.load(version: 1)
                let again = try await loader.load(version: 2)
                // assert: compiled from the YAML upload's JSON form, and not again for an unchanged reload
                let route = try #require(first.tenantsBySlug["acme"]?.routes.first { $0.apiID.uuidString == id.uppercased() })
                guard case .ready(let validator)? = route.requestValidation,
                    case .ready(let reloaded)? = again.tenantsBySlug["acme"]?.routes.first(where: { $0.apiID == route.apiID })?.requestValidation
                else { Issue.record("not compiled"); return }
                #expect(validator === reloaded)
                let outcome = validator.checkHead(method: .POST, uri: "/orders", headers: ["content-type": "application/json"], hasBody: true)
                guard case .checkBody(let node, _) = outcome else { Issue.record("no body check"); return }
                #expect(validator.checkBody(ByteBuffer(string: #"{"sku":"ABC-1","quantity":0}"#), schema: node, required: true).map(\.pointer) == ["/body/quantity"])
                // a document changed behind the policy's back (written here directly: the portal
                // refuses it) fails closed at the next load
                try await portal.database.withSystemScope { connection in
                    try await connection.query(
                        #"UPDATE api_documents SET document_json = '{"openapi":"3.1.0","paths":{}}'::jsonb WHERE api_id = \#(route.apiID)"#, logger: TestDatabase.logger)
                }
                let broken = try await loader.load(version: 3)
                guard case .unusable(let reason)? = broken.tenantsBySlug["acme"]?.routes.first(where: { $0.apiID == route.apiID })?.requestValidation else {
                    Issue.record("not failed closed"); return
                }
                #expect(reason.contains("/paths"))
            }
        }
    }

    @Test func theAPIPageAddsItAndMarksAMissingDocument() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let page = "/t/acme/catalog/apis/\(id)"
                #expect(try await provider.get(client, page).text.contains("Add request validation"))
                // act: no document yet — the form comes back marked, what was chosen kept
                let refused = try await provider.submit(
                    client, page + "/policies", from: page,
                    fields: [("op", "add"), ("kind", "request_validation"), ("validate", "parameters"), ("refuse_unknown_query", "on")])
                #expect(refused.status == .unprocessableContent)
                #expect(refused.text.contains("id=\"newvalidation-validate-error\""))
                #expect(refused.text.contains("Upload the API&#39;s OpenAPI document first") || refused.text.contains("Upload the API's OpenAPI document first"))
                #expect(refused.text.contains("<option value=\"parameters\" selected>"))
                // with the document, saved (post/redirect/get) and listed in the chain
                #expect(try await Self.upload(client, id: id, token: world.provider).status == .ok)
                let added = try await provider.submit(
                    client, page + "/policies", from: page,
                    fields: [("op", "add"), ("kind", "request_validation"), ("validate", "parameters"), ("refuse_unknown_query", "on")])
                #expect(added.status == .seeOther)
                let shown = try await provider.get(client, page)
                #expect(shown.text.contains("checks path, method and parameters against the API&#39;s OpenAPI document; unknown query parameters refused")
                    || shown.text.contains("checks path, method and parameters against the API's OpenAPI document; unknown query parameters refused"))
                #expect(!shown.text.contains("Add request validation"))  // one per API
            }
        }
    }
}
