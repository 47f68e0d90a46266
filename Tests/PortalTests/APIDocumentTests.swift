import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import Portal

/// OpenAPI document parsing, validation and the reference view — pure.
@Suite struct APIDocumentRuleTests {
    static let petsYAML = """
        openapi: 3.1.0
        info:
          title: Pets
          version: "2.1"
          description: Adopt **pets**.
        tags:
          - name: pets
            description: Everything about pets
        paths:
          /pets/{id}:
            parameters:
              - name: id
                in: path
                required: true
                schema: {type: string, format: uuid}
            get:
              tags: [pets]
              operationId: getPet
              summary: One pet
              parameters:
                - $ref: '#/components/parameters/Verbose'
              responses:
                "200":
                  description: The pet
                  content:
                    application/json:
                      schema: {$ref: '#/components/schemas/Pet'}
                      example: {id: 7, name: Rex}
                "404": {description: No such pet}
          /health:
            get:
              responses:
                default: {description: OK}
        components:
          parameters:
            Verbose: {name: verbose, in: query, schema: {type: boolean}}
          schemas:
            Pet:
              type: object
              required: [id, name]
              properties:
                id: {type: integer}
                name: {type: string, description: What it answers to}
                kind: {type: string, enum: [cat, dog]}
        """

    @Test func yamlAndJSONDocumentsParseWithTheirSummary() throws {
        let yaml = try APIDocument.parse(Array(Self.petsYAML.utf8))
        #expect(yaml.format == .yaml)
        #expect(yaml.title == "Pets")
        #expect(yaml.version == "2.1")
        #expect(yaml.openAPIVersion == "3.1.0")
        let json = try APIDocument.parse(Array(#"{"openapi":"3.0.3","info":{"title":"T","version":"1"},"paths":{"/a":{"get":{"responses":{"200":{"description":"ok"}}}}}}"#.utf8))
        #expect(json.format == .json)
        #expect(json.root["paths"]?["/a"]?["get"] != nil)
    }

    @Test(arguments: [
        (#"{"swagger":"2.0","info":{"title":"T","version":"1"},"paths":{}}"#, "Swagger 2.0"),
        (#"{"openapi":"3.0.3","paths":{}}"#, "info.title"),
        (#"{"openapi":"4.0.0","info":{"title":"T","version":"1"},"paths":{}}"#, "3.0.x or 3.1.x"),
        (#"{"openapi":"3.0.3","info":{"title":"T","version":"1"}}"#, "`paths` is required"),
        (#"{"openapi":"3.0.3","info":{"title":"T","version":"1"},"paths":{"a":{}}}"#, "must start with /"),
        (#"{"openapi":"3.0.3","info":{"title":"T","version":"1"},"paths":{"/a":{"get":{}}}}"#, "responses is required"),
        (#"{"openapi":"3.1.0","info":{"title":"T","version":"1"},"paths":{"/a":{"get":{"responses":{"20":{"description":"x"}}}}}}"#, "not a status code"),
        (#"{"openapi":"3.1.0","info":{"title":"T","version":"1"},"paths":{"/a/{id}":{"get":{"parameters":[{"name":"id","in":"path"}]}}}}"#, "must be required"),
        (##"{"openapi":"3.1.0","info":{"title":"T","version":"1"},"paths":{"/a":{"get":{"responses":{"200":{"$ref":"#/components/responses/Nope"}}}}}}"##, "points at nothing"),
        (#"{"openapi":"3.1.0","info":{"title":"T","version":"1"},"paths":{"/a":{"get":{"operationId":"x"},"post":{"operationId":"x"}}}}"#, "used twice"),
        ("{\"openapi\": ", "not valid JSON"),
        ("openapi: [unclosed", "not valid YAML"),
        ("   ", "empty"),
        ("- just\n- a list\n", "must be an object"),
    ])
    func invalidDocumentsAreRefusedWithTheReason(text: String, reason: String) {
        do {
            _ = try APIDocument.parse(Array(text.utf8))
            Issue.record("accepted: \(text)")
        } catch let invalid as APIDocument.Invalid {
            #expect(invalid.problems.joined(separator: " ").contains(reason), "\(invalid.problems)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func aliasBombsAndBinaryAreRefusedWithoutBlowingUp() {
        var bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        for level in 1...8 { bomb += "\(Character(UnicodeScalar(97 + level)!)): &\(Character(UnicodeScalar(97 + level)!)) [" + Array(repeating: "*\(Character(UnicodeScalar(96 + level)!))", count: 10).joined(separator: ", ") + "]\n" }
        #expect(throws: APIDocument.Invalid.self) { try APIDocument.parse(Array(bomb.utf8)) }
        #expect(throws: APIDocument.Invalid.self) { try APIDocument.parse([0xff, 0xfe, 0x00, 0x41]) }
        #expect(throws: APIDocument.Invalid.self) { try APIDocument.parse(Array(repeating: 0x20, count: APIDocument.maximumBytes + 1)) }
    }

    @Test func theReferenceGroupsOperationsByTagWithParametersSchemasAndExamples() throws {
        let document = try APIDocument.parse(Array(Self.petsYAML.utf8))
        let values = APIReference.values(document.root)
        let groups = values["groups"] as? [[String: Any]] ?? []
        #expect(groups.compactMap { $0["name"] as? String } == ["pets", "Other"])
        let getPet = (groups.first?["operations"] as? [[String: Any]])?.first ?? [:]
        #expect(getPet["method"] as? String == "GET")
        #expect(getPet["path"] as? String == "/pets/{id}")
        let parameters = getPet["parameters"] as? [[String: Any]] ?? []
        #expect(parameters.compactMap { $0["name"] as? String } == ["id", "verbose"])
        #expect(parameters.first?["type"] as? String == "string (uuid)")
        let ok = (getPet["responses"] as? [[String: Any]])?.first ?? [:]
        let media = (ok["media"] as? [[String: Any]])?.first ?? [:]
        #expect(media["outline"] as? String == "Pet")
        #expect((media["example"] as? String)?.contains("\"name\": \"Rex\"") == true)
        let pet = (values["schemas"] as? [[String: Any]])?.first?["outline"] as? String ?? ""
        #expect(pet.contains("id: integer  (required)"))
        #expect(pet.contains(#"kind: string — one of "cat", "dog""#))
        #expect((values["description_html"] as? String)?.contains("<strong>pets</strong>") == true)
    }

    @Test func multipartBodiesSplitIntoFields() throws {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\ntok\r\n--XyZ\r\nContent-Disposition: form-data; name=\"document\"; filename=\"a.yaml\"\r\nContent-Type: application/yaml\r\n\r\nopenapi: 3.1.0\r\ninfo: {}\r\n--XyZ--\r\n"
        let pairs = try #require(MultipartForm.parse(Array(body.utf8), boundary: "XyZ"))
        #expect(pairs.map(\.0) == ["_csrf", "document"])
        #expect(pairs.last?.1 == "openapi: 3.1.0\r\ninfo: {}")
        #expect(MultipartForm.boundary(contentType: "multipart/form-data; boundary=\"XyZ\"") == "XyZ")
        #expect(MultipartForm.parse(Array("garbage".utf8), boundary: "XyZ") == nil)
    }
}

/// Uploading, downloading and reading the reference through the API and the pages.
@Suite struct APIDocumentFlowTests {
    static func put(_ client: some TestClientProtocol, _ path: String, token: String, type: String, body: String) async throws -> TestResponse {
        try await client.execute(
            uri: path, method: .put, headers: [.authorization: "Bearer \(token)", .contentType: type], body: ByteBuffer(string: body))
    }

    @Test func providersUploadAndEveryViewerDownloadsAndReads() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let path = "/t/acme/api/v1/apis/\(id)/openapi"
                // act
                let uploaded = try await Self.put(client, path, token: world.provider, type: "application/yaml", body: APIDocumentRuleTests.petsYAML)
                // assert
                #expect(uploaded.status == .ok)
                #expect(try APITests.json(uploaded)["title"] as? String == "Pets")
                let download = try await APITests.call(client, .get, path, token: world.developer)
                #expect(download.headers[.contentType]?.hasPrefix("application/yaml") == true)
                #expect(download.text == APIDocumentRuleTests.petsYAML)
                let reference = try await client.execute(uri: "/t/acme/catalog/apis/\(id)/reference", method: .get, headers: [Browser.hostField: "localhost"])
                #expect(reference.status == .ok)
                #expect(reference.text.contains("Everything about pets"))
                #expect(reference.text.contains("/pets/{id}"))
                // refusals
                #expect(try await Self.put(client, path, token: world.provider, type: "text/plain", body: "x").status == .unsupportedMediaType)
                let invalid = try await Self.put(client, path, token: world.provider, type: "application/json", body: #"{"openapi":"3.1.0"}"#)
                #expect(invalid.status == .unprocessableContent)
                #expect(try await Self.put(client, path, token: world.developer, type: "application/json", body: "{}").status != .ok)
                // the first document is still there after the refused replacement
                #expect(try await APITests.call(client, .get, path, token: world.developer).text == APIDocumentRuleTests.petsYAML)
            }
        }
    }

    @Test func theUploadFormAcceptsAFile() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let page = try await provider.get(client, "/t/acme/catalog/apis/\(id)")
                let token = Browser.csrfToken(in: page.text) ?? ""
                let boundary = "tollgate-test-boundary"
                let body = "--\(boundary)\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\n\(token)\r\n"
                    + "--\(boundary)\r\nContent-Disposition: form-data; name=\"document\"; filename=\"pets.yaml\"\r\nContent-Type: application/yaml\r\n\r\n"
                    + APIDocumentRuleTests.petsYAML + "\r\n--\(boundary)--\r\n"
                let response = try await client.execute(
                    uri: "/t/acme/catalog/apis/\(id)/openapi", method: .post,
                    headers: [Browser.hostField: "localhost", .cookie: provider.cookieHeader, .contentType: "multipart/form-data; boundary=\(boundary)"],
                    body: ByteBuffer(string: body))
                #expect(response.status == .seeOther)  // post/redirect/get
                let shown = try await provider.get(client, "/t/acme/catalog/apis/\(id)")
                #expect(shown.text.contains("OpenAPI document &#39;Pets&#39; 2.1 saved.") || shown.text.contains("OpenAPI document 'Pets' 2.1 saved."))
                #expect(shown.text.contains("/reference"))
            }
        }
    }
}
