import Foundation

/// One path of the document (`/items/{id}`) as segments, with its operations by method.
struct DocumentPath: Sendable {
    enum Segment: Sendable, Equatable {
        case literal(String)
        case parameter(String)
    }

    let text: String
    let segments: [Segment]
    /// Upper-case method → operation.
    let operations: [String: Operation]
    /// The `Allow` value for a 405: the declared methods (HEAD with GET).
    let allow: String

    var literalCount: Int { segments.reduce(0) { if case .literal = $1 { $0 + 1 } else { $0 } } }

    /// The path's values by parameter name when `path` (split by `segments(of:)`) matches.
    func match(_ path: [Substring]) -> [String: String]? {
        guard path.count == segments.count else { return nil }
        var values: [String: String] = [:]
        for (segment, given) in zip(segments, path) {
            let decoded = given.removingPercentEncoding ?? String(given)
            switch segment {
            case .literal(let text): if text != decoded { return nil }
            case .parameter(let name):
                if decoded.isEmpty { return nil }
                values[name] = decoded
            }
        }
        return values
    }

    /// `/items/7` → `["items", "7"]`; `/` → `[]` (a trailing slash is a segment of its own: `/items/`
    /// → `["items", ""]`).
    static func segments(of path: Substring) -> [Substring] {
        let trimmed = path.first == "/" ? path.dropFirst() : path
        if trimmed.isEmpty { return [] }
        return trimmed.split(separator: "/", omittingEmptySubsequences: false)
    }
}

/// One operation: its parameters (path item's and operation's merged, the operation's winning)
/// and its request body.
struct Operation: Sendable {
    var parameters: [Parameter]
    var body: BodySpec?
}

struct Parameter: Sendable {
    enum Location: String, Sendable { case path, query, header }

    var name: String
    var location: Location
    var required: Bool
    /// The schema's node; nil: not checked beyond presence (a parameter described by `content`).
    var schema: Int?
    /// For an array parameter, its items' node.
    var arrayItems: Int?
    /// `form` style with `explode` (the query default): `?tag=a&tag=b`; else `?tag=a,b`.
    var explode: Bool
}

struct BodySpec: Sendable {
    struct Media: Sendable {
        /// `application/json`, `application/*`, `*/*`.
        var type: String
        var schema: Int?
        var json: Bool
    }

    var required: Bool
    var media: [Media]

    /// The declared media type a request's content type falls under: exact, then `type/*`, then `*/*`.
    func media(for essence: String) -> Media? {
        if let exact = media.first(where: { $0.type == essence }) { return exact }
        if !essence.isEmpty, let slash = essence.firstIndex(of: "/"), let range = media.first(where: { $0.type == essence[..<slash] + "/*" }) {
            return range
        }
        return media.first { $0.type == "*/*" }
    }
}

