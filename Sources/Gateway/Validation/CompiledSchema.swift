import Foundation

/// A JSON Schema (the OpenAPI 3.0/3.1 subset the gateway checks) compiled once per snapshot into a
/// flat table of nodes: each node holds the checks of one schema object, and references between
/// schemas (`properties`, `items`, `allOf`, a `$ref`) are indices into the table, so a recursive
/// `$ref` is a cycle in the table rather than an endless tree. Validating a value walks the table;
/// the document is never read again per call.
///
/// Keywords checked: type (3.0 `nullable`, 3.1 type arrays), enum, const, minimum, maximum,
/// exclusiveMinimum/exclusiveMaximum (3.0 booleans and 3.1 numbers), multipleOf, minLength,
/// maxLength, pattern, format (`SchemaFormat`), items, minItems, maxItems, uniqueItems, required,
/// properties, additionalProperties (bool or schema), minProperties, maxProperties, allOf, anyOf,
/// oneOf, not, local `$ref`. Every other keyword is ignored, as an annotation would be.
public struct SchemaNode: Sendable {
    /// The JSON types a value may have (nil: any).
    var types: SchemaTypes?
    /// `false` as a schema: nothing matches.
    var never = false
    var enumValues: [JSONValue]?
    var constValue: JSONValue?
    var minimum: Double?
    var maximum: Double?
    var exclusiveMinimum: Double?
    var exclusiveMaximum: Double?
    var multipleOf: Double?
    var minLength: Int?
    var maxLength: Int?
    /// Index into `CompiledSchemas.patterns`.
    var pattern: Int?
    var format: SchemaFormat?
    var items: Int?
    var minItems: Int?
    var maxItems: Int?
    var uniqueItems = false
    var required: [String] = []
    var properties: [String: Int] = [:]
    var additionalProperties: Additional = .allowed
    var minProperties: Int?
    var maxProperties: Int?
    var allOf: [Int] = []
    var anyOf: [Int] = []
    var oneOf: [Int] = []
    var not: Int?

    enum Additional: Sendable, Equatable {
        case allowed
        case refused
        case schema(Int)
    }
}

/// A set of JSON types, as bits.
struct SchemaTypes: OptionSet, Sendable, Hashable {
    let rawValue: UInt8
    static let null = SchemaTypes(rawValue: 1)
    static let boolean = SchemaTypes(rawValue: 2)
    static let integer = SchemaTypes(rawValue: 4)
    static let number = SchemaTypes(rawValue: 8)
    static let string = SchemaTypes(rawValue: 16)
    static let array = SchemaTypes(rawValue: 32)
    static let object = SchemaTypes(rawValue: 64)

    static func named(_ name: String) -> SchemaTypes? {
        switch name {
        case "null": .null
        case "boolean": .boolean
        case "integer": .integer
        case "number": .number
        case "string": .string
        case "array": .array
        case "object": .object
        default: nil
        }
    }

    var names: String {
        let all: [(SchemaTypes, String)] = [
            (.object, "object"), (.array, "array"), (.string, "string"), (.number, "number"), (.integer, "integer"), (.boolean, "boolean"), (.null, "null"),
        ]
        return all.filter { contains($0.0) }.map(\.1).joined(separator: " or ")
    }
}

/// A compiled regular expression; NSRegularExpression is immutable and safe to share across threads.
struct CompiledPattern: @unchecked Sendable {
    let source: String
    let expression: NSRegularExpression
}

/// Every schema of one API's document, compiled: the node table and its patterns.
public struct CompiledSchemas: Sendable {
    var nodes: [SchemaNode] = []
    var patterns: [CompiledPattern] = []

    public var nodeCount: Int { nodes.count }
}

/// Why a document's schemas could not be compiled; `pointer` is where in the document (RFC 6901).
public struct SchemaCompileError: Error, Sendable, Equatable {
    public var pointer: String
    public var message: String

    public init(_ pointer: String, _ message: String) {
        self.pointer = pointer
        self.message = message
    }
}

/// Compiles the schemas of one OpenAPI document into `CompiledSchemas`. Bounded: at most
/// `maximumNodes` nodes per document, nesting at most `maximumDepth` deep, patterns at most
/// `maximumPatternLength` characters. A `$ref` is compiled once (by its target) and may point back at
/// a schema being compiled: the cycle becomes a cycle of indices.
struct SchemaCompiler {
    static let maximumNodes = 5_000
    static let maximumDepth = 48
    static let maximumPatternLength = 512

    let root: JSONValue
    /// OpenAPI 3.0 (`nullable`, boolean `exclusiveMinimum`), not 3.1.
    let openAPI30: Bool
    private(set) var output = CompiledSchemas()
    private var byReference: [String: Int] = [:]
    private var patternIndex: [String: Int] = [:]

