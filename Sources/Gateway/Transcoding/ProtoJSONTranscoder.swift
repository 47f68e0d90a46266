import Foundation

/// Translates between the proto3 JSON mapping and the protobuf wire format for the messages of a
/// compiled `ProtoSchema`, without generated code. Pure; bounded in nesting depth and output size.
///
/// JSON → wire: field names as `json_name` or as declared; unknown names, wrong JSON types, values
/// out of range and two members of one oneof are refused with a JSON pointer to the value. Fields
/// are written in field-number order, repeated scalars packed (proto3), defaults of fields without
/// presence left out — what stock encoders write. Wire → JSON: lowerCamelCase names, defaults of
/// fields without presence omitted, 64-bit integers as strings, enums as names (numbers when
/// unknown), bytes as base64, unknown fields dropped.
public struct ProtoJSONTranscoder: Sendable {
    public let schema: ProtoSchema
    /// Deepest nesting of messages (and JSON values) translated.
    public var maximumDepth: Int
    /// Largest translated output; a larger one is refused with `Failure.isTooLarge`.
    public var maximumOutputBytes: Int

    public init(schema: ProtoSchema, maximumDepth: Int = 64, maximumOutputBytes: Int = 16 * 1024 * 1024) {
        self.schema = schema
        self.maximumDepth = maximumDepth
        self.maximumOutputBytes = maximumOutputBytes
    }

    /// Why a translation failed; `pointer` locates the JSON value at fault (RFC 6901, empty for the
    /// whole document or for wire data).
    public struct Failure: Error, Sendable, Equatable {
        public var pointer: String
        public var reason: String
        public var isTooLarge = false

        init(_ pointer: String, _ reason: String, isTooLarge: Bool = false) {
            self.pointer = pointer
            self.reason = reason
            self.isTooLarge = isTooLarge
        }
    }

    // MARK: JSON → wire

    /// Encodes a JSON text as the wire form of `message` (a full name without the leading dot).
    public func wire(json bytes: [UInt8], message: String) throws(Failure) -> [UInt8] {
        let tree: JSONTree
        do { tree = try JSONTree.parse(bytes, maximumDepth: maximumDepth * 2 + 2) } catch {
            throw Failure("", "The body is not valid JSON: \(error.reason) at byte \(error.offset).")
        }
        return try wire(tree: tree, message: message)
    }

    /// Encodes a parsed JSON value as the wire form of `message`.
    public func wire(tree: JSONTree, message: String) throws(Failure) -> [UInt8] {
        var writer = ProtoWire.Writer()
        try encodeMessage(tree, type: message, pointer: "", depth: 0, into: &writer)
        return writer.bytes
    }

    func encodeMessage(_ tree: JSONTree, type name: String, pointer: String, depth: Int, into writer: inout ProtoWire.Writer) throws(Failure) {
        guard depth < maximumDepth else { throw Failure(pointer, "Messages are nested deeper than \(maximumDepth) levels.") }
        if let known = WellKnownType(rawValue: name) {
            try encodeWellKnown(known, tree, pointer: pointer, depth: depth, into: &writer)
            return
        }
        guard let type = schema.messages[name] else { throw Failure(pointer, "The message type \(name) is unknown.") }
        guard case .object(let members) = tree else { throw Failure(pointer, "Expected an object (\(name)), found \(tree.typeName).") }
        var values: [Int: (JSONTree, String)] = [:]
        var oneofMembers: [Int: String] = [:]
        for member in members {
            let memberPointer = pointer + "/" + Self.escape(member.key)
            guard let index = type.fieldIndex(jsonKey: member.key) else {
                throw Failure(memberPointer, "\(name) has no field \"\(member.key)\".")
            }
            let field = type.fields[index]
            guard values[index] == nil else { throw Failure(memberPointer, "The field \(field.name) is given twice (as \(field.jsonName) and \(field.name)).") }
            if case .null = member.value, !Self.acceptsNull(field) { continue }
            if let oneof = field.oneofIndex {
                if let other = oneofMembers[oneof] {
                    throw Failure(memberPointer, "\(member.key) and \(other) belong to the same oneof (\(type.oneofNames[oneof])); set at most one.")
                }
                oneofMembers[oneof] = member.key
            }
            values[index] = (member.value, memberPointer)
        }
        for index in values.keys.sorted(by: { type.fields[$0].number < type.fields[$1].number }) {
            let (value, fieldPointer) = values[index]!
            try encodeField(type.fields[index], value, pointer: fieldPointer, depth: depth, into: &writer)
        }
    }

