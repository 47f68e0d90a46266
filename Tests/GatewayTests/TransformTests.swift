import Foundation
import Testing

@testable import Gateway

@Suite struct TransformTests {
    static func config(_ json: String, _ side: TransformConfig.Side = .request) throws -> TransformConfig {
        guard case .object(let object)? = JSONValue.parse(json) else { throw CancellationError() }
        return try TransformConfig.parse(object, side: side).get()
    }

    static func problems(_ json: String, _ side: TransformConfig.Side = .request) -> [PolicyConfigProblem] {
        guard case .object(let object)? = JSONValue.parse(json), case .failure(let problems) = TransformConfig.parse(object, side: side) else { return [] }
        return problems.list
    }

    static let context = TransformContext(
        appID: UUID(uuidString: "00000000-0000-0000-0000-0000000000a1")!, clientID: "tgc_x", teamID: UUID(uuidString: "00000000-0000-0000-0000-0000000000b2")!,
        planID: UUID(uuidString: "00000000-0000-0000-0000-0000000000c3")!, requestID: "req-1", clientIP: "192.0.2.9")

    // MARK: validation

    @Test(arguments: [
        ("request", "Host"), ("request", "content-length"), ("request", "Transfer-Encoding"), ("request", "Authorization"), ("request", "X-API-Key"),
        ("request", "Connection"), ("request", "X-Tollgate-App-Id"), ("request", "X-Forwarded-For"), ("request", "X-Request-Id"),
        ("response", "Content-Length"), ("response", "RateLimit"), ("response", "Cache-Status"), ("response", "Access-Control-Allow-Origin"),
        ("response", "X-Tollgate-Cache"), ("response", "Keep-Alive"),
    ])
    func theGatewaysOwnHeadersCannotBeTouched(side: String, name: String) {
        let side: TransformConfig.Side = side == "request" ? .request : .response
        for operation in [#"{"headers": {"remove": ["\#(name)"]}}"#, #"{"headers": {"set": {"\#(name)": "x"}}}"#, #"{"headers": {"rename": {"X-Ok": "\#(name)"}}}"#] {
            let found = Self.problems(operation, side)
            #expect(found.count == 1, "\(operation)")
            #expect(found.first?.message.contains("cannot be transformed") == true)
            #expect(found.first?.pointer.hasPrefix("/headers/") == true)
        }
    }

    @Test func badValuesAreRefusedWithTheirPointers() {
        let found = Self.problems(
            #"{"headers": {"set": {"X-A": "$secret", "X-B": "line\nbreak", "Bad Name": "x"}}, "query": {"remove": [5]}, "path": {"match": "/a/{id}", "replace": "/b/{other}"}, "extra": 1}"#
        )
        let pointers = Set(found.map(\.pointer))
        #expect(pointers == ["/extra", "/headers/set/X-A", "/headers/set/X-B", "/headers/set/Bad Name", "/query/remove/0", "/path/replace"])
        #expect(found.first { $0.pointer == "/headers/set/X-A" }?.message.contains("Unknown variable $secret") == true)
        // a response transformation has no query or path
        #expect(Self.problems(#"{"query": {"remove": ["a"]}}"#, .response).map(\.pointer) == ["/query"])
        // doing nothing is a mistake worth saying
        #expect(Self.problems(#"{}"#).count == 1)
    }

    @Test func operationsAreBounded() {
        let many = (0..<33).map { "\"X-H\($0)\"" }.joined(separator: ",")
        #expect(Self.problems(#"{"headers": {"remove": [\#(many)]}}"#).first?.message.contains("at most 32") == true)
        let long = String(repeating: "v", count: 513)
        #expect(Self.problems(#"{"headers": {"set": {"X-A": "\#(long)"}}}"#).first?.message.contains("512") == true)
    }

    @Test func theStoredFormReadsBackTheSame() throws {
        // setup
        let json = #"{"headers": {"remove": ["X-Debug"], "rename": {"X-Old": "X-New"}, "set": {"X-Caller": "$app_id"}, "add": {"X-Via": "tg $$1"}}, "query": {"set": {"v": "2"}}, "path": {"match": "/users/{id}", "replace": "/v2/people/{id}"}}"#
        // act
        let config = try Self.config(json)
        let again = try Self.config(config.json.text)
        // assert
        #expect(again == config)
        #expect(config.summary == "headers: remove X-Debug; rename X-Old → X-New; set X-Caller; add X-Via; query: set v; path /users/{id} → /v2/people/{id}")
    }

