import Foundation

/// One way a request does not match its API's document: where (an RFC 6901 pointer into the
/// request, `/body/items/0/price`, `/query/limit`, `/header/X-Trace`, `/path/id`) and what.
public struct Violation: Sendable, Equatable {
    public var pointer: String
    public var message: String

    public init(_ pointer: String, _ message: String) {
        self.pointer = pointer
        self.message = message
    }
}

/// Checks values against `CompiledSchemas`. Collects at most `limit` violations (the first ones,
/// array items in order, object members by name); the walk is bounded by `maximumSteps` node visits and a
/// `maximumDepth` of nested checks, so a cyclic reference that never descends into the value, or
/// a value built to make `uniqueItems`/`oneOf` expensive, ends with a violation rather than a hang.
struct SchemaValidator {
    static let maximumDepth = 128
    static let maximumSteps = 200_000
    /// Strings longer than this are not matched against a pattern (regular expressions can
    /// backtrack; the cost is bounded by the text's length): such a value is refused.
    static let maximumPatternInput = 4_096

    let schemas: CompiledSchemas
    let limit: Int
    private(set) var violations: [Violation] = []
    private var steps = 0
    private var exhausted = false

    init(schemas: CompiledSchemas, limit: Int = 10) {
        self.schemas = schemas
        self.limit = limit
    }

    var isFull: Bool { violations.count >= limit || exhausted }

    /// Adds a violation found outside a schema (a missing parameter), within the limit.
    mutating func append(_ violation: Violation) {
        if violations.count < limit { violations.append(violation) }
    }

    /// Checks `value` against node `index`; violations are reported under `pointer`.
    mutating func validate(_ value: JSONValue, node index: Int, pointer: String) {
        _ = check(value, index, pointer, depth: 0, record: true)
    }