    /// JSON `null` unsets a field, except where it is a value: `google.protobuf.Value` and `NullValue`.
    private static func acceptsNull(_ field: ProtoField) -> Bool {
        guard !field.isRepeated else { return false }
        switch field.kind {
        case .message(let name): return name == WellKnownType.value.rawValue
        case .enumeration(let name): return name == "google.protobuf.NullValue"
        default: return false
        }
    }

    private func encodeField(_ field: ProtoField, _ value: JSONTree, pointer: String, depth: Int, into writer: inout ProtoWire.Writer) throws(Failure) {
        if field.isMap {
            guard case .message(let entryName) = field.kind, let entry = schema.messages[entryName],
                let keyField = entry.field(number: 1), let valueField = entry.field(number: 2)
            else { throw Failure(pointer, "The map field \(field.name) has no entry type.") }
            guard case .object(let members) = value else { throw Failure(pointer, "Expected an object for the map \(field.name), found \(value.typeName).") }
            for member in members {
                let memberPointer = pointer + "/" + Self.escape(member.key)
                var entryWriter = ProtoWire.Writer()
                try encodeValue(keyField, Self.mapKeyTree(member.key, kind: keyField.kind), pointer: memberPointer, depth: depth, always: true, into: &entryWriter)
                if case .null = member.value, !Self.acceptsNull(valueField) { throw Failure(memberPointer, "A map value cannot be null.") }
                try encodeValue(valueField, member.value, pointer: memberPointer, depth: depth + 1, always: true, into: &entryWriter)
                writer.lengthDelimited(field.number, entryWriter.bytes)
                try checkSize(writer.bytes.count, pointer)
            }
            return
        }
        if field.isRepeated {
            guard case .array(let items) = value else { throw Failure(pointer, "Expected an array for \(field.name), found \(value.typeName).") }
            if field.isPacked {
                guard !items.isEmpty else { return }
                var packed = ProtoWire.Writer()
                for (offset, item) in items.enumerated() {
                    if case .null = item { throw Failure(pointer + "/\(offset)", "An element of \(field.name) cannot be null.") }
                    let scalar = try scalarValue(field.kind, item, pointer: pointer + "/\(offset)")
                    scalar.write(into: &packed)
                }
                writer.lengthDelimited(field.number, packed.bytes)
            } else {
                for (offset, item) in items.enumerated() {
                    if case .null = item, field.kind != .message(WellKnownType.value.rawValue) {
                        throw Failure(pointer + "/\(offset)", "An element of \(field.name) cannot be null.")
                    }
                    try encodeValue(field, item, pointer: pointer + "/\(offset)", depth: depth + 1, always: true, into: &writer)
                }
            }
            try checkSize(writer.bytes.count, pointer)
            return
        }
        try encodeValue(field, value, pointer: pointer, depth: depth + 1, always: field.hasPresence, into: &writer)
        try checkSize(writer.bytes.count, pointer)
    }

