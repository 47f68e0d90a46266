import Foundation
import Gateway
import HTTPTypes
import Yams

/// A JSON/YAML value with object keys in document order (reference docs follow the author's order).
indirect enum DocumentValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([DocumentValue])
    case object([(String, DocumentValue)])

    static func == (a: DocumentValue, b: DocumentValue) -> Bool {
        switch (a, b) {
        case (.null, .null): true
        case (.bool(let x), .bool(let y)): x == y
        case (.number(let x), .number(let y)): x == y
        case (.string(let x), .string(let y)): x == y
        case (.array(let x), .array(let y)): x == y
        case (.object(let x), .object(let y)): x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: false
        }
    }

    subscript(_ key: String) -> DocumentValue? {
        guard case .object(let pairs) = self else { return nil }
        return pairs.first { $0.0 == key }?.1
    }

    var string: String? { if case .string(let s) = self { s } else { nil } }
    var object: [(String, DocumentValue)]? { if case .object(let p) = self { p } else { nil } }
    var array: [DocumentValue]? { if case .array(let a) = self { a } else { nil } }
    var bool: Bool? { if case .bool(let b) = self { b } else { nil } }

    /// Follows a local JSON pointer (`#/components/schemas/Pet`).
    func resolve(pointer: String) -> DocumentValue? {
        guard pointer.hasPrefix("#") else { return nil }
        var current: DocumentValue? = self
        for token in pointer.dropFirst().split(separator: "/", omittingEmptySubsequences: true) {
            let key = token.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
            switch current {
            case .object: current = current?[key]
            case .array(let items): current = Int(key).flatMap { items.indices.contains($0) ? items[$0] : nil }
            default: return nil
            }
        }
        return current
    }

    /// The value as the gateway reads documents (`JSONValue`; whole numbers become integers).
    var jsonValue: JSONValue {
        switch self {
        case .null: .null
        case .bool(let flag): .bool(flag)
        case .number(let number): number.rounded() == number && abs(number) < 9e15 ? .integer(Int64(number)) : .number(number)
        case .string(let text): .string(text)
        case .array(let items): .array(items.map(\.jsonValue))
        case .object(let pairs): .object(Dictionary(pairs.map { ($0.0, $0.1.jsonValue) }, uniquingKeysWith: { first, _ in first }))
        }
    }

    /// Compact, pretty JSON for examples.
    func json(indent: String = "") -> String {
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let n): return n.rounded() == n && abs(n) < 1e15 ? String(Int64(n)) : String(n)
        case .string(let s):
            let data = (try? JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes])) ?? Data("[\"\"]".utf8)
            return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
        case .array(let items):
            if items.isEmpty { return "[]" }
            let inner = indent + "  "
            return "[\n" + items.map { inner + $0.json(indent: inner) }.joined(separator: ",\n") + "\n" + indent + "]"
        case .object(let pairs):
            if pairs.isEmpty { return "{}" }
            let inner = indent + "  "
            return "{\n" + pairs.map { inner + DocumentValue.string($0.0).json() + ": " + $0.1.json(indent: inner) }.joined(separator: ",\n") + "\n" + indent + "}"
        }
    }
}

/// An uploaded OpenAPI document: parsed (JSON or YAML), checked for the structure the portal and
/// its readers rely on, and kept as uploaded for download.
struct APIDocument: Sendable {
    enum Format: String, Sendable { case json, yaml }

    let format: Format
    let content: String
    let root: DocumentValue
    let title: String
    let version: String
    let openAPIVersion: String

    static let maximumBytes = 2 << 20
    /// Bounds the work YAML aliases can cause (a "billion laughs" document expands exponentially).
    static let maximumNodes = 250_000

    struct Invalid: Error, Sendable {
        let problems: [String]
    }

    /// Over `maximumBytes`: a size limit, so 413 on every surface (a page on the web, problem+json in the API).
    static var tooLarge: AppError {
        AppError(status: .contentTooLarge, title: "Document too large", detail: "An OpenAPI document can be at most 2 MiB.")
    }

    /// Parses and validates; the format comes from the content (JSON starts with `{`).
    static func parse(_ bytes: [UInt8]) throws -> APIDocument {
        guard bytes.count <= maximumBytes else { throw Invalid(problems: ["The document is larger than 2 MiB."]) }
        guard let text = String(validating: bytes, as: UTF8.self), !text.contains("\u{0}") else {
            throw Invalid(problems: ["The document is not UTF-8 text."])
        }
        let trimmed = text.drop { $0.isWhitespace || $0 == "\u{FEFF}" }
        guard !trimmed.isEmpty else { throw Invalid(problems: ["The document is empty."]) }
        let format: Format = trimmed.first == "{" ? .json : .yaml
        if format == .json {
            do { _ = try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed]) } catch {
                throw Invalid(problems: ["The document is not valid JSON: \((error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "syntax error")."])
            }
        }
        let node: Node?
        do { node = try Yams.compose(yaml: String(trimmed)) } catch {
            throw Invalid(problems: ["The document is not valid YAML: \(String(describing: error).prefix(300))"])
        }
        guard let node else { throw Invalid(problems: ["The document is empty."]) }
        var budget = maximumNodes
        let root = try convert(node, budget: &budget)
        let problems = OpenAPIRules.problems(in: root)
        guard problems.isEmpty else { throw Invalid(problems: problems) }
        return APIDocument(
            format: format, content: text, root: root, title: root["info"]?["title"]?.string ?? "", version: root["info"]?["version"]?.string ?? "",
            openAPIVersion: root["openapi"]?.string ?? "")
    }

    private static func convert(_ node: Node, budget: inout Int) throws -> DocumentValue {
        budget -= 1
        guard budget > 0 else { throw Invalid(problems: ["The document has too many values (YAML aliases expand to more than \(maximumNodes))."]) }
        switch node {
        case .scalar(let scalar):
            switch Tag.Name(rawValue: node.tag.rawValue) {
            case .null: return .null
            case .bool: return node.bool.map(DocumentValue.bool) ?? .string(scalar.string)
            case .int: return node.int.map { .number(Double($0)) } ?? .string(scalar.string)
            case .float: return node.float.map(DocumentValue.number) ?? .string(scalar.string)
            default: return .string(scalar.string)
            }
        case .mapping(let mapping):
            var pairs: [(String, DocumentValue)] = []
            for (key, value) in mapping {
                pairs.append((key.string ?? "", try convert(value, budget: &budget)))
            }
            return .object(pairs)
        case .sequence(let sequence):
            return .array(try sequence.map { try convert($0, budget: &budget) })
        case .alias:
            throw Invalid(problems: ["YAML aliases that cannot be resolved are not supported."])
        }
    }
}

