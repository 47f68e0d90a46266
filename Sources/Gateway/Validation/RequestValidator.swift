import Foundation
import NIOCore
import NIOHTTP1

/// A `request_validation` policy compiled from an API's OpenAPI document, once per snapshot: its
/// paths as templates, each operation's parameters and body media types, and every schema as a
/// node of `schemas`. A call is checked in two steps: its head (`checkHead`, path, method,
/// parameters, content type) and — only when the operation declares a JSON body schema — its
/// body, which the exchange then buffers before it connects upstream (`checkBody`).
public final class RequestValidator: Sendable {
    public let config: RequestValidationConfig
    let schemas: CompiledSchemas
    /// Concrete paths before templated ones (OpenAPI's matching rule), then by path text.
    let paths: [DocumentPath]

    /// Violations named in one answer.
    public static let maximumViolations = 10
    static let maximumOperations = 2_000
    /// Query parameters read from one call; more are a violation of their own.
    static let maximumQueryParameters = 128

    public var nodeCount: Int { schemas.nodeCount }

    init(config: RequestValidationConfig, schemas: CompiledSchemas, paths: [DocumentPath]) {
        self.config = config
        self.schemas = schemas
        self.paths = paths
    }

    /// Compiles a document (the uploaded OpenAPI document as JSON). Fails with the first thing
    /// that cannot be compiled, located by its pointer in the document.
    public static func compile(document: JSONValue, config: RequestValidationConfig) -> Result<RequestValidator, SchemaCompileError> {
        do {
            var compiler = OperationCompiler(document: document)
            return .success(try compiler.compile(config: config))
        } catch {
            return .failure(error)
        }
    }

    // MARK: Checking a call

    /// What the head of a call leads to.
    enum HeadOutcome {
        case pass
        /// Buffer the body and check it against node `schema` once complete (`required`: an empty
        /// body is a violation).
        case checkBody(schema: Int, required: Bool)
        case refuse(ValidationRefusal)
    }

    /// Checks method, path (`uri` is relative to the API's base path, with its query), the
    /// parameters and the content type. `hasBody`: the call says a body follows.
    func checkHead(method: HTTPMethod, uri: String, headers: HTTPHeaders, hasBody: Bool) -> HeadOutcome {
        let queryStart = uri.utf8.firstIndex(of: UInt8(ascii: "?"))
        let path = queryStart.map { uri[..<$0] } ?? Substring(uri)
        let segments = DocumentPath.segments(of: path)
        guard let (template, pathValues) = match(segments) else {
            return .refuse(ValidationRefusal(status: .notFound, title: "Not found", violations: [Violation("/path", "The API's document has no path \(String(path.prefix(200))).")]))
        }
        var name = method.rawValue
        if template.operations[name] == nil, method == .HEAD, template.operations["GET"] != nil { name = "GET" }
        guard let operation = template.operations[name] else {
            return .refuse(
                ValidationRefusal(
                    status: .methodNotAllowed, title: "Method not allowed",
                    violations: [Violation("/method", "\(method.rawValue) is not an operation of \(template.text); allowed: \(template.allow).")],
                    allow: template.allow))
        }
        var validator = SchemaValidator(schemas: schemas, limit: Self.maximumViolations)
        if config.scope.parameters {
            checkParameters(operation, pathValues: pathValues, query: queryStart.map { uri[uri.utf8.index(after: $0)...] } ?? "", headers: headers, into: &validator)
        }
        var outcome = HeadOutcome.pass
        if config.scope.body, let body = operation.body, validator.violations.count < Self.maximumViolations {
            if !hasBody {
                if body.required { validator.append(Violation("/body", "A request body is required.")) }
            } else {
                let contentType = headers.first(name: "content-type").map(MediaType.essence) ?? ""
                guard let media = body.media(for: contentType) else {
                    let declared = body.media.map(\.type).joined(separator: ", ")
                    if !validator.violations.isEmpty { return .refuse(ValidationRefusal(violations: validator.violations)) }
                    return .refuse(
                        ValidationRefusal(
                            status: .unsupportedMediaType, title: "Unsupported media type",
                            violations: [
                                Violation("/header/Content-Type", contentType.isEmpty ? "Send a Content-Type: one of \(declared)." : "\(contentType.prefix(100)) is not accepted; use one of \(declared).")
                            ]))
                }
                if media.json, let schema = media.schema { outcome = .checkBody(schema: schema, required: body.required) }
            }
        }
        if !validator.violations.isEmpty { return .refuse(ValidationRefusal(violations: validator.violations)) }
        return outcome
    }