    /// Whether `value` matches, recording violations when `record` (inside anyOf/oneOf/not the
    /// branches are only tried).
    private mutating func check(_ value: JSONValue, _ index: Int, _ pointer: String, depth: Int, record: Bool) -> Bool {
        steps += 1
        if depth > Self.maximumDepth || steps > Self.maximumSteps {
            if record && !exhausted {
                violations.append(Violation(pointer, "The value is too deeply nested or too costly to check against its schema."))
            }
            exhausted = true
            return false
        }
        if exhausted || (record && violations.count >= limit) { return false }
        let node = schemas.nodes[index]
        var ok = true
        func fail(_ message: String, at: String? = nil) {
            ok = false
            if record && violations.count < limit { violations.append(Violation(at ?? pointer, message)) }
        }
        if node.never {
            fail("No value is allowed here.")
            return false
        }
        if let types = node.types, !Self.matches(value, types) {
            fail("Expected \(types.names), got \(Self.typeName(value)).")
            return false
        }
        if let values = node.enumValues, !values.contains(where: { Self.equal($0, value) }) {
            let shown = values.prefix(8).map { $0.shortText }.joined(separator: ", ")
            fail("Must be one of: \(shown)\(values.count > 8 ? ", …" : "").")
        }
        if let constant = node.constValue, !Self.equal(constant, value) { fail("Must be \(constant.shortText).") }
        switch value {
        case .integer, .number:
            let number = Self.double(value)!
            if let minimum = node.minimum, number < minimum { fail("Must be at least \(Self.text(minimum)).") }
            if let maximum = node.maximum, number > maximum { fail("Must be at most \(Self.text(maximum)).") }
            if let minimum = node.exclusiveMinimum, number <= minimum { fail("Must be greater than \(Self.text(minimum)).") }
            if let maximum = node.exclusiveMaximum, number >= maximum { fail("Must be less than \(Self.text(maximum)).") }
            if let multiple = node.multipleOf, !Self.isMultiple(value, of: multiple) { fail("Must be a multiple of \(Self.text(multiple)).") }
            if let format = node.format, !format.accepts(number: value) { fail("Must be a valid \(format.rawValue).") }
        case .string(let text):
            if node.minLength != nil || node.maxLength != nil {
                // JSON Schema counts code points
                let length = text.unicodeScalars.count
                if let minimum = node.minLength, length < minimum { fail("Must be at least \(minimum) characters long.") }
                if let maximum = node.maxLength, length > maximum { fail("Must be at most \(maximum) characters long.") }
            }
            if let pattern = node.pattern {
                let compiled = schemas.patterns[pattern]
                let units = text.utf16.count
                if units > Self.maximumPatternInput {
                    fail("Too long (over \(Self.maximumPatternInput) characters) to match the pattern \(compiled.source).")
                } else {
                    switch Self.search(compiled.expression, in: text, units: units) {
                    case true?: break
                    case false?: fail("Must match the pattern \(compiled.source).")
                    case nil: fail("Too costly to match against the pattern \(compiled.source).")
                    }
                }
            }
            if let format = node.format, !format.accepts(string: text) { fail("Must be a valid \(format.rawValue).") }
        case .array(let items):
            if let minimum = node.minItems, items.count < minimum { fail("Must have at least \(minimum) items.") }
            if let maximum = node.maxItems, items.count > maximum { fail("Must have at most \(maximum) items.") }
            if node.uniqueItems {
                steps += items.count
                var seen = Set<JSONValue>()
                for item in items where !seen.insert(item.canonical).inserted {
                    fail("Items must be unique.")
                    break
                }
            }
            if let itemNode = node.items {
                for (position, item) in items.enumerated() {
                    if !check(item, itemNode, pointer + "/\(position)", depth: depth + 1, record: record) { ok = false }
                    if !record && !ok { return false }
                    if isFull { break }
                }
            }
        case .object(let members):
            if let minimum = node.minProperties, members.count < minimum { fail("Must have at least \(minimum) properties.") }
            if let maximum = node.maxProperties, members.count > maximum { fail("Must have at most \(maximum) properties.") }
            for name in node.required where members[name] == nil {
                fail("Required.", at: pointer + "/" + JSONPointer.escape(name))
            }
            let checkMembers = !node.properties.isEmpty || node.additionalProperties != .allowed
            if checkMembers {
                for name in members.keys.sorted() {
                    let at = pointer + "/" + JSONPointer.escape(name)
                    if let propertyNode = node.properties[name] {
                        if !check(members[name]!, propertyNode, at, depth: depth + 1, record: record) { ok = false }
                    } else {
                        switch node.additionalProperties {
                        case .allowed: break
                        case .refused: fail("Unknown property.", at: at)
                        case .schema(let extra):
                            if !check(members[name]!, extra, at, depth: depth + 1, record: record) { ok = false }
                        }
                    }
                    if !record && !ok { return false }
                    if isFull { break }
                }
            }
        default: break
        }
        for part in node.allOf where !check(value, part, pointer, depth: depth + 1, record: record) {
            ok = false
            if !record || isFull { break }
        }
        if !node.anyOf.isEmpty {
            var any = false
            for part in node.anyOf where check(value, part, pointer, depth: depth + 1, record: false) {
                any = true
                break
            }
            if !any { fail("Must match at least one of \(node.anyOf.count) schemas.") }
        }
        if !node.oneOf.isEmpty {
            var matched = 0
            for part in node.oneOf where check(value, part, pointer, depth: depth + 1, record: false) {
                matched += 1
                if matched > 1 { break }
            }
            if matched != 1 { fail(matched == 0 ? "Must match one of \(node.oneOf.count) schemas." : "Matches more than one of \(node.oneOf.count) schemas; must match exactly one.") }
        }
        if let not = node.not, check(value, not, pointer, depth: depth + 1, record: false) { fail("Must not match the schema under not.") }
        return ok && !exhausted
    }