    /// One value with its tag; a scalar equal to its default is left out unless `always`.
    private func encodeValue(_ field: ProtoField, _ value: JSONTree, pointer: String, depth: Int, always: Bool, into writer: inout ProtoWire.Writer) throws(Failure) {
        if case .message(let name) = field.kind {
            var nested = ProtoWire.Writer()
            try encodeMessage(value, type: name, pointer: pointer, depth: depth, into: &nested)
            writer.lengthDelimited(field.number, nested.bytes)
            return
        }
        let scalar = try scalarValue(field.kind, value, pointer: pointer)
        guard always || !scalar.isDefault else { return }
        writer.tag(field.number, field.kind.wireType)
        scalar.write(into: &writer)
    }

    /// A map key arrives as a JSON member name; numbers and booleans are parsed from it.
    private static func mapKeyTree(_ key: String, kind: ProtoFieldKind) -> JSONTree {
        switch kind {
        case .string: .string(key)
        case .bool: key == "true" ? .bool(true) : key == "false" ? .bool(false) : .string(key)
        default: .string(key)
        }
    }

    private func scalarValue(_ kind: ProtoFieldKind, _ value: JSONTree, pointer: String) throws(Failure) -> ScalarValue {
        switch kind {
        case .int32: return .varint(UInt64(bitPattern: try Self.signed(value, Int64(Int32.min), Int64(Int32.max), "int32", pointer)))
        case .sint32: return .varint(ProtoWire.zigzag32(Int32(try Self.signed(value, Int64(Int32.min), Int64(Int32.max), "sint32", pointer))))
        case .sfixed32: return .fixed32(UInt32(bitPattern: Int32(try Self.signed(value, Int64(Int32.min), Int64(Int32.max), "sfixed32", pointer))))
        case .uint32: return .varint(try Self.unsigned(value, UInt64(UInt32.max), "uint32", pointer))
        case .fixed32: return .fixed32(UInt32(try Self.unsigned(value, UInt64(UInt32.max), "fixed32", pointer)))
        case .int64: return .varint(UInt64(bitPattern: try Self.signed(value, .min, .max, "int64", pointer)))
        case .sint64: return .varint(ProtoWire.zigzag64(try Self.signed(value, .min, .max, "sint64", pointer)))
        case .sfixed64: return .fixed64(UInt64(bitPattern: try Self.signed(value, .min, .max, "sfixed64", pointer)))
        case .uint64: return .varint(try Self.unsigned(value, .max, "uint64", pointer))
        case .fixed64: return .fixed64(try Self.unsigned(value, .max, "fixed64", pointer))
        case .double: return .fixed64(try Self.floating(value, float: false, pointer).bitPattern)
        case .float: return .fixed32(Float(try Self.floating(value, float: true, pointer)).bitPattern)
        case .bool:
            guard case .bool(let flag) = value else { throw Failure(pointer, "Expected true or false, found \(value.typeName).") }
            return .varint(flag ? 1 : 0)
        case .string:
            guard case .string(let text) = value else { throw Failure(pointer, "Expected a string, found \(value.typeName).") }
            return .bytes(Array(text.utf8))
        case .bytes:
            guard case .string(let text) = value else { throw Failure(pointer, "Expected base64 bytes in a string, found \(value.typeName).") }
            guard let data = Self.base64Decode(text) else { throw Failure(pointer, "The bytes are not valid base64.") }
            return .bytes(data)
        case .enumeration(let name):
            if name == "google.protobuf.NullValue", case .null = value { return .varint(0) }
            switch value {
            case .string(let label):
                guard let number = schema.enums[name]?.numbers[label] else { throw Failure(pointer, "\"\(label)\" is not a value of the enum \(name).") }
                return .varint(UInt64(bitPattern: Int64(number)))
            case .number:
                return .varint(UInt64(bitPattern: try Self.signed(value, Int64(Int32.min), Int64(Int32.max), "enum", pointer)))
            default: throw Failure(pointer, "Expected an enum name (string) of \(name), found \(value.typeName).")
            }
        case .message: throw Failure(pointer, "A message is not a scalar.")
        }
    }

