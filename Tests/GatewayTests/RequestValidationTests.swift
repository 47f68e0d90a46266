import Billing
import Foundation
import MetricsTestKit
import NIOCore
import NIOHTTP1
import Testing

@testable import Gateway

/// `request_validation`: the schema compiler and validator as plain values, the head and body
/// checks, and the gateway refusing before the upstream sees anything (HTTP/1.1 and h2c).
@Suite struct RequestValidationTests {
    // MARK: Helpers

    /// A 3.1 document whose `POST /things` body is `schema` (JSON text).
    static func document(body schema: String, version: String = "3.1.0", components: String = "{}") -> String {
        #"{"openapi":"\#(version)","info":{"title":"t","version":"1"},"components":{"schemas":\#(components)},"paths":{"/things":{"post":{"requestBody":{"required":true,"content":{"application/json":{"schema":\#(schema)}}},"responses":{"200":{"description":"ok"}}}}}}"#
    }

    static func validator(_ document: String, config: RequestValidationConfig = RequestValidationConfig()) throws -> RequestValidator {
        let root = try #require(JSONValue.parse(document))
        return try RequestValidator.compile(document: root, config: config).get()
    }

    /// The violations of `body` against the `POST /things` body schema.
    static func bodyViolations(_ schema: String, _ body: String, version: String = "3.1.0", components: String = "{}") throws -> [Violation] {
        let validator = try validator(document(body: schema, version: version, components: components))
        guard case .checkBody(let node, let required) = validator.checkHead(method: .POST, uri: "/things", headers: ["content-type": "application/json"], hasBody: true)
        else {
            Issue.record("no body check")
            return []
        }
        return validator.checkBody(ByteBuffer(string: body), schema: node, required: required)
    }

    static func pointers(_ schema: String, _ body: String, version: String = "3.1.0", components: String = "{}") throws -> [String] {
        try bodyViolations(schema, body, version: version, components: components).map(\.pointer)
    }

    // MARK: Keywords