/// Reads an OpenAPI document's `paths` into `DocumentPath`s and compiles every schema they use.
struct OperationCompiler {
    let document: JSONValue
    private var schemas: SchemaCompiler
    static let methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]

    init(document: JSONValue) {
        self.document = document
        var is30 = true
        if case .object(let root) = document, case .string(let version)? = root["openapi"] { is30 = version.hasPrefix("3.0") }
        schemas = SchemaCompiler(root: document, openAPI30: is30)
    }

    mutating func compile(config: RequestValidationConfig) throws(SchemaCompileError) -> RequestValidator {
        guard case .object(let root) = document else { throw SchemaCompileError("", "The document is not an object.") }
        guard case .string(let version)? = root["openapi"], version.hasPrefix("3.0") || version.hasPrefix("3.1") else {
            throw SchemaCompileError("/openapi", "Only OpenAPI 3.0 and 3.1 documents can validate requests.")
        }
        guard case .object(let paths)? = root["paths"], !paths.isEmpty else {
            throw SchemaCompileError("/paths", "The document has no paths to validate requests against.")
        }
        var templates: [(order: Int, template: DocumentPath)] = []
        var operationCount = 0
        for (order, path) in paths.keys.sorted().enumerated() {
            let at = "/paths/" + JSONPointer.escape(path)
            guard path.hasPrefix("/") else { throw SchemaCompileError(at, "Paths must start with /.") }
            guard case .object(let item) = paths[path]! else { throw SchemaCompileError(at, "A path item must be an object.") }
            let segments = Self.segments(path, at: at)
            let shared = try parameters(item["parameters"], at: at + "/parameters")
            var operations: [String: Operation] = [:]
            for method in Self.methods {
                guard let value = item[method] else { continue }
                operationCount += 1
                guard operationCount <= RequestValidator.maximumOperations else {
                    throw SchemaCompileError(at, "The document has more than \(RequestValidator.maximumOperations) operations.")
                }
                let here = at + "/" + method
                guard case .object(let operation) = value else { throw SchemaCompileError(here, "An operation must be an object.") }
                var merged = shared
                for own in try parameters(operation["parameters"], at: here + "/parameters") {
                    merged.removeAll { $0.name == own.name && $0.location == own.location }
                    merged.append(own)
                }
                let body = config.scope.body ? try requestBody(operation["requestBody"], at: here + "/requestBody") : nil
                operations[method.uppercased()] = Operation(parameters: merged, body: body)
            }
            guard !operations.isEmpty else { continue }
            var allow = Self.methods.map { $0.uppercased() }.filter { operations[$0] != nil }
            if operations["GET"] != nil && operations["HEAD"] == nil { allow.insert("HEAD", at: allow.firstIndex(of: "GET")! + 1) }
            templates.append((order, DocumentPath(text: path, segments: segments, operations: operations, allow: allow.joined(separator: ", "))))
        }
        // concrete paths match before templated ones (`/items/mine` before `/items/{id}`)
        let ordered = templates.sorted {
            ($0.template.segments.count - $0.template.literalCount, $0.order) < ($1.template.segments.count - $1.template.literalCount, $1.order)
        }.map(\.template)
        return RequestValidator(config: config, schemas: schemas.output, paths: ordered)
    }

    static func segments(_ path: String, at pointer: String) -> [DocumentPath.Segment] {
        DocumentPath.segments(of: Substring(path)).map { segment in
            if segment.hasPrefix("{"), segment.hasSuffix("}"), segment.count > 2 {
                return .parameter(String(segment.dropFirst().dropLast()))
            }
            return .literal(String(segment).removingPercentEncoding ?? String(segment))
        }
    }

    /// Follows a `$ref` (once per hop, at most 16 hops) to the object it names.
    private func dereference(_ value: JSONValue, at pointer: String) throws(SchemaCompileError) -> [String: JSONValue] {
        var current = value
        for _ in 0..<16 {
            guard case .object(let object) = current else { throw SchemaCompileError(pointer, "Expected an object.") }
            guard case .string(let reference)? = object["$ref"] else { return object }
            guard reference.hasPrefix("#"), let target = SchemaCompiler.resolve(pointer: reference, in: document) else {
                throw SchemaCompileError(pointer + "/$ref", "'\(reference.prefix(120))' points at nothing in this document.")
            }
            current = target
        }
        throw SchemaCompileError(pointer, "References lead to references more than 16 times.")
    }

    private mutating func parameters(_ value: JSONValue?, at pointer: String) throws(SchemaCompileError) -> [Parameter] {
        guard let value else { return [] }
        guard case .array(let items) = value else { throw SchemaCompileError(pointer, "parameters must be a list.") }
        var out: [Parameter] = []
        for (position, item) in items.enumerated() {
            let at = pointer + "/\(position)"
            let object = try dereference(item, at: at)
            guard case .string(let name)? = object["name"], !name.isEmpty else { throw SchemaCompileError(at + "/name", "A parameter needs a name.") }
            guard case .string(let place)? = object["in"] else { throw SchemaCompileError(at + "/in", "A parameter needs in: path, query, header or cookie.") }
            // cookies are not checked (documented)
            if place == "cookie" { continue }
            guard let location = Parameter.Location(rawValue: place) else { throw SchemaCompileError(at + "/in", "in must be path, query, header or cookie.") }
            var schema: Int?
            var arrayItems: Int?
            if let value = object["schema"] {
                let node = try schemas.compile(value, at: at + "/schema")
                schema = node
                if schemas.output.effectiveTypes(node)?.contains(.array) == true {
                    // an array without items: each part may be any text
                    if let items = schemas.output.itemsNode(node) {
                        arrayItems = items
                    } else {
                        arrayItems = try schemas.compile(.bool(true), at: at + "/schema")
                    }
                }
            }
            let style: String? = if case .string(let text)? = object["style"] { text } else { nil }
            let explode: Bool = if case .bool(let flag)? = object["explode"] { flag } else { (style ?? "form") == "form" }
            out.append(
                Parameter(
                    name: name, location: location, required: location == .path || object["required"] == .bool(true), schema: schema,
                    arrayItems: arrayItems, explode: explode))
        }
        return out
    }

    private mutating func requestBody(_ value: JSONValue?, at pointer: String) throws(SchemaCompileError) -> BodySpec? {
        guard let value else { return nil }
        let object = try dereference(value, at: pointer)
        guard case .object(let content)? = object["content"] else { throw SchemaCompileError(pointer + "/content", "A request body needs content.") }
        var media: [BodySpec.Media] = []
        for key in content.keys.sorted() {
            let at = pointer + "/content/" + JSONPointer.escape(key)
            let essence = MediaType.essence(key)
            var schema: Int?
            let json = MediaType.isJSON(essence)
            if json, case .object(let mediaObject)? = content[key], let schemaValue = mediaObject["schema"] {
                schema = try schemas.compile(schemaValue, at: at + "/schema")
            }
            media.append(BodySpec.Media(type: essence, schema: schema, json: json))
        }
        return BodySpec(required: object["required"] == .bool(true), media: media)
    }
}
