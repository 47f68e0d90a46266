import Foundation

/// The `google.protobuf` types whose JSON form is not the generic object form: timestamps and
/// durations as strings, wrappers as their bare value, `Struct`/`Value`/`ListValue` as arbitrary
/// JSON, field masks as one comma-separated string. Recognised by name; their field numbers are
/// fixed by the published protos, so no descriptor is needed to translate them.
enum WellKnownType: String {
    case timestamp = "google.protobuf.Timestamp"
    case duration = "google.protobuf.Duration"
    case doubleValue = "google.protobuf.DoubleValue"
    case floatValue = "google.protobuf.FloatValue"
    case int64Value = "google.protobuf.Int64Value"
    case uint64Value = "google.protobuf.UInt64Value"
    case int32Value = "google.protobuf.Int32Value"
    case uint32Value = "google.protobuf.UInt32Value"
    case boolValue = "google.protobuf.BoolValue"
    case stringValue = "google.protobuf.StringValue"
    case bytesValue = "google.protobuf.BytesValue"
    case empty = "google.protobuf.Empty"
    case structValue = "google.protobuf.Struct"
    case value = "google.protobuf.Value"
    case listValue = "google.protobuf.ListValue"
    case fieldMask = "google.protobuf.FieldMask"
    case any = "google.protobuf.Any"

    /// The kind of a wrapper's `value` field (number 1).
    var wrapped: ProtoFieldKind? {
        switch self {
        case .doubleValue: .double
        case .floatValue: .float
        case .int64Value: .int64
        case .uint64Value: .uint64
        case .int32Value: .int32
        case .uint32Value: .uint32
        case .boolValue: .bool
        case .stringValue: .string
        case .bytesValue: .bytes
        default: nil
        }
    }
}

/// Calendar arithmetic for RFC 3339 timestamps, proleptic Gregorian, UTC (days from 1970-01-01).
enum ProtoCalendar {
    static let minimumSeconds: Int64 = -62_135_596_800  // 0001-01-01T00:00:00Z
    static let maximumSeconds: Int64 = 253_402_300_799  // 9999-12-31T23:59:59Z

    static func days(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func date(days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    /// `2017-01-15T01:30:15.01Z` or with an offset (`+01:00`) → seconds and nanoseconds since the epoch.
    static func parseTimestamp(_ text: String) -> (seconds: Int64, nanos: Int32)? {
        let bytes = Array(text.utf8)
        func number(_ range: Range<Int>) -> Int64? {
            guard range.upperBound <= bytes.count else { return nil }
            var value: Int64 = 0
            for byte in bytes[range] {
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
                value = value * 10 + Int64(byte - UInt8(ascii: "0"))
            }
            return value
        }
        guard bytes.count >= 20, bytes[4] == UInt8(ascii: "-"), bytes[7] == UInt8(ascii: "-"), bytes[10] | 0x20 == UInt8(ascii: "t"),
            bytes[13] == UInt8(ascii: ":"), bytes[16] == UInt8(ascii: ":"),
            let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
            let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19),
            year >= 1, (1...12).contains(month), hour < 24, minute < 60, second < 60
        else { return nil }
        let days = days(year: year, month: month, day: day)
        guard day >= 1, date(days: days) == (year, month, day) else { return nil }
        var index = 19
        var nanos: Int64 = 0
        if bytes[index] == UInt8(ascii: ".") {
            index += 1
            let start = index
            while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
            let digits = index - start
            guard (1...9).contains(digits), let fraction = number(start..<index) else { return nil }
            nanos = fraction
            for _ in digits..<9 { nanos *= 10 }
        }
        guard index < bytes.count else { return nil }
        var offset: Int64 = 0
        if bytes[index] | 0x20 == UInt8(ascii: "z") {
            index += 1
        } else if bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
            guard index + 6 == bytes.count, bytes[index + 3] == UInt8(ascii: ":"), let hours = number((index + 1)..<(index + 3)),
                let minutes = number((index + 4)..<(index + 6)), hours < 24, minutes < 60
            else { return nil }
            offset = (hours * 3600 + minutes * 60) * (bytes[index] == UInt8(ascii: "-") ? -1 : 1)
            index += 6
        } else {
            return nil
        }
        guard index == bytes.count else { return nil }
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset
        guard seconds >= minimumSeconds, seconds <= maximumSeconds else { return nil }
        return (seconds, Int32(nanos))
    }

