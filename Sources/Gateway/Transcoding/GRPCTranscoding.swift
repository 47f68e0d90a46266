import Foundation
import NIOConcurrencyHelpers

/// An API's HTTP/JSON face of its gRPC methods, compiled once per snapshot from its descriptor set:
/// which method an HTTP request calls (`POST /{package}.{Service}/{Method}`, or a `google.api.http`
/// route) and the request message it makes of the JSON body, the path variables and the query. Pure.
public final class GRPCTranscoding: Sendable {
    public let schema: ProtoSchema
    public let transcoder: ProtoJSONTranscoder
    /// The hex SHA-256 of the descriptor set it was compiled from.
    public let sha256: String
    private let byGRPCPath: [String: ProtoMethod]
    private let routes: [(method: String, template: PathTemplate, binding: HTTPBinding, target: ProtoMethod)]

    /// What an HTTP request resolves to: the method, and the request message as JSON.
    public struct Call: Sendable {
        public var method: ProtoMethod
        /// The `google.api.http` rule's `body` ("*": the whole message, "": none, else one field).
        public var body: String
        /// The `response_body` field the answer is made of ("" for the whole message).
        public var responseBody: String
        public var pathValues: [(fieldPath: [String], value: String)]
        /// Query parameters fill fields too, except when the body is the whole message.
        public var query: [(String, String)]
    }

    /// Why a request does not make a message (answered 400 with the pointer).
    public typealias Failure = ProtoJSONTranscoder.Failure

    public init(schema: ProtoSchema, sha256: String = "", maximumOutputBytes: Int = 16 * 1024 * 1024) {
        self.schema = schema
        self.sha256 = sha256
        self.transcoder = ProtoJSONTranscoder(schema: schema, maximumOutputBytes: maximumOutputBytes)
        var byPath: [String: ProtoMethod] = [:]
        var routes: [(String, PathTemplate, HTTPBinding, ProtoMethod)] = []
        for method in schema.methods where method.isTranslated {
            byPath[method.grpcPath] = method
            // `ProtoMethod.unroutedReason` says which are left out (a client stream's with variables, ...)
            for binding in method.routedBindings {
                guard let template = PathTemplate(binding.pathTemplate) else { continue }
                routes.append((binding.method, template, binding, method))
            }
        }
        self.byGRPCPath = byPath
        self.routes = routes
    }

    /// The call an HTTP request (method, path and query below the API's base path) makes; nil
    /// when it names no translated method.
    public func resolve(httpMethod: String, uri: String) -> Call? {
        let split = uri.firstIndex(of: "?")
        let path = split.map { uri[..<$0] } ?? Substring(uri)
        let query = split.map { Self.queryPairs(uri[uri.index(after: $0)...]) } ?? []
        if httpMethod == "POST", let method = byGRPCPath[String(path)] {
            return Call(method: method, body: "*", responseBody: "", pathValues: [], query: [])
        }
        for route in routes where route.method == httpMethod {
            guard let values = route.template.match(path) else { continue }
            return Call(method: route.target, body: route.binding.body, responseBody: route.binding.responseBody, pathValues: values, query: query)
        }
        return nil
    }

    /// The request message's wire bytes for a call: the body (as the rule places it), then the
    /// path variables and query parameters set on top.
    public func requestMessage(_ call: Call, body: [UInt8]) throws(Failure) -> [UInt8] {
        var tree: JSONTree = .object([])
        let blank = body.allSatisfy { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }
        if !call.body.isEmpty, !blank {
            let parsed: JSONTree
            do { parsed = try JSONTree.parse(body, maximumDepth: transcoder.maximumDepth * 2 + 2) } catch {
                throw Failure("", "The body is not valid JSON: \(error.reason) at byte \(error.offset).")
            }
            if call.body == "*" {
                tree = parsed
            } else {
                tree = try set(tree, path: call.body.split(separator: ".").map(String.init), in: call.method.inputType, value: .json(parsed), pointer: "")
            }
        }
        for (fieldPath, value) in call.pathValues {
            tree = try set(tree, path: fieldPath, in: call.method.inputType, value: .text(value, append: false), pointer: "")
        }
        if call.body != "*" {
            for (name, value) in call.query {
                let fieldPath = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
                tree = try set(tree, path: fieldPath, in: call.method.inputType, value: .text(value, append: true), pointer: "")
            }
        }
        return try transcoder.wire(tree: tree, message: call.method.inputType)
    }

    /// The response message as JSON, or its `response_body` field alone.
    public func responseJSON(_ call: Call, wire: [UInt8]) throws(Failure) -> [UInt8] {
        let json = try transcoder.json(wire: wire, message: call.method.outputType)
        guard !call.responseBody.isEmpty, let type = schema.messages[call.method.outputType],
            let index = type.fieldIndex(jsonKey: call.responseBody)
        else { return json }
        guard case .object(let members)? = try? JSONTree.parse(json, maximumDepth: transcoder.maximumDepth * 2 + 2) else { return json }
        let key = type.fields[index].jsonName
        guard let member = members.first(where: { $0.key == key }) else { return Array("null".utf8) }
        return Self.write(member.value)
    }