    init(root: JSONValue, openAPI30: Bool) {
        self.root = root
        self.openAPI30 = openAPI30
    }

    /// Compiles `schema` found at `pointer` and returns its node's index.
    mutating func compile(_ schema: JSONValue, at pointer: String, depth: Int = 0) throws(SchemaCompileError) -> Int {
        guard depth <= Self.maximumDepth else { throw SchemaCompileError(pointer, "Schemas nest deeper than \(Self.maximumDepth) levels.") }
        guard output.nodes.count < Self.maximumNodes else {
            throw SchemaCompileError(pointer, "The document's schemas have more than \(Self.maximumNodes) parts.")
        }
        switch schema {
        case .bool(let accepts):
            var node = SchemaNode()
            node.never = !accepts
            output.nodes.append(node)
            return output.nodes.count - 1
        case .object(let object):
            if case .string(let reference)? = object["$ref"] {
                let target = try resolve(reference, at: pointer + "/$ref", depth: depth)
                // 3.0 ignores a reference's siblings; in 3.1 they apply too
                let siblings = object.keys.filter { $0 != "$ref" && $0 != "description" && $0 != "summary" }
                if openAPI30 || siblings.isEmpty { return target }
                var rest = object
                rest["$ref"] = nil
                let own = try compile(.object(rest), at: pointer, depth: depth + 1)
                output.nodes[own].allOf.append(target)
                return own
            }
            return try compileObject(object, at: pointer, depth: depth)
        default:
            throw SchemaCompileError(pointer, "A schema must be an object (or true/false).")
        }
    }

    private mutating func resolve(_ reference: String, at pointer: String, depth: Int) throws(SchemaCompileError) -> Int {
        if let known = byReference[reference] { return known }
        guard reference.hasPrefix("#") else { throw SchemaCompileError(pointer, "Only references within the document (#/...) are supported.") }
        guard let target = Self.resolve(pointer: reference, in: root) else {
            throw SchemaCompileError(pointer, "'\(reference.prefix(120))' points at nothing in this document.")
        }
        // the slot exists before its target is compiled, so a reference back to it closes a cycle
        let slot = output.nodes.count
        guard slot < Self.maximumNodes else { throw SchemaCompileError(pointer, "The document's schemas have more than \(Self.maximumNodes) parts.") }
        output.nodes.append(SchemaNode())
        byReference[reference] = slot
        let compiled = try compile(target, at: String(reference.dropFirst()), depth: depth + 1)
        // the slot takes the target's checks (every check of a node reads only its own fields)
        if compiled == slot { return slot }
        var alias = SchemaNode()
        alias.allOf = [compiled]
        output.nodes[slot] = alias
        return slot
    }

    static func resolve(pointer: String, in root: JSONValue) -> JSONValue? {
        var current = root
        for token in pointer.dropFirst().split(separator: "/", omittingEmptySubsequences: true) {
            let key = token.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
            let decoded = key.removingPercentEncoding ?? key
            switch current {
            case .object(let object):
                guard let next = object[decoded] else { return nil }
                current = next
            case .array(let items):
                guard let index = Int(decoded), items.indices.contains(index) else { return nil }
                current = items[index]
            default: return nil
            }
        }
        return current
    }