    static func formatTimestamp(seconds: Int64, nanos: Int32) -> String? {
        guard seconds >= minimumSeconds, seconds <= maximumSeconds, (0...999_999_999).contains(nanos) else { return nil }
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let within = seconds - days * 86_400
        let (year, month, day) = date(days: days)
        func pad(_ value: Int64, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(within / 3600, 2)):\(pad(within / 60 % 60, 2)):\(pad(within % 60, 2))"
            + fraction(nanos) + "Z"
    }

    /// No fraction, or 3, 6 or 9 digits: the shortest of those that is exact (what stock encoders print).
    static func fraction(_ nanos: Int32) -> String {
        guard nanos != 0 else { return "" }
        let text = String(nanos)
        let padded = String(repeating: "0", count: 9 - text.count) + text
        if nanos % 1_000_000 == 0 { return "." + padded.prefix(3) }
        if nanos % 1000 == 0 { return "." + padded.prefix(6) }
        return "." + padded
    }

    static let maximumDurationSeconds: Int64 = 315_576_000_000

    /// `1.5s`, `-0.000001s` → seconds and nanoseconds of the same sign.
    static func parseDuration(_ text: String) -> (seconds: Int64, nanos: Int32)? {
        guard text.hasSuffix("s") else { return nil }
        var body = Substring(text.dropLast())
        let negative = body.hasPrefix("-")
        if negative { body = body.dropFirst() }
        let parts = body.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = parts.first, !whole.isEmpty, whole.allSatisfy({ $0.isASCII && $0.isNumber }), let seconds = Int64(whole),
            seconds <= maximumDurationSeconds
        else { return nil }
        var nanos: Int64 = 0
        if parts.count == 2 {
            let digits = parts[1]
            guard (1...9).contains(digits.count), digits.allSatisfy({ $0.isASCII && $0.isNumber }), let fraction = Int64(digits) else { return nil }
            nanos = fraction
            for _ in digits.count..<9 { nanos *= 10 }
        }
        return negative ? (-seconds, Int32(-nanos)) : (seconds, Int32(nanos))
    }

    static func formatDuration(seconds: Int64, nanos: Int32) -> String? {
        // compared without abs(): Int64.min and Int32.min from the wire would trap it
        guard seconds >= -maximumDurationSeconds, seconds <= maximumDurationSeconds, nanos >= -999_999_999, nanos <= 999_999_999,
            seconds == 0 || nanos == 0 || (seconds < 0) == (nanos < 0)
        else { return nil }
        let negative = seconds < 0 || nanos < 0
        return (negative ? "-" : "") + String(seconds.magnitude) + fraction(Int32(nanos.magnitude)) + "s"
    }
}

extension ProtoJSONTranscoder {
    /// The raw fields of a message by number, in wire order.
    private func rawFields(_ bytes: [UInt8], _ range: Range<Int>, path: String) throws(Failure) -> [Int32: [ProtoWire.RawField]] {
        var reader = ProtoWire.Reader(bytes: bytes, range: range)
        var found: [Int32: [ProtoWire.RawField]] = [:]
        do {
            while !reader.isAtEnd {
                let raw = try reader.field()
                found[raw.number, default: []].append(raw)
            }
        } catch {
            throw Failure("", "The message is not valid protobuf at \(path): \(error.reason).")
        }
        return found
    }

    private func field(_ number: Int32, _ kind: ProtoFieldKind, presence: Bool = false, repeated: Bool = false) -> ProtoField {
        ProtoField(name: "value", jsonName: "value", number: number, kind: kind, isRepeated: repeated, isPacked: false, hasPresence: presence)
    }

    // MARK: JSON → wire

