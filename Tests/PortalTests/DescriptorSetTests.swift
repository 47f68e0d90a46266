import Foundation
import Hummingbird
import PostgresNIO
import HummingbirdTesting
import Testing

@testable import Portal

/// Uploading a gRPC API's protobuf descriptor set through the JSON API and the API page, and
/// reading its translated operations on the reference page.
@Suite struct DescriptorSetTests {
    static var greeter: [UInt8] { Array(Data(base64Encoded: DemoGreeterDescriptor.base64)!) }

    static func put(_ client: some TestClientProtocol, _ path: String, token: String, type: String = "application/octet-stream", body: [UInt8])
        async throws -> TestResponse
    {
        try await client.execute(
            uri: path, method: .put, headers: [.authorization: "Bearer \(token)", .contentType: type], body: ByteBuffer(bytes: body))
    }

    /// A published API whose targets are gRPC.
    static func grpcAPI(_ client: some TestClientProtocol, _ world: CatalogAPITests.World) async throws -> String {
        let id = try await PlanAPITests.publishedAPI(client, world)
        let patched = try await APITests.call(
            client, .patch, "/t/acme/api/v1/apis/\(id)", token: world.provider, body: #"{"targets":[{"url":"grpc://127.0.0.1:50051","weight":1}]}"#)
        #expect(patched.status == .ok)
        return id
    }

    @Test func providersUploadASetAndEveryViewerSeesItsOperations() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let httpAPI = try await PlanAPITests.publishedAPI(client, world)
                let refusedForHTTP = try await Self.put(client, "/t/acme/api/v1/apis/\(httpAPI)/descriptor-set", token: world.provider, body: Self.greeter)
                #expect(refusedForHTTP.status == .unprocessableContent)
                #expect(try APITests.json(refusedForHTTP)["title"] as? String == "Not a gRPC API")
                // the same API once its targets are gRPC
                let patched = try await APITests.call(
                    client, .patch, "/t/acme/api/v1/apis/\(httpAPI)", token: world.provider, body: #"{"targets":[{"url":"grpc://127.0.0.1:50051","weight":1}]}"#)
                #expect(patched.status == .ok)
                let id = httpAPI
                let path = "/t/acme/api/v1/apis/\(id)/descriptor-set"
                #expect(try await APITests.call(client, .get, path, token: world.developer).status == .notFound)
                // act
                let uploaded = try await Self.put(client, path, token: world.provider, body: Self.greeter)
                // assert
                #expect(uploaded.status == .ok)
                let body = try APITests.json(uploaded)
                #expect(body["services"] as? [String] == ["demo.Greeter"])
                #expect((body["sha256"] as? String)?.count == 64)
                let operation = (body["operations"] as? [[String: Any]])?.first ?? [:]
                #expect(operation["grpc_path"] as? String == "/demo.Greeter/SayHello")
                #expect(operation["kind"] as? String == "unary")
                let routes = (operation["routes"] as? [[String: Any]] ?? []).map { "\($0["method"] ?? "") \($0["path"] ?? "")" }
                #expect(routes == ["POST /echo/v1/demo.Greeter/SayHello", "POST /echo/v1/v1/hello", "GET /echo/v1/v1/hello/{name}"])
                let shown = try await APITests.call(client, .get, path, token: world.developer)
                #expect(shown.status == .ok)
                #expect(try APITests.json(shown)["services"] as? [String] == ["demo.Greeter"])
                let reference = try await client.execute(uri: "/t/acme/catalog/apis/\(id)/reference", method: .get, headers: [Browser.hostField: "localhost"])
                #expect(reference.status == .ok)
                #expect(reference.text.contains("Translated operations"))
                #expect(reference.text.contains("/demo.Greeter/SayHello"))
                #expect(reference.text.contains("GET http://"))
                #expect(reference.text.contains("/echo/v1/v1/hello/{name}"))
                #expect(!reference.text.contains("Download the OpenAPI document"))
                // the endpoint is in the tenant API's OpenAPI document, as a binary upload
                let document = try APITests.json(try await client.execute(uri: "/t/acme/api/v1/openapi.json", method: .get))
                let endpoint = (document["paths"] as? [String: Any])?["/apis/{api}/descriptor-set"] as? [String: Any]
                let put = endpoint?["put"] as? [String: Any]
                #expect(((put?["requestBody"] as? [String: Any])?["content"] as? [String: Any])?["application/octet-stream"] != nil)
                #expect(endpoint?["get"] != nil && endpoint?["delete"] != nil)
            }
        }
    }

    /// The test Kitchen service (scripts/proto/tollgate/test/kitchen.proto): Upload, a client
    /// stream, is annotated `post: "/v1/uploads"`; Chat, bidirectional, `post: "/v1/chats/{id}"`
    /// (a variable a stream cannot fill) and `post: "/v1/chat"`.
    static var kitchen: [UInt8] {
        get throws {
            let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("GatewayTests/TranscodingVectors/kitchen.binpb")
            return Array(try Data(contentsOf: url))
        }
    }

    @Test func aStreamsRoutesAreListedAsTheGatewayServesThemAndTheOthersWithTheirReason() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await Self.grpcAPI(client, world)
                // act
                let uploaded = try await Self.put(client, "/t/acme/api/v1/apis/\(id)/descriptor-set", token: world.provider, body: try Self.kitchen)
                // assert
                #expect(uploaded.status == .ok)
                let operations = (try APITests.json(uploaded)["operations"] as? [[String: Any]]) ?? []
                func operation(_ name: String) -> [String: Any] { operations.first { $0["grpc_path"] as? String == "/tollgate.test.Kitchen/\(name)" } ?? [:] }
                func routes(_ name: String) -> [String] {
                    (operation(name)["routes"] as? [[String: Any]] ?? []).map { "\($0["method"] ?? "") \($0["path"] ?? "")" }
                }
                #expect(routes("Upload") == ["POST /echo/v1/tollgate.test.Kitchen/Upload", "POST /echo/v1/v1/uploads"])
                #expect(routes("Chat") == ["POST /echo/v1/tollgate.test.Kitchen/Chat", "POST /echo/v1/v1/chat"])
                let notRouted = operation("Chat")["not_routed"] as? [[String: Any]] ?? []
                #expect(notRouted.count == 1 && notRouted.first?["path"] as? String == "/echo/v1/v1/chats/{id}")
                #expect((notRouted.first?["reason"] as? String)?.contains("path variables") == true)
                #expect((operation("Upload")["not_routed"] as? [Any])?.isEmpty == true)
                let reference = try await client.execute(uri: "/t/acme/catalog/apis/\(id)/reference", method: .get, headers: [Browser.hostField: "localhost"])
                #expect(reference.text.contains("/echo/v1/v1/uploads"))
                #expect(reference.text.contains("The binding <code>google.api.http: post &quot;/v1/chats/{id}&quot;</code> is not routed: a client or bidirectional stream"))
            }
        }
    }

    @Test func badUploadsAreRefusedWithReasonsAndKeepTheStoredSet() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await Self.grpcAPI(client, world)
                let path = "/t/acme/api/v1/apis/\(id)/descriptor-set"
                #expect(try await Self.put(client, path, token: world.provider, body: Self.greeter).status == .ok)
                // act, assert
                #expect(try await Self.put(client, path, token: world.provider, type: "application/json", body: Self.greeter).status == .unsupportedMediaType)
                let garbage = try await Self.put(client, path, token: world.provider, body: Array("not protobuf at all".utf8))
                #expect(garbage.status == .unprocessableContent)
                let errors = try APITests.json(garbage)["errors"] as? [String: String]
                #expect(errors?["descriptor_set"]?.contains("not a protobuf descriptor set") == true)
                let tooLarge = try await Self.put(client, path, token: world.provider, body: [UInt8](repeating: 0, count: APIDescriptorSet.maximumBytes + 1))
                #expect(tooLarge.status == .contentTooLarge)
                #expect(try await Self.put(client, path, token: world.developer, body: Self.greeter).status != .ok)
                // the stored set is untouched by the refusals
                #expect(try APITests.json(try await APITests.call(client, .get, path, token: world.provider))["services"] as? [String] == ["demo.Greeter"])
                // removal
                #expect(try await APITests.call(client, .delete, path, token: world.provider).status == .noContent)
                #expect(try await APITests.call(client, .get, path, token: world.provider).status == .notFound)
                #expect(try await APITests.call(client, .delete, path, token: world.provider).status == .notFound)
            }
        }
    }

    @Test func theAPIPageUploadsABinaryFileAndMarksTheFieldOnError() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await Self.grpcAPI(client, world)
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let page = try await provider.get(client, "/t/acme/catalog/apis/\(id)")
                #expect(page.text.contains("Protobuf descriptor set"))
                let token = Browser.csrfToken(in: page.text) ?? ""
                func upload(_ file: [UInt8]) async throws -> TestResponse {
                    let boundary = "tollgate-test-boundary"
                    var body = Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\n\(token)\r\n".utf8)
                    body += Array(
                        "--\(boundary)\r\nContent-Disposition: form-data; name=\"descriptor_set\"; filename=\"greeter.binpb\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                            .utf8)
                    body += file + Array("\r\n--\(boundary)--\r\n".utf8)
                    return try await client.execute(
                        uri: "/t/acme/catalog/apis/\(id)/descriptor-set", method: .post,
                        headers: [Browser.hostField: "localhost", .cookie: provider.cookieHeader, .contentType: "multipart/form-data; boundary=\(boundary)"],
                        body: ByteBuffer(bytes: body))
                }
                // act: a file that is not a descriptor set, then the real one (binary, not UTF-8)
                let refused = try await upload([0xFF, 0xFE, 0x00, 0x01])
                let saved = try await upload(Self.greeter)
                // assert
                #expect(refused.status == .unprocessableContent)
                #expect(refused.text.contains(#"id="descriptor_set" type="file" name="descriptor_set""#))
                #expect(refused.text.contains(#"aria-invalid="true" aria-describedby="descriptor_set-error""#))
                #expect(refused.text.contains("not a protobuf descriptor set"))
                #expect(saved.status == .seeOther)  // post/redirect/get
                let shown = try await provider.get(client, "/t/acme/catalog/apis/\(id)")
                #expect(shown.text.contains("Descriptor set saved: demo.Greeter, 1 methods."))
                #expect(shown.text.contains("1 translated operation</a>"))
                #expect(shown.text.contains("Remove the descriptor set"))
                // removal from the page: post/redirect/get, and the API is gRPC-only again
                let removed = try await provider.post(
                    client, "/t/acme/catalog/apis/\(id)/descriptor-set/remove", fields: [("_csrf", Browser.csrfToken(in: shown.text) ?? "")])
                #expect(removed.status == .seeOther)
                let after = try await provider.get(client, "/t/acme/catalog/apis/\(id)")
                #expect(after.text.contains("Descriptor set removed"))
                #expect(after.text.contains("None: only gRPC clients (HTTP/2) can call this API."))
            }
        }
    }
}

/// The demo seed uploads the Greeter's descriptor set once, so JSON clients reach it after `make run`.
@Suite struct DemoGreeterDescriptorSeedTests {
    @Test func theSeedStoresTheGreetersSetOnce() async throws {
        try await TestDatabase.withDatabase { database in
            // setup
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("seed-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let seed = DemoSeed(database: database, dataDirectory: directory)
            // act
            _ = try await seed.run()
            _ = try await seed.run()
            // assert
            let tenant = try #require(try await database.withPlatform { try await TenantRepository(logger: database.logger).find(slug: "demo", on: $0) })
            let rows = try await database.withTenant(tenant.id) { connection -> [String] in
                var result: [String] = []
                for try await row in try await connection.query(
                    "SELECT a.slug || ' ' || array_to_string(d.services, ',') || ' ' || d.method_count FROM api_descriptor_sets d JOIN apis a ON a.id = d.api_id",
                    logger: database.logger
                ).decode(String.self) { result.append(row) }
                return result
            }
            #expect(rows == ["greeter demo.Greeter 1"])
        }
    }
}