    private mutating func compileObject(_ object: [String: JSONValue], at pointer: String, depth: Int) throws(SchemaCompileError) -> Int {
        let index = output.nodes.count
        output.nodes.append(SchemaNode())
        var node = SchemaNode()
        func number(_ key: String) throws(SchemaCompileError) -> Double? {
            switch object[key] {
            case nil: return nil
            case .integer(let value)?: return Double(value)
            case .number(let value)? where value.isFinite: return value
            default: throw SchemaCompileError(pointer + "/" + key, "\(key) must be a number.")
            }
        }
        func count(_ key: String) throws(SchemaCompileError) -> Int? {
            switch object[key] {
            case nil: return nil
            case .integer(let value)? where value >= 0: return Int(clamping: value)
            case .number(let value)? where value >= 0 && value.rounded() == value && value < 1e15: return Int(value)
            default: throw SchemaCompileError(pointer + "/" + key, "\(key) must be a whole number of at least 0.")
            }
        }
        func list(_ key: String) throws(SchemaCompileError) -> [Int] {
            guard let value = object[key] else { return [] }
            guard case .array(let items) = value, !items.isEmpty else { throw SchemaCompileError(pointer + "/" + key, "\(key) must be a non-empty list of schemas.") }
            var out: [Int] = []
            for (position, item) in items.enumerated() { out.append(try compile(item, at: pointer + "/\(key)/\(position)", depth: depth + 1)) }
            return out
        }

        switch object["type"] {
        case nil: break
        case .string(let name)?:
            guard let type = SchemaTypes.named(name) else { throw SchemaCompileError(pointer + "/type", "'\(name.prefix(40))' is not a JSON type.") }
            node.types = type
        case .array(let names)?:
            var types: SchemaTypes = []
            for (position, name) in names.enumerated() {
                guard case .string(let text) = name, let type = SchemaTypes.named(text) else {
                    throw SchemaCompileError(pointer + "/type/\(position)", "Not a JSON type.")
                }
                types.insert(type)
            }
            node.types = types
        default: throw SchemaCompileError(pointer + "/type", "type must be a string or a list of strings.")
        }
        if openAPI30, object["nullable"] == .bool(true), node.types != nil { node.types!.insert(.null) }
        if let value = object["enum"] {
            guard case .array(let values) = value else { throw SchemaCompileError(pointer + "/enum", "enum must be a list.") }
            node.enumValues = values
        }
        node.constValue = object["const"]
        node.minimum = try number("minimum")
        node.maximum = try number("maximum")
        switch object["exclusiveMinimum"] {
        case .bool(let on)?:
            if on { (node.exclusiveMinimum, node.minimum) = (node.minimum, nil) }
        case nil: break
        default: node.exclusiveMinimum = try number("exclusiveMinimum")
        }
        switch object["exclusiveMaximum"] {
        case .bool(let on)?:
            if on { (node.exclusiveMaximum, node.maximum) = (node.maximum, nil) }
        case nil: break
        default: node.exclusiveMaximum = try number("exclusiveMaximum")
        }
        if let multiple = try number("multipleOf") {
            guard multiple > 0 else { throw SchemaCompileError(pointer + "/multipleOf", "multipleOf must be greater than 0.") }
            node.multipleOf = multiple
        }
        node.minLength = try count("minLength")
        node.maxLength = try count("maxLength")
        node.minItems = try count("minItems")
        node.maxItems = try count("maxItems")
        node.minProperties = try count("minProperties")
        node.maxProperties = try count("maxProperties")
        if object["uniqueItems"] == .bool(true) { node.uniqueItems = true }
        if let value = object["pattern"] {
            guard case .string(let source) = value else { throw SchemaCompileError(pointer + "/pattern", "pattern must be a string.") }
            node.pattern = try pattern(source, at: pointer + "/pattern")
        }
        if case .string(let name)? = object["format"] { node.format = SchemaFormat(rawValue: name) }
        if let value = object["required"] {
            guard case .array(let names) = value else { throw SchemaCompileError(pointer + "/required", "required must be a list of names.") }
            for (position, name) in names.enumerated() {
                guard case .string(let text) = name else { throw SchemaCompileError(pointer + "/required/\(position)", "A required name must be a string.") }
                if !node.required.contains(text) { node.required.append(text) }
            }
        }
        if let value = object["properties"] {
            guard case .object(let properties) = value else { throw SchemaCompileError(pointer + "/properties", "properties must be an object.") }
            for name in properties.keys.sorted() {
                node.properties[name] = try compile(properties[name]!, at: pointer + "/properties/" + JSONPointer.escape(name), depth: depth + 1)
            }
        }
        switch object["additionalProperties"] {
        case nil, .bool(true)?: break
        case .bool(false)?: node.additionalProperties = .refused
        case let schema?: node.additionalProperties = .schema(try compile(schema, at: pointer + "/additionalProperties", depth: depth + 1))
        }
        if let items = object["items"] {
            // 3.1's prefixItems and 2019's tuple form are not checked; a list here is the tuple form
            if case .array = items {} else { node.items = try compile(items, at: pointer + "/items", depth: depth + 1) }
        }
        node.allOf = try list("allOf")
        node.anyOf = try list("anyOf")
        node.oneOf = try list("oneOf")
        if let value = object["not"] { node.not = try compile(value, at: pointer + "/not", depth: depth + 1) }
        output.nodes[index] = node
        return index
    }

    private mutating func pattern(_ source: String, at pointer: String) throws(SchemaCompileError) -> Int {
        if let known = patternIndex[source] { return known }
        guard source.count <= Self.maximumPatternLength else {
            throw SchemaCompileError(pointer, "Patterns are limited to \(Self.maximumPatternLength) characters.")
        }
        guard let expression = try? NSRegularExpression(pattern: source) else {
            throw SchemaCompileError(pointer, "'\(source.prefix(80))' is not a regular expression the gateway can compile.")
        }
        output.patterns.append(CompiledPattern(source: source, expression: expression))
        patternIndex[source] = output.patterns.count - 1
        return output.patterns.count - 1
    }
}