    /// An integer from a JSON number or a string holding one (`"12"`, `1e3`, `"-4"`); fractions and
    /// values out of range are refused, never truncated.
    private static func signed(_ value: JSONTree, _ minimum: Int64, _ maximum: Int64, _ typeName: String, _ pointer: String) throws(Failure) -> Int64 {
        let literal = try integerLiteral(value, typeName, pointer)
        let parsed: Int64?
        if literal.allSatisfy({ $0 == "-" || $0.isASCII && $0.isNumber }) {
            parsed = Int64(literal)
        } else {
            parsed = Double(literal).flatMap { Int64(exactly: $0) }
        }
        guard let parsed, parsed >= minimum, parsed <= maximum else {
            throw Failure(pointer, "\(literal) is not an integer in the range of \(typeName) (\(minimum)…\(maximum)).")
        }
        return parsed
    }

    private static func unsigned(_ value: JSONTree, _ maximum: UInt64, _ typeName: String, _ pointer: String) throws(Failure) -> UInt64 {
        let literal = try integerLiteral(value, typeName, pointer)
        let parsed: UInt64?
        if literal.allSatisfy({ $0.isASCII && $0.isNumber }) {
            parsed = UInt64(literal)
        } else {
            parsed = Double(literal).flatMap { UInt64(exactly: $0) }
        }
        guard let parsed, parsed <= maximum else { throw Failure(pointer, "\(literal) is not an integer in the range of \(typeName) (0…\(maximum)).") }
        return parsed
    }

    private static func integerLiteral(_ value: JSONTree, _ typeName: String, _ pointer: String) throws(Failure) -> String {
        switch value {
        case .number(let literal): return literal
        case .string(let text):
            guard let tree = try? JSONTree.parse(Array(text.utf8), maximumDepth: 1), case .number(let literal) = tree, literal == text else {
                throw Failure(pointer, "\"\(text)\" is not a number (\(typeName)).")
            }
            return literal
        default: throw Failure(pointer, "Expected a number (\(typeName)), found \(value.typeName).")
        }
    }

    private static func floating(_ value: JSONTree, float: Bool, _ pointer: String) throws(Failure) -> Double {
        let typeName = float ? "float" : "double"
        let number: Double
        switch value {
        case .number(let literal):
            guard let parsed = Double(literal) else { throw Failure(pointer, "\(literal) is not a \(typeName).") }
            number = parsed
        case .string("NaN"): return .nan
        case .string("Infinity"): return .infinity
        case .string("-Infinity"): return -.infinity
        case .string(let text):
            guard let tree = try? JSONTree.parse(Array(text.utf8), maximumDepth: 1), case .number(let literal) = tree, literal == text,
                let parsed = Double(literal)
            else { throw Failure(pointer, "\"\(text)\" is not a number (\(typeName)).") }
            number = parsed
        default: throw Failure(pointer, "Expected a number (\(typeName)), found \(value.typeName).")
        }
        guard number.isFinite, !float || abs(number) <= Double(Float.greatestFiniteMagnitude) else {
            throw Failure(pointer, "The number is out of the range of \(typeName).")
        }
        return number
    }

    /// Standard or URL-safe base64, with or without padding (both are accepted by the mapping).
    static func base64Decode(_ text: String) -> [UInt8]? {
        var normalized = String(text.map { $0 == "-" ? "+" : $0 == "_" ? "/" : $0 })
        let remainder = normalized.utf8.count % 4
        if remainder == 1 { return nil }
        if remainder > 0 { normalized += String(repeating: "=", count: 4 - remainder) }
        return Data(base64Encoded: normalized).map { Array($0) }
    }

    private func checkSize(_ count: Int, _ pointer: String) throws(Failure) {
        guard count <= maximumOutputBytes else { throw Failure(pointer, "The message is larger than \(maximumOutputBytes) bytes.", isTooLarge: true) }
    }

    static func escape(_ key: String) -> String {
        key.replacingOccurrences(of: "~", with: "~0").replacingOccurrences(of: "/", with: "~1")
    }