    /// Checks a complete JSON body against node `schema`; empty when it matches.
    func checkBody(_ payload: ByteBuffer, schema: Int, required: Bool) -> [Violation] {
        if payload.readableBytes == 0 { return required ? [Violation("/body", "A request body is required.")] : [] }
        let value: JSONValue
        switch JSONValue.parseBody(Array(payload.readableBytesView)) {
        case .success(let parsed): value = parsed
        case .failure(let problem): return [Violation("/body", problem.message)]
        }
        var validator = SchemaValidator(schemas: schemas, limit: Self.maximumViolations)
        validator.validate(value, node: schema, pointer: "/body")
        return validator.violations
    }

    private func match(_ segments: [Substring]) -> (DocumentPath, [String: String])? {
        for template in paths {
            if let values = template.match(segments) { return (template, values) }
        }
        return nil
    }

    private func checkParameters(_ operation: Operation, pathValues: [String: String], query: Substring, headers: HTTPHeaders, into validator: inout SchemaValidator) {
        var queryValues: [String: [String]] = [:]
        var count = 0
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            count += 1
            if count > Self.maximumQueryParameters {
                validator.append(Violation("/query", "More than \(Self.maximumQueryParameters) query parameters."))
                return
            }
            let equals = pair.firstIndex(of: "=")
            let name = Self.formDecode(equals.map { pair[..<$0] } ?? pair)
            let value = equals.map { Self.formDecode(pair[pair.index(after: $0)...]) } ?? ""
            queryValues[name, default: []].append(value)
        }
        for parameter in operation.parameters {
            if validator.isFull { return }
            let at = "/\(parameter.location.rawValue)/" + JSONPointer.escape(parameter.name)
            let raw: [String]
            switch parameter.location {
            case .path: raw = pathValues[parameter.name].map { [$0] } ?? []
            case .query: raw = queryValues[parameter.name] ?? []
            case .header:
                // every field line of the name, as one list (RFC 9110 §5.3)
                let lines = headers[parameter.name]
                raw = lines.isEmpty ? [] : [lines.joined(separator: ", ")]
            }
            guard !raw.isEmpty else {
                if parameter.required { validator.append(Violation(at, "Required.")) }
                continue
            }
            guard let node = parameter.schema else { continue }
            let value: JSONValue
            if let items = parameter.arrayItems {
                let parts: [String] =
                    parameter.location == .query && parameter.explode
                    ? raw
                    : raw.flatMap { text in
                        text.split(separator: ",", omittingEmptySubsequences: false).map {
                            parameter.location == .header ? $0.trimmingCharacters(in: .whitespaces) : String($0)
                        }
                    }
                value = .array(parts.map { coerce($0, node: items) })
            } else {
                if raw.count > 1, parameter.location == .query {
                    validator.append(Violation(at, "Given \(raw.count) times; one value is expected."))
                    continue
                }
                value = coerce(raw[0], node: node)
            }
            validator.validate(value, node: node, pointer: at)
        }
        if config.refuseUnknownQuery {
            let declared = Set(operation.parameters.filter { $0.location == .query }.map(\.name))
            for name in queryValues.keys.sorted() where !declared.contains(name) {
                validator.append(Violation("/query/" + JSONPointer.escape(name), "Unknown query parameter."))
            }
        }
    }

    /// A parameter's text as the JSON value its schema expects (`"10"` → 10 for an integer);
    /// text that does not convert stays a string, and the schema check says why it is wrong.
    func coerce(_ text: String, node: Int) -> JSONValue {
        let types = schemas.effectiveTypes(node) ?? []
        if types.contains(.integer) || types.contains(.number), let whole = Int64(text) { return .integer(whole) }
        if types.contains(.number), !text.isEmpty, text.utf8.allSatisfy({ Self.decimalBytes.contains($0) }), let number = Double(text), number.isFinite {
            return .number(number)
        }
        if types.contains(.boolean), text == "true" || text == "false" { return .bool(text == "true") }
        if types.contains(.null), text.isEmpty || text == "null" { return .null }
        return .string(text)
    }

    private static let decimalBytes = Set("0123456789+-.eE".utf8)

    /// `application/x-www-form-urlencoded` decoding of a query name or value (`+` is a space).
    static func formDecode(_ text: Substring) -> String {
        let spaced = text.contains("+") ? text.replacingOccurrences(of: "+", with: " ") : String(text)
        return spaced.removingPercentEncoding ?? spaced
    }
}