    /// ICU's progress callbacks a pattern search may take before it is given up (each comes after
    /// a fixed number of the matcher's steps, so the bound is on work, not time): a pattern that
    /// backtracks exponentially (`^(a+)+$`) cannot hold an event loop.
    static let maximumPatternTicks = 8

    /// Whether `expression` finds a match in `text`; nil when the search ran out of its budget.
    static func search(_ expression: NSRegularExpression, in text: String, units: Int) -> Bool? {
        var found = false
        var ticks = 0
        var exhausted = false
        expression.enumerateMatches(in: text, options: [.reportProgress], range: NSRange(location: 0, length: units)) { result, flags, stop in
            if result != nil {
                found = true
                stop.pointee = true
            } else if flags.contains(.progress) {
                ticks += 1
                if ticks > maximumPatternTicks {
                    exhausted = true
                    stop.pointee = true
                }
            }
        }
        return found ? true : (exhausted ? nil : false)
    }

    // MARK: Values

    static func matches(_ value: JSONValue, _ types: SchemaTypes) -> Bool {
        switch value {
        case .null: types.contains(.null)
        case .bool: types.contains(.boolean)
        case .integer: types.contains(.integer) || types.contains(.number)
        case .number(let number): types.contains(.number) || (types.contains(.integer) && number.rounded() == number && number.isFinite)
        case .string: types.contains(.string)
        case .array: types.contains(.array)
        case .object: types.contains(.object)
        }
    }

    static func typeName(_ value: JSONValue) -> String {
        switch value {
        case .null: "null"
        case .bool: "boolean"
        case .integer: "integer"
        case .number: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }

    static func double(_ value: JSONValue) -> Double? {
        switch value {
        case .integer(let whole): Double(whole)
        case .number(let number): number
        default: nil
        }
    }

    /// JSON equality: `1` and `1.0` are the same number.
    static func equal(_ a: JSONValue, _ b: JSONValue) -> Bool { a.canonical == b.canonical }

    static func isMultiple(_ value: JSONValue, of multiple: Double) -> Bool {
        if case .integer(let whole) = value, multiple.rounded() == multiple, multiple < 9.2e18 {
            return whole % Int64(multiple) == 0
        }
        guard let number = double(value) else { return true }
        let quotient = number / multiple
        guard quotient.isFinite else { return false }
        return abs(quotient - quotient.rounded()) <= 1e-9 * max(1, abs(quotient))
    }

    static func text(_ number: Double) -> String {
        number.rounded() == number && abs(number) < 1e15 ? String(Int64(number)) : String(number)
    }
}

extension CompiledSchemas {
    /// The types a node (or what it refers to, through `allOf`) declares.
    func effectiveTypes(_ node: Int, depth: Int = 0) -> SchemaTypes? {
        let found = nodes[node]
        if let types = found.types { return types }
        guard depth < 8 else { return nil }
        for part in found.allOf { if let types = effectiveTypes(part, depth: depth + 1) { return types } }
        return nil
    }

    /// The node an array schema's items have (through `allOf` references).
    func itemsNode(_ node: Int, depth: Int = 0) -> Int? {
        let found = nodes[node]
        if let items = found.items { return items }
        guard depth < 8 else { return nil }
        for part in found.allOf { if let items = itemsNode(part, depth: depth + 1) { return items } }
        return nil
    }
}

extension JSONValue {
    /// The value with whole numbers as `.integer`, for equality and `uniqueItems`.
    var canonical: JSONValue {
        switch self {
        case .number(let number) where number.rounded() == number && abs(number) < 9.2e18: .integer(Int64(number))
        case .array(let items): .array(items.map(\.canonical))
        case .object(let members): .object(members.mapValues(\.canonical))
        default: self
        }
    }

    /// Short text for messages (strings quoted, long values cut).
    var shortText: String {
        let full = text
        return full.count > 40 ? String(full.prefix(40)) + "…" : full
    }
}