    // MARK: wire → JSON

    /// Decodes the wire form of `message` into JSON text.
    public func json(wire bytes: [UInt8], message: String) throws(Failure) -> [UInt8] {
        var writer = JSONWriter()
        try decodeMessage(bytes, 0..<bytes.count, type: message, path: "", depth: 0, into: &writer)
        return writer.bytes
    }

    private func malformed(_ path: String, _ error: ProtoWire.Malformed) -> Failure {
        Failure("", "The message is not valid protobuf\(path.isEmpty ? "" : " at \(path)"): \(error.reason).")
    }

    /// The fields of one message as read: raw occurrences per field index, in wire order.
    private func readFields(_ bytes: [UInt8], _ range: Range<Int>, _ type: ProtoMessageType, path: String) throws(Failure) -> [Int: [ProtoWire.RawField]] {
        var reader = ProtoWire.Reader(bytes: bytes, range: range)
        var found: [Int: [ProtoWire.RawField]] = [:]
        do {
            while !reader.isAtEnd {
                let raw = try reader.field()
                // unknown fields have no JSON form; they are dropped
                guard let index = type.fieldIndex(number: raw.number) else { continue }
                found[index, default: []].append(raw)
            }
        } catch {
            throw malformed(path, error)
        }
        return found
    }

    func decodeMessage(_ bytes: [UInt8], _ range: Range<Int>, type name: String, path: String, depth: Int, into json: inout JSONWriter) throws(Failure) {
        guard depth < maximumDepth else { throw Failure("", "Messages are nested deeper than \(maximumDepth) levels.") }
        if let known = WellKnownType(rawValue: name) {
            try decodeWellKnown(known, bytes, range, path: path, depth: depth, into: &json)
            return
        }
        guard let type = schema.messages[name] else { throw Failure("", "The message type \(name) is unknown.") }
        let found = try readFields(bytes, range, type, path: path)
        json.byte(UInt8(ascii: "{"))
        var first = true
        for (index, field) in type.fields.enumerated() {
            guard let occurrences = found[index] else { continue }
            let fieldPath = path.isEmpty ? field.name : path + "." + field.name
            let mark = json.bytes.count
            if !first { json.byte(UInt8(ascii: ",")) }
            json.string(field.jsonName)
            json.byte(UInt8(ascii: ":"))
            let written: Bool
            if field.isMap {
                written = try decodeMap(field, bytes, occurrences, path: fieldPath, depth: depth, into: &json)
            } else if field.isRepeated {
                written = try decodeRepeated(field, bytes, occurrences, path: fieldPath, depth: depth, into: &json)
            } else {
                written = try decodeSingular(field, bytes, occurrences, path: fieldPath, depth: depth, into: &json)
            }
            if written {
                first = false
            } else {
                json.bytes.removeSubrange(mark...)
            }
            guard json.bytes.count <= maximumOutputBytes else {
                throw Failure("", "The translated message is larger than \(maximumOutputBytes) bytes.", isTooLarge: true)
            }
        }
        json.byte(UInt8(ascii: "}"))
    }

    private func decodeSingular(_ field: ProtoField, _ bytes: [UInt8], _ occurrences: [ProtoWire.RawField], path: String, depth: Int, into json: inout JSONWriter) throws(Failure) -> Bool {
        if case .message(let name) = field.kind {
            // several occurrences of one message field merge: their payloads concatenated
            let (buffer, range) = try Self.merged(bytes, occurrences, path: path)
            try decodeMessage(buffer, range, type: name, path: path, depth: depth + 1, into: &json)
            return true
        }
        let last = occurrences[occurrences.count - 1]
        if case .enumeration(let name) = field.kind, last.wireType == .lengthDelimited {
            // a packed run on a singular field: its last element counts
            let values = try unpack(field.kind, bytes, last, path: path)
            guard let value = values.last else { return false }
            guard field.hasPresence || !value.isDefault else { return false }
            try writeScalar(.enumeration(name), value, path: path, into: &json)
            return true
        }
        let value = try scalar(field.kind, bytes, last, path: path)
        guard field.hasPresence || !value.isDefault else { return false }
        try writeScalar(field.kind, value, path: path, into: &json)
        return true
    }