/// A refusal of a call that does not match the document: 400 with its violations (problem+json
/// `errors`, RFC 9457's shape: `pointer` and `detail`), or 404, 405 (with `Allow`), 415.
public struct ValidationRefusal: Sendable, Equatable {
    public var status: HTTPResponseStatus
    public var title: String
    public var violations: [Violation]
    public var allow: String?

    public init(status: HTTPResponseStatus = .badRequest, title: String = "Invalid request", violations: [Violation], allow: String? = nil) {
        self.status = status
        self.title = title
        self.violations = violations
        self.allow = allow
    }

    var detail: String {
        guard let first = violations.first else { return "The request does not match the API's document." }
        return violations.count == 1 ? "\(first.pointer): \(first.message)" : "\(first.pointer): \(first.message) (and \(violations.count - 1) more)"
    }

    /// The problem+json body.
    var body: String {
        let errors = violations.map { "{\"pointer\":\(JSONText.quote($0.pointer)),\"detail\":\(JSONText.quote($0.message))}" }.joined(separator: ",")
        return "{\"type\":\"about:blank\",\"title\":\(JSONText.quote(title)),\"status\":\(status.code),\"detail\":\(JSONText.quote(detail)),\"errors\":[\(errors)]}"
    }

    var response: LocalResponse {
        var headers: [(String, String)] = [("Content-Type", "application/problem+json")]
        if let allow { headers.append(("Allow", allow)) }
        return LocalResponse(status: status, headers: headers, body: body, rejection: .invalidRequest)
    }
}

/// A media type's essence: `Application/JSON; charset=utf-8` → `application/json`.
enum MediaType {
    static func essence(_ value: String) -> String {
        let end = value.firstIndex(of: ";") ?? value.endIndex
        return value[..<end].trimmingCharacters(in: .whitespaces).lowercased()
    }

    /// `application/json` and every `+json` type.
    static func isJSON(_ essence: String) -> Bool {
        essence == "application/json" || (essence.hasPrefix("application/") && essence.hasSuffix("+json"))
    }
}

/// An API's `request_validation` as a route carries it: compiled, or — when its document is
/// missing or cannot be compiled (changed after the policy was saved) — unusable, in which case
/// every call is refused with 503 rather than forwarded unchecked (fail closed).
public enum RequestValidationPolicy: Sendable {
    case ready(RequestValidator)
    case unusable(String)

    /// Documents larger than this are not read (the portal accepts 2 MiB; its JSON form is close).
    static let maximumDocumentBytes = 4 << 20

    /// The answer while unusable: a clear problem, not a 500.
    static var unavailable: LocalResponse {
        LocalResponse.problem(
            .serviceUnavailable, "Validation unavailable",
            "The API's request validation cannot check calls: its OpenAPI document is missing or cannot be compiled. The provider has been told in the gateway's log.",
            rejection: nil)
    }
}