    private enum Value {
        case json(JSONTree)
        /// A path or query value: typed by the field it fills; query values of repeated fields append.
        case text(String, append: Bool)
    }

    private func set(_ tree: JSONTree, path: [String], in messageName: String, value: Value, pointer: String) throws(Failure) -> JSONTree {
        guard let first = path.first else { return tree }
        guard let type = schema.messages[messageName], let index = type.fieldIndex(jsonKey: first) else {
            throw Failure(pointer + "/" + first, "\(messageName) has no field \"\(first)\".")
        }
        let field = type.fields[index]
        guard case .object(var members) = tree else { throw Failure(pointer, "\(field.name) is set twice, as a value and as a message.") }
        let existing = members.firstIndex { $0.key == field.jsonName || $0.key == field.name }
        let current = existing.map { members[$0].value }
        let fieldPointer = pointer + "/" + field.jsonName
        let next: JSONTree
        if path.count > 1 {
            guard case .message(let nested) = field.kind, !field.isRepeated else {
                throw Failure(fieldPointer, "\(field.name) is not a message, so \(path.joined(separator: ".")) names nothing.")
            }
            next = try set(current ?? .object([]), path: Array(path.dropFirst()), in: nested, value: value, pointer: fieldPointer)
        } else {
            switch value {
            case .json(let tree): next = tree
            case .text(let text, let append):
                let element = Self.typed(text, kind: field.kind)
                if field.isRepeated && !field.isMap {
                    if append, case .array(let items)? = current { next = .array(items + [element]) } else { next = .array([element]) }
                } else {
                    next = element
                }
            }
        }
        if let existing { members.remove(at: existing) }
        members.append(JSONTree.Member(key: field.jsonName, value: next))
        return .object(members)
    }

    /// A path or query value as the JSON the mapping expects for the field's type.
    private static func typed(_ text: String, kind: ProtoFieldKind) -> JSONTree {
        switch kind {
        case .bool: text == "true" ? .bool(true) : text == "false" ? .bool(false) : .string(text)
        case .enumeration: text.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "-") }) && !text.isEmpty ? .number(text) : .string(text)
        default: .string(text)
        }
    }

    static func queryPairs(_ query: Substring) -> [(String, String)] {
        query.split(separator: "&").compactMap { part in
            let pair = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let decode = { (text: Substring) in text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding }
            guard let name = decode(pair[0]), !name.isEmpty, let value = decode(pair.count > 1 ? pair[1] : "") else { return nil }
            return (name, value)
        }
    }

    static func write(_ tree: JSONTree) -> [UInt8] {
        var writer = JSONWriter()
        func emit(_ tree: JSONTree) {
            switch tree {
            case .null: writer.raw("null")
            case .bool(let flag): writer.raw(flag ? "true" : "false")
            case .number(let literal): writer.raw(literal)
            case .string(let text): writer.string(text)
            case .array(let items):
                writer.byte(UInt8(ascii: "["))
                for (offset, item) in items.enumerated() {
                    if offset > 0 { writer.byte(UInt8(ascii: ",")) }
                    emit(item)
                }
                writer.byte(UInt8(ascii: "]"))
            case .object(let members):
                writer.byte(UInt8(ascii: "{"))
                for (offset, member) in members.enumerated() {
                    if offset > 0 { writer.byte(UInt8(ascii: ",")) }
                    writer.string(member.key)
                    writer.byte(UInt8(ascii: ":"))
                    emit(member.value)
                }
                writer.byte(UInt8(ascii: "}"))
            }
        }
        emit(tree)
        return writer.bytes
    }
}

/// Compiled translations by the digest of their descriptor set, so a snapshot reload recompiles only
/// sets that changed. Shared by the loads of one process.
public final class TranscodingCache: Sendable {
    private let compiledSets = NIOLockedValueBox<[String: GRPCTranscoding]>([:])

    public init() {}

    /// The translation of a stored set; nil when the set no longer compiles.
    func compiled(sha256: String, content: [UInt8]) -> GRPCTranscoding? {
        if let known = compiledSets.withLockedValue({ $0[sha256] }) { return known }
        guard let schema = try? ProtoSchema.compile(content) else { return nil }
        let made = GRPCTranscoding(schema: schema, sha256: sha256)
        compiledSets.withLockedValue { $0[sha256] = made }
        return made
    }

    /// Forgets sets no longer stored.
    func retain(_ digests: Set<String>) {
        compiledSets.withLockedValue { sets in sets = sets.filter { digests.contains($0.key) } }
    }
}