    private func decodeRepeated(_ field: ProtoField, _ bytes: [UInt8], _ occurrences: [ProtoWire.RawField], path: String, depth: Int, into json: inout JSONWriter) throws(Failure) -> Bool {
        json.byte(UInt8(ascii: "["))
        var count = 0
        for occurrence in occurrences {
            if case .message(let name) = field.kind {
                guard occurrence.wireType == .lengthDelimited else { throw malformed(path, .init(reason: "a message is not length-delimited")) }
                if count > 0 { json.byte(UInt8(ascii: ",")) }
                try decodeMessage(bytes, occurrence.payload, type: name, path: path, depth: depth + 1, into: &json)
                count += 1
                continue
            }
            // packed and unpacked elements may be mixed; parsers accept both for packable types
            let values = field.kind.isPackable && occurrence.wireType == .lengthDelimited
                ? try unpack(field.kind, bytes, occurrence, path: path) : [try scalar(field.kind, bytes, occurrence, path: path)]
            for value in values {
                if count > 0 { json.byte(UInt8(ascii: ",")) }
                try writeScalar(field.kind, value, path: path, into: &json)
                count += 1
            }
            guard json.bytes.count <= maximumOutputBytes else {
                throw Failure("", "The translated message is larger than \(maximumOutputBytes) bytes.", isTooLarge: true)
            }
        }
        json.byte(UInt8(ascii: "]"))
        return count > 0
    }

    private func decodeMap(_ field: ProtoField, _ bytes: [UInt8], _ occurrences: [ProtoWire.RawField], path: String, depth: Int, into json: inout JSONWriter) throws(Failure) -> Bool {
        guard case .message(let entryName) = field.kind, let entry = schema.messages[entryName],
            let keyField = entry.field(number: 1), let valueField = entry.field(number: 2)
        else { throw Failure("", "The map \(path) has no entry type.") }
        // a later entry with the same key replaces an earlier one
        var order: [String] = []
        var entries: [String: [UInt8]] = [:]
        for occurrence in occurrences {
            guard occurrence.wireType == .lengthDelimited else { throw malformed(path, .init(reason: "a map entry is not length-delimited")) }
            let found = try readFields(bytes, occurrence.payload, entry, path: path)
            let keyValue = try found[entry.fieldIndex(number: 1)!]?.last.map { (raw) throws(Failure) in try scalar(keyField.kind, bytes, raw, path: path) }
            let key = try mapKeyText(keyField.kind, keyValue ?? (keyField.kind.wireType == .lengthDelimited ? .bytes([]) : .varint(0)), path: path)
            var valueJSON = JSONWriter()
            let valueOccurrences = found[entry.fieldIndex(number: 2)!] ?? []
            if valueOccurrences.isEmpty {
                try writeDefault(valueField, path: path, depth: depth, into: &valueJSON)
            } else if case .message = valueField.kind {
                _ = try decodeSingular(valueField, bytes, valueOccurrences, path: path, depth: depth + 1, into: &valueJSON)
            } else {
                try writeScalar(valueField.kind, try scalar(valueField.kind, bytes, valueOccurrences[valueOccurrences.count - 1], path: path), path: path, into: &valueJSON)
            }
            if entries[key] == nil { order.append(key) }
            entries[key] = valueJSON.bytes
        }
        guard !order.isEmpty else { return false }
        json.byte(UInt8(ascii: "{"))
        for (offset, key) in order.enumerated() {
            if offset > 0 { json.byte(UInt8(ascii: ",")) }
            json.string(key)
            json.byte(UInt8(ascii: ":"))
            json.bytes.append(contentsOf: entries[key]!)
        }
        json.byte(UInt8(ascii: "}"))
        return true
    }