/// The structural rules an uploaded document must meet. Pure; each problem names its location.
enum OpenAPIRules {
    static let methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]

    static func problems(in root: DocumentValue) -> [String] {
        var problems: [String] = []
        guard root.object != nil else { return ["The document must be an object with `openapi`, `info` and `paths`."] }
        if root["swagger"] != nil { return ["Swagger 2.0 documents are not supported; convert to OpenAPI 3.0 or 3.1."] }
        let version = root["openapi"]?.string ?? ""
        let supported = version.range(of: #"^3\.[01]\.\d+$"#, options: .regularExpression) != nil
        if !supported { problems.append("`openapi` must be a 3.0.x or 3.1.x version string (found '\(version.prefix(20))').") }
        if (root["info"]?["title"]?.string ?? "").trimmingCharacters(in: .whitespaces).isEmpty { problems.append("`info.title` is required.") }
        if root["info"]?["version"]?.string == nil { problems.append("`info.version` is required (a string).") }
        let is30 = version.hasPrefix("3.0")
        let paths = root["paths"]
        if paths == nil && (is30 || (root["webhooks"] == nil && root["components"] == nil)) {
            problems.append("`paths` is required.")
        } else if let paths, paths.object == nil {
            problems.append("`paths` must be an object.")
        }
        var operationIDs: Set<String> = []
        for (path, item) in paths?.object ?? [] {
            let here = "paths.\(path)"
            guard path.hasPrefix("/") else {
                problems.append("\(here): paths must start with /.")
                continue
            }
            guard let operations = item.object else {
                problems.append("\(here) must be an object.")
                continue
            }
            problems += parameterProblems(item["parameters"], at: "\(here).parameters", root: root)
            for (method, operation) in operations where methods.contains(method) {
                let at = "\(here).\(method)"
                guard operation.object != nil else {
                    problems.append("\(at) must be an object.")
                    continue
                }
                if let id = operation["operationId"]?.string {
                    if !operationIDs.insert(id).inserted { problems.append("\(at): operationId '\(id)' is used twice.") }
                }
                problems += parameterProblems(operation["parameters"], at: "\(at).parameters", root: root)
                if let responses = operation["responses"] {
                    for (code, _) in responses.object ?? [] where code.range(of: #"^(default|[1-5]XX|[1-5][0-9][0-9])$"#, options: .regularExpression) == nil {
                        problems.append("\(at).responses: '\(code)' is not a status code.")
                    }
                    if responses.object?.isEmpty ?? true, is30 { problems.append("\(at).responses needs at least one response.") }
                } else if is30 {
                    problems.append("\(at).responses is required.")
                }
            }
        }
        problems += referenceProblems(root, in: root, at: "")
        return Array(problems.prefix(25))
    }

    private static func parameterProblems(_ value: DocumentValue?, at: String, root: DocumentValue) -> [String] {
        guard let value else { return [] }
        guard let items = value.array else { return ["\(at) must be a list."] }
        var problems: [String] = []
        for (index, item) in items.enumerated() {
            var parameter = item
            if let ref = item["$ref"]?.string, let target = root.resolve(pointer: ref) { parameter = target }
            if item["$ref"] != nil { continue }
            let name = parameter["name"]?.string ?? ""
            let location = parameter["in"]?.string ?? ""
            if name.isEmpty { problems.append("\(at)[\(index)]: `name` is required.") }
            if !["query", "header", "path", "cookie"].contains(location) { problems.append("\(at)[\(index)]: `in` must be query, header, path or cookie.") }
            if location == "path" && parameter["required"]?.bool != true { problems.append("\(at)[\(index)]: path parameter '\(name)' must be required.") }
        }
        return problems
    }

    /// Every local `$ref` must point at something in the document.
    private static func referenceProblems(_ value: DocumentValue, in root: DocumentValue, at: String) -> [String] {
        switch value {
        case .object(let pairs):
            var problems: [String] = []
            for (key, child) in pairs {
                if key == "$ref", let ref = child.string, ref.hasPrefix("#"), root.resolve(pointer: ref) == nil {
                    problems.append("\(at.isEmpty ? "$ref" : at): '\(ref.prefix(120))' points at nothing in this document.")
                }
                problems += referenceProblems(child, in: root, at: at.isEmpty ? key : "\(at).\(key)")
                if problems.count > 25 { break }
            }
            return problems
        case .array(let items):
            return items.enumerated().flatMap { referenceProblems($1, in: root, at: "\(at)[\($0)]") }
        default:
            return []
        }
    }
}