    func encodeWellKnown(_ type: WellKnownType, _ tree: JSONTree, pointer: String, depth: Int, into writer: inout ProtoWire.Writer) throws(Failure) {
        if let kind = type.wrapped {
            try encodeWrapped(kind, tree, pointer: pointer, into: &writer)
            return
        }
        switch type {
        case .timestamp:
            guard case .string(let text) = tree, let (seconds, nanos) = ProtoCalendar.parseTimestamp(text) else {
                throw Failure(pointer, "Expected an RFC 3339 timestamp between 0001-01-01 and 9999-12-31 (\"2024-05-01T12:00:00Z\"), found \(Self.describe(tree)).")
            }
            try writeSecondsNanos(seconds, nanos, into: &writer)
        case .duration:
            guard case .string(let text) = tree, let (seconds, nanos) = ProtoCalendar.parseDuration(text) else {
                throw Failure(pointer, "Expected a duration in seconds with an \"s\" suffix (\"1.5s\"), found \(Self.describe(tree)).")
            }
            try writeSecondsNanos(seconds, nanos, into: &writer)
        case .empty:
            guard case .object(let members) = tree else { throw Failure(pointer, "Expected {} (google.protobuf.Empty), found \(tree.typeName).") }
            if let member = members.first { throw Failure(pointer + "/" + Self.escape(member.key), "google.protobuf.Empty has no fields.") }
        case .structValue:
            guard case .object = tree else { throw Failure(pointer, "Expected an object (google.protobuf.Struct), found \(tree.typeName).") }
            try encodeStruct(tree, pointer: pointer, depth: depth, into: &writer)
        case .listValue:
            guard case .array = tree else { throw Failure(pointer, "Expected an array (google.protobuf.ListValue), found \(tree.typeName).") }
            try encodeList(tree, pointer: pointer, depth: depth, into: &writer)
        case .value:
            try encodeAnyJSON(tree, pointer: pointer, depth: depth, into: &writer)
        case .fieldMask:
            guard case .string(let text) = tree else { throw Failure(pointer, "Expected a field mask (\"user.displayName,photo\"), found \(tree.typeName).") }
            for path in text.split(separator: ",", omittingEmptySubsequences: true) {
                guard path.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == ".") }) else {
                    throw Failure(pointer, "The field mask path \"\(path)\" must be lowerCamelCase names joined by dots.")
                }
                var snake = ""
                for character in path {
                    if character.isUppercase { snake += "_" + character.lowercased() } else { snake.append(character) }
                }
                writer.lengthDelimited(1, Array(snake.utf8))
            }
        case .any:
            try encodeAny(tree, pointer: pointer, depth: depth, into: &writer)
        default:
            break
        }
    }

    // MARK: Any

    /// The message type an `Any`'s type URL names (the part after its last `/`), when the API's
    /// descriptor set declares it or it is a well-known type; nil otherwise. The URL's host is not
    /// looked up: like stock runtimes, the gateway resolves types from what it was given.
    func anyType(_ url: String) -> String? {
        guard let slash = url.lastIndex(of: "/") else { return nil }
        let name = String(url[url.index(after: slash)...])
        guard !name.isEmpty else { return nil }
        return schema.messages[name] != nil || WellKnownType(rawValue: name) != nil ? name : nil
    }

    /// A well-known type whose JSON is not an object of its fields sits in an `Any` as `"value"`.
    private static func anyHoldsValue(_ name: String) -> WellKnownType? {
        guard let known = WellKnownType(rawValue: name), known != .empty else { return nil }
        return known
    }

    /// `{"@type": "type.googleapis.com/pkg.Msg", ...fields}`, or `{"@type": …, "value": …}` for a
    /// well-known type; `{}` is the empty `Any`.
    private func encodeAny(_ tree: JSONTree, pointer: String, depth: Int, into writer: inout ProtoWire.Writer) throws(Failure) {
        guard depth < maximumDepth else { throw Failure(pointer, "Messages are nested deeper than \(maximumDepth) levels.") }
        guard case .object(let members) = tree else {
            throw Failure(pointer, "Expected an object with \"@type\" (google.protobuf.Any), found \(tree.typeName).")
        }
        guard !members.isEmpty else { return }
        guard let typeMember = members.first(where: { $0.key == "@type" }) else {
            throw Failure(pointer, "A google.protobuf.Any needs \"@type\": the URL of the message it holds (\"type.googleapis.com/package.Message\").")
        }
        guard case .string(let url) = typeMember.value else { throw Failure(pointer + "/@type", "\"@type\" is a string, found \(typeMember.value.typeName).") }
        guard let name = anyType(url) else {
            throw Failure(pointer + "/@type", "\(url) names no message type of this API's descriptor set.")
        }
        let rest = members.filter { $0.key != "@type" }
        var body = ProtoWire.Writer()
        if let known = Self.anyHoldsValue(name) {
            if let extra = rest.first(where: { $0.key != "value" }) {
                throw Failure(pointer + "/" + Self.escape(extra.key), "A google.protobuf.Any holding \(name) has only \"@type\" and \"value\".")
            }
            if let value = rest.first {
                try encodeWellKnown(known, value.value, pointer: pointer + "/value", depth: depth + 1, into: &body)
            }
        } else {
            try encodeMessage(.object(rest), type: name, pointer: pointer, depth: depth + 1, into: &body)
        }
        writer.lengthDelimited(1, Array(url.utf8))
        if !body.bytes.isEmpty { writer.lengthDelimited(2, body.bytes) }
        guard writer.bytes.count <= maximumOutputBytes else { throw Failure(pointer, "The message is too large.", isTooLarge: true) }
    }

    private func decodeAny(_ bytes: [UInt8], _ found: [Int32: [ProtoWire.RawField]], path: String, depth: Int, into json: inout JSONWriter) throws(Failure) {
        // an Any in an Any's value recurses here without passing decodeMessage's guard
        guard depth < maximumDepth else { throw Failure("", "Messages are nested deeper than \(maximumDepth) levels.") }
        let urlRaw = found[1]?.last
        let valueRaw = found[2]?.last
        guard urlRaw != nil || valueRaw != nil else {
            json.raw("{}")
            return
        }
        let at = path.isEmpty ? "the top" : path
        guard let urlRaw, urlRaw.wireType == .lengthDelimited, let url = String(validating: bytes[urlRaw.payload], as: UTF8.self), !url.isEmpty else {
            throw Failure("", "The google.protobuf.Any at \(at) has no type URL.")
        }
        guard let name = anyType(url) else {
            throw Failure("", "The google.protobuf.Any at \(at) holds \(url), which names no message type of this API's descriptor set.")
        }
        if let valueRaw, valueRaw.wireType != .lengthDelimited {
            throw Failure("", "The message is not valid protobuf at \(path): an Any's value is not length-delimited.")
        }
        let range = valueRaw?.payload ?? 0..<0
        json.byte(UInt8(ascii: "{"))
        json.string("@type")
        json.byte(UInt8(ascii: ":"))
        json.string(url)
        if let known = Self.anyHoldsValue(name) {
            json.raw(",\"value\":")
            try decodeWellKnown(known, bytes, range, path: path, depth: depth + 1, into: &json)
        } else {
            var inner = JSONWriter()
            try decodeMessage(bytes, range, type: name, path: path, depth: depth + 1, into: &inner)
            // the held message's members follow "@type" in the same object
            if inner.bytes.count > 2 {
                json.byte(UInt8(ascii: ","))
                json.bytes.append(contentsOf: inner.bytes[1..<(inner.bytes.count - 1)])
            }
        }
        json.byte(UInt8(ascii: "}"))
    }

    private static func describe(_ tree: JSONTree) -> String {
        if case .string(let text) = tree { return "\"\(text.prefix(64))\"" }
        return tree.typeName
    }

    private func writeSecondsNanos(_ seconds: Int64, _ nanos: Int32, into writer: inout ProtoWire.Writer) throws(Failure) {
        if seconds != 0 {
            writer.tag(1, .varint)
            writer.varint(UInt64(bitPattern: seconds))
        }
        if nanos != 0 {
            writer.tag(2, .varint)
            writer.varint(UInt64(bitPattern: Int64(nanos)))
        }
    }

    private func encodeWrapped(_ kind: ProtoFieldKind, _ tree: JSONTree, pointer: String, into writer: inout ProtoWire.Writer) throws(Failure) {
        var scratch = ProtoWire.Writer()
        // a wrapper's value has no presence of its own: the default is left out, as stock encoders do
        try encodeValueForWellKnown(field(1, kind), tree, pointer: pointer, into: &scratch)
        writer.bytes.append(contentsOf: scratch.bytes)
    }

    private func encodeStruct(_ tree: JSONTree, pointer: String, depth: Int, into writer: inout ProtoWire.Writer) throws(Failure) {
        guard case .object(let members) = tree else { return }
        guard depth < maximumDepth else { throw Failure(pointer, "Values are nested deeper than \(maximumDepth) levels.") }
        for member in members {
            var entry = ProtoWire.Writer()
            entry.lengthDelimited(1, Array(member.key.utf8))
            var value = ProtoWire.Writer()
            try encodeAnyJSON(member.value, pointer: pointer + "/" + Self.escape(member.key), depth: depth + 1, into: &value)
            entry.lengthDelimited(2, value.bytes)
            writer.lengthDelimited(1, entry.bytes)
            guard writer.bytes.count <= maximumOutputBytes else { throw Failure(pointer, "The message is too large.", isTooLarge: true) }
        }
    }

    private func encodeList(_ tree: JSONTree, pointer: String, depth: Int, into writer: inout ProtoWire.Writer) throws(Failure) {
        guard case .array(let items) = tree else { return }
        guard depth < maximumDepth else { throw Failure(pointer, "Values are nested deeper than \(maximumDepth) levels.") }
        for (offset, item) in items.enumerated() {
            var value = ProtoWire.Writer()
            try encodeAnyJSON(item, pointer: pointer + "/\(offset)", depth: depth + 1, into: &value)
            writer.lengthDelimited(1, value.bytes)
            guard writer.bytes.count <= maximumOutputBytes else { throw Failure(pointer, "The message is too large.", isTooLarge: true) }
        }
    }

    /// A `google.protobuf.Value`: the oneof member that matches the JSON type.
    private func encodeAnyJSON(_ tree: JSONTree, pointer: String, depth: Int, into writer: inout ProtoWire.Writer) throws(Failure) {
        guard depth < maximumDepth else { throw Failure(pointer, "Values are nested deeper than \(maximumDepth) levels.") }
        switch tree {
        case .null:
            writer.tag(1, .varint)
            writer.varint(0)
        case .number(let literal):
            guard let number = Double(literal), number.isFinite else { throw Failure(pointer, "\(literal) is out of the range of a double.") }
            writer.tag(2, .fixed64)
            writer.fixed64(number.bitPattern)
        case .string(let text): writer.lengthDelimited(3, Array(text.utf8))
        case .bool(let flag):
            writer.tag(4, .varint)
            writer.varint(flag ? 1 : 0)
        case .object:
            var nested = ProtoWire.Writer()
            try encodeStruct(tree, pointer: pointer, depth: depth + 1, into: &nested)
            writer.lengthDelimited(5, nested.bytes)
        case .array:
            var nested = ProtoWire.Writer()
            try encodeList(tree, pointer: pointer, depth: depth + 1, into: &nested)
            writer.lengthDelimited(6, nested.bytes)
        }
    }

    // MARK: wire → JSON

    func decodeWellKnown(_ type: WellKnownType, _ bytes: [UInt8], _ range: Range<Int>, path: String, depth: Int, into json: inout JSONWriter) throws(Failure) {
        let found = try rawFields(bytes, range, path: path)
        func last(_ number: Int32) -> ProtoWire.RawField? { found[number]?.last }
        if let kind = type.wrapped {
            try writeWellKnownScalar(field(1, kind), last(1), bytes, path: path, into: &json)
            return
        }
        switch type {
        case .timestamp, .duration:
            let seconds = Int64(bitPattern: last(1)?.scalar ?? 0)
            let nanos = Int32(truncatingIfNeeded: last(2)?.scalar ?? 0)
            let text = type == .timestamp ? ProtoCalendar.formatTimestamp(seconds: seconds, nanos: nanos) : ProtoCalendar.formatDuration(seconds: seconds, nanos: nanos)
            guard let text else { throw Failure("", "The \(type.rawValue) at \(path) is out of range.") }
            json.string(text)
        case .empty:
            json.raw("{}")
        case .structValue:
            try decodeStruct(bytes, range, path: path, depth: depth, into: &json)
        case .listValue:
            try decodeList(bytes, range, path: path, depth: depth, into: &json)
        case .value:
            try decodeValue(bytes, range, path: path, depth: depth, into: &json)
        case .fieldMask:
            var paths: [String] = []
            for raw in found[1] ?? [] where raw.wireType == .lengthDelimited {
                guard let path = String(validating: bytes[raw.payload], as: UTF8.self) else { throw Failure("", "A field mask path is not UTF-8.") }
                paths.append(path.split(separator: ".", omittingEmptySubsequences: false).map { ProtoField.lowerCamelCase(String($0)) }.joined(separator: "."))
            }
            json.string(paths.joined(separator: ","))
        case .any:
            try decodeAny(bytes, found, path: path, depth: depth, into: &json)
        default:
            break
        }
    }

    private func decodeStruct(_ bytes: [UInt8], _ range: Range<Int>, path: String, depth: Int, into json: inout JSONWriter) throws(Failure) {
        guard depth < maximumDepth else { throw Failure("", "Values are nested deeper than \(maximumDepth) levels.") }
        var order: [String] = []
        var values: [String: [UInt8]] = [:]
        for entry in try rawFields(bytes, range, path: path)[1] ?? [] where entry.wireType == .lengthDelimited {
            let parts = try rawFields(bytes, entry.payload, path: path)
            guard let keyRaw = parts[1]?.last, keyRaw.wireType == .lengthDelimited, let key = String(validating: bytes[keyRaw.payload], as: UTF8.self) else {
                throw Failure("", "A google.protobuf.Struct entry at \(path) has no key.")
            }
            var value = JSONWriter()
            if let valueRaw = parts[2]?.last, valueRaw.wireType == .lengthDelimited {
                try decodeValue(bytes, valueRaw.payload, path: path + "." + key, depth: depth + 1, into: &value)
            } else {
                value.raw("null")
            }
            if values[key] == nil { order.append(key) }
            values[key] = value.bytes
            guard json.bytes.count + value.bytes.count <= maximumOutputBytes else { throw Failure("", "The translated message is too large.", isTooLarge: true) }
        }
        json.byte(UInt8(ascii: "{"))
        for (offset, key) in order.enumerated() {
            if offset > 0 { json.byte(UInt8(ascii: ",")) }
            json.string(key)
            json.byte(UInt8(ascii: ":"))
            json.bytes.append(contentsOf: values[key]!)
        }
        json.byte(UInt8(ascii: "}"))
    }

    private func decodeList(_ bytes: [UInt8], _ range: Range<Int>, path: String, depth: Int, into json: inout JSONWriter) throws(Failure) {
        guard depth < maximumDepth else { throw Failure("", "Values are nested deeper than \(maximumDepth) levels.") }
        json.byte(UInt8(ascii: "["))
        for (offset, item) in (try rawFields(bytes, range, path: path)[1] ?? []).enumerated() where item.wireType == .lengthDelimited {
            if offset > 0 { json.byte(UInt8(ascii: ",")) }
            try decodeValue(bytes, item.payload, path: path + "[\(offset)]", depth: depth + 1, into: &json)
            guard json.bytes.count <= maximumOutputBytes else { throw Failure("", "The translated message is too large.", isTooLarge: true) }
        }
        json.byte(UInt8(ascii: "]"))
    }

    private func decodeValue(_ bytes: [UInt8], _ range: Range<Int>, path: String, depth: Int, into json: inout JSONWriter) throws(Failure) {
        guard depth < maximumDepth else { throw Failure("", "Values are nested deeper than \(maximumDepth) levels.") }
        var reader = ProtoWire.Reader(bytes: bytes, range: range)
        var kind: ProtoWire.RawField?
        do {
            while !reader.isAtEnd {
                let raw = try reader.field()
                if (1...6).contains(raw.number) { kind = raw }
            }
        } catch {
            throw Failure("", "The message is not valid protobuf at \(path): \(error.reason).")
        }
        guard let kind else {
            json.raw("null")
            return
        }
        switch (kind.number, kind.wireType) {
        case (1, .varint): json.raw("null")
        case (2, .fixed64):
            let number = Double(bitPattern: kind.scalar)
            guard number.isFinite else { throw Failure("", "A google.protobuf.Value at \(path) holds \(number), which JSON cannot carry.") }
            json.raw(number.description)
        case (3, .lengthDelimited):
            guard let text = String(validating: bytes[kind.payload], as: UTF8.self) else { throw Failure("", "A string at \(path) is not valid UTF-8.") }
            json.string(text)
        case (4, .varint): json.raw(kind.scalar != 0 ? "true" : "false")
        case (5, .lengthDelimited): try decodeStruct(bytes, kind.payload, path: path, depth: depth + 1, into: &json)
        case (6, .lengthDelimited): try decodeList(bytes, kind.payload, path: path, depth: depth + 1, into: &json)
        default: throw Failure("", "The message is not valid protobuf at \(path): a google.protobuf.Value of the wrong wire type.")
        }
    }
}