    /// A map key as a JSON member name: the key's JSON form, unquoted (`"7"` for an int key, `"true"`).
    private func mapKeyText(_ kind: ProtoFieldKind, _ value: ScalarValue, path: String) throws(Failure) -> String {
        var text = JSONWriter()
        try writeScalar(kind, value, path: path, into: &text)
        switch try? JSONTree.parse(text.bytes, maximumDepth: 1) {
        case .string(let key): return key
        case .number(let literal): return literal
        case .bool(let flag): return flag ? "true" : "false"
        default: throw malformed(path, .init(reason: "a map key of an unsupported type"))
        }
    }

    /// A wrapper's value (field 1) from JSON; its default is left out.
    func encodeValueForWellKnown(_ field: ProtoField, _ value: JSONTree, pointer: String, into writer: inout ProtoWire.Writer) throws(Failure) {
        try encodeValue(field, value, pointer: pointer, depth: 0, always: false, into: &writer)
    }

    /// A wrapper's value (field 1) as JSON; absent means the default.
    func writeWellKnownScalar(_ field: ProtoField, _ raw: ProtoWire.RawField?, _ bytes: [UInt8], path: String, into json: inout JSONWriter) throws(Failure) {
        guard let raw else {
            try writeDefault(field, path: path, depth: 0, into: &json)
            return
        }
        try writeScalar(field.kind, try scalar(field.kind, bytes, raw, path: path), path: path, into: &json)
    }

    private func writeDefault(_ field: ProtoField, path: String, depth: Int, into json: inout JSONWriter) throws(Failure) {
        switch field.kind {
        case .message(let name): try decodeMessage([], 0..<0, type: name, path: path, depth: depth + 1, into: &json)
        case .string, .bytes: try writeScalar(field.kind, .bytes([]), path: path, into: &json)
        case .double, .fixed64, .sfixed64: try writeScalar(field.kind, .fixed64(0), path: path, into: &json)
        case .float, .fixed32, .sfixed32: try writeScalar(field.kind, .fixed32(0), path: path, into: &json)
        default: try writeScalar(field.kind, .varint(0), path: path, into: &json)
        }
    }

    private static func merged(_ bytes: [UInt8], _ occurrences: [ProtoWire.RawField], path: String) throws(Failure) -> ([UInt8], Range<Int>) {
        for occurrence in occurrences where occurrence.wireType != .lengthDelimited {
            throw Failure("", "The message is not valid protobuf at \(path): a message is not length-delimited.")
        }
        if occurrences.count == 1 { return (bytes, occurrences[0].payload) }
        var buffer: [UInt8] = []
        for occurrence in occurrences { buffer.append(contentsOf: bytes[occurrence.payload]) }
        return (buffer, 0..<buffer.count)
    }

    private func scalar(_ kind: ProtoFieldKind, _ bytes: [UInt8], _ raw: ProtoWire.RawField, path: String) throws(Failure) -> ScalarValue {
        guard raw.wireType == kind.wireType else {
            throw malformed(path, .init(reason: "wire type \(raw.wireType.rawValue) does not fit the field's type"))
        }
        switch raw.wireType {
        case .varint: return .varint(raw.scalar)
        case .fixed32: return .fixed32(UInt32(truncatingIfNeeded: raw.scalar))
        case .fixed64: return .fixed64(raw.scalar)
        default: return .bytes(Array(bytes[raw.payload]))
        }
    }