    @Test func eachKeywordAcceptsWhatMatchesAndNamesWhatDoesNot() throws {
        // (schema, body, pointers of the violations)
        let table: [(String, String, [String])] = [
            (#"{"type":"integer"}"#, "5", []),
            (#"{"type":"integer"}"#, "5.0", []),
            (#"{"type":"integer"}"#, "5.5", ["/body"]),
            (#"{"type":"number"}"#, "5", []),
            (#"{"type":"string"}"#, "5", ["/body"]),
            (#"{"type":["string","null"]}"#, "null", []),
            (#"{"type":"boolean"}"#, "true", []),
            (#"{"type":"boolean"}"#, "1", ["/body"]),
            (#"{"enum":["a","b"]}"#, #""b""#, []),
            (#"{"enum":["a","b"]}"#, #""c""#, ["/body"]),
            (#"{"enum":[1]}"#, "1.0", []),
            (#"{"const":{"a":1}}"#, #"{"a":1}"#, []),
            (#"{"const":{"a":1}}"#, #"{"a":2}"#, ["/body"]),
            (#"{"minimum":1,"maximum":3}"#, "0", ["/body"]),
            (#"{"minimum":1,"maximum":3}"#, "3", []),
            (#"{"exclusiveMinimum":1}"#, "1", ["/body"]),
            (#"{"exclusiveMaximum":3}"#, "2.9", []),
            (#"{"exclusiveMaximum":3}"#, "3", ["/body"]),
            (#"{"multipleOf":0.01}"#, "19.99", []),
            (#"{"multipleOf":0.01}"#, "19.999", ["/body"]),
            (#"{"multipleOf":3}"#, "9", []),
            (#"{"multipleOf":3}"#, "10", ["/body"]),
            (#"{"minLength":2,"maxLength":3}"#, #""é""#, ["/body"]),
            (#"{"minLength":2,"maxLength":3}"#, #""éé""#, []),
            (#"{"maxLength":3}"#, #""abcd""#, ["/body"]),
            (#"{"pattern":"^[A-Z]{3}$"}"#, #""EUR""#, []),
            (#"{"pattern":"^[A-Z]{3}$"}"#, #""eur""#, ["/body"]),
            (#"{"pattern":"b"}"#, #""abc""#, []),  // unanchored, as JSON Schema says
            (#"{"items":{"type":"integer"},"minItems":1,"maxItems":2}"#, "[1,2]", []),
            (#"{"items":{"type":"integer"},"minItems":1,"maxItems":2}"#, "[]", ["/body"]),
            (#"{"items":{"type":"integer"}}"#, #"[1,"x",3,"y"]"#, ["/body/1", "/body/3"]),
            (#"{"maxItems":2}"#, "[1,2,3]", ["/body"]),
            (#"{"uniqueItems":true}"#, "[1,2,1.0]", ["/body"]),
            (#"{"uniqueItems":true}"#, #"[{"a":1},{"a":2}]"#, []),
            (#"{"required":["a","b"]}"#, #"{"a":1}"#, ["/body/b"]),
            (#"{"properties":{"a":{"type":"string"}},"additionalProperties":false}"#, #"{"a":"x","z":1}"#, ["/body/z"]),
            (#"{"additionalProperties":{"type":"integer"}}"#, #"{"a":1,"b":"2"}"#, ["/body/b"]),
            (#"{"minProperties":1,"maxProperties":1}"#, "{}", ["/body"]),
            (#"{"minProperties":1,"maxProperties":1}"#, #"{"a":1,"b":2}"#, ["/body"]),
            (#"{"allOf":[{"minimum":1},{"maximum":5}]}"#, "7", ["/body"]),
            (#"{"anyOf":[{"type":"string"},{"type":"integer"}]}"#, "true", ["/body"]),
            (#"{"anyOf":[{"type":"string"},{"type":"integer"}]}"#, "3", []),
            (#"{"oneOf":[{"type":"integer"},{"minimum":0}]}"#, "3", ["/body"]),  // both match
            (#"{"oneOf":[{"type":"integer"},{"type":"string"}]}"#, #""x""#, []),
            (#"{"not":{"type":"null"}}"#, "null", ["/body"]),
            (#"false"#, "1", ["/body"]),
            (#"{"x-vendor":{"anything":1},"discriminator":{"propertyName":"k"}}"#, "1", []),  // unknown keywords are ignored
        ]
        for (schema, body, expected) in table {
            #expect(try Self.pointers(schema, body) == expected, "\(schema) with \(body)")
        }
    }

    @Test func openAPI30NullableAndBooleanExclusives() throws {
        #expect(try Self.pointers(#"{"type":"string","nullable":true}"#, "null", version: "3.0.3") == [])
        #expect(try Self.pointers(#"{"type":"string"}"#, "null", version: "3.0.3") == ["/body"])
        #expect(try Self.pointers(#"{"minimum":1,"exclusiveMinimum":true}"#, "1", version: "3.0.3") == ["/body"])
        #expect(try Self.pointers(#"{"maximum":5,"exclusiveMaximum":true}"#, "4", version: "3.0.3") == [])
        // 3.1 has no nullable: the keyword is ignored
        #expect(try Self.pointers(#"{"type":"string","nullable":true}"#, "null") == ["/body"])
    }

    @Test func pointersLeadIntoTheBodyAndMessagesSayWhy() throws {
        // setup
        let schema = ##"{"type":"object","required":["items"],"properties":{"items":{"type":"array","items":{"$ref":"#/components/schemas/Line"}}}}"##
        let components = #"{"Line":{"type":"object","required":["sku","price"],"properties":{"sku":{"type":"string","format":"uuid"},"price":{"type":"number","minimum":0},"a/b~c":{"type":"integer"}}}}"#
        // act
        let found = try Self.bodyViolations(
            schema, #"{"items":[{"sku":"3f2b8c1e-9d4a-4e6b-8f7a-1c2d3e4f5a6b","price":-1},{"price":"x","a/b~c":"no"}]}"#, components: components)
        // assert
        #expect(found.map(\.pointer) == ["/body/items/0/price", "/body/items/1/sku", "/body/items/1/a~1b~0c", "/body/items/1/price"])
        #expect(found[0].message == "Must be at least 0.")
        #expect(found[1].message == "Required.")
        #expect(found[3].message == "Expected number, got string.")
    }

    @Test func formatsWeCheck() {
        let valid: [(SchemaFormat, String)] = [
            (.dateTime, "2026-12-05T10:20:30Z"), (.dateTime, "2026-12-05t10:20:30.123+01:00"), (.date, "2024-02-29"), (.time, "23:59:60Z"),
            (.email, "ann.lee@example.co.uk"), (.uuid, "3F2B8C1E-9D4A-4E6B-8F7A-1C2D3E4F5A6B"), (.ipv4, "192.168.0.1"), (.ipv6, "2001:db8::1"),
            (.ipv6, "::ffff:10.0.0.1"), (.uri, "https://example.com/a%20b?x=1#f"), (.uri, "urn:isbn:0451450523"),
        ]
        let invalid: [(SchemaFormat, String)] = [
            (.dateTime, "2026-12-05 10:20:30Z"), (.dateTime, "2026-12-05T10:20:30"), (.date, "2023-02-29"), (.date, "2026-13-01"), (.date, "2026-1-01"),
            (.time, "24:00:00Z"), (.email, "no-at.example.com"), (.email, "a@b"), (.email, "a b@example.com"), (.uuid, "3f2b8c1e9d4a4e6b8f7a1c2d3e4f5a6b"),
            (.ipv4, "256.1.1.1"), (.ipv4, "01.2.3.4"), (.ipv4, "1.2.3"), (.ipv6, "1.2.3.4"), (.ipv6, "2001:db8:::1"), (.uri, "/relative/path"),
            (.uri, "https://exa mple.com"), (.uri, "https://x/%zz"),
        ]
        for (format, text) in valid { #expect(format.accepts(string: text), "\(format) \(text)") }
        for (format, text) in invalid { #expect(!format.accepts(string: text), "\(format) \(text)") }
        #expect(!SchemaFormat.int32.accepts(number: .integer(3_000_000_000)))
        #expect(SchemaFormat.int32.accepts(number: .integer(-2_147_483_648)))
        // an unknown format is an annotation
        #expect(SchemaFormat(rawValue: "credit-card") == nil)
    }

    // MARK: References and bounds

    @Test func aRecursiveSchemaValidatesTreesAndAPureCycleEndsWithAViolation() throws {
        // setup: a tree whose children are trees
        let components = ##"{"Node":{"type":"object","required":["name"],"properties":{"name":{"type":"string"},"children":{"type":"array","items":{"$ref":"#/components/schemas/Node"}}}},"A":{"$ref":"#/components/schemas/B"},"B":{"allOf":[{"$ref":"#/components/schemas/A"}]}}"##
        // act + assert: descending the value, the cycle is fine
        #expect(try Self.pointers(##"{"$ref":"#/components/schemas/Node"}"##, ##"{"name":"a","children":[{"name":"b","children":[{"children":[]}]}]}"##, components: components) == [
            "/body/children/0/children/0/name"
        ])
        // a cycle that never descends into the value compiles (indices) and ends, refused
        let found = try Self.bodyViolations(##"{"$ref":"#/components/schemas/A"}"##, "1", components: components)
        #expect(found.count == 1)
        #expect(found.first?.message.contains("too deeply nested or too costly") == true)
    }

    @Test func documentsThatCannotBeCompiledSayWhereAndWhy() throws {
        func failure(_ document: String) -> SchemaCompileError? {
            guard let root = JSONValue.parse(document), case .failure(let error) = RequestValidator.compile(document: root, config: RequestValidationConfig()) else {
                return nil
            }
            return error
        }
        #expect(failure(Self.document(body: ##"{"$ref":"#/components/schemas/Missing"}"##))?.message.contains("points at nothing") == true)
        #expect(failure(Self.document(body: #"{"type":"strnig"}"#))?.pointer == "/paths/~1things/post/requestBody/content/application~1json/schema/type")
        #expect(failure(Self.document(body: #"{"pattern":"(unclosed"}"#))?.message.contains("regular expression") == true)
        #expect(failure(Self.document(body: #"{"pattern":"\#(String(repeating: "a", count: 513))"}"#))?.message.contains("512") == true)
        #expect(failure(Self.document(body: #"{"multipleOf":0}"#))?.pointer.hasSuffix("/multipleOf") == true)
        #expect(failure(Self.document(body: #"{"$ref":"https://example.com/s.json"}"#))?.message.contains("within the document") == true)
        #expect(failure(#"{"openapi":"2.0","paths":{}}"#)?.pointer == "/openapi")
        #expect(failure(#"{"openapi":"3.1.0","paths":{}}"#)?.pointer == "/paths")
        // depth: a schema nested deeper than the bound
        var deep = #"{"type":"integer"}"#
        for _ in 0..<60 { deep = #"{"type":"object","properties":{"a":\#(deep)}}"# }
        #expect(failure(Self.document(body: deep))?.message.contains("deeper than") == true)
        // nodes: more parts than the bound
        let wide = (0..<(SchemaCompiler.maximumNodes + 1)).map { #""p\#($0)":{"type":"integer"}"# }.joined(separator: ",")
        #expect(failure(Self.document(body: #"{"type":"object","properties":{\#(wide)}}"#))?.message.contains("parts") == true)
    }

    @Test func aCompiledDocumentCountsItsNodesOnceEachReference() throws {
        let components = #"{"Money":{"type":"object","properties":{"amount":{"type":"integer"},"currency":{"type":"string"}}}}"#
        let schema = ##"{"type":"object","properties":{"price":{"$ref":"#/components/schemas/Money"},"tax":{"$ref":"#/components/schemas/Money"}}}"##
        let validator = try Self.validator(Self.document(body: schema, components: components))
        // the body object, the reference's slot, Money and its two properties: Money is compiled once
        #expect(validator.nodeCount == 5)
    }

    @Test func valuesMadeToBeCostlyEndBoundedAndViolationsAreCapped() throws {
        // 50 wrong items: 10 violations named
        let many = "[" + (0..<50).map { _ in #""x""# }.joined(separator: ",") + "]"
        #expect(try Self.pointers(#"{"items":{"type":"integer"}}"#, many).count == RequestValidator.maximumViolations)
        // a pattern is not run over very long text
        let long = "\"" + String(repeating: "a", count: SchemaValidator.maximumPatternInput + 1) + "\""
        #expect(try Self.bodyViolations(#"{"pattern":"^a+$"}"#, long).first?.message.contains("Too long") == true)
        // a pattern that backtracks exponentially gives up within its budget, refused
        let evil = "\"" + String(repeating: "a", count: 40) + "b\""
        #expect(try Self.bodyViolations(#"{"pattern":"^(a+)+$"}"#, evil).first?.message.contains("Too costly") == true)
        #expect(try Self.bodyViolations(#"{"pattern":"^(a+)+$"}"#, "\"aaaa\"") == [])
        // not JSON
        #expect(try Self.bodyViolations(#"{"type":"object"}"#, "{nope").first?.message.hasPrefix("The body is not valid JSON") == true)
        // a member twice: the validator and the upstream could read different values, so refused
        #expect(try Self.bodyViolations(#"{"type":"object"}"#, #"{"a":1,"a":2}"#).first?.message.contains("duplicate member") == true)
        // a number beyond a double
        #expect(try Self.bodyViolations(#"{"type":"number"}"#, "1e400").first?.message.contains("too large") == true)
    }

    @Test func bodyNumbersKeepIntegerAndFractionApart() throws {
        #expect(try JSONValue.parseBody(Array(#"{"a":[1,-9223372036854775808,1.5,2e3,9223372036854775808,true,null,"x"]}"#.utf8)).get()
            == .object(["a": .array([.integer(1), .integer(.min), .number(1.5), .number(2000), .number(9223372036854775808), .bool(true), .null, .string("x")])]))
        #expect(try JSONValue.parseBody(Array(#"  "é\u00e9"  "#.utf8)).get() == .string("éé"))
        #expect((try? JSONValue.parseBody(Array("[1,]".utf8)).get()) == nil)
    }

    // MARK: Head: path, method, parameters, content type

    static let api = #"""
        {"openapi":"3.0.3","info":{"title":"shop","version":"1"},
         "components":{"parameters":{"Trace":{"name":"X-Trace","in":"header","required":true,"schema":{"type":"string","pattern":"^[0-9a-f]{8}$"}}}},
         "paths":{
          "/items":{"get":{"parameters":[
              {"name":"limit","in":"query","schema":{"type":"integer","minimum":1,"maximum":100}},
              {"name":"sort","in":"query","schema":{"type":"string","enum":["asc","desc"]}},
              {"name":"tag","in":"query","schema":{"type":"array","items":{"type":"string","maxLength":5}}},
              {"name":"ids","in":"query","style":"form","explode":false,"schema":{"type":"array","items":{"type":"integer"}}},
              {"name":"active","in":"query","required":true,"schema":{"type":"boolean"}}],"responses":{"200":{"description":"ok"}}},
            "post":{"parameters":[{"$ref":"#/components/parameters/Trace"}],"requestBody":{"required":true,"content":{"application/json":{"schema":{"type":"object","required":["name"]}}}},"responses":{"201":{"description":"ok"}}}},
          "/items/{id}":{"parameters":[{"name":"id","in":"path","required":true,"schema":{"type":"integer","minimum":1}}],
            "get":{"responses":{"200":{"description":"ok"}}},
            "put":{"requestBody":{"content":{"application/merge-patch+json":{"schema":{"type":"object","properties":{"name":{"type":"string"}}}},"text/plain":{}}},"responses":{"200":{"description":"ok"}}}},
          "/items/mine":{"get":{"responses":{"200":{"description":"ok"}}}}
         }}
        """#

    static func head(
        _ validator: RequestValidator, _ method: HTTPMethod, _ uri: String, headers: [(String, String)] = [], body: Bool = false
    ) -> RequestValidator.HeadOutcome {
        validator.checkHead(method: method, uri: uri, headers: HTTPHeaders(headers), hasBody: body)
    }

    static func refusal(_ outcome: RequestValidator.HeadOutcome) -> ValidationRefusal? {
        if case .refuse(let refusal) = outcome { refusal } else { nil }
    }

    @Test func pathsAndMethodsTheDocumentLacksAre404And405WithAllow() throws {
        let validator = try Self.validator(Self.api)
        let missing = Self.refusal(Self.head(validator, .GET, "/nothing"))
        #expect(missing?.status == .notFound)
        #expect(missing?.violations.first?.pointer == "/path")
        let method = Self.refusal(Self.head(validator, .DELETE, "/items/7"))
        #expect(method?.status == .methodNotAllowed)
        #expect(method?.allow == "GET, HEAD, PUT")
        #expect(method?.response.headers.contains { $0 == ("Allow", "GET, HEAD, PUT") } == true)
        #expect(method?.response.rejection == .invalidRequest)
        // HEAD goes with GET; a concrete path wins over a template; a trailing slash is another path
        #expect(Self.refusal(Self.head(validator, .HEAD, "/items/7")) == nil)
        #expect(Self.refusal(Self.head(validator, .GET, "/items/mine")) == nil)
        #expect(Self.refusal(Self.head(validator, .GET, "/items/7/"))?.status == .notFound)
        #expect(Self.refusal(Self.head(validator, .GET, "/items/%37")) == nil)  // percent-decoded: 7
    }

    @Test func parametersAreCheckedByTheirSchemasWithPointers() throws {
        let validator = try Self.validator(Self.api)
        func pointers(_ uri: String, headers: [(String, String)] = [], method: HTTPMethod = .GET) -> [String] {
            Self.refusal(Self.head(validator, method, uri, headers: headers))?.violations.map(\.pointer) ?? []
        }
        #expect(pointers("/items?active=true&limit=10&sort=asc&tag=a&tag=bb&ids=1,2,3") == [])
        #expect(pointers("/items?limit=10") == ["/query/active"])  // required
        #expect(pointers("/items?active=yes&limit=0&sort=up") == ["/query/limit", "/query/sort", "/query/active"])
        #expect(pointers("/items?active=true&limit=1.5") == ["/query/limit"])
        #expect(pointers("/items?active=true&tag=ok&tag=toolong") == ["/query/tag/1"])  // form, exploded
        #expect(pointers("/items?active=true&ids=1,x") == ["/query/ids/1"])  // form, not exploded
        #expect(pointers("/items?active=true&limit=1&limit=2") == ["/query/limit"])  // one value expected
        #expect(pointers("/items/0") == ["/path/id"])
        #expect(pointers("/items/abc") == ["/path/id"])
        // a header parameter (through a $ref), and its pattern
        // (with no body either: both named in one answer)
        #expect(pointers("/items", headers: [("Content-Type", "application/json")], method: .POST) == ["/header/X-Trace", "/body"])
        #expect(pointers("/items", headers: [("X-Trace", "zz"), ("Content-Type", "application/json")], method: .POST) == ["/header/X-Trace", "/body"])
        // unknown query parameters pass unless the policy refuses them
        #expect(pointers("/items?active=true&cachebust=1") == [])
        let strict = try Self.validator(Self.api, config: RequestValidationConfig(scope: .both, refuseUnknownQuery: true))
        #expect(Self.refusal(Self.head(strict, .GET, "/items?active=true&cachebust=1&b%2Fc=2"))?.violations.map(\.pointer) == ["/query/b~1c", "/query/cachebust"])
        // parameters only: the body is not looked at
        let paramsOnly = try Self.validator(Self.api, config: RequestValidationConfig(scope: .parameters))
        if case .pass = Self.head(paramsOnly, .POST, "/items", headers: [("X-Trace", "0123abcd")], body: true) {} else { Issue.record("body looked at") }
        // body only: the parameters are not
        let bodyOnly = try Self.validator(Self.api, config: RequestValidationConfig(scope: .body))
        #expect(Self.refusal(Self.head(bodyOnly, .GET, "/items?limit=x")) == nil)
    }

    @Test func bodiesTheOperationDoesNotDeclareAre415AndARequiredBodyIsRequired() throws {
        let validator = try Self.validator(Self.api)
        let trace = ("X-Trace", "0123abcd")
        // no body at all, though required
        #expect(Self.refusal(Self.head(validator, .POST, "/items", headers: [trace]))?.violations.map(\.pointer) == ["/body"])
        // a content type the operation does not take
        let wrongType = Self.refusal(Self.head(validator, .POST, "/items", headers: [trace, ("Content-Type", "text/xml")], body: true))
        #expect(wrongType?.status == .unsupportedMediaType)
        #expect(wrongType?.violations.first?.pointer == "/header/Content-Type")
        // a JSON body is buffered and checked; parameters on the charset do not matter
        if case .checkBody = Self.head(validator, .POST, "/items", headers: [trace, ("Content-Type", "Application/JSON; charset=utf-8")], body: true) {} else {
            Issue.record("not checked")
        }
        // +json types are JSON; a declared non-JSON type passes unchecked
        if case .checkBody = Self.head(validator, .PUT, "/items/3", headers: [("Content-Type", "application/merge-patch+json")], body: true) {} else {
            Issue.record("+json not checked")
        }
        if case .pass = Self.head(validator, .PUT, "/items/3", headers: [("Content-Type", "text/plain")], body: true) {} else { Issue.record("text refused") }
        // an optional body may be left out
        if case .pass = Self.head(validator, .PUT, "/items/3") {} else { Issue.record("optional body required") }
    }

    @Test func theProblemNamesEachViolation() throws {
        let refusal = ValidationRefusal(violations: [Violation("/body/a", "Required."), Violation("/query/q", "Say \"hi\"")])
        let body = try #require(JSONValue.parse(refusal.body))
        #expect(
            body
                == .object([
                    "type": .string("about:blank"), "title": .string("Invalid request"), "status": .integer(400),
                    "detail": .string("/body/a: Required. (and 1 more)"),
                    "errors": .array([
                        .object(["pointer": .string("/body/a"), "detail": .string("Required.")]),
                        .object(["pointer": .string("/query/q"), "detail": .string("Say \"hi\"")]),
                    ]),
                ]))
    }

    @Test func configsAreCheckedNamingTheField() {
        func problems(_ json: String) -> [String] {
            guard case .object(let object)? = JSONValue.parse(json), case .failure(let found) = RequestValidationConfig.parse(object) else { return [] }
            return found.list.map(\.pointer)
        }
        #expect(problems(#"{}"#) == [])
        #expect(problems(#"{"validate":"everything","refuse_unknown_query":"no","x":1}"#) == ["/x", "/validate", "/refuse_unknown_query"])
        guard case .object(let object)? = JSONValue.parse(#"{"validate":"body"}"#), case .success(let config) = RequestValidationConfig.parse(object) else {
            Issue.record("refused")
            return
        }
        #expect(config == RequestValidationConfig(scope: .body, refuseUnknownQuery: false))
        #expect(config.json.text == #"{"refuse_unknown_query":false,"validate":"body"}"#)
    }

    @Test func aReloadReusesTheCompiledValidationAndItsGaugesCountIt() throws {
        // setup
        let metrics = TestMetrics()
        let registry = ClientLimiterRegistry(metricsFactory: metrics)
        let api = UUID()
        let document = Self.api
        // act
        let first = registry.validation(api: api, config: RequestValidationConfig(), document: document)
        let again = registry.validation(api: api, config: RequestValidationConfig(), document: document)
        let broken = registry.validation(api: UUID(), config: RequestValidationConfig(), document: ##"{"openapi":"3.1.0","paths":{"/a":{"post":{"requestBody":{"content":{"application/json":{"schema":{"$ref":"#/nope"}}}}}}}}"##)
        registry.recordGauges(factory: metrics)
        // assert
        guard case .ready(let a) = first, case .ready(let b) = again else { Issue.record("not compiled"); return }
        #expect(a === b)
        guard case .unusable(let reason) = broken else { Issue.record("compiled"); return }
        #expect(reason.contains("points at nothing"))
        #expect(try metrics.expectGauge("tollgate_gateway_validation_schemas").lastValue == 1)
        #expect(try metrics.expectGauge("tollgate_gateway_validation_schema_nodes").lastValue == Double(a.nodeCount))
        registry.retainValidations([])
        #expect(registry.validationUsage.schemas == 0)
    }

    // MARK: End to end

    static let shopDocument = #"""
        {"openapi":"3.1.0","info":{"title":"shop","version":"1"},"paths":{
          "/orders":{"post":{"parameters":[{"name":"dry","in":"query","schema":{"type":"boolean"}}],
            "requestBody":{"required":true,"content":{"application/json":{"schema":{"type":"object","required":["items"],"additionalProperties":false,
              "properties":{"items":{"type":"array","minItems":1,"items":{"type":"object","required":["sku","price"],"properties":{"sku":{"type":"string"},"price":{"type":"number","minimum":0}}}}}}}}},
            "responses":{"201":{"description":"ok"}}}},
          "/orders/{id}":{"get":{"parameters":[{"name":"id","in":"path","required":true,"schema":{"type":"integer"}}],"responses":{"200":{"description":"ok"}}}}
        }}
        """#

    static func shop() throws -> RequestValidationPolicy { .ready(try validator(shopDocument)) }

    static let key = ("X-API-Key", TestWorld.apiKey)

    @Test func http1RefusalsNeverReachTheUpstreamAndValidBodiesArriveExactly() async throws {
        let policy = try Self.shop()
        try await GatewayProxyTests.withWorld({ world, upstream in world.snapshot(targets: [.loopback(upstream.port)], requestValidation: policy) }) {
            world, upstream, gateway in
            // act: refusals of every kind
            let invalid = try await gateway.request(
                "POST", "/t/demo/echo/v1/orders", headers: [Self.key, ("Content-Type", "application/json")], body: #"{"items":[{"sku":"a","price":-1}],"x":1}"#)
            let unknownPath = try await gateway.request("GET", "/t/demo/echo/v1/nothing", headers: [Self.key])
            let wrongMethod = try await gateway.request("DELETE", "/t/demo/echo/v1/orders/5", headers: [Self.key])
            let badParameter = try await gateway.request("GET", "/t/demo/echo/v1/orders/five", headers: [Self.key])
            let wrongType = try await gateway.request("POST", "/t/demo/echo/v1/orders", headers: [Self.key, ("Content-Type", "text/plain")], body: "hi")
            // assert: nothing reached the upstream
            #expect(upstream.seen.isEmpty)
            #expect(invalid.status == 400)
            #expect(invalid.headers["content-type"] == "application/problem+json")
            let problem = try #require(JSONValue.parse(invalid.body))
            guard case .object(let fields) = problem, case .array(let errors)? = fields["errors"] else { Issue.record("no errors: \(invalid.body)"); return }
            #expect(errors.compactMap { if case .object(let e) = $0, case .string(let p)? = e["pointer"] { p } else { nil } } == ["/body/items/0/price", "/body/x"])
            #expect(invalid.headers["ratelimit"] != nil)  // the gate ran first
            #expect(unknownPath.status == 404)
            #expect(wrongMethod.status == 405)
            #expect(wrongMethod.headers["allow"] == "GET, HEAD")
            #expect(badParameter.status == 400)
            #expect(badParameter.body.contains("/path/id"))
            #expect(wrongType.status == 415)
            // act: a valid call, with Content-Length and then chunked, on one kept-alive connection
            let body = #"{"items":[{"sku":"a-1","price":9.5}]}"#
            let chunked = "POST /t/demo/echo/v1/orders?dry=true HTTP/1.1\r\nHost: gateway.test\r\nX-API-Key: \(TestWorld.apiKey)\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                + "5\r\n{\"ite\r\n" + String(body.utf8.count - 5, radix: 16) + "\r\n" + String(body.dropFirst(5)) + "\r\n0\r\n\r\n"
            let plain = "POST /t/demo/echo/v1/orders HTTP/1.1\r\nHost: gateway.test\r\nX-API-Key: \(TestWorld.apiKey)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
            let responses = try await gateway.send(chunked + plain)
            // assert: both forwarded, the body exactly as sent
            #expect(responses.map(\.status) == [200, 200])
            #expect(upstream.seen.count == 2)
            #expect(upstream.seen.map(\.body) == [body, body])
            #expect(upstream.seen.first?.uri == "/orders?dry=true")
            // metered: refusals as invalid_request, not billable; the valid calls billable
            let refused = gateway.usage.recent.filter { $0.rejection == .invalidRequest }
            #expect(refused.count == 5)
            #expect(refused.allSatisfy { !$0.forwarded && !$0.isBillable && $0.appID == world.appID })
            #expect(gateway.usage.recent.filter(\.isBillable).count == 2)
        }
    }

    @Test func aBodyOverTheLimitWhileBufferedIs413AndExpectContinueIsAnswered() async throws {
        let policy = try Self.shop()
        try await GatewayProxyTests.withWorld({ world, upstream in
            world.snapshot(targets: [.loopback(upstream.port)], maxRequestBytes: 64, requestValidation: policy)
        }) { _, upstream, gateway in
            // act: chunked (no length known up front), over 64 bytes
            let items = String(repeating: #"{"sku":"a","price":1},"#, count: 10)
            let body = #"{"items":[\#(items.dropLast())]}"#
            let raw = "POST /t/demo/echo/v1/orders HTTP/1.1\r\nHost: gateway.test\r\nX-API-Key: \(TestWorld.apiKey)\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                + String(body.utf8.count, radix: 16) + "\r\n" + body + "\r\n0\r\n\r\n"
            let tooLarge = try await gateway.send(raw)
            // a client waiting for 100 Continue gets it from the gateway, then its body is checked
            let small = #"{"items":[{"sku":"b","price":2}]}"#
            let continued = try await gateway.send(
                "POST /t/demo/echo/v1/orders HTTP/1.1\r\nHost: gateway.test\r\nX-API-Key: \(TestWorld.apiKey)\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: \(small.utf8.count)\r\nConnection: close\r\n\r\n\(small)")
            // assert
            #expect(tooLarge.first?.status == 413)
            #expect(continued.map(\.status).first == 100)
            #expect(continued.last?.status == 200)
            #expect(upstream.seen.map(\.body) == [small])
        }
    }

    @Test func h2cCallsAreValidatedTheSameWay() async throws {
        let policy = try Self.shop()
        try await GatewayProxyTests.withWorld({ world, upstream in world.snapshot(targets: [.loopback(upstream.port)], requestValidation: policy) }) {
            _, upstream, gateway in
            let url = "http://127.0.0.1:\(gateway.port)/t/demo/echo/v1/orders"
            let common = ["--http2-prior-knowledge", "-s", "-D", "-", "-H", "X-API-Key: \(TestWorld.apiKey)", "-H", "Host: gateway.test", "-H", "Content-Type: application/json"]
            // act: invalid, then valid with a length, then valid with none (the gateway frames it in chunks)
            let invalid = try TransformTests.curl(common + ["--data-binary", #"{"items":[]}"#, url])
            let body = #"{"items":[{"sku":"h2","price":0}]}"#
            let valid = try TransformTests.curl(common + ["--data-binary", body, url])
            let unknownLength = try TransformTests.curl(common + ["-H", "Content-Length:", "--data-binary", body, url])
            // assert
            #expect(invalid.hasPrefix("HTTP/2 400"))
            #expect(invalid.contains(#""pointer":"/body/items""#))
            #expect(valid.hasPrefix("HTTP/2 200"))
            #expect(unknownLength.hasPrefix("HTTP/2 200"))
            #expect(upstream.seen.map(\.body) == [body, body])
        }
    }

    @Test func anUnreadableStoredConfigurationFailsClosedInsteadOfBeingLeftOut() {
        // setup
        let api = UUID()
        let rows = [StoredPolicy(apiID: api, position: 0, kind: "request_validation", config: #"{"validate":"sometimes"}"#)]
        // act
        let compiled = ClientLimiterRegistry().compile(rows)
        // assert
        #expect(compiled.validations[api] == nil)
        #expect(compiled.unreadableValidations == [api])
        #expect(compiled.skipped.count == 1)
    }

    @Test func aRouteWhoseTargetsBecameGRPCFailsClosed() async throws {
        let policy = try Self.shop()
        try await GatewayProxyTests.withWorld({ world, upstream in
            world.snapshot(targets: [UpstreamTargetConfig(host: "127.0.0.1", port: upstream.port, pathPrefix: "", weight: 1, http2: true)], requestValidation: policy)
        }) { _, upstream, gateway in
            let output = try TransformTests.curl([
                "--http2-prior-knowledge", "-s", "-D", "-", "-H", "X-API-Key: \(TestWorld.apiKey)", "-H", "Host: gateway.test",
                "http://127.0.0.1:\(gateway.port)/t/demo/echo/v1/orders/1",
            ])
            #expect(output.hasPrefix("HTTP/2 503"))
            #expect(output.contains("Validation unavailable"))
            #expect(upstream.seen.isEmpty)
        }
    }

    @Test func anUnusableDocumentFailsClosedWith503() async throws {
        try await GatewayProxyTests.withWorld({ world, upstream in
            world.snapshot(targets: [.loopback(upstream.port)], requestValidation: .unusable("the API has no OpenAPI document"))
        }) { _, upstream, gateway in
            let response = try await gateway.request("GET", "/t/demo/echo/v1/anything", headers: [Self.key])
            #expect(response.status == 503)
            #expect(response.headers["content-type"] == "application/problem+json")
            #expect(response.body.contains("Validation unavailable"))
            #expect(upstream.seen.isEmpty)
            #expect(gateway.usage.recent.allSatisfy { !$0.isBillable })
        }
    }
}