    // MARK: applying

    @Test func templatesRenderTheCallsContext() throws {
        let template = try TransformTemplate.parse("$app_id/$client_id/$team_id/$plan/$request_id/$client_ip $$5").get()
        #expect(
            Self.context.render(template)
                == "00000000-0000-0000-0000-0000000000a1/tgc_x/00000000-0000-0000-0000-0000000000b2/00000000-0000-0000-0000-0000000000c3/req-1/192.0.2.9 $5")
    }

    @Test func headerOperationsRunRemoveRenameSetAdd() throws {
        // setup
        let transform = RequestTransform([
            try Self.config(#"{"headers": {"remove": ["x-debug"], "rename": {"X-Old": "X-New"}, "set": {"X-Caller": "$client_id"}, "add": {"Accept": "text/plain"}}}"#)
        ])
        var fields: [(name: String, value: String)] = [
            ("X-Debug", "1"), ("x-old", "kept value"), ("X-Caller", "forged"), ("x-caller", "forged too"), ("Accept", "application/json"),
        ]
        // act
        transform.headers(&fields, context: Self.context)
        // assert
        #expect(fields.map { "\($0.name): \($0.value)" } == ["X-New: kept value", "Accept: application/json", "X-Caller: tgc_x", "Accept: text/plain"])
    }

    @Test(arguments: [
        ("/users/42?x=1", "/v2/people/42?x=1"),
        ("/users/42/orders", "/users/42/orders"),  // more segments: no match, unchanged
        ("/users/..", "/users/.."),  // a dot segment is never captured
        ("/users/%2E%2e", "/users/%2E%2e"),
        ("/users/", "/users/"),  // an empty segment is not captured
        ("/accounts/42", "/accounts/42"),
    ])
    func thePathIsRewrittenWithItsCaptures(uri: String, expected: String) throws {
        let transform = RequestTransform([try Self.config(#"{"path": {"match": "/users/{id}", "replace": "/v2/people/{id}"}}"#)])
        #expect(transform.uri(uri, context: Self.context) == expected)
    }

    @Test func queryParametersAreComparedDecodedAndValuesEncoded() throws {
        // setup
        let transform = RequestTransform([
            try Self.config(#"{"query": {"remove": ["api_key"], "rename": {"q": "search"}, "set": {"caller": "$client_ip x&y"}, "add": {"tag": "a"}}}"#)
        ])
        // act
        let out = transform.uri("/items?%61pi_key=secret&q=shoes&flag&caller=forged&tag=b", context: Self.context)
        // assert: the encoded name is removed too, a bare flag keeps its shape
        #expect(out == "/items?search=shoes&flag&tag=b&caller=192.0.2.9%20x%26y&tag=a")
        #expect(transform.uri("/items", context: Self.context) == "/items?caller=192.0.2.9%20x%26y&tag=a")
    }

    @Test func severalPoliciesApplyInChainOrder() throws {
        let transform = RequestTransform([
            try Self.config(#"{"path": {"match": "/a/{x}", "replace": "/b/{x}"}}"#),
            try Self.config(#"{"path": {"match": "/b/{y}", "replace": "/c/{y}/d"}}"#),
        ])
        #expect(transform.uri("/a/1", context: Self.context) == "/c/1/d")
    }

    @Test func theRegistryCompilesTransformsAndSkipsBadRows() {
        let api = UUID()
        let compiled = ClientLimiterRegistry().compile([
            StoredPolicy(apiID: api, position: 0, kind: "request_transform", config: #"{"headers": {"set": {"X-A": "1"}}}"#),
            StoredPolicy(apiID: api, position: 1, kind: "response_transform", config: #"{"headers": {"remove": ["Server"]}}"#),
            StoredPolicy(apiID: api, position: 2, kind: "request_transform", config: #"{"headers": {"set": {"Host": "evil"}}}"#),
        ])
        #expect(compiled.requestTransforms[api]?.steps.count == 1)
        #expect(compiled.responseTransforms[api]?.touched == ["server"])
        #expect(compiled.skipped.map(\.position) == [2])
    }

    // MARK: end to end

    @Test func theUpstreamHearsTheTransformedRequest() async throws {
        let transform = RequestTransform([
            try Self.config(
                #"{"headers": {"remove": ["X-Debug"], "rename": {"X-Old": "X-New"}, "set": {"X-Caller": "$app_id", "X-Team": "$team_id"}}, "query": {"set": {"v": "2"}}, "path": {"match": "/users/{id}", "replace": "/v2/people/{id}"}}"#
            )
        ])
        try await GatewayProxyTests.withWorld({ world, upstream in world.snapshot(targets: [.loopback(upstream.port)], requestTransform: transform) }) {
            world, upstream, gateway in
            // act
            let response = try await gateway.request(
                "GET", "/t/demo/echo/v1/users/42?v=1&keep=yes",
                headers: [("X-API-Key", TestWorld.apiKey), ("X-Debug", "1"), ("X-Old", "o"), ("X-Caller", "forged")])
            // assert
            #expect(response.status == 200)
            let seen = try #require(upstream.seen.last)
            #expect(seen.uri == "/v2/people/42?keep=yes&v=2")
            #expect(seen.header("x-debug") == nil)
            #expect(seen.header("x-old") == nil)
            #expect(seen.header("x-new") == "o")
            #expect(seen.header("x-caller") == world.appID.uuidString.lowercased())
            #expect(seen.header("x-team") == world.teamID.uuidString.lowercased())
            // the gateway's own headers are still its own
            #expect(seen.header("x-tollgate-app-id") == world.appID.uuidString.lowercased())
            #expect(seen.header("x-api-key") == nil)
            // a path the rewrite does not match passes as it came
            _ = try await gateway.request("GET", "/t/demo/echo/v1/other", headers: [("X-API-Key", TestWorld.apiKey)])
            #expect(upstream.seen.last?.uri == "/other?v=2")
        }
    }

    static let responseTransform = ResponseTransform([
        TransformConfig.FieldOps(
            remove: ["X-Upstream"], rename: [.init(from: "X-Internal", to: "X-Public")],
            set: [.init(name: "X-Served-For", value: try! TransformTemplate.parse("$client_id").get())],
            add: [.init(name: "X-Extra", value: try! TransformTemplate.parse("two").get())])
    ])

    @Test func theClientGetsTheTransformedResponseOverHTTP1() async throws {
        try await GatewayProxyTests.withWorld({ world, upstream in
            world.snapshot(targets: [.loopback(upstream.port)], responseTransform: Self.responseTransform)
        }) { _, _, gateway in
            // act
            let response = try await gateway.request(
                "GET", "/t/demo/echo/v1/x", headers: [("X-API-Key", TestWorld.apiKey), ("X-Respond-With", "X-Internal=secret|X-Extra=one|X-Served-For=up")])
            // assert
            #expect(response.status == 200)
            #expect(response.headers["x-upstream"] == nil)
            #expect(response.headers["x-internal"] == nil)
            #expect(response.headers["x-public"] == "secret")
            #expect(response.headers["x-served-for"] == "tgc_demo")
            // the upstream's field stays and the added one follows it
            #expect(response.headers["x-extra"] == "one, two")
            #expect(response.headers["ratelimit-policy"] == "\"rate\";q=1000;w=1")
            #expect(response.body.contains("\"method\":\"GET\""))
        }
    }

    @Test func theClientGetsTheTransformedResponseOverHTTP2() async throws {
        try await GatewayProxyTests.withWorld({ world, upstream in
            world.snapshot(targets: [.loopback(upstream.port)], responseTransform: Self.responseTransform)
        }) { _, _, gateway in
            // act: curl over h2c (prior knowledge)
            let output = try Self.curl([
                "--http2-prior-knowledge", "-s", "-D", "-", "-o", "/dev/null", "-H", "X-API-Key: \(TestWorld.apiKey)", "-H",
                "X-Respond-With: X-Internal=secret", "-H", "Host: gateway.test", "http://127.0.0.1:\(gateway.port)/t/demo/echo/v1/x",
            ])
            // assert
            let lines = output.lowercased().split(separator: "\r\n").map { $0.trimmingCharacters(in: .whitespaces) }
            #expect(lines.first == "http/2 200")
            #expect(lines.contains("x-public: secret"))
            #expect(!lines.contains { $0.hasPrefix("x-internal:") || $0.hasPrefix("x-upstream:") })
            #expect(lines.contains("x-served-for: tgc_demo"))
            #expect(lines.contains("x-extra: two"))
        }
    }

    static func curl(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["--max-time", "10"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}