    private func unpack(_ kind: ProtoFieldKind, _ bytes: [UInt8], _ raw: ProtoWire.RawField, path: String) throws(Failure) -> [ScalarValue] {
        var reader = ProtoWire.Reader(bytes: bytes, range: raw.payload)
        var values: [ScalarValue] = []
        do throws(ProtoWire.Malformed) {
            while !reader.isAtEnd {
                switch kind.wireType {
                case .varint: values.append(.varint(try reader.varint()))
                case .fixed32: values.append(.fixed32(UInt32(truncatingIfNeeded: try reader.fixed(4))))
                case .fixed64: values.append(.fixed64(try reader.fixed(8)))
                default: throw ProtoWire.Malformed(reason: "a packed run of a type that cannot be packed")
                }
            }
        } catch {
            throw malformed(path, error)
        }
        return values
    }

    private func writeScalar(_ kind: ProtoFieldKind, _ value: ScalarValue, path: String, into json: inout JSONWriter) throws(Failure) {
        switch (kind, value) {
        case (.int32, .varint(let raw)): json.raw(String(Int32(truncatingIfNeeded: raw)))
        case (.uint32, .varint(let raw)): json.raw(String(UInt32(truncatingIfNeeded: raw)))
        case (.sint32, .varint(let raw)): json.raw(String(Int32(truncatingIfNeeded: ProtoWire.unzigzag(raw))))
        case (.int64, .varint(let raw)): json.string(String(Int64(bitPattern: raw)))
        case (.uint64, .varint(let raw)): json.string(String(raw))
        case (.sint64, .varint(let raw)): json.string(String(ProtoWire.unzigzag(raw)))
        case (.fixed32, .fixed32(let raw)): json.raw(String(raw))
        case (.sfixed32, .fixed32(let raw)): json.raw(String(Int32(bitPattern: raw)))
        case (.fixed64, .fixed64(let raw)): json.string(String(raw))
        case (.sfixed64, .fixed64(let raw)): json.string(String(Int64(bitPattern: raw)))
        case (.bool, .varint(let raw)): json.raw(raw != 0 ? "true" : "false")
        case (.double, .fixed64(let raw)): Self.writeFloating(Double(bitPattern: raw), description: Double(bitPattern: raw).description, into: &json)
        case (.float, .fixed32(let raw)): Self.writeFloating(Double(Float(bitPattern: raw)), description: Float(bitPattern: raw).description, into: &json)
        case (.string, .bytes(let raw)):
            guard let text = String(validating: raw, as: UTF8.self) else { throw Failure("", "The string \(path) is not valid UTF-8.") }
            json.string(text)
        case (.bytes, .bytes(let raw)): json.string(Data(raw).base64EncodedString())
        case (.enumeration(let name), .varint(let raw)):
            let number = Int32(truncatingIfNeeded: raw)
            if name == "google.protobuf.NullValue" {
                json.raw("null")
            } else if let label = schema.enums[name]?.names[number] {
                json.string(label)
            } else {
                json.raw(String(number))
            }
        default: throw malformed(path, .init(reason: "a value does not fit the field's type"))
        }
    }

    private static func writeFloating(_ value: Double, description: String, into json: inout JSONWriter) {
        if value.isNaN {
            json.string("NaN")
        } else if value.isInfinite {
            json.string(value < 0 ? "-Infinity" : "Infinity")
        } else {
            json.raw(description)
        }
    }
}

/// A scalar in its wire form.
enum ScalarValue: Equatable {
    case varint(UInt64)
    case fixed32(UInt32)
    case fixed64(UInt64)
    case bytes([UInt8])

    var isDefault: Bool {
        switch self {
        case .varint(let value): value == 0
        case .fixed32(let value): value == 0
        case .fixed64(let value): value == 0
        case .bytes(let value): value.isEmpty
        }
    }

    func write(into writer: inout ProtoWire.Writer) {
        switch self {
        case .varint(let value): writer.varint(value)
        case .fixed32(let value): writer.fixed32(value)
        case .fixed64(let value): writer.fixed64(value)
        case .bytes(let value):
            writer.varint(UInt64(value.count))
            writer.bytes.append(contentsOf: value)
        }
    }
}
